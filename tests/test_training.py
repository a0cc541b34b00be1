"""Training books (build --train) and xlgpt train: the loss, every gradient and the optimizer's step as formulas,
checked against PyTorch autograd (the committed fixtures of tests/make_training_fixtures.py) and against the
NumPy reference's own backward pass and training loop (eval, train)."""

import json

import numpy as np
import pytest

from helpers import BUNDLED, FIXTURES, ROOT, assert_valid_ooxml, tokens_arg, xlgpt
from xlgpt.check.verify import from_layout
from xlgpt.engines.libreoffice import libreoffice_values
from xlgpt.model import backward
from xlgpt.model.checkpoint import as_written, load
from xlgpt.sheet import contract as C
from xlgpt.sheet.read import read_book

TRAINING = FIXTURES / "training"
SHAPES = ["tiny", "three_heads", "single_token", "shakespeare"]


def fixture(name):
    data = np.load(TRAINING / f"{name}.npz")
    weights = ROOT / str(data["checkpoint"])
    return data, weights, [int(t) for t in data["inputs"]] + [int(data["targets"][-1])]


def build_training(tmp_path, name, *options):
    data, weights, tokens = fixture(name)
    out = tmp_path / f"{name}.xlsx"
    xlgpt("build", "--train", "--weights", weights, "--tokens", tokens_arg(tokens), "--out", out, *options, check=0)
    return data, read_book(out)


def test_a_training_book_lays_out_the_backward_pass_and_the_step(tmp_path):
    data, book = build_training(tmp_path, "tiny")
    cfg = load(FIXTURES / "tiny").config
    backward_tabs = [s for s in book.sheets if s.endswith(" backward")]
    assert backward_tabs == ["Output backward"] + [f"Layer {i} backward" for i in reversed(range(cfg.n_layer))] + [
        "Embeddings backward"
    ]
    assert book.sheets.index("Loss") < book.sheets.index("Output backward")
    assert book.training["targets"] == [int(t) for t in data["targets"]]
    assert book.training["optimizer"] == "sgd" and book.training["settings"] == {C.LEARNING_RATE: 0.1}
    assert book.names[C.LOSS].height == book.names[C.LOSS].width == 1
    # every tensor's gradient and update sit exactly where its weights do, on the tabs beside them
    ckpt = load(FIXTURES / "tiny")
    for tensor in ckpt.tensors:
        name, _ = C.weight_name_in(book.names, tensor)
        weight = book.names[name]
        for prefix, suffix in ((C.GRADIENT, "gradients"), (C.UPDATED, "updated")):
            mirror = book.names[prefix + name]
            assert (mirror.top, mirror.left, mirror.height, mirror.width) == (
                weight.top,
                weight.left,
                weight.height,
                weight.width,
            )
            assert mirror.sheet == weight.sheet.replace("weights", suffix)
        assert C.ADAM_M + name not in book.names


def test_adamw_books_carry_the_moments_and_their_settings(tmp_path):
    _, book = build_training(tmp_path, "tiny", "--optimizer", "adamw")
    assert book.training["settings"] == {
        C.LEARNING_RATE: 0.001,
        C.WEIGHT_DECAY: 0.01,
        C.ADAM_BETA1: 0.9,
        C.ADAM_BETA2: 0.999,
        C.ADAM_EPS: 1e-8,
        C.ADAM_STEP: 1,
    }
    moments = book.training["moments"]
    weights = [name[len(C.GRADIENT) :] for name in book.names if name.startswith(C.GRADIENT)]
    assert set(moments) == {prefix + w for w in weights for prefix in (C.ADAM_M, C.ADAM_V)}
    assert all(v == 0 for grid in moments.values() for row in grid for v in row)


def test_bad_training_requests_get_one_line(tmp_path):
    from helpers import assert_clean_error

    assert_clean_error(xlgpt("build", "--train", "--tokens", "5", "--out", tmp_path / "a.xlsx"), "at least 2 tokens")
    assert_clean_error(xlgpt("build", "--train", "--steer-feature", "3", "--out", tmp_path / "b.xlsx"), "--train")
    assert_clean_error(
        xlgpt("build", "--template", ROOT / "templates" / "gpt2-train.toml", "--out", tmp_path / "c.xlsx"), "--train"
    )
    assert_clean_error(xlgpt("train", "--text", tmp_path / "missing.txt", "--out", tmp_path / "d"), "missing.txt")
    short = tmp_path / "short.txt"
    short.write_text("To be")
    assert_clean_error(xlgpt("train", "--text", short, "--out", tmp_path / "e"), "too short")
    assert not any(p.name in ("a.xlsx", "b.xlsx", "c.xlsx", "d", "e") for p in tmp_path.iterdir())


