"""Sparse autoencoders: the bundled one against its own figures and against torch, and the SAELens-layout
loader (folder and fake hub) with good and bad SAEs."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from fakehub import FakeHub
from helpers import FIXTURES, assert_clean_error, xlgpt
from xlgpt.model import reference
from xlgpt.model.checkpoint import load
from xlgpt.model.sae import load_sae, read_sae
from xlgpt.package import XlgptError
from xlgpt.tokenizer.hf import WEIGHTS_DIR

SAE_REPO = "tester/tiny-saes"
SUB = "blocks.0.hook_resid_pre"


@pytest.fixture(scope="module")
def bundled():
    return load_sae(), load(WEIGHTS_DIR / "shakespeare")


# ---------------------------------------------------------------- the bundled SAE


def test_bundled_sae_loads(bundled):
    sae, ckpt = bundled
    assert (sae.d_in, sae.d_sae, sae.layer, sae.hook_name) == (48, 192, 1, "blocks.1.hook_resid_pre")
    assert sae.W_enc.shape == (48, 192) and sae.W_dec.shape == (192, 48) and sae.W_enc.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(sae.W_dec, axis=1), 1, atol=1e-5)  # unit decoder directions
    sae.check_model(ckpt.config)
    cfg = sae.cfg
    assert (
        cfg["architecture"],
        cfg["apply_b_dec_to_input"],
        cfg["normalize_activations"],
        cfg["dtype"],
        cfg["hook_layer"],
    ) == ("standard", True, "none", "float32", 1)
    features = sae.features["features"]
    assert [f["index"] for f in features] == list(range(192))
    assert all(f["label"] and len(f["examples"]) <= 8 for f in features)
    dead = [f for f in features if f["frequency"] == 0]
    assert len(dead) == sae.features["figures"]["dead_features"]
    assert all(f["examples"] for f in features if f["frequency"] > 0)


def test_bundled_figures_reproduced_by_reference(bundled):
    """features.json's figures on its check slice, recomputed in float64 by the NumPy reference."""
    sae, ckpt = bundled
    check = sae.features["check_slice"]
    p = reference.sae_params(sae)
    x = np.concatenate([reference.residual_streams(ckpt, w)[sae.layer] for w in check["windows"]])
    f = reference.sae_features(p, x)
    x_hat = reference.sae_reconstruction(p, f)
    mse = np.mean((x - x_hat) ** 2)
    fve = 1 - np.sum((x - x_hat) ** 2) / np.sum((x - x.mean(0)) ** 2)
    l0 = np.mean(np.sum(f > 0, axis=1))
    assert mse == pytest.approx(check["mse"], rel=1e-4)
    assert fve == pytest.approx(check["fve"], abs=1e-5)
    assert l0 == pytest.approx(check["l0"], abs=2e-3)  # a feature within float error of 0 may flip
    figures = sae.features["figures"]
    assert 0.5 < figures["fraction_of_variance_explained"] < 1 and 1 < figures["mean_l0"] < 48


def test_bundled_features_match_torch(bundled):
    """The torch SAE's activations (tests/fixtures/sae_torch.json, from tools/train_sae.py) = reference."""
    sae, ckpt = bundled
    items = json.loads((FIXTURES / "sae_torch.json").read_text())["items"]
    assert len(items) >= 3
    p = reference.sae_params(sae)
    for item in items:
        ours = reference.sae_features(p, reference.residual_streams(ckpt, item["tokens"])[sae.layer])
        np.testing.assert_allclose(ours, np.array(item["features"]), rtol=1e-5, atol=1e-5, err_msg=item["text"])
        assert (ours > 0).any()


def test_steering_demo(bundled):
    """The recorded demo: a feature's decoder direction added to the stream entering its block at every
    position changes the default prompt's greedy next token."""
    sae, ckpt = bundled
    demo = sae.features["steering_demo"]
    add = {sae.layer: demo["coefficient"] * sae.W_dec[demo["feature"]].astype(np.float64)}
    assert int(reference.logits(ckpt, demo["prompt_ids"])[-1].argmax()) == demo["before_id"]
    assert int(reference.steered_logits(ckpt, demo["prompt_ids"], add)[-1].argmax()) == demo["after_id"]
    assert demo["before_id"] != demo["after_id"]


def test_residual_streams(bundled):
    _, ckpt = bundled
    tokens = [5, 17, 42, 7]
    streams = reference.residual_streams(ckpt, tokens)
    assert len(streams) == ckpt.config.n_layer + 1 and all(s.shape == (4, 48) for s in streams)
    np.testing.assert_allclose(streams[0], ckpt["wte.weight"][tokens] + ckpt["wpe.weight"][:4], atol=1e-6)
    np.testing.assert_array_equal(reference.steered_logits(ckpt, tokens, {}), reference.logits(ckpt, tokens))
    v = np.ones(48)
    assert np.allclose(reference.residual_streams(ckpt, tokens, {1: v})[1], streams[1] + v)


