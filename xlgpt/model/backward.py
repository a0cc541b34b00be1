"""GPT-2's backward pass and optimizer steps in NumPy: the independent reference for the book's training mode.

Written from the math, like reference.py (whose forward helpers it uses), in float64, with no autograd: each
op's backward is a small function whose docstring gives its derivative. Tensors are flat dicts
{HF tensor name: array}, as in a checkpoint; the LM head is tied to wte.

    loss, grads, cache = loss_and_grads(tensors, cfg, inputs, targets)
    tensors = sgd(tensors, grads, lr)                        # or: adamw(tensors, grads, state, lr)
    losses, tensors, state = train(tensors, cfg, windows(ids, 16, 10), optimizer="adamw")
"""

from dataclasses import dataclass

import numpy as np

from xlgpt.model.reference import Edits, gelu, layer_norm, linear, softmax
from xlgpt.package import XlgptError

# --- each op's backward: given the gradient of the loss w.r.t. the op's output (dy), return it w.r.t. the inputs


def cross_entropy_backward(logits, targets):
    """loss = mean_t -log softmax(logits[t])[targets[t]];  dloss/dlogits[t] = (softmax(logits[t]) - onehot) / T."""
    T = len(targets)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # log-softmax, stable
    loss = -log_probs[np.arange(T), targets].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(T), targets] -= 1
    return loss, dlogits / T


def linear_backward(dy, x, w):
    """y = x @ w + b:  dx = dy @ w.T,  dw = x.T @ dy,  db = sum of dy over positions."""
    return dy @ w.T, x.T @ dy, dy.sum(axis=0)


def layer_norm_backward(dy, x, g, eps):
    """y = g * xhat + b with xhat = (x - mean) / sqrt(var + eps), per row of C features:
    dg = sum_t dy * xhat,  db = sum_t dy,  and with dxhat = dy * g:
    dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)."""
    std = np.sqrt(np.var(x, axis=-1, keepdims=True) + eps)
    xhat = (x - np.mean(x, axis=-1, keepdims=True)) / std
    dxhat = dy * g
    dx = (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)) / std
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def gelu_backward(dy, x):
    """gelu(x) = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3):
    gelu'(x) = (1 + tanh(u)) / 2 + x/2 (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    c = np.sqrt(2 / np.pi)
    t = np.tanh(c * (x + 0.044715 * x**3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2))


def softmax_backward(dy, y):
    """y = softmax(s) along the last axis:  ds_j = y_j (dy_j - sum_k dy_k y_k)."""
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def attention_backward(dout, q, k, v, att):
    """out = att @ v with att = softmax(s), s = q k^T / sqrt(d) + mask (the mask is a constant):
    datt = dout v^T,  dv = att^T dout,  ds = softmax_backward(datt, att),  dq = ds k / sqrt(d),  dk = ds^T q / sqrt(d).
    Returns (dq, dk, dv, datt, ds)."""
    datt = dout @ v.T
    dscores = softmax_backward(datt, att)
    scale = np.sqrt(q.shape[-1])
    return dscores @ k / scale, dscores.T @ q / scale, att.T @ dout, datt, dscores


LAYER_GRADIENTS = ("dln_1", "dqkv", "dattention", "dscores", "dheads", "dln_2", "dmlp_hidden", "dmlp_act")


# --- the forward pass, keeping what the backward pass reads


def block(t, i):
    """Block i's tensors by their short names ("ln_1.weight", "attn.c_attn.bias", ...)."""
    prefix = f"h.{i}."
    return {name[len(prefix) :]: value for name, value in t.items() if name.startswith(prefix)}


