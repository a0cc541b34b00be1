"""Get GPT-2 checkpoints by name: download from the Hugging Face hub, import local files, find them offline.

Where models live:
  hub       the standard Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub),
            laid out by huggingface_hub as models--OWNER--NAME/{blobs,refs,snapshots/COMMIT/...}
  imported  $XLGPT_HOME/models/NAME (XLGPT_HOME defaults to ~/.cache/xlgpt)
  bundled   subdirectories of a directory the caller passes (the repo's weights/)

A model counts as present only when its directory holds config.json and a *whole* model.safetensors
(the safetensors header parses and the file is exactly as long as the header says). huggingface_hub
(2.x) downloads into a uniquely named blobs/*.incomplete file, deletes it if the download fails, and
links a blob into the snapshot only once it is complete; but a failed download still leaves refs/main
and a snapshot directory holding the files that did arrive (config.json). This check is what keeps such
a half-populated snapshot, or one an older client or a crash left, from ever being resolved or listed.
It reads only the header, so it is cheap enough for every lookup. A download that arrives whole but
does not parse is removed from the cache by download() itself, so a retry fetches it again.
"""

import contextlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from xlgpt.model.checkpoint import _BUFFER, CONFIG_FILE, WEIGHTS_FILE, load, read_config
from xlgpt.package import XlgptError, shipped
from xlgpt.safefile import atomic_dir, read_bounded

# Short names people type, and the repos they live in since the hub moved them under organisations.
ALIASES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")  # optional: a 404 on these is fine
IMPORT_HINT = "xlgpt weights import PATH"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # an imported model's name is one safe path component


# ---------------------------------------------------------------- locations, read from the environment now
# huggingface_hub reads HF_ENDPOINT / HF_HOME / HF_HUB_CACHE once, at import; reading them at call time
# (same rules, same precedence) and passing them explicitly means a caller that sets the environment
# after import still gets what it asked for.


def hub_endpoint():
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_cache():
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def models_dir():
    return Path(os.environ.get("XLGPT_HOME") or "~/.cache/xlgpt").expanduser() / "models"


def repo_id_for(name):
    return ALIASES.get(name, name)


# ---------------------------------------------------------------- completeness and size, from the header only


