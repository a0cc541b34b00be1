"""Sparse autoencoders (SAEs) in SAELens layout: load one from a folder or a Hugging Face repo.

A folder holds cfg.json and sae_weights.safetensors (SAELens's file names) and, for xlgpt's own SAEs,
features.json (labels and figures, written by tools/train_sae.py). The tensors, SAELens names and layout:

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_in]   b_dec [d_in]

and a "standard" SAE computes f = ReLU((x - b_dec) W_enc + b_enc), x_hat = f W_dec + b_dec; that is
xlgpt.model.reference.sae_features / sae_reconstruction: this module only loads and validates.

cfg.json may be in SAELens's older flat layout (hook_name, model_name, ... at the top, as the bundled one
is) or its 6.x layout (those under "metadata"). Only SAEs on the residual stream entering a block,
blocks.L.hook_resid_pre, with a ReLU encoder, b_dec subtracted first and no activation normalisation, are
accepted: that is what the workbook and the reference compute.

On the hub, SAELens releases keep one SAE per folder of a repo: give the repo id and the folder, as
load_sae("owner/name", "folder") or load_sae("owner/name/folder"). Files come through xlgpt.weights.hub
(same cache, endpoint and error messages as model downloads); once cached, no network is used.
"""

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlgpt.decimals import decimal_values
from xlgpt.model.hub import RepoKind, _evict, fetch_files, hub_cache
from xlgpt.package import XlgptError, shipped
from xlgpt.safefile import read_bounded

BUNDLED_SOURCE = "bundled"  # how a book records the bundled model's SAE (--sae left out)

CFG_FILE, WEIGHTS_FILE, FEATURES_FILE = "cfg.json", "sae_weights.safetensors", "features.json"
TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec")
BUNDLED = "shakespeare-sae"
_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_pre$")


class _Unreadable(XlgptError):
    """The weights file does not parse."""


@dataclass(frozen=True, eq=False)
class SAE:
    path: Path  # the folder the files were read from
    d_in: int
    d_sae: int
    hook_name: str  # blocks.{layer}.hook_resid_pre
    layer: int  # the block whose incoming residual stream the SAE reads
    model_name: str  # as cfg.json gives it ("" when absent)
    cfg: dict  # cfg.json as read
    W_enc: np.ndarray  # float32 [d_in, d_sae]
    b_enc: np.ndarray  # float32 [d_sae]
    W_dec: np.ndarray  # float32 [d_sae, d_in]
    b_dec: np.ndarray  # float32 [d_in]
    features: dict = None  # features.json (labels, figures) when the folder has one

    def check_model(self, config):
        """Raise unless this SAE fits a model of this shape (a checkpoint's Config)."""
        if self.d_in != config.n_embd:
            raise XlgptError(
                f"{self.path}: the SAE reads {self.d_in} dimensions but the model's residual stream has {config.n_embd}"
            )
        if self.layer >= config.n_layer:
            raise XlgptError(
                f"{self.path}: {self.hook_name} needs block {self.layer}, but the model has {config.n_layer} blocks"
            )


def bundled_path():
    return shipped("weights") / BUNDLED


# ---------------------------------------------------------------- reading a folder


def _cfg_value(cfg, key, default=None):
    """A cfg.json field from the flat layout, else from SAELens 6.x's "metadata"."""
    if key in cfg:
        return cfg[key]
    metadata = cfg.get("metadata")
    return metadata.get(key, default) if isinstance(metadata, dict) else default