def forward(t, cfg, inputs, edits=None):
    """reference.gpt2 with its interventions (edits: reference.Edits; default none), keeping each block's
    intermediates. t: float64 tensors by name."""
    T, H, eps = len(inputs), cfg.n_head, cfg.layer_norm_epsilon
    edits = edits or Edits.none(cfg)
    causal_mask = (1 - np.tri(T)) * -1e10  # as reference.mha: hide future tokens
    x = t["wte.weight"][inputs] + t["wpe.weight"][:T]
    blocks = []
    for i in range(cfg.n_layer):
        w = block(t, i)
        if i == edits.steering_layer:
            x = x + edits.steering_coefficient * edits.steering_vector
        f = {"x": x, "ln_1": layer_norm(x, w["ln_1.weight"], w["ln_1.bias"], eps)}
        f["qkv"] = linear(f["ln_1"], w["attn.c_attn.weight"], w["attn.c_attn.bias"])
        # q, k, v of each head: [H, T, d]
        f["q"], f["k"], f["v"] = (np.stack(np.split(m, H, axis=-1)) for m in np.split(f["qkv"], 3, axis=-1))
        f["att"] = softmax(f["q"] @ f["k"].transpose(0, 2, 1) / np.sqrt(cfg.head_size) + causal_mask)
        # [T, C], head h in columns h*d:(h+1)*d, times its switch
        f["switches"] = np.repeat(edits.head_switches[i], cfg.head_size)
        f["heads"] = np.hstack(list(f["att"] @ f["v"])) * f["switches"]
        f["attn_out"] = linear(f["heads"], w["attn.c_proj.weight"], w["attn.c_proj.bias"])
        f["x_mid"] = x + f["attn_out"]
        f["ln_2"] = layer_norm(f["x_mid"], w["ln_2.weight"], w["ln_2.bias"], eps)
        f["mlp_hidden"] = linear(f["ln_2"], w["mlp.c_fc.weight"], w["mlp.c_fc.bias"])
        f["mlp_act"] = gelu(f["mlp_hidden"])
        f["mlp_switch"] = edits.mlp_switches[i]
        f["mlp_kept"] = f["mlp_switch"] * linear(f["mlp_act"], w["mlp.c_proj.weight"], w["mlp.c_proj.bias"])
        x = f["x_mid"] + f["mlp_kept"]
        blocks.append(f)
    ln_f = layer_norm(x, t["ln_f.weight"], t["ln_f.bias"], eps)
    return blocks, x, ln_f, ln_f @ t["wte.weight"].T


def check_window(cfg, inputs, targets):
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise XlgptError(
            f"inputs and targets must be equal-length, non-empty lists of token ids "
            f"(got {len(inputs)} and {len(targets)})"
        )
    if len(inputs) > cfg.n_positions:
        raise XlgptError(f"a window of {len(inputs)} inputs is longer than the model's context of {cfg.n_positions}")
    bad = [i for i in list(inputs) + list(targets) if not 0 <= i < cfg.vocab_size]
    if bad:
        raise XlgptError(f"token id {bad[0]} is outside the vocabulary (0 to {cfg.vocab_size - 1})")


def loss_and_grads(tensors, cfg, inputs, targets):
    """The mean cross-entropy of the next-token predictions over the T positions of `inputs` against
    `targets`, the gradient of every tensor (float64, same names and shapes), and a cache of the activation
    gradients by name (d<name>: the gradient w.r.t. that activation; per-layer entries are lists by layer):
      logits, dlogits [T, V]; dln_f [T, C] (ln_f's output); wte_unembed, wte_embed [V, C] (wte's two paths);
      dx: n_layer + 1 arrays [T, C], w.r.t. the residual stream after the embeddings and after each block;
      dln_1, dln_2 [T, C] (the LayerNorms' outputs); dqkv [T, 3C]; dattention, dscores [H, T queries, T keys]
      (softmax output, and its input: the scaled, masked scores); dheads [T, C] (c_proj's input);
      dmlp_act, dmlp_hidden [T, 4C] (after and before GELU)."""
    check_window(cfg, inputs, targets)
    t = {name: np.asarray(value, dtype=np.float64) for name, value in tensors.items()}
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    ran = forward(t, cfg, inputs)
    loss, dlogits = cross_entropy_backward(ran[-1], targets)
    grads, cache = backprop(t, cfg, inputs, ran, dlogits)
    return float(loss), {name: grads[name] for name in tensors}, cache


