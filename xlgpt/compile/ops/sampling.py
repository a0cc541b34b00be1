"""Sampling the next token, exactly, so every engine and the reference agree to the token:
u       = s(SampleStep + 3) / 2147483647, with MINSTD s(0) = Seed, s(k + 1) = MOD(s(k) · 48271, 2147483647)
p       = softmax(logits / Temperature) over the TopK largest logits (ties: lower ids first; all when TopK
          is 0), zero elsewhere
token   = the smallest id whose cumulative probability, summed in id order, exceeds u;
          Temperature 0 is the argmax (the lowest id among ties)."""

from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import IDS, PERCENT

MODULUS, MULTIPLIER = 2147483647, 48271


def sample(ctx, logits):
    """The sampled token at the prompt's last token, or a message saying which input is not valid."""
    V = logits.height
    last = ctx.at_last_position(logits, ctx.title + ": the logits at the prompt's last token")
    steps = ctx.cfg.n_positions + 4  # SampleStep 0 .. context
    states = ctx.block(
        ctx.rows("MINSTD state s(k)", steps),
        ctx.title + ": random numbers, s(k+1) = MOD(s(k)·48271, 2147483647)",
        width=1,
    )
    ctx.each(states.row(0), "{seed}", IDS, seed=C.SEED)
    ctx.each(states.rows(1, steps), "MOD({s}*{a},{m})", IDS, s=lambda k, _: states.cell(k, 0), a=MULTIPLIER, m=MODULUS)
    scalars = ctx.block(
        [
            ("k: how many tokens are kept", None),
            ("the k-th largest logit", None),
            ("logits above it", None),
            ("largest logit", None),
            ("u = s(SampleStep + 3) / 2147483647", None),
            ("sum of the kept weights", None),
        ],
        ctx.title + ": the numbers the draw needs",
        width=1,
    )
    keep, kth, above, largest, u, total = (scalars.row(i) for i in range(6))
    ctx.each(keep, "IF(OR({k}=0,{k}>={V}),{V},{k})", k=C.TOP_K, V=V)
    ctx.each(kth, "LARGE({l},{keep})", l=last, keep=keep)
    ctx.each_array(above, "SUM(IF({l}>{kth},1,0))", l=last, kth=kth)
    ctx.each(largest, "MAX({l})", l=last)
    ctx.each(u, "INDEX({states},{step}+4)/{m}", states=states, step=C.SAMPLE_STEP, m=MODULUS)
    columns = ctx.block(
        [(text, i) for i, text in enumerate(ctx.vocab or ["token"] * V)],
        ctx.title + ": per token: ties at the k-th logit before it, kept, weight, probability, cumulative probability",
        width=5,
    )
    ties, kept, weight, p, cumulative = (columns.col(j) for j in range(5))
    ctx.each(ties.row(0), "0", IDS)
    ctx.each(
        ties.rows(1, V),
        "{before}+IF({l}={kth},1,0)",
        IDS,
        before=lambda v, _: ties.cell(v, 0),
        l=lambda v, _: last.cell(v, 0),
        kth=kth,
    )
    ctx.array(
        kept,
        "IF({l}>{kth},1,IF({l}={kth},IF({ties}<{keep}-{above},1,0),0))",
        l=last,
        kth=kth,
        ties=ties,
        keep=keep,
        above=above,
    )
    ctx.array(weight, "IF({kept}=1,EXP(({l}-{largest})/{t}),0)", kept=kept, l=last, largest=largest, t=C.TEMPERATURE)
    ctx.each(total, "SUM({w})", w=weight)
    ctx.array(p, "{w}/{total}", w=weight, total=total)
    ctx.each(cumulative.row(0), "{p}", PERCENT, p=p.cell(0, 0))
    ctx.each(
        cumulative.rows(1, V),
        "{before}+{p}",
        PERCENT,
        before=lambda v, _: cumulative.cell(v, 0),
        p=lambda v, _: p.cell(v + 1, 0),
    )
    ctx.tab.heatmap(p, ctx.heat)
    result = ctx.block([("sampled token id", None), ("its text", None)], ctx.title + ": the draw", width=1)
    token = result.row(0)
    checks = (
        f"IF(NOT(AND(ISNUMBER({C.SEED}),{C.SEED}=INT({C.SEED}),{C.SEED}>=1,{C.SEED}<={MODULUS - 1})),"
        f'"Seed must be a whole number from 1 to {MODULUS - 1}.",'
        f'IF(NOT(AND(ISNUMBER({C.TEMPERATURE}),{C.TEMPERATURE}>=0)),"Temperature must be a number, 0 or more.",'
        f"IF(NOT(AND(ISNUMBER({C.TOP_K}),{C.TOP_K}=INT({C.TOP_K}),{C.TOP_K}>=0)),"
        f'"TopK must be a whole number, 0 or more.",'
        f"IF(NOT(AND(ISNUMBER({C.SAMPLE_STEP}),{C.SAMPLE_STEP}=INT({C.SAMPLE_STEP}),{C.SAMPLE_STEP}>=0,"
        f'{C.SAMPLE_STEP}<={steps - 4})),"SampleStep must be a whole number from 0 to {steps - 4}.",'
    )
    ctx.each_array(
        token,
        checks + "IF({t}=0,MATCH({largest},{l},0)-1,MIN(SUM(IF({cum}<={u},1,0)),{V}-1))))))",
        t=C.TEMPERATURE,
        largest=largest,
        l=last,
        cum=cumulative,
        u=u,
        V=V,
    )
    ctx.tab.format(token, IDS)
    if ctx.vocab is not None:
        ctx.each(result.row(1), 'IF(ISNUMBER({id}),INDEX({vocab},{id}+1),"")', id=token, vocab=C.VOCABULARY)
    ctx.name(C.SAMPLED_TOKEN, token)
    return token