def _positive_int(cfg, key, where):
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise XlgptError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def read_cfg(folder):
    """cfg.json, checked: returns (cfg, d_in, d_sae, hook_name, layer)."""
    path = Path(folder) / CFG_FILE
    if not path.is_file():
        raise XlgptError(f"{folder}: no {CFG_FILE} (an SAE folder in SAELens layout has {CFG_FILE} and {WEIGHTS_FILE})")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise XlgptError(f"{path}: not readable JSON ({' '.join(str(e).split())})")
    if not isinstance(cfg, dict):
        raise XlgptError(f"{path}: expected a JSON object")
    d_in, d_sae = _positive_int(cfg, "d_in", path), _positive_int(cfg, "d_sae", path)

    architecture = cfg.get("architecture", "standard")
    if architecture != "standard":
        raise XlgptError(f"{path}: architecture {architecture!r} is not supported (only 'standard' ReLU SAEs)")
    activation = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    if activation != "relu":
        raise XlgptError(f"{path}: activation {activation!r} is not supported (only 'relu')")
    if cfg.get("apply_b_dec_to_input", True) is not True:
        raise XlgptError(f"{path}: apply_b_dec_to_input must be true (b_dec subtracted before encoding)")
    if cfg.get("normalize_activations", "none") not in ("none", False, None):
        raise XlgptError(
            f"{path}: normalize_activations {cfg['normalize_activations']!r} is not supported (only 'none')"
        )
    if cfg.get("finetuning_scaling_factor"):
        raise XlgptError(f"{path}: finetuning_scaling_factor is not supported")

    hook_name = _cfg_value(cfg, "hook_name", _cfg_value(cfg, "hook_point"))  # hook_point: SAELens < 1
    match = _HOOK.match(hook_name) if isinstance(hook_name, str) else None
    if not match:
        raise XlgptError(
            f"{path}: hook {hook_name!r} is not supported; xlgpt reads SAEs on the residual stream "
            f"entering a block, blocks.L.hook_resid_pre"
        )
    layer = int(match.group(1))
    hook_layer = _cfg_value(cfg, "hook_layer", layer)
    if hook_layer != layer:
        raise XlgptError(f"{path}: hook_layer {hook_layer!r} does not match hook_name {hook_name!r}")
    if _cfg_value(cfg, "hook_head_index") is not None:
        raise XlgptError(f"{path}: hook_head_index must be null for a residual-stream SAE")
    return cfg, d_in, d_sae, hook_name, layer


