"""Causal self-attention, one T x T block per head: rows are key positions, columns query positions.
softmax over keys of (k·q / sqrt(head size), the future masked), then the values weighted by it. Query t's
column reads the keys and values of positions 0..t only: causality lives in the ranges, and a new token
leaves the earlier columns as they are (the sheet's KV cache)."""
from .. import contract as C
from ..xlsx.styles import PERCENT, SCORE, colour_scale
from .projection import head

Q, K, V = 0, 1, 2
MASKED = "-1E+30"  # exp(MASKED - max) is exactly 0


def scores(ctx, qkv):
    """s[key, query] = k_key · q_query / sqrt(d), per head, for the keys up to the query (the cells below
    the diagonal; the later keys' cells stay empty)."""
    d = ctx.cfg.head_size

    def causal(h, block):
        k, q = head(qkv, K, h, ctx.cfg), head(qkv, Q, h, ctx.cfg)
        for t in range(ctx.T):
            ctx.array(block.col(t).rows(0, t + 1), "MMULT(TRANSPOSE({k}),{q})/SQRT({d})", k=k.cols(0, t + 1),
                      q=q.col(t), d=d)
    return [ctx.tab.heatmap(b, colour_scale()) for b in ctx.per_head(causal)]


def causal_mask(ctx, scores):
    """s[key, query] stays where key <= query, else MASKED: a query never sees later tokens."""
    blocks = ctx.per_head(lambda h, block: ("IF({key}<={query},{s},{masked})",
                                            dict(key=block.index_column(), query=ctx.positions, s=scores[h],
                                                 masked=MASKED)))
    return [ctx.tab.format(b, SCORE) for b in blocks]


def softmax(ctx, s):
    """p[key, query] = exp(s - max) / sum exp(s - max), over the keys of each column."""
    heads = [(f"head {h}", None) for h in range(ctx.cfg.n_head)]
    mx = ctx.block(heads, ctx.title + ": largest score in each column")
    ctx.each(mx, "MAX({s})", s=lambda h, t: s[h].col(t))
    exp = ctx.per_head(lambda h, _: ("EXP({s}-{mx})", dict(s=s[h], mx=mx.row(h))))
    sums = ctx.block(heads, ctx.title + ": sum of each column of exp(score - max)")
    ctx.each(sums, "SUM({e})", e=lambda h, t: exp[h].col(t))
    probs = ctx.per_head(lambda h, _: ("{e}/{sum}", dict(e=exp[h], sum=sums.row(h))))
    return [ctx.tab.heatmap(ctx.tab.format(p, PERCENT), ctx.heat) for p in probs]


def mix(ctx, probs, qkv):
    """out_h[:, query] = HeadSwitches[layer, h] · sum over keys of p[key, query] · v_key, heads stacked (head
    0's rows first). A switch of 1 keeps the head; 0 ablates it."""
    d = ctx.cfg.head_size
    labels = [(f"head {h}", i) for h in range(ctx.cfg.n_head) for i in range(d)]
    out = ctx.block(labels)
    for h in range(ctx.cfg.n_head):
        v = head(qkv, V, h, ctx.cfg)
        for t in range(ctx.T):  # the values of positions 0..t only
            ctx.array(out.rows(h * d, (h + 1) * d).col(t), "MMULT({v},{p})*{switch}", v=v.cols(0, t + 1),
                      p=probs[h].col(t).rows(0, t + 1), switch=ctx.named(C.HEAD_SWITCHES).cell(ctx.stage.layer, h))
    return out
