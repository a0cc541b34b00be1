"""Dev-only: make the committed fixtures that the interventions (head and MLP switches, steering) are tested on.

Needs torch and transformers (pip install torch==2.13.0 transformers); CI does not run this.
For each shape it takes a seeded random checkpoint written by xlgpt (the `tiny` fixture's, or a new one in
the same layout), runs it through transformers' GPT2LMHeadModel with PyTorch forward hooks that make each
intervention the way an interpretability person would, and stores the tokens, the edits and the logits in
tests/fixtures/interventions.json, so the reference's Edits are checked against an independent implementation:

  head switch   a forward pre-hook on transformer.h[l].attn.c_proj scales its input's columns h*d:(h+1)*d
                (head h's mixed values, before the output projection)
  MLP switch    a forward hook on transformer.h[l].mlp scales its output (before the residual add)
  steering      a forward pre-hook on transformer.h[L] adds c * v to the hidden states entering block L

    python tests/make_intervention_fixtures.py
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2LMHeadModel

from xlgpt.model.checkpoint import Config, random_tensors, save

HERE = Path(__file__).resolve().parent / "fixtures"
OUT = HERE / "interventions.json"

# name: (config, seed, tokens); `tiny` is make_fixtures.py's checkpoint, the others are written here
SHAPES = {
    "tiny": (Config(2, 16, 4, 40, 8), 1, [5, 17, 3, 39, 0]),
    "three_layers": (Config(3, 12, 3, 24, 6), 11, [3, 23, 0, 9, 14]),
    "one_layer": (Config(1, 8, 2, 20, 5), 12, [19, 2, 7, 7]),
}


def cases(cfg, rng):
    """{case: edits as plain lists} for one shape: one head off, one head halved, an MLP off, one MLP
    halved, steering, and everything at once."""
    L, H, C = cfg.n_layer, cfg.n_head, cfg.n_embd

    def edits(heads=None, mlps=None, layer=0, coef=0.0, vector=None):
        return {
            "head_switches": heads or [[1.0] * H for _ in range(L)],
            "mlp_switches": mlps or [1.0] * L,
            "steering_layer": layer,
            "steering_coefficient": coef,
            "steering_vector": vector or [0.0] * C,
        }

    def one_head(value):
        heads = [[1.0] * H for _ in range(L)]
        heads[int(rng.integers(L))][int(rng.integers(H))] = value
        return heads

    def mlp(value):
        mlps = [1.0] * L
        mlps[int(rng.integers(L))] = value
        return mlps

    vector = lambda: [round(float(x), 3) for x in rng.normal(size=C)]
    steer_layer = L - 1 if L > 1 else 0
    return {
        "head_off": edits(heads=one_head(0.0)),
        "head_half": edits(heads=one_head(0.5)),
        "mlp_off": edits(mlps=mlp(0.0)),
        "mlp_half": edits(mlps=mlp(0.5)),
        "steering": edits(layer=steer_layer, coef=2.5, vector=vector()),
        "combined": edits(
            heads=[[round(float(x), 2) for x in row] for row in rng.uniform(0, 1.5, size=(L, H))],
            mlps=[round(float(x), 2) for x in rng.uniform(0, 1.5, size=L)],
            layer=int(rng.integers(L)),
            coef=-1.75,
            vector=vector(),
        ),
    }


def hooked_logits(model, cfg, tokens, e):
    """Logits [T, vocab] with the edits made by hooks on the transformers modules."""
    d = cfg.head_size
    handles = []
    for i, block in enumerate(model.transformer.h):
        scale = torch.tensor(e["head_switches"][i], dtype=torch.float64).repeat_interleave(d)  # [C]: head h's columns

        def heads(module, args, scale=scale):  # c_proj's input: the heads' mixed values side by side
            return (args[0] * scale,) + args[1:]

        def mlp(module, args, output, s=e["mlp_switches"][i]):
            return output * s

        handles += [block.attn.c_proj.register_forward_pre_hook(heads), block.mlp.register_forward_hook(mlp)]
    add = e["steering_coefficient"] * torch.tensor(e["steering_vector"], dtype=torch.float64)

    def steer(module, args, kwargs):  # hidden_states entering block L: the first argument or a keyword
        if args:
            return (args[0] + add,) + args[1:], kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + add}

    handles.append(model.transformer.h[e["steering_layer"]].register_forward_pre_hook(steer, with_kwargs=True))
    try:
        with torch.no_grad():
            return model(torch.tensor([tokens])).logits[0].numpy()
    finally:
        for h in handles:
            h.remove()


def main():
    torch.manual_seed(0)
    shapes = {}
    for name, (cfg, seed, tokens) in SHAPES.items():
        path = HERE / name
        if name != "tiny":  # tiny is make_fixtures.py's, with the same config and seed
            shutil.rmtree(path, ignore_errors=True)
            save(path, cfg, random_tensors(cfg, seed))
        model = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float64).eval()  # eval(): no dropout
        assert (
            model.config.activation_function == "gelu_new" and model.config.layer_norm_epsilon == cfg.layer_norm_epsilon
        )
        plain = model(torch.tensor([tokens])).logits[0].detach().numpy()
        rng = np.random.default_rng(seed)
        entry = {"checkpoint": name, "tokens": tokens, "cases": {}}
        for case, edits in cases(cfg, rng).items():
            logits = hooked_logits(model, cfg, tokens, edits)
            entry["cases"][case] = {**edits, "logits": [[float(x) for x in row] for row in logits]}
            print(
                f"{name} {case}: max |change| {np.abs(logits - plain).max():.3f}, next token {int(logits[-1].argmax())}"
            )
        shapes[name] = entry
    OUT.write_text(
        json.dumps(
            {
                "source": "transformers GPT2LMHeadModel, float64, edits made by forward hooks "
                "(tests/make_intervention_fixtures.py)",
                "shapes": shapes,
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