# ---------------------------------------------------------------- SAELens layout: folder, hub, bad ones


def random_sae(d_in, d_sae, hook="blocks.0.hook_resid_pre", seed=3, **cfg_changes):
    """The files of a random SAE in SAELens layout: {name: bytes}."""
    rng = np.random.default_rng(seed)
    tensors = {
        "W_enc": rng.normal(size=(d_in, d_sae)),
        "b_enc": rng.normal(size=d_sae) * 0.1,
        "W_dec": rng.normal(size=(d_sae, d_in)),
        "b_dec": rng.normal(size=d_in) * 0.1,
    }
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    cfg = {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "model_name": "random",
        "hook_name": hook,
        "hook_layer": int(hook.split(".")[1]) if "." in hook else 0,
        "hook_head_index": None,
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        **cfg_changes,
    }
    return cfg, tensors


def write_sae(path, cfg, tensors):
    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(path / "sae_weights.safetensors"))
    return path


def check_random_sae(sae, tensors, ckpt_path):
    ckpt = load(ckpt_path)
    sae.check_model(ckpt.config)
    assert (sae.layer, sae.d_in, sae.d_sae, sae.features) == (0, 8, 32, None)
    for name, t in tensors.items():
        np.testing.assert_array_equal(getattr(sae, name), t)
    x = reference.residual_streams(ckpt, [1, 2, 3])[sae.layer]
    expected = np.maximum(0, (x - tensors["b_dec"]) @ tensors["W_enc"] + tensors["b_enc"])
    np.testing.assert_allclose(reference.sae_features(reference.sae_params(sae), x), expected, atol=1e-6)


def test_random_sae_from_folder(small_ckpt, tmp_path):
    cfg, tensors = random_sae(8, 32)
    check_random_sae(load_sae(write_sae(tmp_path / "sae", cfg, tensors)), tensors, small_ckpt)
    # SAELens 6.x layout: model and hook under "metadata"
    meta = {k: cfg.pop(k) for k in ("model_name", "hook_name", "hook_layer", "hook_head_index")}
    sae = load_sae(write_sae(tmp_path / "v6", {**cfg, "metadata": {**meta, "sae_lens_version": "6.12.1"}}, tensors))
    check_random_sae(sae, tensors, small_ckpt)
    assert load_sae(tmp_path, "v6").hook_name == "blocks.0.hook_resid_pre"  # folder + subfolder


