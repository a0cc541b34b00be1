"""Ops: how a stage of the template becomes cells. Each op is a short function op(ctx, *inputs) -> Rect
(or a list of Rects, one per attention head) whose docstring states its math, and whose formulas are its only
statement of it (compile/values.py computes their cached values from them); `ctx` (compile/context.py) gives
it blocks on its tab, its weights and formula rendering relative to the tab.

OPS is the explicit registry the template is checked against: name -> (function, inputs, param roles).
"""

from dataclasses import dataclass

from xlgpt.compile.ops import (
    attention,
    attribution,
    embedding,
    features,
    heads,
    interventions,
    lens,
    mlp,
    norm,
    output,
    patching,
    projection,
    residual,
    sampling,
    training,
)


@dataclass(frozen=True)
class Op:
    lower: object  # lower(ctx, *inputs)
    inputs: int  # how many earlier outputs it reads (`in`; "name*" reads every output of that name)
    params: tuple = ()  # the checkpoint tensors it reads, by role (`params`)
    group: str = "model"  # the colour of the tab it starts (layout.GROUPS)
    header: bool = True  # its tab has positions as columns under a frozen header
    backward: object = None  # backward(ctx, ∂L/∂output, *inputs) -> ∂L/∂inputs (compile/backward.py)


OPS = {
    "tokens": Op(embedding.tokens, 0),
    "embedding": Op(embedding.token_embedding, 1, ("table",), backward=embedding.token_embedding_backward),
    "positions": Op(embedding.position_embedding, 0, ("table",), backward=embedding.position_embedding_backward),
    "add": Op(residual.add, 2, backward=residual.add_backward),
    "layernorm": Op(norm.layernorm, 1, ("weight", "bias"), backward=norm.layernorm_backward),
    "linear": Op(projection.linear, 1, ("weight", "bias"), backward=projection.linear_backward),
    "qkv": Op(projection.qkv, 1, ("weight", "bias"), backward=projection.linear_backward),
    "attention_scores": Op(attention.scores, 1, backward=attention.scores_backward),
    "causal_mask": Op(attention.causal_mask, 1, backward=attention.causal_mask_backward),
    "softmax": Op(attention.softmax, 1, backward=attention.softmax_backward),
    "attention_mix": Op(attention.mix, 2, backward=attention.mix_backward),
    "gelu": Op(mlp.gelu, 1, backward=mlp.gelu_backward),
    "unembed": Op(output.unembed, 1, ("table",), backward=output.unembed_backward),
    "cross_entropy": Op(training.cross_entropy, 1, group="training", backward=training.cross_entropy_backward),
    "argmax": Op(output.argmax, 1),
    "probabilities": Op(output.probabilities, 1),
    "top_k": Op(output.top_k, 1),
    "sample": Op(sampling.sample, 1),
    "lens": Op(lens.lens, 1, ("weight", "bias", "table")),
    "lens_table": Op(lens.lens_table, 1, group="interpretability"),
    "steer": Op(interventions.steer, 1, backward=interventions.steer_backward),
    "mlp_switch": Op(interventions.mlp_switch, 1, backward=interventions.mlp_switch_backward),
    "patch_resid_pre": Op(patching.patch("resid_pre"), 1, backward=patching.patch_backward),
    "patch_attn_out": Op(patching.patch("attn_out"), 1, backward=patching.patch_backward),
    "patch_mlp_out": Op(patching.patch("mlp_out"), 1, backward=patching.patch_backward),
    "patch_head": Op(patching.patch("head"), 1, backward=patching.patch_backward),
    "interventions": Op(interventions.panel, 0, group="interpretability", header=False),
    "features": Op(features.features, 1, group="interpretability"),
    "attribution": Op(attribution.attribution, 2, ("weight", "bias")),
    "head_detectors": Op(heads.head_detectors, 1, group="interpretability"),
    "attribution_table": Op(
        attribution.attribution_table, 3, ("weight", "bias", "table"), group="interpretability", header=False
    ),
}
