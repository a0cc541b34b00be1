"""GPT-2 checkpoints in Hugging Face format: a directory with config.json and model.safetensors."""

import hashlib
import json
import math
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xlgpt.decimals import decimal_values
from xlgpt.package import XlgptError
from xlgpt.safefile import atomic_dir, read_bounded

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
MAX_ROWS, MAX_COLUMNS = 1_048_576, 16_384  # a sheet's grid
MAX_PARAMETERS = 2_000_000_000


@dataclass(frozen=True)
class Config:
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    n_positions: int
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self):
        for name in ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise XlgptError(f"config: {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise XlgptError(f"config: n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        eps = self.layer_norm_epsilon
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps > 0):
            raise XlgptError(f"config: layer_norm_epsilon must be a positive finite number, got {eps!r}")
        # Bounds, checked before anything is allocated: the vocabulary is a column of rows, the positions
        # a row of columns, the MLP's 4 * n_embd rows too; the parameters are bounded by the largest GPT-2
        # (XL, 1.56 billion), with room: the NumPy reference holds them all in memory as float32.
        for name, value, limit, why in (
            ("vocab_size", self.vocab_size, MAX_ROWS, "rows of a sheet"),
            ("n_positions", self.n_positions, MAX_COLUMNS, "columns of a sheet"),
            ("n_embd", 4 * self.n_embd, MAX_ROWS, "rows of a sheet (4 * n_embd)"),
        ):
            if value > limit:
                raise XlgptError(f"config: {name} {getattr(self, name):,} is too large ({value:,} > {limit:,} {why})")
        if self.n_params_declared() > MAX_PARAMETERS:
            raise XlgptError(
                f"config: {self.n_params_declared():,} parameters is too many (limit {MAX_PARAMETERS:,}, "
                f"above GPT-2 XL's 1.56 billion)"
            )

    def n_params_declared(self):
        C = self.n_embd
        return (self.vocab_size + self.n_positions) * C + self.n_layer * (12 * C * C + 13 * C) + 2 * C

    @property
    def head_size(self):
        return self.n_embd // self.n_head

    def hf_json(self):
        """The config.json that Hugging Face transformers reads for this shape."""
        return {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            **asdict(self),
            "n_ctx": self.n_positions,
            "activation_function": "gelu_new",
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "tie_word_embeddings": True,
            "bos_token_id": self.vocab_size - 1,
            "eos_token_id": self.vocab_size - 1,
        }


def tensor_shapes(cfg):
    """Every tensor of a GPT-2 checkpoint, by its canonical name, with its shape."""
    C, V = cfg.n_embd, cfg.vocab_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (cfg.n_positions, C)}
    for i in range(cfg.n_layer):
        shapes.update(
            {
                f"h.{i}.ln_1.weight": (C,),
                f"h.{i}.ln_1.bias": (C,),
                f"h.{i}.attn.c_attn.weight": (C, 3 * C),
                f"h.{i}.attn.c_attn.bias": (3 * C,),
                f"h.{i}.attn.c_proj.weight": (C, C),
                f"h.{i}.attn.c_proj.bias": (C,),
                f"h.{i}.ln_2.weight": (C,),
                f"h.{i}.ln_2.bias": (C,),
                f"h.{i}.mlp.c_fc.weight": (C, 4 * C),
                f"h.{i}.mlp.c_fc.bias": (4 * C,),
                f"h.{i}.mlp.c_proj.weight": (4 * C, C),
                f"h.{i}.mlp.c_proj.bias": (C,),
            }
        )
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    return shapes


@dataclass
class Checkpoint:
    path: Path
    config: Config
    tensors: dict  # canonical name -> float32 array
    # How the user named it (--weights: a model name, or a directory as typed); a book records this, not `path`,
    # so that it holds no absolute path of the machine that built it.
    name: str | None = None

    def __getitem__(self, name):
        return self.tensors[name]

    @property
    def n_params(self):
        return sum(t.size for t in self.tensors.values())


# Buffers some exports carry: the causal mask, not parameters.
_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


