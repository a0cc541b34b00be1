"""Dev-only: make the committed Hugging Face fixtures that the reference and the workbook are tested on.

Needs torch and transformers (pip install torch==2.13.0 transformers); CI does not run this.
For each shape it writes a seeded random checkpoint with xlgpt, runs it through transformers'
GPT2LMHeadModel and stores the logits it computes, so the tests compare against an independent
implementation.

    python tests/make_fixtures.py
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import GPT2LMHeadModel

from xlgpt.model.checkpoint import Config, random_tensors, save

HERE = Path(__file__).resolve().parent / "fixtures"

# name: (config, seed, tokens)
FIXTURES = {
    "tiny": (Config(2, 16, 4, 40, 8), 1, [5, 17, 3, 39, 0]),
    "three_heads": (Config(2, 24, 3, 50, 10), 2, [7, 7, 1, 49, 12, 30, 2]),  # 64 % 3 != 0
    "single_token": (Config(1, 16, 2, 30, 4), 3, [11]),
    "full_context": (Config(1, 12, 2, 25, 6), 4, [0, 24, 3, 3, 9, 17]),
    "hf_layout": (Config(2, 16, 4, 35, 8), 5, [1, 2, 3, 34]),  # transformer. prefix, mask buffers, lm_head
}


def hf_layout(path, cfg, tensors):
    """Rewrite the checkpoint the way some exports store it: prefixed keys, mask buffers, explicit lm_head."""
    keyed = {f"transformer.{k}": v for k, v in tensors.items()}
    mask = np.tril(np.ones((cfg.n_positions, cfg.n_positions), dtype=np.float32))[None, None]
    for i in range(cfg.n_layer):
        keyed[f"transformer.h.{i}.attn.bias"] = mask
    keyed["lm_head.weight"] = tensors["wte.weight"].copy()
    save_file(keyed, path / "model.safetensors", metadata={"format": "pt"})


def main():
    torch.manual_seed(0)
    for name, (cfg, seed, tokens) in FIXTURES.items():
        path = HERE / name
        shutil.rmtree(path, ignore_errors=True)
        tensors = random_tensors(cfg, seed)
        save(path, cfg, tensors)
        if name == "hf_layout":
            hf_layout(path, cfg, tensors)
        model = GPT2LMHeadModel.from_pretrained(path, torch_dtype=torch.float64).eval()
        with torch.no_grad():
            logits = model(torch.tensor([tokens])).logits[0].numpy()
        (path / "expected.json").write_text(
            json.dumps(
                {
                    "tokens": tokens,
                    "source": "transformers GPT2LMHeadModel, float64",
                    "logits": [[float(x) for x in row] for row in logits],
                }
            )
            + "\n"
        )
        print(f"{name}: {sum(t.size for t in tensors.values())} parameters, next token {int(logits[-1].argmax())}")


if __name__ == "__main__":
    main()
