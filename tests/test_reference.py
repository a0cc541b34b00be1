"""The NumPy reference against logits computed by Hugging Face transformers (committed fixtures)."""

import numpy as np
import pytest

from helpers import FIXTURE_NAMES, FIXTURES, expected
from xlgpt.model import reference
from xlgpt.model.checkpoint import load


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_reference_matches_transformers(name):
    tokens, logits = expected(name)
    ours = reference.logits(load(FIXTURES / name), tokens)
    assert ours.shape == logits.shape
    np.testing.assert_allclose(ours, logits, rtol=0, atol=1e-9)


def test_causal_prefix_property():
    """Logits at position t must not depend on later tokens."""
    tokens, _ = expected("tiny")
    ckpt = load(FIXTURES / "tiny")
    full = reference.logits(ckpt, tokens)
    prefix = reference.logits(ckpt, tokens[:3])
    np.testing.assert_allclose(full[:3], prefix, atol=1e-12)
    assert not np.allclose(full[3], reference.logits(ckpt, tokens[:3] + [(tokens[3] + 1) % 40])[3])
