"""Causal self-attention, one T x T block per head: rows are key positions, columns query positions.
softmax over keys of (k·q / sqrt(head size), the future masked), then the values weighted by it. Query t's
column reads the keys and values of positions 0..t only: causality lives in the ranges, and a new token
leaves the earlier columns as they are (the sheet's KV cache)."""

from xlgpt.compile.ops.projection import head
from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import PERCENT, SCORE, colour_scale, diverging_scale

Q, K, V = 0, 1, 2
MASKED = "-1E+30"  # exp(MASKED - max) is exactly 0


def scores(ctx, qkv):
    """s[key, query] = k_key · q_query / sqrt(d), per head, for the keys up to the query (the cells below
    the diagonal; the later keys' cells stay empty)."""
    d = ctx.cfg.head_size

    def causal(h, block):
        k, q = head(qkv, K, h, ctx.cfg), head(qkv, Q, h, ctx.cfg)
        for t in range(ctx.T):
            ctx.array(
                block.col(t).rows(0, t + 1), "MMULT(TRANSPOSE({k}),{q})/SQRT({d})", k=k.cols(0, t + 1), q=q.col(t), d=d
            )

    return [ctx.tab.heatmap(b, colour_scale()) for b in ctx.per_head(causal)]


def causal_mask(ctx, scores):
    """s[key, query] stays where key <= query, else MASKED: a query never sees later tokens."""
    blocks = ctx.per_head(
        lambda h, block: (
            "IF({key}<={query},{s},{masked})",
            dict(key=block.index_column(), query=ctx.positions, s=scores[h], masked=MASKED),
        ),
        "masked scores",
    )
    return [ctx.tab.format(b, SCORE) for b in blocks]


def softmax(ctx, s):
    """p[key, query] = exp(s - max) / sum exp(s - max), over the keys of each column."""
    heads = [(f"head {h}", None) for h in range(ctx.cfg.n_head)]
    mx = ctx.block(heads, ctx.title + ": largest score in each column")
    ctx.each(mx, "MAX({s})", s=lambda h, t: s[h].col(t))
    exp = ctx.per_head(
        lambda h, _: ("EXP({s}-{mx})", dict(s=s[h], mx=mx.row(h))), "exp", ctx.title + ": exp(score − largest score)"
    )
    sums = ctx.block(heads, ctx.title + ": sum of each column of exp(score - max)")
    ctx.each(sums, "SUM({e})", e=lambda h, t: exp[h].col(t))
    probs = ctx.per_head(
        lambda h, _: ("{e}/{sum}", dict(e=exp[h], sum=sums.row(h))),
        "attention weights",
        ctx.title + ": the attention weights, exp / sum (the heatmap)",
    )
    return [ctx.tab.heatmap(ctx.tab.format(p, PERCENT), ctx.heat) for p in probs]


def mix(ctx, probs, qkv):
    """out_h[:, query] = HeadSwitches[layer, h] · sum over keys of p[key, query] · v_key, heads stacked (head
    0's rows first). A switch of 1 keeps the head; 0 ablates it."""
    d = ctx.cfg.head_size
    labels = [(f"head {h}", i) for h in range(ctx.cfg.n_head) for i in range(d)]
    out = ctx.block(labels)
    switches = ctx.lowering.named.get(C.HEAD_SWITCHES)  # a training book has none
    for h in range(ctx.cfg.n_head):
        v = head(qkv, V, h, ctx.cfg)
        for t in range(ctx.T):  # the values of positions 0..t only
            ctx.array(
                out.rows(h * d, (h + 1) * d).col(t),
                "MMULT({v},{p})" + ("*{switch}" if switches else ""),
                v=v.cols(0, t + 1),
                p=probs[h].col(t).rows(0, t + 1),
                switch=switches and switches.cell(ctx.stage.layer, h),
            )
    return out