def backprop(t, cfg, inputs, ran, dlogits):
    """From ∂L/∂logits back through forward()'s run `ran`: every tensor's gradient, and the cache of activation
    gradients that loss_and_grads describes, with per layer: dattn_out and dmlp_kept (the attention's and
    the switched MLP's outputs, as they join the stream)."""
    T, H, eps = len(inputs), cfg.n_head, cfg.layer_norm_epsilon
    blocks, x, ln_f, logits = ran
    grads, cache = {}, {"logits": logits, "dlogits": dlogits}
    # logits = ln_f @ wte.T: a linear layer with weight wte.T and no bias
    dln_f, dwte_t, _ = linear_backward(dlogits, ln_f, t["wte.weight"].T)
    cache["wte_unembed"], cache["dln_f"] = dwte_t.T, dln_f
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = layer_norm_backward(dln_f, x, t["ln_f.weight"], eps)

    dxs = [dx]
    for name in LAYER_GRADIENTS + ("dattn_out", "dmlp_kept"):
        cache[name] = [None] * cfg.n_layer
    for i in reversed(range(cfg.n_layer)):
        f, w, d = blocks[i], block(t, i), {}  # d: this block's tensor gradients
        # x = x_mid + switch · mlp(ln_2(x_mid)): the residual passes dx straight through, the MLP adds its share
        cache["dmlp_kept"][i] = dx
        dmlp_act, d["mlp.c_proj.weight"], d["mlp.c_proj.bias"] = linear_backward(
            dx * f["mlp_switch"], f["mlp_act"], w["mlp.c_proj.weight"]
        )
        dmlp_hidden = gelu_backward(dmlp_act, f["mlp_hidden"])
        dln_2, d["mlp.c_fc.weight"], d["mlp.c_fc.bias"] = linear_backward(dmlp_hidden, f["ln_2"], w["mlp.c_fc.weight"])
        dx_ln, d["ln_2.weight"], d["ln_2.bias"] = layer_norm_backward(dln_2, f["x_mid"], w["ln_2.weight"], eps)
        dx_mid = dx + dx_ln
        cache["dattn_out"][i] = dx_mid
        # x_mid = x + c_proj(switches · heads(ln_1(x)))
        dheads, d["attn.c_proj.weight"], d["attn.c_proj.bias"] = linear_backward(
            dx_mid, f["heads"], w["attn.c_proj.weight"]
        )
        dout = np.stack(np.split(dheads * f["switches"], H, axis=-1))  # [H, T, d], inside the switches
        per_head = [attention_backward(*a) for a in zip(dout, f["q"], f["k"], f["v"], f["att"])]
        dq, dk, dv, datt, dscores = (np.stack(parts) for parts in zip(*per_head))
        dqkv = np.hstack([np.hstack(list(m)) for m in (dq, dk, dv)])  # back to [T, 3C]: q heads, k heads, v heads
        dln_1, d["attn.c_attn.weight"], d["attn.c_attn.bias"] = linear_backward(
            dqkv, f["ln_1"], w["attn.c_attn.weight"]
        )
        dx_ln, d["ln_1.weight"], d["ln_1.bias"] = layer_norm_backward(dln_1, f["x"], w["ln_1.weight"], eps)
        dx = dx_mid + dx_ln
        dxs.insert(0, dx)
        grads.update({f"h.{i}.{name}": value for name, value in d.items()})
        for name, value in zip(LAYER_GRADIENTS, (dln_1, dqkv, datt, dscores, dheads, dln_2, dmlp_hidden, dmlp_act)):
            cache[name][i] = value
    cache["dx"] = dxs

    # x0 = wte[inputs] + wpe[:T]: each position's gradient goes to the rows it read (a repeated token adds up)
    wte_embed = np.zeros_like(t["wte.weight"])
    np.add.at(wte_embed, inputs, dxs[0])
    cache["wte_embed"] = wte_embed
    grads["wte.weight"] = cache["wte_unembed"] + wte_embed
    grads["wpe.weight"] = np.zeros_like(t["wpe.weight"])
    grads["wpe.weight"][:T] = dxs[0]
    return grads, cache


