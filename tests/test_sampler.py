"""The reference sampler (reference.sample) against a plain-Python implementation of the same spec and
hand-computed values."""

import math

import numpy as np
import pytest

from xlgpt.model import reference as R

M = 2147483647


def naive(logits, temperature, top_k, seed, step):
    """The spec, written out with loops and Python floats."""
    s = seed
    for _ in range(step + 3):
        s = s * 48271 % M
    u = s / M
    n = len(logits)
    if temperature == 0:
        best = 0
        for j in range(n):
            if logits[j] > logits[best]:
                best = j
        return best
    order = sorted(range(n), key=lambda j: (-logits[j], j))
    kept = set(order if top_k == 0 or top_k >= n else order[:top_k])
    top = max(logits[j] for j in kept)
    weights = [math.exp((logits[j] - top) / temperature) if j in kept else 0.0 for j in range(n)]
    total = sum(weights)
    cumulative = 0.0
    for j in range(n):
        cumulative += weights[j] / total
        if cumulative > u:
            return j
    return max(kept)


def test_minstd_known_values():
    # the Park-Miller "minimal standard" with multiplier 48271: from seed 1, s(1) = 48271, s(2) = 48271^2 mod M
    assert R.minstd(1, 0) == 1
    assert R.minstd(1, 1) == 48271
    assert R.minstd(1, 2) == 48271**2 % M == 182605794
    assert R.minstd(1, 10000) == 399268537  # the well-known 10,000th value of minstd_rand
    assert R.sample_uniform(1, 0) == R.minstd(1, 3) / M


def test_temperature_zero_is_the_argmax_lowest_id_among_ties():
    logits = [1.0, 3.0, 2.0, 3.0]
    assert R.sample(logits, 0, 0, 1, 0) == 1
    assert R.sample(logits, 0, 2, 12345, 7) == 1  # neither TopK nor the seed matters
    assert R.sample([5.0] * 4, 0, 0, 1, 0) == 0


def test_top_k_ties_go_to_the_lower_id():
    # two tokens tie for second place: TopK 2 keeps id 0 and id 1 (not 3)
    p = R.sample_probabilities([2.0, 1.0, -5.0, 1.0], 1.0, 2)
    assert p[2] == p[3] == 0 and p[1] > 0 and abs(p.sum() - 1) < 1e-15
    assert p[0] == pytest.approx(math.e / (math.e + 1))


def test_top_k_of_zero_or_beyond_the_vocabulary_keeps_every_token():
    logits = [0.1, 0.7, -0.3]
    for k in (0, 3, 4, 1000):
        assert np.allclose(R.sample_probabilities(logits, 1.0, k), R.softmax(np.array(logits)))


def test_top_k_one_is_the_argmax_at_any_temperature():
    for seed in (1, 2, 99, M - 1):
        assert R.sample([0.0, 4.0, 4.0, 1.0], 5.0, 1, seed, 3) == 1


def test_choose_at_a_cumulative_boundary():
    p = np.array([0.25, 0.25, 0.5])
    assert R.choose(p, 0.25) == 1  # cumulative 0.25 does not exceed u = 0.25
    assert R.choose(p, 0.2499999) == 0
    assert R.choose(p, 0.5) == 2
    assert R.choose(p, 0.0) == 0
    assert R.choose(np.array([0.5, 0.25, 0.0]), 0.9) == 1  # rounding short of u: the last possible token


def test_a_u_exactly_on_a_boundary_through_sample():
    # seed chosen so that s(3) = M / 2 rounded down, then logits give p = [0.5, 0.5]: u < 0.5, token 0
    seed = (M // 2) * pow(48271, -3, M) % M
    u = R.sample_uniform(seed, 0)
    assert R.minstd(seed, 3) == M // 2 and u < 0.5
    assert R.sample([1.0, 1.0], 1.0, 0, seed, 0) == 0
    seed_up = (M // 2 + 1) * pow(48271, -3, M) % M  # u just above 0.5: token 1
    assert R.sample([1.0, 1.0], 1.0, 0, seed_up, 0) == 1


@pytest.mark.parametrize("seed", [0, -1, M, M + 5, 1.5, "7", None, True])
def test_bad_seeds(seed):
    with pytest.raises(ValueError, match="Seed"):
        R.sample([1.0, 2.0], 1.0, 0, seed, 0)
    with pytest.raises(ValueError, match="Seed"):
        R.sample([1.0, 2.0], 0, 0, seed, 0)


def test_seed_range_ends_and_whole_floats_are_accepted():
    logits = [1.0, 2.0, 0.5, 2.0]
    for seed in (1, M - 1, 42.0):
        for step in range(20):
            want = naive(logits, 1.0, 0, int(seed), step)  # a whole float is the integer it equals
            assert R.sample(logits, 1.0, 0, seed, step) == want, (seed, step)
    # the ends of the range give their own draws: u = minstd(seed, step + 3) / M, each as the spec says
    assert R.sample_uniform(1, 0) == 48271**3 % M / M
    assert R.sample_uniform(M - 1, 0) == (M - 1) * 48271**3 % M / M
    draws = lambda seed: [R.sample(logits, 1.0, 0, seed, k) for k in range(20)]
    assert draws(42.0) == draws(42) and len(set(draws(42))) > 1  # the same draws, and not all one token


def test_bad_step_temperature_and_top_k():
    with pytest.raises(ValueError, match="SampleStep"):
        R.sample([1.0], 1.0, 0, 1, -1)
    with pytest.raises(ValueError, match="Temperature"):
        R.sample([1.0], -0.5, 0, 1, 0)
    with pytest.raises(ValueError, match="TopK"):
        R.sample([1.0], 1.0, 1.5, 1, 0)


def test_agrees_with_the_naive_implementation():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 40))
        logits = [float(x) for x in np.round(rng.normal(0, 3, n), int(rng.integers(0, 3)))]  # rounding: ties
        temperature = float(rng.choice([0, 0.3, 1.0, 2.5]))
        top_k = int(rng.choice([0, 1, 2, 5, n, n + 3]))
        seed, step = int(rng.integers(1, M)), int(rng.integers(0, 50))
        assert R.sample(logits, temperature, top_k, seed, step) == naive(logits, temperature, top_k, seed, step), trial
