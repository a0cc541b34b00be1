"""xlgpt.weights.hub against the real huggingface_hub client and a real HTTP server on 127.0.0.1 (tests/fakehub.py).

Nothing here touches the network beyond loopback, or any cache outside tmp_path: every test points
HF_HOME and XLGPT_HOME into tmp_path and HF_ENDPOINT at its own fake hub.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from fakehub import FakeHub, free_port
from helpers import ROOT, assert_clean_error, xlgpt, xlgpt_process
from xlgpt.model.checkpoint import Config, load, random_tensors, save
from xlgpt.model.hub import download, import_model, list_models, resolve
from xlgpt.package import XlgptError

REPO = "tester/tiny-gpt2"
CFG = Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20, n_positions=6)
SEED = 11


def n_params(cfg):
    """GPT-2's parameter count from its shape, independent of any file."""
    V, P, C, L = cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_layer
    return V * C + P * C + L * (12 * C * C + 13 * C) + 2 * C


def make_ckpt(path, cfg=CFG, seed=SEED, tokenizer=True):
    save(path, cfg, random_tensors(cfg, seed))
    if tokenizer:
        (path / "vocab.json").write_text(json.dumps({f"t{i}": i for i in range(cfg.vocab_size)}))
        (path / "merges.txt").write_text("#version: 0.2\n")
    return path


@pytest.fixture(scope="session")
def repo_files(tmp_path_factory):
    """What the fake hub serves: the seeded checkpoint plus two tokenizer files (tokenizer.json is absent,
    so the optional-file 404 path runs too)."""
    ck = make_ckpt(tmp_path_factory.mktemp("repo") / "ck")
    return {f.name: f.read_bytes() for f in ck.iterdir()}


@pytest.fixture
def hub(env, repo_files, monkeypatch):
    """start(mode, repo_id, files) runs a fake hub and points HF_ENDPOINT at it; all stop at teardown."""
    started = []

    def start(mode="normal", repo_id=REPO, files=None):
        fake = FakeHub(repo_id, repo_files if files is None else files, mode).start()
        started.append(fake)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        return fake

    yield start
    for fake in started:
        fake.stop()


def repo_cache(tmp_path, repo_id=REPO):
    return tmp_path / "hf" / "hub" / ("models--" + repo_id.replace("/", "--"))


def assert_same_weights(path, cfg=CFG, seed=SEED):
    ckpt = load(path)
    expected = random_tensors(cfg, seed)
    assert ckpt.config == cfg and set(ckpt.tensors) == set(expected)
    for name, t in expected.items():
        np.testing.assert_array_equal(ckpt[name], t, err_msg=name)


def assert_no_usable_model(tmp_path):
    """After a failed download: huggingface_hub leaves a snapshot holding only the files that did arrive
    (config.json) plus refs/main; none of it may look like a model."""
    cache = repo_cache(tmp_path)
    snapshots = list((cache / "snapshots").iterdir())
    assert snapshots and all((s / "config.json").is_file() for s in snapshots)  # the half-populated snapshot
    assert not any((s / "model.safetensors").exists() for s in snapshots)
    assert not list(cache.rglob("*.incomplete"))
    with pytest.raises(
        XlgptError, match=f"model '{REPO}' is not in the cache; download it with: xlgpt weights download {REPO}"
    ):
        resolve(REPO)
    assert [m for m in list_models() if m["source"] == "hub"] == []


# ---------------------------------------------------------------- download + resolve


def test_download_then_resolve_offline(hub, env):
    fake = hub()
    snapshot = download(REPO, progress=False)
    assert snapshot.is_relative_to(repo_cache(env) / "snapshots")  # the standard cache under HF_HOME
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "config.json",
        "merges.txt",
        "model.safetensors",
        "vocab.json",
    ]
    # The weights came through the CDN redirect, like an LFS file on the real hub; nothing else was asked.
    assert any(r[0] == "GET" and r[1].startswith("/cdn/") for r in fake.requests)
    assert fake.unexpected == [] and not any("xet" in r[1].lower() for r in fake.requests)

    fake.stop()
    assert resolve(REPO) == snapshot
    assert_same_weights(resolve(REPO))
    # Downloading again with the hub down is an error, but does not damage what is cached.
    with pytest.raises(XlgptError, match="cannot reach"):
        download(REPO, progress=False)
    assert resolve(REPO) == snapshot