def attribution_patching(tensors, cfg, clean, corrupted, answer, foil, edits=None):
    """Attribution patching (Nanda 2023): every patch of reference.activation_patching to first order, from one
    backward pass at the corrupted run: ∂LogitDiff/∂activation · (clean − corrupted activation), over (clean −
    corrupted LogitDiff). Laid out as activation_patching's: {component: [layer, position]; "head": [layer, head]}."""
    t = {name: np.asarray(value, dtype=np.float64) for name, value in tensors.items()}
    ran = {run: forward(t, cfg, np.asarray(ids), edits) for run, ids in (("clean", clean), ("corrupted", corrupted))}
    diff = {run: r[-1][-1, answer] - r[-1][-1, foil] for run, r in ran.items()}
    dlogits = np.zeros_like(ran["corrupted"][-1])
    dlogits[-1, answer], dlogits[-1, foil] = 1, -1  # ∂LogitDiff/∂logits
    _, cache = backprop(t, cfg, np.asarray(corrupted), ran["corrupted"], dlogits)
    gradient = {"resid_pre": cache["dx"], "attn_out": cache["dattn_out"], "mlp_out": cache["dmlp_kept"]}
    gradient["head"] = cache["dheads"]
    activation = {"resid_pre": "x", "attn_out": "attn_out", "mlp_out": "mlp_kept", "head": "heads"}
    out = {}
    for component, key in activation.items():
        # [layer, position, feature]: ∂LogitDiff/∂a · (clean a − corrupted a)
        terms = np.array(
            [g * (c[key] - x[key]) for g, c, x in zip(gradient[component], ran["clean"][0], ran["corrupted"][0])]
        )
        if component == "head":  # summed over positions and the head's features
            terms = terms.sum(axis=1).reshape(cfg.n_layer, cfg.n_head, cfg.head_size)
        out[component] = terms.sum(axis=-1) / (diff["clean"] - diff["corrupted"])
    return out


# --- optimizers


def sgd(tensors, grads, lr):
    """w - lr * grad for every tensor."""
    return {name: np.asarray(w, dtype=np.float64) - lr * grads[name] for name, w in tensors.items()}


@dataclass
class AdamState:
    step: int
    m: dict  # first moments by tensor name
    v: dict  # second moments

    @classmethod
    def zeros(cls, tensors):
        return cls(
            0,
            {n: np.zeros(np.shape(w)) for n, w in tensors.items()},
            {n: np.zeros(np.shape(w)) for n, w in tensors.items()},
        )


def adamw(tensors, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    """One step of torch.optim.AdamW: decoupled weight decay on every tensor, then Adam with bias corrections
    for the new step count. Returns (new tensors, new state); the inputs are left unchanged."""
    step = state.step + 1
    new, m, v = {}, {}, {}
    for name, w in tensors.items():
        g = grads[name]
        w = np.asarray(w, dtype=np.float64) * (1 - lr * weight_decay)  # decay the weight, not the gradient
        m[name] = beta1 * state.m[name] + (1 - beta1) * g
        v[name] = beta2 * state.v[name] + (1 - beta2) * g**2
        m_hat, v_hat = m[name] / (1 - beta1**step), v[name] / (1 - beta2**step)
        new[name] = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return new, AdamState(step, m, v)


# --- training runs


def windows(ids, window, steps):
    """The (inputs, targets) of each of `steps` training steps: step k reads the `window` tokens starting at
    (k * window) % (len(ids) - window) and predicts the tokens one further on."""
    ids = list(ids)
    if len(ids) < window + 1:
        raise XlgptError(
            f"the training text is {len(ids)} tokens, too short for a window of {window} "
            f"(it needs at least {window + 1})"
        )
    starts = [(k * window) % (len(ids) - window) for k in range(steps)]
    return [(ids[s : s + window], ids[s + 1 : s + window + 1]) for s in starts]


def prompt_window(ids):
    """Train on a prompt itself: each token predicts the next one."""
    ids = list(ids)
    if len(ids) < 2:
        raise XlgptError(f"training on a prompt needs at least 2 tokens, got {len(ids)}")
    return ids[:-1], ids[1:]


def train(tensors, cfg, windows, optimizer="sgd", lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    """One optimizer step per (inputs, targets) window. Returns (losses, final tensors, AdamState or None for
    SGD); losses[k] is step k's loss, before its update."""
    if optimizer not in ("sgd", "adamw"):
        raise XlgptError(f"unknown optimizer {optimizer!r} (choose sgd or adamw)")
    tensors = {name: np.asarray(w, dtype=np.float64) for name, w in tensors.items()}
    state = AdamState.zeros(tensors) if optimizer == "adamw" else None
    losses = []
    for inputs, targets in windows:
        loss, grads, _ = loss_and_grads(tensors, cfg, inputs, targets)
        losses.append(loss)
        if state is None:
            tensors = sgd(tensors, grads, lr)
        else:
            tensors, state = adamw(tensors, grads, state, lr, beta1, beta2, eps, weight_decay)
    return losses, tensors, state
