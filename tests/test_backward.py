"""The reference's backward pass and optimizers (xlgpt.model.backward) against PyTorch autograd and torch.optim
(committed fixtures from tests/make_training_fixtures.py; no torch needed here), finite differences, and a
short training run of the bundled model."""

import numpy as np
import pytest

from helpers import BUNDLED, FIXTURES, ROOT
from xlgpt.model import reference
from xlgpt.model.backward import AdamState, adamw, loss_and_grads, prompt_window, sgd, train, windows
from xlgpt.model.checkpoint import Config, load, random_tensors
from xlgpt.package import XlgptError
from xlgpt.tokenizer.hf import find

TRAINING = FIXTURES / "training"
NAMES = ["tiny", "three_heads", "single_token", "shakespeare"]
# Both sides compute in float64: a tensor agrees when max |ours - torch| <= RTOL * max |torch| over the tensor.
RTOL = 1e-10
# Adam divides by sqrt(v) + eps. The key bias's gradient is zero in exact arithmetic (softmax ignores a shift
# shared by all keys), so both sides hold rounding noise (~1e-17) there, which AdamW turns into weight moves of
# up to lr * noise / eps per step: allow lr * 1e-15 / eps per step on top of RTOL.
GRADIENT_ROUNDING = 1e-15


def fixture(name):
    f = np.load(TRAINING / f"{name}.npz")
    ckpt = load(ROOT / str(f["checkpoint"]))
    return f, ckpt, f["inputs"].tolist(), f["targets"].tolist()


def assert_tensors_match(ours, f, key, slack=0.0):
    expected = {name[len(key) + 1 :]: f[name] for name in f.files if name.startswith(key + "/")}
    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert ours[name].shape == value.shape and ours[name].dtype == np.float64, name
        diff = np.abs(ours[name] - value).max()
        assert diff <= RTOL * np.abs(value).max() + slack, (key, name, diff, np.abs(value).max())


@pytest.mark.parametrize("name", NAMES)
def test_loss_and_gradients_match_torch(name):
    f, ckpt, inputs, targets = fixture(name)
    loss, grads, _ = loss_and_grads(ckpt.tensors, ckpt.config, inputs, targets)
    assert abs(loss - f["loss"]) <= RTOL * f["loss"]
    assert list(grads) == list(ckpt.tensors)  # exactly the checkpoint's tensors
    assert_tensors_match(grads, f, "grad")


@pytest.mark.parametrize("name", NAMES)
def test_sgd_matches_torch(name):
    f, ckpt, inputs, targets = fixture(name)
    _, grads, _ = loss_and_grads(ckpt.tensors, ckpt.config, inputs, targets)
    assert_tensors_match(sgd(ckpt.tensors, grads, float(f["lr_sgd"])), f, "sgd")


@pytest.mark.parametrize("name", NAMES)
def test_adamw_matches_torch(name):
    f, ckpt, inputs, targets = fixture(name)
    settings = dict(
        lr=float(f["lr_adamw"]),
        beta1=f["betas"][0],
        beta2=f["betas"][1],
        eps=float(f["adamw_eps"]),
        weight_decay=float(f["weight_decay"]),
    )
    per_step = settings["lr"] * GRADIENT_ROUNDING / settings["eps"]

    # The optimizer alone, on torch's own gradients: no gradient rounding to allow for
    torch_grads = {name: f["grad/" + name] for name in ckpt.tensors}
    one, state = adamw(ckpt.tensors, torch_grads, AdamState.zeros(ckpt.tensors), **settings)
    assert state.step == 1
    assert_tensors_match(one, f, "adamw1")

    # One and three steps of the reference training loop, on its own gradients
    losses, one, state = train(ckpt.tensors, ckpt.config, [(inputs, targets)], optimizer="adamw", **settings)
    assert state.step == 1 and losses == [loss_and_grads(ckpt.tensors, ckpt.config, inputs, targets)[0]]
    assert_tensors_match(one, f, "adamw1", slack=per_step)
    # three steps on the same window: fresh gradients each step, moments, bias corrections for step counts > 1
    losses, three, state = train(ckpt.tensors, ckpt.config, [(inputs, targets)] * 3, optimizer="adamw", **settings)
    assert state.step == 3
    np.testing.assert_allclose(losses, f["adamw3_losses"], rtol=RTOL, atol=0)
    assert losses[0] == pytest.approx(float(f["loss"]), rel=RTOL)
    assert_tensors_match(three, f, "adamw3", slack=3 * per_step)