def mix_backward(ctx, dout, probs, qkv):
    """out_h[:, t] = Σ_{key≤t} p[key, t] · v_key: ∂L/∂p[key, t] = v_key · ∂L/∂out_h[:, t] and
    ∂L/∂v_key = Σ_{t≥key} p[key, t] · ∂L/∂out_h[:, t] (times the head's switch, if the book has them)."""
    cfg, T, d = ctx.cfg, ctx.T, ctx.cfg.head_size
    switch = ctx.head_switch
    ctx.title = f"∂L/∂{ctx.input_name(0)}[key, t] = v_key · ∂L/∂{ctx.stage.name}[head rows, t]{switch.note}"

    def dp(h, block):
        v, dh = head(qkv, V, h, cfg), dout.rows(h * d, (h + 1) * d)
        for t in range(T):
            ctx.tab.array(
                block.col(t).rows(0, t + 1),
                "MMULT(TRANSPOSE({v}),{dh})" + switch.times(h),
                v=v.cols(0, t + 1),
                dh=dh.col(t),
            )

    dprobs = ctx.per_head(dp, f"∂L/∂{ctx.input_name(0)}")
    dv = ctx.block(
        [(f"∂L/∂v head {h}", i) for h in range(cfg.n_head) for i in range(d)],
        f"∂L/∂v_key = Σ over queries t ≥ key of {ctx.input_name(0)}[key, t] · ∂L/∂{ctx.stage.name}[:, t]{switch.note}",
    )
    for h in range(cfg.n_head):
        dh = dout.rows(h * d, (h + 1) * d)
        for key in range(T):
            ctx.tab.array(
                dv.rows(h * d, (h + 1) * d).col(key),
                "MMULT({dh},TRANSPOSE({p}))" + switch.times(h),
                dh=dh.cols(key, T),
                p=probs[h].row(key).cols(key, T),
            )
    return [dprobs, {2 * cfg.n_embd: dv}]


def softmax_backward(ctx, dp, s):
    """p = softmax(s) over the keys of each column:
    ∂L/∂s[key, t] = p[key, t] · (∂L/∂p[key, t] − Σ_keys p · ∂L/∂p), the keys up to t (the masked ones have
    p = 0, and so no gradient)."""
    p, T = ctx.out, ctx.T
    heads = [(f"head {h}", None) for h in range(ctx.cfg.n_head)]
    dots = ctx.block(heads, f"Σ over keys of {ctx.stage.name} · ∂L/∂{ctx.stage.name}, for each column")
    ctx.each(
        dots,
        "SUMPRODUCT({p},{dp})",
        p=lambda h, t: p[h].col(t).rows(0, t + 1),
        dp=lambda h, t: dp[h].col(t).rows(0, t + 1),
    )
    ctx.title = (
        f"∂L/∂{ctx.input_name(0)} = {ctx.stage.name} · (∂L/∂{ctx.stage.name} − that sum); "
        f"the causal mask passes it through to the scores"
    )

    def ds(h, block):
        for t in range(T):
            ctx.tab.array(
                block.col(t).rows(0, t + 1),
                "{p}*({dp}-{dot})",
                p=p[h].col(t).rows(0, t + 1),
                dp=dp[h].col(t).rows(0, t + 1),
                dot=dots.cell(h, t),
            )

    blocks = ctx.per_head(ds, f"∂L/∂{ctx.input_name(0)}")
    # red: raising that score would lower the loss; blue: raise it
    return [[ctx.tab.heatmap(b, diverging_scale()) for b in blocks]]


def causal_mask_backward(ctx, ds, scores):
    """The kept scores pass their gradient through unchanged; the masked ones have none (no cells)."""
    return [ds]


def scores_backward(ctx, ds, qkv):
    """s[key, t] = k_key · q_t / sqrt(d): ∂L/∂q_t = Σ_{key≤t} ∂L/∂s[key, t] · k_key / sqrt(d) and
    ∂L/∂k_key = Σ_{t≥key} ∂L/∂s[key, t] · q_t / sqrt(d)."""
    cfg, T, d, C = ctx.cfg, ctx.T, ctx.cfg.head_size, ctx.cfg.n_embd
    s = ctx.stage.name
    dq = ctx.block(
        [(f"∂L/∂q head {h}", i) for h in range(cfg.n_head) for i in range(d)],
        f"∂L/∂q_t = Σ over keys ≤ t of ∂L/∂{s}[key, t] · k_key / sqrt({d})",
    )
    dk = ctx.block(
        [(f"∂L/∂k head {h}", i) for h in range(cfg.n_head) for i in range(d)],
        f"∂L/∂k_key = Σ over queries t ≥ key of ∂L/∂{s}[key, t] · q_t / sqrt({d})",
    )
    for h in range(cfg.n_head):
        k, q, rows = head(qkv, K, h, cfg), head(qkv, Q, h, cfg), (h * d, (h + 1) * d)
        for t in range(T):
            ctx.tab.array(
                dq.rows(*rows).col(t),
                "MMULT({k},{ds})/SQRT({d})",
                k=k.cols(0, t + 1),
                ds=ds[h].col(t).rows(0, t + 1),
                d=d,
            )
            ctx.tab.array(
                dk.rows(*rows).col(t),
                "MMULT({q},TRANSPOSE({ds}))/SQRT({d})",
                q=q.cols(t, T),
                ds=ds[h].row(t).cols(t, T),
                d=d,
            )
    return [{0: dq, C: dk}]
