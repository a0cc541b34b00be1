"""A sparse autoencoder's features on the residual stream entering one block (SAELens' hook_resid_pre):
f = ReLU(W_encᵀ · (x − b_dec) + b_enc), one row per feature, one column per position; the strongest
features at each position on top, labelled."""

from xlgpt.sheet import contract as C
from xlgpt.sheet.styles import IDS, NUMBER

TOP = 3  # features listed per position


def features(ctx, streams):
    """Feature activations of the stream entering the SAE's block, and the top features at each position."""
    sae, tab = ctx.sae, ctx.tab
    if sae is None:
        tab.note(
            "This workbook has no sparse autoencoder: build it with --sae FOLDER_OR_REPO (the bundled "
            "model's books include its own)."
        )
        return None
    labels = [feature_label(sae, i) for i in range(sae.d_sae)]
    tab.note(
        f"SAE: {sae.path.name}, {sae.d_sae} features on the residual stream entering block {sae.layer} "
        f"({sae.hook_name}). Feature labels: the tokens each fires on most.",
        gap=1,
    )
    top = ctx.block(
        [(f"top {r + 1} feature", None) for r in range(TOP)] + [(f"top {r + 1} activation", None) for r in range(TOP)],
        "The strongest features at each position",
    )
    label_rows = ctx.block([(f"top {r + 1} label", None) for r in range(TOP)], "Their labels")
    x = ctx.stream_entering(sae.layer)
    w_enc = ctx.place("W_enc, transposed: row = feature", sae.W_enc.T, labels)
    b_enc, b_dec = ctx.place("b_enc", sae.b_enc), ctx.place("b_dec", sae.b_dec)
    centred = ctx.block(ctx.rows("x − b_dec", sae.d_in), f"The residual stream entering block {sae.layer}, minus b_dec")
    ctx.array(centred, "{x}-{b}", x=x, b=b_dec)
    pre = ctx.block(ctx.rows("pre-activation", sae.d_sae), "W_encᵀ · (x − b_dec) + b_enc")
    ctx.product(pre, "MMULT({w},{x})+{b}", "0*{b}", w=w_enc, x=centred, b=b_enc)
    acts = ctx.block([(label, i) for i, label in enumerate(labels)], "Feature activations f = ReLU(pre-activation)")
    ctx.array(acts, "IF({pre}>0,{pre},0)", pre=pre)
    tab.heatmap(acts, ctx.heat_from_zero)
    ids, values = top.rows(0, TOP), top.rows(TOP, 2 * TOP)
    ctx.each(values, "LARGE({f},{r})", f=lambda _, t: acts.col(t), r=lambda r, _: r + 1)
    ctx.each(ids, "MATCH({v},{f},0)-1", IDS, v=lambda r, t: values.cell(r, t), f=lambda _, t: acts.col(t))
    ctx.each(label_rows, "INDEX({labels},{id}+1)", labels=acts.label_column(), id=lambda r, t: ids.cell(r, t))
    tab.format(ids, IDS)
    tab.format(values, NUMBER)
    tab.widen(label_rows, max(len(label) for label in labels) + 1)  # every label in full
    ctx.name(C.FEATURE_ACTIVATIONS, acts)
    ctx.name(C.TOP_FEATURES, ids)
    return acts


def feature_label(sae, i):
    for f in (sae.features or {}).get("features", []):
        if f.get("index") == i:
            return f"{i}: {f.get('label', '')}"
    return f"feature {i}"