@pytest.mark.parametrize("name", NAMES)
def test_wte_gradient_is_the_sum_of_its_two_paths(name):
    _, ckpt, inputs, targets = fixture(name)
    _, grads, cache = loss_and_grads(ckpt.tensors, ckpt.config, inputs, targets)
    embed, unembed = cache["wte_embed"], cache["wte_unembed"]
    np.testing.assert_array_equal(embed + unembed, grads["wte.weight"])
    # The lookup path reaches only the rows of the input tokens, each the sum of its positions' gradients
    expected = np.zeros_like(embed)
    for position, token in enumerate(inputs):
        expected[token] += cache["dx"][0][position]
    np.testing.assert_allclose(embed, expected, rtol=0, atol=1e-15)
    # The unembedding path: logits = ln_f @ wte.T, so it is dlogits.T @ (ln_f's output), non-zero everywhere
    assert np.count_nonzero(np.abs(unembed).sum(axis=1)) == ckpt.config.vocab_size
    assert np.abs(unembed).max() > 0 and np.abs(embed).max() > 0


@pytest.mark.parametrize("name", ["three_heads", "shakespeare"])
def test_cache_holds_the_activation_gradients(name):
    f, ckpt, inputs, targets = fixture(name)
    cfg, T, C = ckpt.config, len(inputs), ckpt.config.n_embd
    _, grads, cache = loss_and_grads(ckpt.tensors, cfg, inputs, targets)
    np.testing.assert_allclose(cache["logits"], reference.logits(ckpt, inputs), rtol=0, atol=1e-12)
    probs = reference.softmax(cache["logits"])
    probs[np.arange(T), targets] -= 1
    np.testing.assert_allclose(cache["dlogits"], probs / T, rtol=0, atol=1e-15)
    shapes = {
        "dln_1": (T, C),
        "dqkv": (T, 3 * C),
        "dattention": (cfg.n_head, T, T),
        "dscores": (cfg.n_head, T, T),
        "dheads": (T, C),
        "dln_2": (T, C),
        "dmlp_hidden": (T, 4 * C),
        "dmlp_act": (T, 4 * C),
    }
    for key, shape in shapes.items():
        assert [a.shape for a in cache[key]] == [shape] * cfg.n_layer, key
    assert [a.shape for a in cache["dx"]] == [(T, C)] * (cfg.n_layer + 1) and cache["dln_f"].shape == (T, C)
    # The embeddings' position rows get dx[0]: torch's wpe gradient checks it
    np.testing.assert_allclose(cache["dx"][0], f["grad/wpe.weight"][:T], rtol=0, atol=1e-12)
    for dscores in cache["dscores"]:
        assert np.all(dscores[:, np.triu(np.ones((T, T), bool), 1)] == 0)  # future keys are masked
        np.testing.assert_allclose(dscores.sum(axis=-1), 0, atol=1e-15)  # softmax ignores a shift of its input
    # The bias of ln_1 feeds c_attn: its gradient is dln_1 summed over positions
    np.testing.assert_allclose(grads["h.0.ln_1.bias"], cache["dln_1"][0].sum(axis=0), rtol=0, atol=1e-15)


