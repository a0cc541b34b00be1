"""From the last residual stream to a prediction."""
from ..contract import VOCABULARY


def unembed(ctx, x):
    """logits[v, t] = wte[v] · x[:, t] (GPT-2's LM head is tied to the token embedding)."""
    table = ctx.token_table()
    labels = [(text, i) for i, text in enumerate(ctx.vocab or ["token"] * table.height)]
    return ctx.array(ctx.block(labels), "MMULT({wte},{x})", wte=table, x=x)


def argmax(ctx, logits):
    """prediction[t] = the token id of the largest logit at position t (the lowest id among ties)."""
    out, text = ctx.result_row()
    ctx.each(out, "MATCH(MAX({l}),{l},0)-1", l=lambda _, t: logits.col(t))
    if text is not None:
        ctx.each(text, "INDEX({vocab},{id}+1)", vocab=VOCABULARY, id=lambda _, t: out.col(t))
    return out
