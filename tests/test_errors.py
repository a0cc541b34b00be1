"""Bad input: one clear error line, exit code 2, no traceback, no output file."""

import json
import os
import shutil
import sys

import openpyxl
import pytest

from helpers import FIXTURES, assert_clean_error, xlgpt


def copy_ckpt(src, dst):
    shutil.copytree(src, dst)
    return dst


def build_fails(tmp_path, weights, tokens, *words):
    out = tmp_path / "out.xlsx"
    run = xlgpt("build", "--weights", weights, "--tokens", tokens, "--out", out)
    assert_clean_error(run, *words)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.suffix in (".xlsx", ".tmp")] == []


def test_missing_weights(tmp_path):
    build_fails(tmp_path, tmp_path / "nowhere", "1,2", "not a checkpoint directory")


def test_corrupt_safetensors(tmp_path, small_ckpt):
    ck = copy_ckpt(small_ckpt, tmp_path / "ck")
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    build_fails(tmp_path, ck, "1,2", "cannot read safetensors")


def test_config_does_not_match_tensors(tmp_path, small_ckpt):
    ck = copy_ckpt(small_ckpt, tmp_path / "ck")
    config = json.loads((ck / "config.json").read_text())
    config["n_embd"] = 10
    config["n_head"] = 2
    (ck / "config.json").write_text(json.dumps(config))
    build_fails(tmp_path, ck, "1,2", "shape", "config.json implies")


def test_config_not_json(tmp_path, small_ckpt):
    ck = copy_ckpt(small_ckpt, tmp_path / "ck")
    (ck / "config.json").write_text("{not json")
    build_fails(tmp_path, ck, "1,2", "not valid JSON")


@pytest.mark.parametrize(
    "tokens, words",
    [
        ("1,20", ["outside the vocabulary", "0..19"]),
        ("-1", ["outside the vocabulary"]),
        ("1,2,3,4,5,6,7", ["7 tokens exceed the model's context of 6"]),
        ("", ["expected comma-separated token ids"]),
        ("1,,2", ["expected comma-separated token ids"]),
        ("a,b", ["not a comma-separated list of integers"]),
        ("1.5", ["not a comma-separated list of integers"]),
    ],
)
def test_bad_tokens(tmp_path, small_ckpt, tokens, words):
    build_fails(tmp_path, small_ckpt, tokens, *words)


def test_unwritable_output(tmp_path, small_ckpt):
    run = xlgpt("build", "--weights", small_ckpt, "--tokens", "1", "--out", tmp_path / "no" / "such" / "b.xlsx")
    assert_clean_error(run, "does not exist")
    run = xlgpt("build", "--weights", small_ckpt, "--tokens", "1", "--out", tmp_path)
    assert_clean_error(run, "is a directory")


def test_weights_random_bad_shape(tmp_path):
    run = xlgpt("weights", "random", "--embd", 10, "--heads", 3, "--out", tmp_path / "c")
    assert_clean_error(run, "not divisible")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("content", [b"hello, not a workbook", b"PK\x03\x04 broken zip"])
def test_eval_not_a_workbook(tmp_path, content):
    path = tmp_path / "x.xlsx"
    path.write_bytes(content)
    assert_clean_error(xlgpt("eval", path, "--engine", "libreoffice"), "not an .xlsx workbook")


def test_eval_missing_file(tmp_path):
    assert_clean_error(xlgpt("eval", tmp_path / "none.xlsx"), "no such file")


def test_eval_foreign_workbook(tmp_path):
    path = tmp_path / "plain.xlsx"
    wb = openpyxl.Workbook()
    wb.active["A1"] = 1
    wb.save(path)
    assert_clean_error(xlgpt("eval", path), "not an xlgpt workbook")


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    path = tmp_path_factory.mktemp("b") / "tiny.xlsx"
    xlgpt("build", "--weights", FIXTURES / "tiny", "--tokens", "1,2,3", "--out", path, check=0)
    return path


def test_formulas_refuses_a_big_book_before_loading(tiny_book):
    run = xlgpt("eval", tiny_book, "--engine", "formulas", "--max-cells", 1000)
    assert_clean_error(run, "too large for the formulas engine", "--engine ironcalc or libreoffice")


def test_libreoffice_missing(tiny_book):
    env = {"PATH": os.path.dirname(sys.executable)}
    run = xlgpt("eval", tiny_book, "--engine", "libreoffice", env=env)
    assert_clean_error(run, "LibreOffice is not installed")