def _weights_shapes(path):
    """Tensor name -> shape, read from the safetensors header alone; raises if the file is not whole."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:  # also checks the data section is fully present
        return {k: f.get_slice(k).get_shape() for k in f.keys()}


def is_complete(path):
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        return False
    try:
        _weights_shapes(path / WEIGHTS_FILE)
    except Exception:  # SafetensorError, OSError, ...: any unreadable header means "not a usable model"
        return False
    return True


def count_parameters(path):
    """Parameters of a checkpoint, as the loader will see them: causal-mask buffers and a tied lm_head
    are not parameters."""
    n = 0
    for name, shape in _weights_shapes(Path(path) / WEIGHTS_FILE).items():
        name = name.removeprefix("transformer.")
        if _BUFFER.match(name) or name == "lm_head.weight":
            continue
        size = 1
        for d in shape:
            size *= d
        n += size
    return n


# ---------------------------------------------------------------- the hub cache, offline


def _repo_cache(repo_id):
    from huggingface_hub.file_download import repo_folder_name

    return hub_cache() / repo_folder_name(repo_id=repo_id, repo_type="model")


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _cached_snapshot(repo_id):
    """The snapshot that refs/main points at if it is complete, else the newest complete one, else None."""
    repo = _repo_cache(repo_id)
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    inside = snapshots.resolve()
    # a snapshot is a directory named by its commit, inside the cache: not a link, not a path out of it
    candidates = sorted(
        (c for c in snapshots.iterdir() if _COMMIT.fullmatch(c.name) and not c.is_symlink()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    ref = repo / "refs" / "main"
    if ref.is_file():
        commit = read_bounded(ref, 1024, "ref").decode("ascii", errors="replace").strip()
        if _COMMIT.fullmatch(commit):  # a poisoned ref ("../../anywhere") is ignored, not followed
            candidates.insert(0, snapshots / commit)
    return next((c for c in candidates if c.resolve().parent == inside and is_complete(c)), None)


def resolve(name, bundled_dir=None):
    """Where the model `name` is on disk, without touching the network: an existing directory as is,
    then the hub cache, then the imported models, then (if given) the bundled ones."""
    name = str(name)
    if not name.strip():
        raise XlgptError(
            "--weights is empty; give a checkpoint directory or a model name (xlgpt weights list), "
            "or leave --weights out for the bundled model"
        )
    if Path(name).is_dir():
        return Path(name)
    # Not a valid repo id (ValueError from huggingface_hub's check) or an unreadable cache: not found there.
    with contextlib.suppress(OSError, ValueError):
        found = _cached_snapshot(repo_id_for(name))
        if found:
            return found
    for root in (models_dir(), Path(bundled_dir) if bundled_dir else None):
        if root and _NAME.match(name) and is_complete(root / name):
            return root / name
        if root and _NAME.match(name) and (root / name / WEIGHTS_FILE).exists():
            return root / name  # there but damaged or unreadable: load() says what is wrong, not "missing"
    if name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1:  # a path, not a repo id
        raise XlgptError(f"{name}: not a checkpoint directory")
    raise XlgptError(
        f"model {name!r} is not in the cache; download it with: xlgpt weights download {name} "
        f"(or import a local copy with: {IMPORT_HINT})"
    )


# ---------------------------------------------------------------- download


@contextlib.contextmanager
def _quiet_hub_logs():
    # huggingface_hub logs every resume attempt as a warning; xlgpt reports a failure as one line instead.
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class RepoKind:
    """What a download is for, as its error messages say it: what such a repo must hold, and what to do
    without the hub."""

    what: str
    needs: str
    offline_hint: str  # after "cannot reach the hub (...); "
    local: str  # after "HF_HUB_OFFLINE is set, ...; unset it, or: "


MODEL_REPO = RepoKind(
    "model",
    "xlgpt needs a GPT-2 repo with config.json and model.safetensors "
    f"(for .bin weights download them yourself and use: {IMPORT_HINT})",
    f"if you have the model files, import them with: {IMPORT_HINT}",
    IMPORT_HINT,
)


def _hub_error(e, name, repo_id, filename, endpoint, kind=MODEL_REPO, first=CONFIG_FILE):
    """Turn whatever huggingface_hub or httpx raised into one XlgptError line (or None: not ours to map).
    `first` is the file fetched first: a plain 404 on it means there is no such repo."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    unreachable = f"cannot reach the Hugging Face hub at {endpoint} ({{}}); {kind.offline_hint}"
    if isinstance(e, HFValidationError):
        return XlgptError(f"{name!r} is not a {kind.what} name or hub repo id (owner/name)")
    if isinstance(e, GatedRepoError):
        return XlgptError(f"{repo_id} is gated on the hub; accept its terms on the website and set HF_TOKEN")
    if isinstance(e, RemoteEntryNotFoundError):
        return XlgptError(f"{repo_id} has no {filename}; {kind.needs}")
    # A plain 404 on the first file too: mirrors don't always send the hub's X-Error-Code header.
    if isinstance(e, RepositoryNotFoundError) or (
        isinstance(e, HfHubHTTPError) and filename == first and e.response is not None and e.response.status_code == 404
    ):
        return XlgptError(
            f"{kind.what} {repo_id!r} was not found on the hub at {endpoint} (no such repo, or it is private)"
        )
    if isinstance(e, OfflineModeIsEnabled):
        return XlgptError(f"HF_HUB_OFFLINE is set, so {repo_id} cannot be downloaded; unset it, or: {kind.local}")
    if isinstance(e, httpx2.ConnectError) or (isinstance(e, LocalEntryNotFoundError) and e.__cause__ is not None):
        return XlgptError(unreachable.format(_one_line(e.__cause__ or e)))
    if isinstance(e, httpx2.TimeoutException):
        return XlgptError(unreachable.format("timed out"))
    if isinstance(e, httpx2.TransportError):  # e.g. RemoteProtocolError: the connection closed mid-body
        return XlgptError(
            f"download of {filename} from {endpoint} was cut off ({_one_line(e)}); "
            f"nothing partial was kept, run the download again"
        )
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else "?"
        return XlgptError(f"the hub at {endpoint} answered HTTP {status} for {repo_id}/{filename}")
    if isinstance(e, OSError) and "Consistency check failed" in str(e):
        return XlgptError(
            f"download of {filename} from {endpoint} was truncated ({_one_line(e).split(' (')[0]}); "
            f"nothing partial was kept, run the download again"
        )
    if isinstance(e, OSError):  # disk full, cache not writable, ...
        return XlgptError(f"cannot download {repo_id}/{filename} into {hub_cache()}: {_one_line(e)}")
    return None  # anything else is a bug worth a traceback


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


