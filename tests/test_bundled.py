"""The bundled Shakespeare model: offline default of every command."""

import json

import pytest

from helpers import BUNDLED, xlgpt

TRAINING = json.loads((BUNDLED / "training.json").read_text())


@pytest.mark.parametrize("item", TRAINING["samples"]["items"], ids=lambda i: i["prompt"])
def test_greedy_continuations_match_torch(item):
    """The training script recorded torch's greedy continuations; the NumPy reference must agree."""
    run = xlgpt("predict", "--prompt", item["prompt"], "--generate", len(item["new_ids"]), "--json", check=0)
    out = json.loads(run.stdout)
    assert out["tokens"] == item["prompt_ids"]  # the tokenizer, as `tokenizers` encoded it in training
    assert out["generated"] == item["new_ids"]
    assert out["text"] == item["continuation"]


@pytest.mark.engines
def test_default_prompt_verifies_with_both_engines(tmp_path):
    """The default model and prompt with fixed token ids (the prompt-cell default book: test_prompt_cell.py)."""
    out = tmp_path / "default.xlsx"
    run = xlgpt("build", "--no-prompt-cell", "--out", out, check=0)
    assert "O Romeo, Romeo, wherefore art" in run.stdout
    results = [
        json.loads(line) for line in xlgpt("eval", out, "--engine", "both", "--json", check=0).stdout.splitlines()
    ]
    top = json.loads(xlgpt("predict", "--json", check=0).stdout)["top"][0]
    assert [r["engine"] for r in results] == ["formulas", "libreoffice"]
    for r in results:
        assert r["match"] and r["token_id"] == top["token_id"] and r["token_text"] == top["text"]
        assert r["prompt"] == "O Romeo, Romeo, wherefore art"


def test_listed_with_its_size():
    models = json.loads(xlgpt("weights", "list", "--json", check=0).stdout)
    bundled = [m for m in models if m["name"] == "shakespeare"]
    assert bundled and bundled[0]["source"] == "bundled"
    assert (
        bundled[0]["parameters"] == TRAINING["n_params"] == 512 * 48 + 64 * 48 + 2 * (12 * 48 * 48 + 13 * 48) + 2 * 48
    )


@pytest.mark.engines
def test_full_context_verifies(tmp_path):
    """64 tokens, the model's whole context, in LibreOffice."""
    text = "O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name. " * 3
    ids = json.loads(xlgpt("tokenize", "--json", text, check=0).stdout)[0]["tokens"][:64]
    assert len(ids) == 64
    out = tmp_path / "full.xlsx"
    xlgpt("build", "--tokens", ",".join(map(str, ids)), "--out", out, check=0)
    r = json.loads(xlgpt("eval", out, "--engine", "libreoffice", "--json", check=0).stdout)
    assert r["match"] and len(r["tokens"]) == 64 and r["max_abs_logit_diff"] < 1e-9
    assert xlgpt("build", "--tokens", ",".join(map(str, ids + [1])), "--out", out).returncode == 2