def read_tensors(folder, d_in, d_sae):
    """The four tensors as float32, by SAELens name, with their shapes checked."""
    from safetensors.numpy import load_file

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise XlgptError(f"{folder}: no {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # SafetensorError, OSError, unsupported dtype...: all mean "not usable weights"
        raise _Unreadable(f"{path}: not a readable safetensors file ({' '.join(str(e).split())[:200]})")
    missing = [name for name in TENSORS if name not in tensors]
    if missing:
        raise XlgptError(f"{path}: missing {', '.join(missing)} (SAELens names: {', '.join(TENSORS)})")
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    out = {}
    for name, shape in shapes.items():
        t = tensors[name]
        if t.shape != shape:
            raise XlgptError(
                f"{path}: {name} has shape {list(t.shape)}, expected {list(shape)} for d_in {d_in}, d_sae {d_sae}"
            )
        if not np.issubdtype(t.dtype, np.floating) or not np.all(np.isfinite(t)):
            raise XlgptError(f"{path}: {name} must hold finite floating-point numbers")
        out[name] = np.ascontiguousarray(t, dtype=np.float32)
    return out


def read_sae(folder):
    """An SAE from a local folder in SAELens layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise XlgptError(f"{folder}: not an SAE folder")
    cfg, d_in, d_sae, hook_name, layer = read_cfg(folder)
    tensors = read_tensors(folder, d_in, d_sae)
    features = None
    if (folder / FEATURES_FILE).is_file():
        features = read_features(folder / FEATURES_FILE, d_sae)
    return SAE(
        folder,
        d_in,
        d_sae,
        hook_name,
        layer,
        str(_cfg_value(cfg, "model_name") or ""),
        cfg,
        features=features,
        **tensors,
    )


FIGURES = ("fraction_of_variance_explained", "mean_l0", "dead_features")  # what `xlgpt features` shows


def read_features(path, d_sae):
    """features.json, checked: a JSON object whose "features" (when given) is a list of {index (0 to d_sae - 1),
    label, frequency (0 to 1, or null), top_tokens: [{token, count}]} (a missing label, frequency or top_tokens
    reads as "", None, []) and whose "figures" (when given) holds FIGURES as numbers. Returns it, the features
    completed so."""
    try:
        data = json.loads(read_bounded(path, what="features.json").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise XlgptError(f"{path}: not readable JSON ({' '.join(str(e).split()) or type(e).__name__})")
    if not isinstance(data, dict):
        raise XlgptError(
            f'{path}: expected a JSON object (with "features", a list, and "figures"), got {type(data).__name__}'
        )
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    figures = data.get("figures")
    if figures is not None:
        missing = [k for k in FIGURES if not (isinstance(figures, dict) and number(figures.get(k)))]
        if missing:
            raise XlgptError(f'{path}: "figures" must give {", ".join(FIGURES)} as numbers; no {missing[0]}')
    rows = data.get("features")
    if rows is None:
        return data
    if not isinstance(rows, list):
        raise XlgptError(f'{path}: "features" must be a list of features, got {type(rows).__name__}')
    out = []
    for k, row in enumerate(rows):
        where = f"{path}: features[{k}]"
        if not isinstance(row, dict):
            raise XlgptError(f"{where} must be an object (index, label, frequency, top_tokens)")
        row = {"label": "", "frequency": None, "top_tokens": [], **row}
        index, frequency, tokens = row.get("index"), row["frequency"], row["top_tokens"]
        if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < d_sae):
            raise XlgptError(f'{where}: "index" must be a whole number from 0 to {d_sae - 1}, got {index!r}')
        if not isinstance(row["label"], str):
            raise XlgptError(f'{where}: "label" must be text')
        if frequency is not None and not (number(frequency) and 0 <= frequency <= 1):
            raise XlgptError(f'{where}: "frequency" must be a number from 0 to 1 (or null), got {frequency!r}')
        if not isinstance(tokens, list) or not all(
            isinstance(t, dict) and isinstance(t.get("token"), str) and number(t.get("count")) for t in tokens
        ):
            raise XlgptError(f'{where}: "top_tokens" must be a list of {{"token": text, "count": number}}')
        out.append(row)
    return {**data, "features": out}


# ---------------------------------------------------------------- from the hub


def _hub_folder(repo_id, subfolder, progress):
    """The local folder (in the Hugging Face cache) holding the SAE's files: cached ones as they are,
    else downloaded through xlgpt.weights.hub."""
    from huggingface_hub import try_to_load_from_cache

    prefix = f"{subfolder}/" if subfolder else ""
    required, optional = [prefix + CFG_FILE, prefix + WEIGHTS_FILE], [prefix + FEATURES_FILE]
    try:
        cached = [try_to_load_from_cache(repo_id, f, cache_dir=hub_cache()) for f in required]
    except (OSError, ValueError):  # not a valid repo id, unreadable cache: ask the hub, which says which
        cached = [None]
    if all(isinstance(c, str) for c in cached):
        return Path(cached[0]).parent
    where = f"{repo_id}/{subfolder}" if subfolder else repo_id
    kind = RepoKind(
        "SAE",
        f"an SAE folder in SAELens layout has {CFG_FILE} and {WEIGHTS_FILE} "
        f"(give the folder inside the repo: owner/name/folder)",
        "if you have the SAE files, give their folder: --sae PATH",
        "--sae PATH (a local folder)",
    )
    files = fetch_files(repo_id, required + optional, optional=optional, name=where, kind=kind, progress=progress)
    return files[required[0]].parent


def load_sae(source=None, subfolder=None, progress=False):
    """An SAE from a local folder, or from a hub repo ("owner/name" plus an optional folder inside it, given
    as `subfolder` or as "owner/name/folder"); None: the bundled Shakespeare SAE."""
    if source is None:
        return read_sae(bundled_path() / (subfolder or ""))
    source = str(source)
    local = Path(source) / (subfolder or "")
    if local.is_dir():
        return read_sae(local)
    parts = source.strip("/").split("/")
    if source.startswith((".", "/", "~")) or len(parts) < 2 or not all(parts):
        raise XlgptError(f"{source}: not an SAE folder, nor a hub repo id (owner/name[/folder])")
    repo_id, inner = "/".join(parts[:2]), "/".join(p for p in [*parts[2:], subfolder] if p)
    folder = _hub_folder(repo_id, inner.strip("/"), progress)
    try:
        return read_sae(folder)
    except _Unreadable as e:  # a damaged download: don't reuse it from the cache next time
        _evict(folder / WEIGHTS_FILE)
        raise XlgptError(f"{e}; it was removed from the cache, run the command again to download it anew")


def sae_as_written(source, cfg):
    """The SAE a book records (`source` as --sae took it, "bundled" for the bundled model's own), checked
    against the model, with the numbers the book holds: each tensor's shortest float32 decimals."""
    sae = load_sae(None if source == BUNDLED_SOURCE else source)
    sae.check_model(cfg)
    return dataclasses.replace(
        sae, **{name: decimal_values(getattr(sae, name)) for name in ("W_enc", "b_enc", "b_dec")}
    )