def _evict(link):
    """Remove a snapshot entry and the blob behind it, so neither resolve() nor a retry reuses them."""
    blob = link.resolve()
    link.unlink(missing_ok=True)
    if blob != link:
        blob.unlink(missing_ok=True)


def fetch_files(repo_id, filenames, optional=(), name=None, kind=MODEL_REPO, progress=True):
    """Download files of a hub repo into the Hugging Face cache: {filename: local path, or None for an
    optional file the repo lacks}. Every failure is one XlgptError line."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import RemoteEntryNotFoundError
    from huggingface_hub.utils import silent_tqdm

    name, endpoint = repo_id if name is None else name, hub_endpoint()
    options = dict(cache_dir=hub_cache(), endpoint=endpoint, tqdm_class=None if progress else silent_tqdm)

    def fetch(filename):
        try:
            return Path(hf_hub_download(repo_id, filename, **options))
        except Exception as e:
            if isinstance(e, RemoteEntryNotFoundError) and filename in optional:
                return None
            raise _hub_error(e, name, repo_id, filename, endpoint, kind, filenames[0]) or e

    with _quiet_hub_logs():
        # One HEAD without retries first: an unreachable hub then fails at once, instead of after the
        # ~25 s of backoff hf_hub_download spends before giving up on a file it has no cached copy of.
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, filenames[0], endpoint=endpoint), endpoint=endpoint)
        except Exception as e:
            raise _hub_error(e, name, repo_id, filenames[0], endpoint, kind, filenames[0]) or e
        return {filename: fetch(filename) for filename in filenames}


def download(name, progress=True):
    """Download a GPT-2 model from the hub into the Hugging Face cache; returns its snapshot directory."""
    repo_id = repo_id_for(str(name))
    files = fetch_files(
        repo_id, [CONFIG_FILE, WEIGHTS_FILE, *TOKENIZER_FILES], optional=TOKENIZER_FILES, name=name, progress=progress
    )
    snapshot = files[CONFIG_FILE].parent

    try:
        load(snapshot)
    except XlgptError as e:
        if not is_complete(snapshot):  # the weights file itself is damaged: don't leave it for later lookups
            _evict(snapshot / WEIGHTS_FILE)
            raise XlgptError(
                f"downloaded {repo_id}/{WEIGHTS_FILE} is corrupt and was removed from the cache, "
                f"run the download again ({e})"
            )
        raise XlgptError(f"{repo_id} is not a GPT-2 checkpoint xlgpt can use: {e}")
    return snapshot


# ---------------------------------------------------------------- import local files


def _torch_state_dict(path):
    """A PyTorch .bin/.pt state dict as NumPy arrays, unpickled with weights_only=True: tensors and plain
    containers only, never arbitrary code."""
    try:
        import torch
    except ImportError:
        raise XlgptError(
            f"{path}: reading PyTorch weights needs torch (pip install torch); "
            f"or convert the file to model.safetensors and import that"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for disallowed objects, RuntimeError for non-torch files, ...
        raise XlgptError(
            f"{path}: not a plain PyTorch state dict (loaded with weights_only=True, so "
            f"pickled Python objects are refused): {_one_line(e)[:200]}"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise XlgptError(f"{path}: expected a state dict mapping tensor names to tensors")
    # NumPy has no bfloat16; float32 is what the loader converts everything to anyway.
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().contiguous().numpy() for k, v in state.items()}


def reserved_names():
    """Names an imported model may not take: the bundled models' (shipped weights/) and the hub's short names,
    which --weights already means (an import would shadow one, or be shadowed)."""
    bundled = shipped("weights")
    return set(ALIASES) | ({d.name for d in bundled.iterdir() if d.is_dir()} if bundled.is_dir() else set())


def import_model(path, name=None, config=None):
    """Copy a local GPT-2 checkpoint into $XLGPT_HOME/models/NAME, validated before it lands there.

    `path` is a directory with model.safetensors + config.json, a .safetensors file, or (with torch
    installed) a PyTorch .bin/.pt state dict; for a file, config.json is taken from `config` or from
    beside the file. Tokenizer files next to the weights are copied along."""
    path = Path(path)
    if path.is_dir():
        source_dir, weights = path, path / WEIGHTS_FILE
        if not weights.is_file():
            raise XlgptError(f"{path}: no {WEIGHTS_FILE} (import a .bin/.pt file by its path instead)")
    elif path.is_file():
        source_dir, weights = path.parent, path
        if path.suffix not in (".safetensors", ".bin", ".pt", ".pth"):
            raise XlgptError(f"{path}: expected a directory, a .safetensors file or a PyTorch .bin/.pt file")
    else:
        raise XlgptError(f"{path}: no such file or directory")
    config = Path(config) if config else source_dir / CONFIG_FILE
    if not config.is_file():
        raise XlgptError(f"{config}: not found; an imported model needs its config.json (pass it explicitly)")
    name = name or (path.resolve().name if path.is_dir() else path.stem)
    if not _NAME.match(name):
        raise XlgptError(f"{name!r} is not a usable model name (letters, digits, '.', '_', '-')")
    reserved = reserved_names()
    if name.casefold() in {n.casefold() for n in reserved}:
        raise XlgptError(
            f"{name!r} is taken: --weights means a bundled or hub model by it ({', '.join(sorted(reserved))}); "
            f"import under another --name"
        )

    root = models_dir()
    dest = root / name
    if dest.exists() or dest.is_symlink():
        raise XlgptError(f"a model named {name!r} is already imported at {dest}; remove it or choose another name")
    try:
        with atomic_dir(dest) as tmp:
            _import_into(tmp, path, config, weights, source_dir)
    except OSError as e:
        raise XlgptError(f"{dest}: cannot import ({e.strerror or e})")
    return dest


def _import_into(tmp, path, config, weights, source_dir):
    """Copy (or convert) a checkpoint into the fresh directory `tmp` and check that it loads."""
    from safetensors.numpy import save_file

    shutil.copyfile(config, tmp / CONFIG_FILE)
    if weights.suffix == ".safetensors":
        shutil.copyfile(weights, tmp / WEIGHTS_FILE)
    else:
        save_file(_torch_state_dict(weights), tmp / WEIGHTS_FILE, metadata={"format": "pt"})
    for extra in TOKENIZER_FILES:
        if (source_dir / extra).is_file():
            shutil.copyfile(source_dir / extra, tmp / extra)
    try:
        load(tmp)
    except XlgptError as e:  # name the user's files, not our temporary copies
        raise XlgptError(
            str(e)
            .replace(str(tmp / WEIGHTS_FILE), str(weights))
            .replace(str(tmp / CONFIG_FILE), str(config))
            .replace(str(tmp), str(path))
        )


# ---------------------------------------------------------------- list


def _is_gpt2(path):
    # The cache may hold other architectures (BERT, ...) downloaded by other tools: list only ours.
    try:
        read_config(path)
    except XlgptError:
        return False
    return is_complete(path)


def _entry(name, source, path):
    files = [f for f in Path(path).iterdir() if f.is_file()]
    return {
        "name": name,
        "source": source,
        "path": str(path),
        "parameters": count_parameters(path),
        "size_bytes": sum(f.stat().st_size for f in files),
    }  # stat follows the hub's symlinks to blobs


def list_models(bundled_dir=None):
    """Every complete model: bundled, downloaded from the hub, imported. Reads only headers."""
    found = []
    if bundled_dir and Path(bundled_dir).is_dir():
        found += [_entry(d.name, "bundled", d) for d in sorted(Path(bundled_dir).iterdir()) if _is_gpt2(d)]
    short = {repo: alias for alias, repo in ALIASES.items()}
    cache = hub_cache()
    if cache.is_dir():
        for repo in sorted(cache.glob("models--*")):
            repo_id = repo.name.removeprefix("models--").replace("--", "/")
            snapshot = _cached_snapshot(repo_id)
            if snapshot and _is_gpt2(snapshot):
                found.append(_entry(short.get(repo_id, repo_id), "hub", snapshot))
    if models_dir().is_dir():
        found += [
            _entry(d.name, "imported", d)
            for d in sorted(models_dir().iterdir())
            if not d.name.startswith(".") and _is_gpt2(d)
        ]
    return found
