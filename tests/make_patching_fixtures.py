"""Dev-only: make tests/fixtures/patching_tl.json, TransformerLens' own activation patching and head detection
on the bundled checkpoint, so that the reference's activation_patching and head_scores are checked against the
library whose conventions they claim to follow. CI does not run this; test_patching_tl.py reads its output.

Needs torch, transformers and transformer-lens with HookedTransformer (3.x; 4.0 removed it), and xlgpt's own
dependencies (it imports xlgpt from this work tree), in a venv of its own, for example:

    python -m venv /work/tl-venv
    /work/tl-venv/bin/pip install torch "transformer-lens==3.9.0" openpyxl "formulas>=1.3.4,<1.4" "ironcalc<0.10"
    /work/tl-venv/bin/python tests/make_patching_fixtures.py

The checkpoint goes into a HookedTransformer through TransformerLens' own GPT-2 weight conversion, with no
weight processing (no LayerNorm folding, no centering), and its logits are checked against the reference's
before anything is written. Then, on the patching lesson's prompts, transformer_lens.patching's
get_act_patch_resid_pre / attn_out / mlp_out ([layer, position]) and get_act_patch_attn_head_out_all_pos
([layer, head]) with the normalised logit difference; and, on 9 seeded random tokens twice (the induction
lesson's prompt), transformer_lens.head_detector.detect_head for the three named head kinds with the "mul"
measure and neither exclusion.
"""

import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.head_detector import detect_head
from transformer_lens.patching import (
    get_act_patch_attn_head_out_all_pos,
    get_act_patch_attn_out,
    get_act_patch_mlp_out,
    get_act_patch_resid_pre,
)
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
from transformers import GPT2LMHeadModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # xlgpt from this work tree, without installing it (or its engines) here

from xlgpt.model import reference  # noqa: E402
from xlgpt.model.checkpoint import as_written, load  # noqa: E402
from xlgpt.tokenizer import hf  # noqa: E402

BUNDLED = ROOT / "weights" / "shakespeare"
OUT = ROOT / "tests" / "fixtures" / "patching_tl.json"
CLEAN, CORRUPTED, ANSWER, FOIL = "I know him, and I love", "I know her, and I love", " him", " her"
REPEAT, SEED = 9, 0  # xlgpt build --repeat-random 9 (seed 0)
DETECTORS = {"previous": "previous_token_head", "induction": "induction_head", "duplicate": "duplicate_token_head"}


def hooked_transformer(ckpt):
    """The checkpoint as a HookedTransformer: transformers' GPT2LMHeadModel reads the safetensors (LM head tied
    to wte), TransformerLens' convert_gpt2_weights splits it into its own parameters, unprocessed."""
    c = ckpt.config
    hf_model = GPT2LMHeadModel.from_pretrained(BUNDLED, torch_dtype=torch.float32).eval()
    cfg = HookedTransformerConfig(
        d_model=c.n_embd,
        d_head=c.n_embd // c.n_head,
        n_heads=c.n_head,
        d_mlp=4 * c.n_embd,
        n_layers=c.n_layer,
        n_ctx=c.n_positions,
        d_vocab=c.vocab_size,
        act_fn="gelu_new",
        normalization_type="LN",
        eps=c.layer_norm_epsilon,
        default_prepend_bos=False,
        dtype=torch.float32,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    missing, unexpected = model.load_state_dict(convert_gpt2_weights(hf_model, cfg), strict=False)
    # what convert_gpt2_weights leaves out are the model's own buffers (causal masks, IGNORE) and the unembedding
    # bias, which GPT-2 has none of (HookedTransformer starts it at zero)
    assert not unexpected, unexpected
    assert all(k.endswith(("mask", "IGNORE")) or k == "unembed.b_U" for k in missing), missing
    assert not model.unembed.b_U.abs().any()
    return model.eval()


def detected(model, ids, name):
    """detect_head(name) on the token ids, "mul" measure, neither exclusion. detect_head takes text and reads its
    tokens with model.to_tokens, its only use of the text; random ids need not come back from their decoding, so
    for this call to_tokens gives the ids themselves."""
    model.to_tokens = lambda seq, **kwargs: torch.tensor([ids])
    try:
        return detect_head(model, "", name, exclude_bos=False, exclude_current_token=False, error_measure="mul")
    finally:
        del model.to_tokens


def floats(t):
    """A tensor as nested lists of Python floats (float32's value, printed shortest)."""
    return np.asarray(t.detach().cpu(), dtype=np.float32).tolist()


def main():
    torch.set_grad_enabled(False)
    ckpt = as_written(load(BUNDLED))
    tok = hf.for_checkpoint(ckpt)
    model = hooked_transformer(ckpt)

    clean, corrupted = (tok.encode(t) for t in (CLEAN, CORRUPTED))
    (answer,), (foil,) = (tok.encode(t) for t in (ANSWER, FOIL))
    ids = np.random.default_rng(SEED).integers(0, ckpt.config.vocab_size, REPEAT).tolist() * 2  # repeated_random_tokens

    for tokens in (clean, corrupted, ids):  # the two implementations run the same model
        got = model(torch.tensor([tokens]))[0].double().numpy()
        worst = np.abs(got - reference.logits(ckpt, tokens)).max()
        assert worst < 1e-4, f"TransformerLens' logits differ from the reference's by {worst}"
        print(f"logits of {len(tokens)} tokens: largest difference {worst:.2e}")

    clean_t, corrupted_t = torch.tensor([clean]), torch.tensor([corrupted])
    clean_logits, clean_cache = model.run_with_cache(clean_t)
    corrupted_logits = model(corrupted_t)
    logit_diff = lambda logits: logits[0, -1, answer] - logits[0, -1, foil]
    clean_diff, corrupted_diff = logit_diff(clean_logits), logit_diff(corrupted_logits)
    metric = lambda logits: (logit_diff(logits) - corrupted_diff) / (clean_diff - corrupted_diff)
    patching = {
        name: floats(f(model, corrupted_t, clean_cache, metric))
        for name, f in [
            ("resid_pre", get_act_patch_resid_pre),
            ("attn_out", get_act_patch_attn_out),
            ("mlp_out", get_act_patch_mlp_out),
            ("head", get_act_patch_attn_head_out_all_pos),
        ]
    }

    detectors = {kind: floats(detected(model, ids, name)) for kind, name in DETECTORS.items()}

    OUT.write_text(
        json.dumps(
            {
                "made_by": "tests/make_patching_fixtures.py",
                "versions": {"torch": torch.__version__, "transformer_lens": version("transformer-lens")},
                "patching": {
                    "clean": clean,
                    "corrupted": corrupted,
                    "answer": answer,
                    "foil": foil,
                    "logit_diff": {"clean": float(clean_diff), "corrupted": float(corrupted_diff)},
                    **patching,
                },
                "head_detector": {"tokens": ids, **detectors},
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