@pytest.mark.engines
@pytest.mark.parametrize("name", SHAPES)
def test_the_books_gradients_and_sgd_step_equal_pytorch(tmp_path, name):
    """LibreOffice recalculates the training book; its loss, every parameter's gradient and the weights after
    one SGD step equal torch's autograd and torch.optim.SGD (up to the book's float32-decimal weights)."""
    data, book = build_training(tmp_path, name, "--lr", str(float(data_lr(name))))
    ckpt = load(fixture(name)[1])
    wanted = [C.LOSS] + [n for n in book.names if n.startswith((C.GRADIENT, C.UPDATED))]
    values, _ = libreoffice_values(book, wanted)
    assert abs(values[C.LOSS][0, 0] - float(data["loss"])) < 1e-6
    grads = from_layout(C.GRADIENT, values, ckpt.tensors)
    updated = from_layout(C.UPDATED, values, ckpt.tensors)
    assert set(grads) == set(updated) == set(ckpt.tensors)
    for tensor in ckpt.tensors:
        want = data[f"grad/{tensor}"]
        assert np.abs(grads[tensor] - want).max() <= 1e-6 * max(1.0, np.abs(want).max()), tensor
        assert np.abs(updated[tensor] - data[f"sgd/{tensor}"]).max() <= 1e-6, tensor


def data_lr(name):
    return np.load(TRAINING / f"{name}.npz")["lr_sgd"]


@pytest.mark.engines
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_eval_checks_a_training_book_with_every_engine(tmp_path, optimizer):
    _, book = build_training(tmp_path, "three_heads", "--optimizer", optimizer)
    run = xlgpt("eval", book.path, "--engine", "all", "--json", check=0)
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["engine"] for r in results] == ["formulas", "libreoffice", "gnumeric", "ironcalc"]
    for r in results:
        assert r["match"], r
        assert {C.LOSS, C.GRADIENT + "wte_weight", C.UPDATED + "wte_weight"} <= set(r["checks"])
        assert (C.NEW_ADAM_V + "wte_weight" in r["checks"]) == (optimizer == "adamw")
        assert max(r["checks"].values()) < 1e-9


@pytest.mark.engines
def test_a_corrupted_weight_cell_is_a_mismatch(tmp_path, monkeypatch):
    """The checks can fail: one weight cell changed in the file makes the book's loss and gradients leave the
    reference's (which reads the checkpoint). eval refuses the cell itself before any engine runs; without that
    check, the engine's loss and gradients show it."""
    from xlgpt.check import verify
    from xlgpt.check.provenance import Provenance
    from xlgpt.sheet.writer import copy_with_cell

    _, book = build_training(tmp_path, "tiny")
    cell = book.names["wte_weight"].cell(book.training["targets"][0], 0)
    forged = tmp_path / "forged.xlsx"
    copy_with_cell(book.path, forged, book.sheets.index(cell.sheet) + 1, cell.top, cell.left, 0.5)
    run = xlgpt("eval", forged, "--engine", "libreoffice", "--json")
    assert run.returncode == 1, run.stderr
    assert "holds 0.5 where the checkpoint's value" in json.loads(run.stdout)["not_compiled"]
    monkeypatch.setattr(verify, "check_compiled", lambda book, sheets, names, cached=(): Provenance())
    run = xlgpt("eval", forged, "--engine", "libreoffice", "--json")
    assert run.returncode == 1, run.stderr
    checks = json.loads(run.stdout)["checks"]
    assert checks[C.LOSS] > 1e-6 and checks[C.GRADIENT + "wte_weight"] > 1e-6