def test_random_sae_through_fake_hub(env, small_ckpt, monkeypatch, tmp_path):
    cfg, tensors = random_sae(8, 32)
    folder = write_sae(tmp_path / "sae", cfg, tensors)
    files = {f"{SUB}/{f.name}": f.read_bytes() for f in folder.iterdir()}
    with FakeHub(SAE_REPO, files) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        sae = load_sae(f"{SAE_REPO}/{SUB}")
        assert sae.path.parts[-1] == SUB and str(env / "hf" / "hub") in str(sae.path)
        check_random_sae(sae, tensors, small_ckpt)
        check_random_sae(load_sae(SAE_REPO, SUB), tensors, small_ckpt)
        assert not fake.unexpected
        with pytest.raises(XlgptError, match=f"{SAE_REPO} has no other/cfg.json"):
            load_sae(SAE_REPO, "other")
    # once cached, no hub is needed
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    check_random_sae(load_sae(f"{SAE_REPO}/{SUB}"), tensors, small_ckpt)


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_hub_errors(env, monkeypatch, tmp_path):
    cfg, tensors = random_sae(8, 32)
    folder = write_sae(tmp_path / "sae", cfg, tensors)
    with FakeHub(SAE_REPO, {f"{SUB}/cfg.json": (folder / "cfg.json").read_bytes()}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with pytest.raises(XlgptError) as e:
            load_sae(SAE_REPO, SUB)
        assert f"{SAE_REPO} has no {SUB}/sae_weights.safetensors" in one_line(e)
        with pytest.raises(XlgptError) as e:
            load_sae("tester/no-such-repo", SUB)
        assert "SAE 'tester/no-such-repo' was not found on the hub" in one_line(e)
    files = {f"{SUB}/cfg.json": (folder / "cfg.json").read_bytes(), f"{SUB}/sae_weights.safetensors": b"garbage!" * 4}
    with FakeHub(SAE_REPO, files) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with pytest.raises(XlgptError) as e:
            load_sae(SAE_REPO, SUB)
        assert "not a readable safetensors file" in one_line(e) and "removed from the cache" in one_line(e)
        assert not list((env / "hf" / "hub").glob("*/snapshots/*/*/sae_weights.safetensors"))  # not reused
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(XlgptError) as e:
        load_sae("tester/elsewhere/x")
    assert "cannot reach the Hugging Face hub" in one_line(e) and "--sae PATH" in one_line(e)


BAD = [
    ("wrong hook", dict(hook="blocks.0.hook_resid_post"), "hook 'blocks.0.hook_resid_post' is not supported"),
    ("attention hook", dict(hook="blocks.0.attn.hook_z"), "is not supported; xlgpt reads SAEs on the residual"),
    ("layer mismatch", dict(hook_layer=3), "hook_layer 3 does not match"),
    ("top-k", dict(architecture="topk"), "architecture 'topk' is not supported"),
    ("normalised", dict(normalize_activations="expected_average_only_in"), "normalize_activations"),
    ("no b_dec subtraction", dict(apply_b_dec_to_input=False), "apply_b_dec_to_input must be true"),
    ("bad d_sae", dict(d_sae=0), "d_sae must be a positive integer"),
    ("wrong d_sae", dict(d_sae=16), "W_enc has shape [8, 32], expected [8, 16]"),
]


@pytest.mark.parametrize("what,changes,message", BAD, ids=[b[0] for b in BAD])
def test_bad_sae(tmp_path, what, changes, message):
    hook = changes.pop("hook", "blocks.0.hook_resid_pre")
    cfg, tensors = random_sae(8, 32, hook=hook)
    cfg.update(changes)
    with pytest.raises(XlgptError) as e:
        read_sae(write_sae(tmp_path / "bad", cfg, tensors))
    assert message in one_line(e)


def test_bad_files(tmp_path, small_ckpt):
    cfg, tensors = random_sae(8, 32)
    folder = write_sae(tmp_path / "sae", cfg, tensors)
    cases = []
    transposed = dict(tensors, W_dec=tensors["W_dec"].T.copy())
    save_file(transposed, str(folder / "sae_weights.safetensors"))
    cases.append("W_dec has shape [8, 32], expected [32, 8]")
    with pytest.raises(XlgptError) as e:
        load_sae(folder)
    assert cases[-1] in one_line(e)
    save_file({k: v for k, v in tensors.items() if k != "b_enc"}, str(folder / "sae_weights.safetensors"))
    with pytest.raises(XlgptError) as e:
        load_sae(folder)
    assert "missing b_enc" in one_line(e)
    (folder / "sae_weights.safetensors").unlink()
    with pytest.raises(XlgptError) as e:
        load_sae(folder)
    assert "no sae_weights.safetensors" in one_line(e)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(XlgptError) as e:
        load_sae(folder)
    assert "not readable JSON" in one_line(e)
    (folder / "cfg.json").unlink()
    with pytest.raises(XlgptError) as e:
        load_sae(folder)
    assert "no cfg.json" in one_line(e)
    with pytest.raises(XlgptError) as e:
        load_sae("./nowhere")
    assert "not an SAE folder" in one_line(e)
    # an SAE for another model
    wide = load_sae(write_sae(tmp_path / "wide", *random_sae(16, 32)))
    with pytest.raises(XlgptError, match="reads 16 dimensions but the model's residual stream has 8"):
        wide.check_model(load(small_ckpt).config)
    deep = load_sae(write_sae(tmp_path / "deep", *random_sae(8, 32, hook="blocks.1.hook_resid_pre")))
    with pytest.raises(XlgptError, match="needs block 1, but the model has 1 blocks"):
        deep.check_model(load(small_ckpt).config)


# ---------------------------------------------------------------- the command line


def test_cli_features():
    run = xlgpt("features", check=0)
    lines = run.stdout.splitlines()
    assert "192 features on blocks.1.hook_resid_pre" in lines[0] and len(lines) == 1 + 1 + 192  # and a header
    assert lines[1].split()[:3] == ["index", "fires", "on"]

    def run_json(*args):
        return json.loads(xlgpt("features", "--json", *args, check=0).stdout)

    data = run_json("--top", 5)
    assert len(data["features"]) == 5 and data["d_sae"] == 192
    freqs = [f["frequency"] for f in data["features"]]
    assert freqs == sorted(freqs, reverse=True)
    found = run_json("--search", "THOU")["features"]
    assert found and all("thou" in f["label"] or any("thou" in t["token"] for t in f["top_tokens"]) for f in found)
    assert run_json("--search", "no-such-token-xyz")["features"] == []
    assert "no feature matches" in xlgpt("features", "--search", "no-such-token-xyz", check=0).stdout


def test_cli_features_errors(tmp_path):
    cfg, tensors = random_sae(8, 32, hook="blocks.0.hook_mlp_out")
    run = xlgpt("features", "--sae", write_sae(tmp_path / "bad", cfg, tensors), check=2)
    assert_clean_error(run, "hook 'blocks.0.hook_mlp_out' is not supported")
    run = xlgpt("features", "--sae", write_sae(tmp_path / "ok", *random_sae(8, 32)), check=0)
    # the SAE's line, the columns' header and its 32 features
    assert "no features.json" in run.stdout and len(run.stdout.splitlines()) == 34 and run.stderr == ""