def test_gradients_match_central_differences():
    cfg = Config(2, 8, 2, 11, 6)
    tensors = {name: value.astype(np.float64) for name, value in random_tensors(cfg, 11).items()}
    inputs, targets = [3, 0, 3, 10, 5], [0, 3, 10, 5, 5]
    _, grads, _ = loss_and_grads(tensors, cfg, inputs, targets)
    h = 1e-5
    for name, index in [
        ("wte.weight", (3, 1)),
        ("wte.weight", (7, 4)),
        ("wpe.weight", (2, 0)),
        ("h.0.ln_1.weight", (5,)),
        ("h.0.attn.c_attn.weight", (1, 2)),  # a query weight
        ("h.1.attn.c_attn.weight", (6, 11)),
        ("h.1.attn.c_attn.bias", (20,)),  # key, value
        ("h.0.attn.c_proj.weight", (4, 4)),
        ("h.1.ln_2.bias", (0,)),
        ("h.0.mlp.c_fc.weight", (2, 30)),
        ("h.1.mlp.c_proj.bias", (7,)),
        ("ln_f.weight", (3,)),
    ]:

        def loss_at(delta):
            shifted = dict(tensors, **{name: tensors[name].copy()})
            shifted[name][index] += delta
            return loss_and_grads(shifted, cfg, inputs, targets)[0]

        numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
        assert abs(numeric) > 1e-4, (name, index, numeric)  # an entry that matters
        assert grads[name][index] == pytest.approx(numeric, rel=1e-6, abs=1e-9), (name, index)
    # wpe rows past the window are never read
    assert np.all(grads["wpe.weight"][len(inputs) :] == 0)


def test_windows():
    ids = list(range(100, 150))  # 50 ids: starts (k * 16) % 34
    steps = windows(ids, 16, 5)
    assert [inputs[0] - 100 for inputs, _ in steps] == [0, 16, 32, 14, 30]
    assert steps[2] == (ids[32:48], ids[33:49])
    assert all(len(i) == len(t) == 16 and t[:-1] == i[1:] for i, t in steps)
    assert windows(range(17), 16, 3) == [(list(range(16)), list(range(1, 17)))] * 3  # just long enough
    with pytest.raises(
        XlgptError,
        match=r"^the training text is 16 tokens, too short for a window of 16 "
        r"\(it needs at least 17\)$",
    ):
        windows(range(16), 16, 1)
    assert prompt_window([4, 8, 15]) == ([4, 8], [8, 15])
    with pytest.raises(XlgptError, match="at least 2 tokens, got 1"):
        prompt_window([4])


def test_bad_windows_and_optimizer_are_refused():
    f, ckpt, inputs, targets = fixture("tiny")
    with pytest.raises(XlgptError, match="equal-length"):
        loss_and_grads(ckpt.tensors, ckpt.config, inputs, targets[:-1])
    with pytest.raises(XlgptError, match="longer than the model's context of 8"):
        loss_and_grads(ckpt.tensors, ckpt.config, list(range(9)), list(range(9)))
    with pytest.raises(XlgptError, match="token id 40 is outside"):
        loss_and_grads(ckpt.tensors, ckpt.config, inputs, [40] * len(inputs))
    with pytest.raises(XlgptError, match="unknown optimizer 'adam'"):
        train(ckpt.tensors, ckpt.config, [(inputs, targets)], optimizer="adam")


def test_sgd_training_lowers_the_bundled_models_loss():
    ckpt = load(BUNDLED)
    ids = find(BUNDLED).encode((TRAINING / "shakespeare.txt").read_text(encoding="utf-8"))
    assert ids[:17] == np.load(TRAINING / "shakespeare.npz")["inputs"].tolist() + [ids[16]]  # the fixture's window
    steps = windows(ids, 16, 10)
    losses, tensors, state = train(ckpt.tensors, ckpt.config, steps, optimizer="sgd", lr=3e-3)
    assert state is None and len(losses) == 10
    assert losses[-1] < losses[0]

    def mean_loss(t):
        return np.mean([loss_and_grads(t, ckpt.config, inputs, targets)[0] for inputs, targets in steps])

    before, after = mean_loss(ckpt.tensors), mean_loss(tensors)
    assert losses[0] == pytest.approx(loss_and_grads(ckpt.tensors, ckpt.config, *steps[0])[0], rel=1e-12)
    assert after < before - 0.1, (before, after)  # the ten windows' mean loss: 2.56 before, 2.38 after
