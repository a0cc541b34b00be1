"""The reference's activation patching and head detectors against TransformerLens itself: the fixture holds what
transformer_lens.patching and transformer_lens.head_detector.detect_head gave on the bundled checkpoint (made by
tests/make_patching_fixtures.py, which needs torch and transformer-lens; nothing here does)."""

import json

import numpy as np
import pytest

from helpers import BUNDLED, FIXTURES
from xlgpt.api import repeated_random_tokens
from xlgpt.model import reference
from xlgpt.model.checkpoint import as_written, load
from xlgpt.tokenizer import hf

CLEAN, CORRUPTED, ANSWER, FOIL = "I know him, and I love", "I know her, and I love", " him", " her"
# TransformerLens ran in float32 (its logits within 1e-5 of the float64 reference's); a metric is a ratio of logit
# differences of about 1, so float32 rounding moves it by ~1e-5 at most, far below 1e-4, while a wrong position,
# head, layer or pattern moves it by ~1e-2 or more
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fixture():
    return json.loads((FIXTURES / "patching_tl.json").read_text())


@pytest.fixture(scope="module")
def ckpt():
    return as_written(load(BUNDLED))


def test_the_fixture_was_made_on_the_prompts_the_book_uses(fixture, ckpt):
    """The token ids TransformerLens ran on are the repo's tokenizer's for the patching lesson's prompts, and the
    induction lesson's 9 seeded random tokens twice (--repeat-random 9)."""
    tok = hf.for_checkpoint(ckpt)
    p = fixture["patching"]
    assert [p["clean"], p["corrupted"]] == [tok.encode(CLEAN), tok.encode(CORRUPTED)]
    assert [[p["answer"]], [p["foil"]]] == [tok.encode(ANSWER), tok.encode(FOIL)]
    assert fixture["head_detector"]["tokens"] == repeated_random_tokens(None, 9, 0)


def test_activation_patching_is_transformer_lens_patching(fixture, ckpt):
    """get_act_patch_resid_pre / attn_out / mlp_out ([layer, position]) and get_act_patch_attn_head_out_all_pos
    ([layer, head]) with the normalised logit difference are the reference's four maps, entry by entry."""
    p = fixture["patching"]
    maps = reference.activation_patching(ckpt, p["clean"], p["corrupted"], p["answer"], p["foil"])
    for name in ("resid_pre", "attn_out", "mlp_out", "head"):
        np.testing.assert_allclose(maps[name], np.array(p[name]), rtol=0, atol=TOLERANCE, err_msg=name)


def test_head_scores_are_transformer_lens_detect_head(fixture, ckpt):
    """detect_head("previous_token_head" / "induction_head" / "duplicate_token_head", error_measure="mul",
    exclude_bos=False, exclude_current_token=False) is head_scores for every [layer, head]."""
    ids = fixture["head_detector"]["tokens"]
    scores = reference.head_scores(reference.run(ckpt, ids)[1], ids)
    for kind in ("previous", "induction", "duplicate"):
        np.testing.assert_allclose(
            scores[kind], np.array(fixture["head_detector"][kind]), rtol=0, atol=TOLERANCE, err_msg=kind
        )
