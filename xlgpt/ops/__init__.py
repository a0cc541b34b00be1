"""Ops: how a stage of the template becomes cells. Each op is a short function op(ctx, *inputs) -> Rect
(or a list of Rects, one per attention head) whose docstring states its math; `ctx` (compile/lower.py)
gives it blocks on its tab, its weights and formula rendering relative to the tab.

OPS is the explicit registry the template is checked against: name -> (function, inputs, param roles).
"""
from dataclasses import dataclass

from . import attention, embedding, mlp, norm, output, projection, residual


@dataclass(frozen=True)
class Op:
    lower: object       # lower(ctx, *inputs)
    inputs: int         # how many earlier outputs it reads (`in`)
    params: tuple = ()  # the checkpoint tensors it reads, by role (`params`)


OPS = {
    "tokens": Op(embedding.tokens, 0),
    "embedding": Op(embedding.token_embedding, 1, ("table",)),
    "positions": Op(embedding.position_embedding, 0, ("table",)),
    "add": Op(residual.add, 2),
    "layernorm": Op(norm.layernorm, 1, ("weight", "bias")),
    "linear": Op(projection.linear, 1, ("weight", "bias")),
    "qkv": Op(projection.qkv, 1, ("weight", "bias")),
    "attention_scores": Op(attention.scores, 1),
    "causal_mask": Op(attention.causal_mask, 1),
    "softmax": Op(attention.softmax, 1),
    "attention_mix": Op(attention.mix, 2),
    "gelu": Op(mlp.gelu, 1),
    "unembed": Op(output.unembed, 1, ("table",)),
    "argmax": Op(output.argmax, 1),
}
