"""Loading and making checkpoints."""

import json

import numpy as np
import pytest

from helpers import FIXTURES, xlgpt
from xlgpt.model.checkpoint import Config, load, random_tensors, save, tensor_shapes
from xlgpt.package import XlgptError


def test_hf_layout_loads_like_plain():
    """transformer. prefixes, attn.bias buffers and a tied lm_head are normalised away."""
    ckpt = load(FIXTURES / "hf_layout")
    assert set(ckpt.tensors) == set(tensor_shapes(ckpt.config))
    plain = random_tensors(ckpt.config, 5)  # the fixture was made from this seed
    for name, value in plain.items():
        np.testing.assert_array_equal(ckpt[name], value)


def test_random_is_seeded_and_shaped(tmp_path):
    cfg = Config(2, 12, 3, 17, 5)
    a, b, c = random_tensors(cfg, 1), random_tensors(cfg, 1), random_tensors(cfg, 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["wte.weight"], c["wte.weight"])
    assert {k: v.shape for k, v in a.items()} == tensor_shapes(cfg)
    # every kind of parameter is perturbed, so every path matters
    assert not np.allclose(a["h.0.ln_1.weight"], 1) and not np.allclose(a["h.1.mlp.c_fc.bias"], 0)


def test_weights_random_cli_writes_hf_config(tmp_path):
    out = tmp_path / "ck"
    run = xlgpt(
        "weights",
        "random",
        "--layers",
        3,
        "--embd",
        20,
        "--heads",
        5,
        "--vocab",
        33,
        "--context",
        9,
        "--seed",
        4,
        "--out",
        out,
        check=0,
    )
    assert "wrote" in run.stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["n_layer"], config["n_embd"], config["n_head"], config["vocab_size"], config["n_positions"]) == (
        3,
        20,
        5,
        33,
        9,
    )
    assert config["model_type"] == "gpt2" and config["layer_norm_epsilon"] == 1e-5
    ckpt = load(out)
    np.testing.assert_array_equal(
        ckpt["h.2.attn.c_proj.weight"], random_tensors(ckpt.config, 4)["h.2.attn.c_proj.weight"]
    )


def test_save_refuses_non_empty_directory(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    cfg = Config(1, 4, 1, 5, 3)
    with pytest.raises(XlgptError, match="already exists"):
        save(tmp_path / "x", cfg, random_tensors(cfg, 0))
    assert (tmp_path / "x" / "f").read_text() == "keep me"


def test_untied_lm_head_is_refused(tmp_path):
    from safetensors.numpy import save_file

    cfg = Config(1, 4, 1, 5, 3)
    t = random_tensors(cfg, 0)
    save(tmp_path / "c", cfg, t)
    save_file({**t, "lm_head.weight": t["wte.weight"] + 1}, tmp_path / "c" / "model.safetensors")
    with pytest.raises(XlgptError, match="not tied"):
        load(tmp_path / "c")