def test_short_names_map_to_canonical_repos(hub):
    hub(repo_id="openai-community/gpt2")
    snapshot = download("gpt2", progress=False)
    assert resolve("gpt2") == resolve("openai-community/gpt2") == snapshot
    assert [(m["name"], m["source"]) for m in list_models()] == [("gpt2", "hub")]


def test_repo_not_found(hub):
    fake = hub(mode="missing")
    with pytest.raises(XlgptError) as e:
        download(REPO, progress=False)
    assert f"model '{REPO}' was not found on the hub at {fake.url}" in str(e.value)
    assert "\n" not in str(e.value)


def test_repo_without_safetensors(hub, repo_files):
    hub(files={k: v for k, v in repo_files.items() if k != "model.safetensors"})
    with pytest.raises(XlgptError, match=f"{REPO} has no model.safetensors"):
        download(REPO, progress=False)
    with pytest.raises(XlgptError, match="not in the cache"):
        resolve(REPO)


def test_unreachable_hub_fails_fast(env, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    t0 = time.perf_counter()
    with pytest.raises(XlgptError) as e:
        download(REPO, progress=False)
    assert time.perf_counter() - t0 < 3  # no backoff: huggingface_hub alone would retry for ~25 s
    message = str(e.value)
    assert message.startswith(f"cannot reach the Hugging Face hub at {endpoint}") and "\n" not in message
    assert "xlgpt weights import" in message


class _NoSleep:
    """The time module minus the waiting: huggingface_hub sleeps 1 s before each of its 5 retries."""

    def __init__(self):
        self.slept = []

    def sleep(self, seconds):
        self.slept.append(seconds)

    def __getattr__(self, name):
        return getattr(time, name)


def test_connection_closed_mid_body(hub, env, monkeypatch, capfd):
    from huggingface_hub import file_download

    fake = hub(mode="truncate")
    clock = _NoSleep()
    monkeypatch.setattr(file_download, "time", clock)
    with pytest.raises(XlgptError, match=r"download of model.safetensors from .* was cut off \(peer closed"):
        download(REPO, progress=False)
    # The client really tried to resume, and really gave up.
    assert clock.slept and sum(1 for r in fake.requests if r[1].startswith("/cdn/")) == len(clock.slept) + 1
    assert "resume" not in capfd.readouterr().err  # its retry warnings are muted: xlgpt reports one line
    assert_no_usable_model(env)

    healthy = hub()  # the same command now works, and reuses the config.json that did arrive
    assert_same_weights(download(REPO, progress=False))
    assert resolve(REPO).is_dir()
    assert ("GET", f"/{REPO}/resolve/main/config.json", None) not in healthy.requests


def test_response_shorter_than_announced(hub, env):
    hub(mode="short")
    with pytest.raises(
        XlgptError,
        match=r"download of model.safetensors .* was truncated \(Consistency check "
        r"failed: file should be of size \d+ but has size \d+\)",
    ):
        download(REPO, progress=False)
    assert_no_usable_model(env)


def test_corrupt_download_is_removed(hub, env, repo_files):
    hub(mode="corrupt")
    with pytest.raises(XlgptError, match="model.safetensors is corrupt and was removed from the cache"):
        download(REPO, progress=False)
    assert_no_usable_model(env)
    blobs = sorted(p.stat().st_size for p in (repo_cache(env) / "blobs").iterdir())
    assert len(repo_files["model.safetensors"]) not in blobs  # the bad blob went too, so a retry re-fetches


def test_resolve_skips_snapshot_with_truncated_weights(env, tmp_path):
    """Whatever left it there (a crash, another tool, an older client), a snapshot whose weights file is
    shorter than its header says is not a model."""
    ck = make_ckpt(tmp_path / "ck")
    cache = repo_cache(env)
    snapshot = cache / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("a" * 40)
    shutil.copy(ck / "config.json", snapshot)
    data = (ck / "model.safetensors").read_bytes()
    (snapshot / "model.safetensors").write_bytes(data[: len(data) - 4])
    with pytest.raises(XlgptError, match="not in the cache"):
        resolve(REPO)
    assert list_models() == []
    (snapshot / "model.safetensors").write_bytes(data)
    assert resolve(REPO) == snapshot


def test_resolve_directory_and_unknown_name(env, tmp_path):
    ck = make_ckpt(tmp_path / "ck")
    assert resolve(str(ck)) == ck
    with pytest.raises(XlgptError) as e:
        resolve("nope")
    assert str(e.value).startswith("model 'nope' is not in the cache; download it with: xlgpt weights download nope")
    with pytest.raises(XlgptError, match="not a checkpoint directory"):
        resolve(str(tmp_path / "typo"))  # a path, not a name: no advice to download it


# ---------------------------------------------------------------- import


def test_import_directory(env, tmp_path):
    ck = make_ckpt(tmp_path / "my-ckpt")
    dest = import_model(ck)
    assert dest == env / "xlgpt" / "models" / "my-ckpt"
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    assert_same_weights(dest)
    assert resolve("my-ckpt") == dest
    with pytest.raises(XlgptError, match="already imported"):
        import_model(ck)


def test_import_safetensors_file(env, tmp_path):
    ck = make_ckpt(tmp_path / "ck", tokenizer=False)
    (ck / "model.safetensors").rename(ck / "tiny-v1.safetensors")
    assert_same_weights(import_model(ck / "tiny-v1.safetensors"))  # config.json beside it; name = stem
    assert resolve("tiny-v1") == env / "xlgpt" / "models" / "tiny-v1"

    elsewhere = tmp_path / "weights-only"
    elsewhere.mkdir()
    shutil.move(ck / "tiny-v1.safetensors", elsewhere / "w.safetensors")
    with pytest.raises(XlgptError, match="config.json: not found"):
        import_model(elsewhere / "w.safetensors")
    assert_same_weights(import_model(elsewhere / "w.safetensors", name="other", config=ck / "config.json"))


def test_import_rejects_bad_checkpoint_and_leaves_nothing(env, tmp_path):
    ck = make_ckpt(tmp_path / "ck")
    config = json.loads((ck / "config.json").read_text())
    (ck / "config.json").write_text(json.dumps({**config, "n_embd": 10}))
    with pytest.raises(XlgptError) as e:
        import_model(ck)
    assert str(e.value).startswith(f"{ck / 'model.safetensors'}: ")  # the user's file, not our temp copy
    models = env / "xlgpt" / "models"
    assert list(models.iterdir()) == []  # no model, no temporary directory
    with pytest.raises(XlgptError, match="no such file or directory"):
        import_model(tmp_path / "missing")


def test_import_pytorch_without_torch(env, tmp_path, monkeypatch):
    ck = make_ckpt(tmp_path / "ck")
    (ck / "pytorch_model.bin").write_bytes(b"not read: torch is needed first")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail, installed or not
    with pytest.raises(
        XlgptError,
        match=r"needs torch \(pip install torch\); or convert the file to "
        r"model.safetensors",
    ):
        import_model(ck / "pytorch_model.bin")
    assert not (env / "xlgpt" / "models" / "pytorch_model").exists()


def test_import_pytorch_state_dict(env, tmp_path):
    torch = pytest.importorskip("torch", reason="reading .bin files needs torch")
    ck = make_ckpt(tmp_path / "ck")
    # The layout transformers writes: prefixed names, causal-mask buffers, a tied lm_head.
    state = {f"transformer.{k}": torch.from_numpy(v) for k, v in random_tensors(CFG, SEED).items()}
    state["transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 6, 6))
    state["lm_head.weight"] = state["transformer.wte.weight"]
    torch.save(state, ck / "pytorch_model.bin")
    dest = import_model(ck / "pytorch_model.bin", name="from-torch")
    assert_same_weights(dest)
    assert [m["parameters"] for m in list_models() if m["name"] == "from-torch"] == [n_params(CFG)]


class _Payload:
    """Pickles as a call to os.mkdir: unpickling it runs code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_import_pytorch_refuses_pickled_code(env, tmp_path):
    torch = pytest.importorskip("torch", reason="reading .bin files needs torch")
    ck = make_ckpt(tmp_path / "ck")
    marker = tmp_path / "code-ran"
    torch.save({"wte.weight": torch.zeros(2, 2), "x": _Payload(str(marker))}, ck / "evil.bin")
    with pytest.raises(XlgptError, match=r"weights_only=True.*refused"):
        import_model(ck / "evil.bin")
    assert not marker.exists() and not (env / "xlgpt" / "models" / "evil").exists()
    torch.load(ck / "evil.bin", weights_only=False)  # the payload is live: a plain unpickle runs it
    assert marker.is_dir()


# ---------------------------------------------------------------- list


def test_list_models_all_sources(hub, env, tmp_path):
    bundled = tmp_path / "bundled"
    small = Config(n_layer=2, n_embd=16, n_head=4, vocab_size=30, n_positions=8)
    make_ckpt(bundled / "small", small, seed=1)
    # An HF-style file: prefixed names, a mask buffer and a tied lm_head, none of which are parameters.
    hf = Config(n_layer=1, n_embd=4, n_head=1, vocab_size=9, n_positions=3)
    (bundled / "hf-style").mkdir()
    (bundled / "hf-style" / "config.json").write_text(json.dumps(hf.hf_json()))
    tensors = {f"transformer.{k}": v for k, v in random_tensors(hf, 2).items()}
    tensors["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 3, 3), np.float32))
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"]
    save_file(tensors, bundled / "hf-style" / "model.safetensors")
    (bundled / "gpt2-tokenizer").mkdir()  # not a model
    (bundled / "gpt2-tokenizer" / "vocab.json").write_text("{}")

    hub()
    download(REPO, progress=False)
    mine = Config(n_layer=1, n_embd=12, n_head=3, vocab_size=25, n_positions=7)
    import_model(make_ckpt(tmp_path / "mine", mine, seed=5))

    models = list_models(bundled)
    assert [(m["name"], m["source"]) for m in models] == [
        ("hf-style", "bundled"),
        ("small", "bundled"),
        (REPO, "hub"),
        ("mine", "imported"),
    ]
    expected = {"hf-style": hf, "small": small, REPO: CFG, "mine": mine}
    for m in models:
        assert m["parameters"] == n_params(expected[m["name"]]), m
        assert m["parameters"] == load(m["path"]).n_params
        files = [f for f in Path(m["path"]).iterdir() if f.is_file()]
        assert m["size_bytes"] == sum(f.stat().st_size for f in files) > 0


def test_list_models_of_repo_weights_dir(env):
    # The repo's own weights/ directory lists its models, not the tokenizer-only gpt2-tokenizer/ nor the SAE.
    models = list_models(ROOT / "weights")
    assert [m["name"] for m in models] == ["shakespeare", "shakespeare-induction"]
    for m in models:
        assert m["source"] == "bundled" and m["parameters"] == load(m["path"]).n_params


# ---------------------------------------------------------------- the real command line


def test_cli_download_and_list(hub):
    fake = hub()
    xlgpt_process("weights", "download", REPO, check=0)  # a fresh process: huggingface_hub sees HF_* at import
    assert fake.unexpected == []
    fake.stop()
    listing = xlgpt("weights", "list", check=0)
    assert REPO in listing.stdout
    assert_same_weights(resolve(REPO))


@pytest.mark.engines  # slow: three CLI runs, one waiting on a refused connection
def test_cli_download_errors(hub, env, monkeypatch):
    fake = hub(mode="short")
    assert_clean_error(xlgpt_process("weights", "download", REPO), "truncated")
    assert REPO not in xlgpt("weights", "list", check=0).stdout
    fake.stop()
    hub(mode="missing")
    assert_clean_error(xlgpt_process("weights", "download", REPO), "was not found on the hub")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    t0 = time.perf_counter()
    assert_clean_error(
        xlgpt_process("weights", "download", REPO), "cannot reach the Hugging Face hub", "xlgpt weights import"
    )
    assert time.perf_counter() - t0 < 5


def test_cli_import_and_list(env, tmp_path):
    xlgpt("weights", "import", make_ckpt(tmp_path / "cli-model"), check=0)
    assert "cli-model" in xlgpt("weights", "list", check=0).stdout
    assert_same_weights(env / "xlgpt" / "models" / "cli-model")