@pytest.mark.engines
def test_train_lowers_the_loss_step_for_step_with_the_reference(tmp_path):
    """xlgpt train on one prompt: every step's loss is the reference loop's, the loss falls, the checkpoint it
    writes is the reference's weights and builds again; its workbook charts the loss and passes eval."""
    prompt = "Shall I compare thee to a summer's day"
    out = tmp_path / "trained"
    run = xlgpt(
        "train",
        "--prompt",
        prompt,
        "--steps",
        "4",
        "--optimizer",
        "adamw",
        "--lr",
        "0.003",
        "--engine",
        "ironcalc",
        "--out",
        out,
        "--json",
        check=0,
    )
    result = json.loads(run.stdout)
    ckpt = load(BUNDLED)
    from xlgpt.tokenizer import hf

    tok = hf.for_checkpoint(ckpt)
    window = backward.prompt_window(tok.encode(prompt))
    losses, final, _ = backward.train(as_written(ckpt).tensors, ckpt.config, [window] * 4, "adamw", lr=0.003)
    got = [s["loss"] for s in result["steps"]]
    assert np.allclose(got, losses, rtol=0, atol=1e-9)
    assert got == sorted(got, reverse=True) and got[-1] < got[0] - 0.1
    trained = load(out)
    for tensor, value in final.items():  # saved as float32
        assert np.abs(trained[tensor] - value).max() <= 1e-6, tensor
    book = read_book(out / "train.xlsx")
    assert np.allclose(book.training["history"], got, atol=1e-12)
    assert book.training["settings"][C.ADAM_STEP] == 5
    assert xlgpt("eval", out / "train.xlsx", "--engine", "ironcalc").returncode == 0
    assert_valid_ooxml(out / "train.xlsx")  # its chart too
    xlgpt("build", "--weights", out, "--prompt", "To be", "--out", tmp_path / "again.xlsx", check=0)


@pytest.mark.engines
def test_train_takes_pytorchs_three_adamw_steps(tmp_path):
    """xlgpt train on the bundled fixture's window, 3 AdamW steps: torch.optim.AdamW's losses and weights
    (the committed fixture). Where a gradient is zero in exact arithmetic (the key bias: softmax ignores a
    shift shared by every key), Adam's division by sqrt(v) turns rounding noise into steps of up to lr, so
    there the two may differ by that much; everywhere else within 1e-6."""
    data, _, ids = fixture("shakespeare")
    from xlgpt.tokenizer import hf

    tok = hf.for_checkpoint(load(BUNDLED))
    prompt = tok.decode(ids)
    assert tok.encode(prompt) == ids
    out = tmp_path / "trained"
    run = xlgpt(
        "train",
        "--prompt",
        prompt,
        "--steps",
        "3",
        "--optimizer",
        "adamw",
        "--lr",
        str(float(data["lr_adamw"])),
        "--out",
        out,
        "--json",
        check=0,
    )
    losses = [s["loss"] for s in json.loads(run.stdout)["steps"]]
    assert np.allclose(losses, data["adamw3_losses"], rtol=0, atol=1e-6)
    trained, lr, C_ = load(out), float(data["lr_adamw"]), load(BUNDLED).config.n_embd
    for tensor in trained.tensors:
        diff = np.abs(trained[tensor] - data[f"adamw3/{tensor}"])
        if tensor.endswith("attn.c_attn.bias"):
            assert diff[C_ : 2 * C_].max() <= 3 * 2 * lr, tensor
            diff = np.concatenate([diff[:C_], diff[2 * C_ :]])
        assert diff.max() <= 1e-6, (tensor, diff.max())


@pytest.mark.engines
def test_train_with_the_formulas_engine(tmp_path):
    """The same loop through the pure-Python engine (a small random model with the bundled tokenizer): every
    step's loss is the reference's, and so are the weights it ends with."""
    import shutil

    model = tmp_path / "small"
    xlgpt(
        "weights",
        "random",
        "--layers",
        "1",
        "--embd",
        "8",
        "--heads",
        "2",
        "--vocab",
        "512",
        "--context",
        "8",
        "--seed",
        "4",
        "--out",
        model,
        check=0,
    )
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(BUNDLED / f, model / f)
    run = xlgpt(
        "train",
        "--weights",
        model,
        "--prompt",
        "To be, or not",
        "--steps",
        "2",
        "--optimizer",
        "sgd",
        "--lr",
        "0.5",
        "--engine",
        "formulas",
        "--out",
        tmp_path / "trained",
        "--json",
        check=0,
    )
    result = json.loads(run.stdout)
    assert result["engine"] == "formulas" and result["max_weight_diff"] < 1e-9
    assert [s["diff"] < 1e-9 for s in result["steps"]] == [True, True]
    assert result["steps"][1]["loss"] < result["steps"][0]["loss"]