def read_config(path):

    path = Path(path)
    try:
        raw = json.loads(read_bounded(path / CONFIG_FILE, 1 << 20, "config.json").decode("utf-8"))
    except FileNotFoundError:
        raise XlgptError(f"{path}: no {CONFIG_FILE} (expected a Hugging Face GPT-2 checkpoint directory)")
    except (ValueError, UnicodeDecodeError) as e:
        raise XlgptError(f"{path / CONFIG_FILE}: not valid JSON ({e})")
    except RecursionError:
        raise XlgptError(f"{path / CONFIG_FILE}: nested too deeply to be a config")
    if not isinstance(raw, dict):
        raise XlgptError(f"{path / CONFIG_FILE}: expected a JSON object")
    missing = [k for k in ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions") if k not in raw]
    if missing:
        raise XlgptError(f"{path / CONFIG_FILE}: missing {', '.join(missing)}")
    check_architecture(raw, path / CONFIG_FILE)
    return Config(
        raw["n_layer"],
        raw["n_embd"],
        raw["n_head"],
        raw["vocab_size"],
        raw["n_positions"],
        raw.get("layer_norm_epsilon", 1e-5),
    )


# What a GPT-2 config may say that changes the computation, and the values xlgpt computes (the reference, the
# book's formulas): GPT-2's tanh GELU, scores scaled by 1/sqrt(head size) and nothing else. The defaults are
# Hugging Face's GPT2Config's. Anything else would give a book that computes another model: refused.
ARCHITECTURE = {
    "model_type": (("gpt2",), "gpt2", "a GPT-2 checkpoint"),
    "activation_function": (("gelu_new", "gelu_pytorch_tanh"), "gelu_new", "GPT-2's tanh GELU (gelu_new)"),
    "scale_attn_weights": ((True,), True, "scores scaled by 1/sqrt(head size) (scale_attn_weights: true)"),
    "scale_attn_by_inverse_layer_idx": ((False,), False, "no scaling of the scores by layer (false)"),
    "reorder_and_upcast_attn": ((False,), False, "attention as GPT-2 computes it (reorder_and_upcast_attn: false)"),
}


def check_architecture(raw, where):
    """Refuse, with one line, a config.json field that asks for something xlgpt does not compute."""
    for key, (allowed, default, what) in ARCHITECTURE.items():
        value = raw.get(key, default)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise XlgptError(f"{where}: {key} is {value!r}; xlgpt computes {what} only")


FLOAT_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64"}


def check_header(weights):
    """Read a safetensors file's header (bounded) and refuse what NumPy cannot load (float8, bfloat16, ...)
    with one line, before any tensor is read."""
    with open(weights, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise XlgptError(f"{weights}: cannot read safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > 100 << 20:
            raise XlgptError(f"{weights}: cannot read safetensors file (a header of {n:,} bytes)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError):
            raise XlgptError(f"{weights}: cannot read safetensors file (its header is not JSON)")
    if not isinstance(header, dict):
        raise XlgptError(f"{weights}: cannot read safetensors file (its header is not a JSON object)")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if dtype not in FLOAT_DTYPES and not (isinstance(dtype, str) and dtype[:1] in "IUB" and dtype != "BF16"):
            raise XlgptError(
                f"{weights}: tensor {name} is {dtype}; xlgpt reads float16, float32 and float64 "
                f"(convert the checkpoint first)"
            )


def load(path, given_name=None):
    """Load and validate a checkpoint; every problem becomes one XlgptError line. `given_name`: how the user
    named it (default: `path` as given)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    given_name = str(path) if given_name is None else given_name
    path = Path(path)
    if not path.is_dir():
        raise XlgptError(f"{path}: not a checkpoint directory")
    cfg = read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise XlgptError(f"{path}: no {WEIGHTS_FILE}")
    try:
        check_header(weights)
        raw = load_file(weights)
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise XlgptError(f"{weights}: cannot read safetensors file ({e})")

    tensors = {}
    for name, array in raw.items():
        short = name.removeprefix("transformer.")
        if _BUFFER.match(short):
            continue
        if short in tensors:  # both wte.weight and transformer.wte.weight: which one is the model?
            if not (tensors[short].shape == array.shape and np.array_equal(tensors[short], array)):
                raise XlgptError(
                    f"{weights}: holds both {short} and transformer.{short}, and they differ; keep one of them"
                )
            continue
        tensors[short] = array
    lm_head = tensors.pop("lm_head.weight", None)
    expected = tensor_shapes(cfg)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise XlgptError(
            f"{weights}: missing tensor {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise XlgptError(f"{weights}: tensor {unexpected[0]} does not belong to a {cfg.n_layer}-layer GPT-2")
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise XlgptError(
                f"{weights}: {name} has shape {list(tensors[name].shape)}, config.json implies {list(shape)}"
            )
        if tensors[name].dtype.kind != "f":
            raise XlgptError(f"{weights}: {name} has dtype {tensors[name].dtype}, expected floats")
        tensors[name] = tensors[name].astype(np.float32, copy=False)
        if not np.isfinite(tensors[name]).all():
            raise XlgptError(f"{weights}: {name} holds NaN or infinite values")
    if lm_head is not None and not np.array_equal(lm_head, tensors["wte.weight"]):
        raise XlgptError(f"{weights}: lm_head.weight is not tied to wte.weight; only tied GPT-2 heads are supported")
    return Checkpoint(path, cfg, tensors, given_name)


def random_tensors(cfg, seed):
    """Seeded random GPT-2 weights, scaled so that every path (embeddings, attention, MLP,
    LayerNorm gains and biases) visibly changes the logits."""
    rng = np.random.default_rng(seed)

    def normal(shape, std):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    tensors = {}
    for name, shape in tensor_shapes(cfg).items():
        if name in ("wte.weight", "wpe.weight"):
            tensors[name] = normal(shape, 2 / math.sqrt(cfg.n_embd))  # logits ~ N(0, 2^2)
        elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            tensors[name] = 1 + normal(shape, 0.2)
        elif len(shape) == 2:
            tensors[name] = normal(shape, 1 / math.sqrt(shape[0]))
        else:
            tensors[name] = normal(shape, 0.2)
    return tensors


def save(path, cfg, tensors):
    """Write config.json and model.safetensors into a new directory, atomically."""

    path = Path(path)
    check_new_dir(path)
    with atomic_dir(path) as tmp:
        write(tmp, cfg, tensors)


def check_new_dir(path):
    if path.is_symlink() or (path.exists() and (not path.is_dir() or any(path.iterdir()))):
        raise XlgptError(f"{path}: already exists and is not an empty directory")


def write(directory, cfg, tensors):
    """config.json and model.safetensors (float32, Hugging Face names) into an existing directory."""
    from safetensors.numpy import save_file

    (directory / CONFIG_FILE).write_text(json.dumps(cfg.hf_json(), indent=2) + "\n")
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
        str(directory / WEIGHTS_FILE),
        metadata={"format": "pt"},
    )


def fingerprint(path):
    """sha256 of the weights file, recorded in the workbook so eval can find mismatched weights."""
    h = hashlib.sha256()
    with open(Path(path) / WEIGHTS_FILE, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def as_written(ckpt):
    """The checkpoint as a book holds it: each weight its shortest float32 decimal, read back as float64 (the
    numbers the reference computes with, so that it and the book start from the same ones)."""
    return Checkpoint(ckpt.path, ckpt.config, {k: decimal_values(v) for k, v in ckpt.tensors.items()})
