"""GPT-2's forward pass in NumPy: the independent reference the workbook is checked against.

Written to read like a textbook (after picoGPT), in float64, sharing nothing with the compiler. Edits
(head and MLP switches, a steering vector) are the interventions the book's Interventions tab offers; with
the defaults they change nothing. `run` keeps every intermediate a check needs in a cache, by name, and
each stage's output under its name in templates/gpt2.toml (cache["stages"]: (name, layer, value) in dataflow
order), so eval can tell which stage of a book leaves the reference first.
"""

from dataclasses import dataclass, replace

import numpy as np


def gelu(x):
    # GPT-2 uses the tanh approximation of GELU
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))  # subtract the max for stability
    return e / np.sum(e, axis=-1, keepdims=True)


def layer_norm(x, g, b, eps):
    mean = np.mean(x, axis=-1, keepdims=True)
    variance = np.var(x, axis=-1, keepdims=True)
    return g * (x - mean) / np.sqrt(variance + eps) + b


def linear(x, w, b):  # [T, in] @ [in, out] + [out]
    return x @ w + b


def attention(q, k, v, mask, seen):  # [T, d] x3, [T, T] -> [T, d]
    scores = q @ k.T / np.sqrt(q.shape[-1])  # [query, key]
    weights = softmax(scores + mask)
    seen.append((scores, scores + mask, weights))
    return weights @ v


def mha(x, c_attn, c_proj, n_head, switches, keep, patch):
    """Multi-head causal self-attention; head h's values are scaled by switches[h] before c_proj.
    Returns (output, the switched heads stacked [T, C]). keep(stage name, value) records the intermediates;
    patch(component, value) puts in the clean run's activation where activation patching says."""
    x = keep("qkv", linear(x, **c_attn))  # [T, 3C]
    qkv_heads = [np.split(m, n_head, axis=-1) for m in np.split(x, 3, axis=-1)]
    causal_mask = (1 - np.tri(x.shape[0])) * -1e10  # hide future tokens
    seen = []  # per head: scores, masked, weights
    heads = np.hstack([s * attention(q, k, v, causal_mask, seen) for q, k, v, s in zip(*qkv_heads, switches)])
    for name, per_head in zip(("scores", "masked", "attention"), zip(*seen)):
        keep(name, np.array(per_head))  # [head, query, key]
    heads = keep("heads", patch("head", heads))
    return keep("attn_out", patch("attn_out", linear(heads, **c_proj))), heads


def ffn(x, c_fc, c_proj, keep):
    h = keep("mlp_hidden", linear(x, **c_fc))
    a = keep("mlp_act", gelu(h))
    return keep("mlp_out", linear(a, **c_proj))


@dataclass
class Edits:
    """Interventions: a switch per head [n_layer, n_head] and per MLP [n_layer] (1 keeps, 0 ablates), and
    coefficient * vector added to the residual stream entering block `steering_layer`. Activation patching:
    `patch` = (component, layer, position, head) puts in the `clean` run's activation there (see patch)."""

    head_switches: np.ndarray
    mlp_switches: np.ndarray
    steering_layer: int = 0
    steering_coefficient: float = 0.0
    steering_vector: np.ndarray = None
    patch: tuple = None
    clean: dict = None  # the clean run's activations(): {component: [one per layer]}

    @classmethod
    def none(cls, cfg):
        return cls(np.ones((cfg.n_layer, cfg.n_head)), np.ones(cfg.n_layer), 0, 0.0, np.zeros(cfg.n_embd))


def patch(edits, component, layer, value, n_head):
    """Activation patching: `value` [T, C] of block `layer`, with the clean run's activation put in where
    edits.patch = (component, layer, position, head) says: one position of the residual stream entering the
    block ("resid_pre"), of the attention output ("attn_out") or of the MLP output ("mlp_out"); or one head's
    output at every position ("head", TransformerLens' attn_head_out_all_pos)."""
    if edits.patch is None or tuple(edits.patch[:2]) != (component, layer):
        return value
    _, _, position, head = edits.patch
    clean, value = edits.clean[component][layer], value.copy()
    if component == "head":
        d = value.shape[1] // n_head
        value[:, head * d : (head + 1) * d] = clean[:, head * d : (head + 1) * d]
    else:
        value[position] = clean[position]
    return value


def activations(cache):
    """What activation patching can put in, from a run's cache: {component: [T, C] for each layer}."""
    return {
        "resid_pre": cache["entering"],
        "attn_out": cache["attn_out"],
        "mlp_out": cache["mlp_out"],
        "head": cache["heads"],
    }


def recorder(cache, layer=None):
    """keep(name, value) -> value: records a stage's output in cache["stages"] as (name, layer, value)."""

    def keep(name, value):
        cache.setdefault("stages", []).append((name, layer, value))
        return value

    return keep


def gpt2(inputs, wte, wpe, blocks, ln_f, n_head, eps, edits, cache):
    keep = recorder(cache)
    keep("tokens", inputs[:, None])
    x = keep("x", keep("token_embedding", wte[inputs]) + keep("position_embedding", wpe[range(len(inputs))]))
    cache["residual"] = [x]  # the stream after the embeddings ...
    for i, block in enumerate(blocks):
        keep = recorder(cache, i)
        patched = lambda component, value: patch(edits, component, i, value, n_head)
        if i == edits.steering_layer:
            x = x + edits.steering_coefficient * edits.steering_vector
        x = keep("x", patched("resid_pre", x))
        cache.setdefault("entering", []).append(x)  # blocks.{i}.hook_resid_pre
        attn, heads = mha(
            keep("ln_1", layer_norm(x, **block["ln_1"], eps=eps)),
            **block["attn"],
            n_head=n_head,
            switches=edits.head_switches[i],
            keep=keep,
            patch=patched,
        )
        x = keep("x", x + attn)
        h = keep("ln_2", layer_norm(x, **block["ln_2"], eps=eps))
        mlp = keep("mlp_kept", patched("mlp_out", edits.mlp_switches[i] * ffn(h, **block["mlp"], keep=keep)))
        x = keep("x", x + mlp)
        cache["residual"].append(x)  # ... and after each block
        cache.setdefault("heads", []).append(heads)
        cache.setdefault("attn_out", []).append(attn)
        cache.setdefault("mlp_out", []).append(mlp)
    keep = recorder(cache)
    return keep("logits", keep("ln_f", layer_norm(x, **ln_f, eps=eps)) @ wte.T)  # LM head tied to wte


def params(ckpt):
    """Nest a checkpoint's flat tensors the way gpt2() takes them, as float64."""
    t = {name: np.asarray(value, dtype=np.float64) for name, value in ckpt.tensors.items()}

    def lin(prefix):
        return {"w": t[prefix + ".weight"], "b": t[prefix + ".bias"]}

    def norm(prefix):
        return {"g": t[prefix + ".weight"], "b": t[prefix + ".bias"]}

    blocks = [
        {
            "attn": {"c_attn": lin(f"h.{i}.attn.c_attn"), "c_proj": lin(f"h.{i}.attn.c_proj")},
            "mlp": {"c_fc": lin(f"h.{i}.mlp.c_fc"), "c_proj": lin(f"h.{i}.mlp.c_proj")},
            "ln_1": norm(f"h.{i}.ln_1"),
            "ln_2": norm(f"h.{i}.ln_2"),
        }
        for i in range(ckpt.config.n_layer)
    ]
    return {"wte": t["wte.weight"], "wpe": t["wpe.weight"], "blocks": blocks, "ln_f": norm("ln_f")}


def run(ckpt, tokens, edits=None):
    """Logits [T, vocab] for every position of `tokens`, and the cache of intermediates."""
    cfg, cache = ckpt.config, {}
    logits = gpt2(
        np.asarray(tokens),
        **params(ckpt),
        n_head=cfg.n_head,
        eps=cfg.layer_norm_epsilon,
        edits=edits or Edits.none(cfg),
        cache=cache,
    )
    return logits, cache


def logits(ckpt, tokens, edits=None):
    return run(ckpt, tokens, edits)[0]


def steering(cfg, add):
    """Edits that add {block: vector} to the residual stream entering that block (one block at most)."""
    edits = Edits.none(cfg)
    if add:
        ((edits.steering_layer, vector),) = add.items()
        edits.steering_coefficient, edits.steering_vector = 1.0, np.asarray(vector, dtype=np.float64)
    return edits


def residual_streams(ckpt, tokens, add=None):
    """The residual stream [T, C] entering each block, then after the last one: n_layer + 1 arrays.
    streams[i] is TransformerLens/SAELens' blocks.{i}.hook_resid_pre (streams[0]: the embeddings); `add`
    ({block: [C] vector}) is added to the stream entering that block, before the block reads it."""
    cache = run(ckpt, tokens, steering(ckpt.config, add))[1]
    return cache["entering"] + cache["residual"][-1:]


def steered_logits(ckpt, tokens, add):
    """Logits [T, vocab] with a vector added to the residual stream entering a block (see residual_streams)."""
    return logits(ckpt, tokens, steering(ckpt.config, add))


# --- activation patching: a clean and a corrupted prompt of as many tokens ----------------------------------
def logit_diff(logits, answer, foil):
    """How much more the last position's logits favour the answer token over the foil."""
    return logits[-1, answer] - logits[-1, foil]


def patched_metric(patched, clean, corrupted):
    """How much of the clean run's logit difference a patch restores: 0 as corrupted, 1 as clean."""
    return (patched - corrupted) / (clean - corrupted)


def patching_runs(ckpt, clean, corrupted, edits=None):
    """The clean run's logits and cache, and the corrupted run's logits (same edits)."""
    edits = edits or Edits.none(ckpt.config)
    clean_logits, cache = run(ckpt, clean, edits)
    return clean_logits, cache, logits(ckpt, corrupted, edits)


def patched_logits(ckpt, corrupted, clean_cache, where, edits=None):
    """The corrupted run with the clean run's activation put in at `where` = (component, layer, position, head)."""
    edits = edits or Edits.none(ckpt.config)
    return logits(ckpt, corrupted, replace(edits, patch=where, clean=activations(clean_cache)))


def activation_patching(ckpt, clean, corrupted, answer, foil, edits=None):
    """Every patch's patched_metric, as TransformerLens' patching functions lay them out:
    {"resid_pre" | "attn_out" | "mlp_out": [layer, position], "head": [layer, head]}."""
    cfg = ckpt.config
    clean_logits, cache, corrupted_logits = patching_runs(ckpt, clean, corrupted, edits)
    metric = lambda lg: patched_metric(
        logit_diff(lg, answer, foil), logit_diff(clean_logits, answer, foil), logit_diff(corrupted_logits, answer, foil)
    )
    out = {
        component: np.array(
            [
                [metric(patched_logits(ckpt, corrupted, cache, (component, i, t, 0), edits)) for t in range(len(clean))]
                for i in range(cfg.n_layer)
            ]
        )
        for component in ("resid_pre", "attn_out", "mlp_out")
    }
    out["head"] = np.array(
        [
            [metric(patched_logits(ckpt, corrupted, cache, ("head", i, 0, h), edits)) for h in range(cfg.n_head)]
            for i in range(cfg.n_layer)
        ]
    )
    return out


def top_k(p, k):
    """The k largest entries of p (ties: lower index first): (indices, values)."""
    order = np.argsort(-p, kind="stable")[:k]
    return order, p[order]


def logit_lens(ckpt, cache):
    """ln_f and the unembedding applied to the residual stream after the embeddings and after every block:
    the top token [L+1, T] and its probability [L+1, T]."""
    p = params(ckpt)
    eps = ckpt.config.layer_norm_epsilon
    probs = np.array([softmax(layer_norm(x, **p["ln_f"], eps=eps) @ p["wte"].T) for x in cache["residual"]])
    return probs.argmax(-1), probs.max(-1)


def detection_patterns(tokens):
    """TransformerLens' head detection patterns, [query, key], 1 where a head of that kind attends: the previous
    position; the key right after an earlier (or this) position holding the query's token (induction); an
    earlier position holding the query's token (duplicate)."""
    tokens = np.asarray(tokens)
    same = (tokens[:, None] == tokens[None, :]).astype(float)  # [query, key]
    induction = np.zeros_like(same)
    induction[:, 1:] = same[:, :-1]  # key s when key s - 1 holds the query's token
    return {
        "previous": np.eye(len(tokens), k=-1),
        "induction": np.tril(induction),
        "duplicate": np.tril(same, -1),
    }


def head_scores(cache, tokens):
    """detect_head with the "mul" measure, for every layer and head: sum(A * D) / sum(A), A the head's attention
    weights [query, key] on the prompt, D a detection pattern. {kind: [layer, head]}."""
    weights = [value for name, _, value in cache["stages"] if name == "attention"]  # each [head, query, key]
    return {
        kind: np.array([(A * D).sum(axis=(1, 2)) / A.sum(axis=(1, 2)) for A in weights])
        for kind, D in detection_patterns(tokens).items()
    }


def direct_logit_attribution(ckpt, cache, edits, target, position):
    """Each component's direct contribution to the target token's logit at `position`, through ln_f with
    its scale at that position held fixed (TransformerLens' convention). Returns (table [n_layer, n_head + 2]:
    each head, the attention output bias, the MLP; other [3]: embeddings, steering, ln_f bias term; logit).
    table and other add up to the logit."""
    p, cfg = params(ckpt), ckpt.config
    x = cache["residual"][-1][position]
    scale = np.sqrt(np.var(x) + cfg.layer_norm_epsilon)
    u = p["ln_f"]["g"] * p["wte"][target]
    direction = (u - u.mean()) / scale  # (c - mean(c)) . u = c . (u - mean(u))
    table = np.zeros((cfg.n_layer, cfg.n_head + 2))
    d = cfg.head_size
    for i, block in enumerate(p["blocks"]):
        w, b = block["attn"]["c_proj"]["w"], block["attn"]["c_proj"]["b"]
        heads = cache["heads"][i][position]
        for h in range(cfg.n_head):
            table[i, h] = heads[h * d : (h + 1) * d] @ w[h * d : (h + 1) * d] @ direction
        table[i, -2] = b @ direction
        table[i, -1] = cache["mlp_out"][i][position] @ direction
    steering = (
        edits.steering_coefficient * edits.steering_vector @ direction
        if 0 <= edits.steering_layer < cfg.n_layer
        else 0.0
    )
    other = np.array([cache["residual"][0][position] @ direction, steering, p["ln_f"]["b"] @ p["wte"][target]])
    logit = (layer_norm(x, **p["ln_f"], eps=cfg.layer_norm_epsilon) @ p["wte"].T)[target]
    return table, other, logit


# --- sampling: the book's Temperature / TopK / Seed / SampleStep cells, computed the same way -----------
MINSTD_MODULUS, MINSTD_MULTIPLIER = 2147483647, 48271


def _whole(x):
    return not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating)) and float(x).is_integer()


def minstd(seed, k):
    """s(k) of the MINSTD generator: s(0) = seed, s(k+1) = s(k) * 48271 mod 2147483647 (exact integers)."""
    if not _whole(seed) or not 1 <= seed <= MINSTD_MODULUS - 1:
        raise ValueError(f"Seed must be a whole number from 1 to {MINSTD_MODULUS - 1}, got {seed!r}")
    return int(seed) * pow(MINSTD_MULTIPLIER, int(k), MINSTD_MODULUS) % MINSTD_MODULUS


def sample_uniform(seed, step):
    """The uniform number u in (0, 1) of SampleStep `step`: s(step + 3) / 2147483647."""
    if not _whole(step) or step < 0:
        raise ValueError(f"SampleStep must be a whole number >= 0, got {step!r}")
    return minstd(seed, int(step) + 3) / MINSTD_MODULUS


def sample_probabilities(logits, temperature, top_k):
    """softmax(logits / temperature) over the top_k largest logits (ties to the lower id; every token when
    top_k is 0 or >= the vocabulary), zero elsewhere."""
    logits = np.asarray(logits, dtype=np.float64)
    if not temperature > 0:
        raise ValueError(f"Temperature must be > 0 here (0 is the argmax), got {temperature!r}")
    if not _whole(top_k) or top_k < 0:
        raise ValueError(f"TopK must be a whole number >= 0, got {top_k!r}")
    keep = np.ones(logits.shape, bool)
    if 0 < top_k < logits.size:
        keep[:] = False
        keep[np.argsort(-logits, kind="stable")[: int(top_k)]] = True  # stable: equal logits by id
    scaled = np.where(keep, logits / temperature, -np.inf)
    e = np.where(keep, np.exp(scaled - scaled[keep].max()), 0.0)
    return e / e.sum()


def choose(probabilities, u):
    """The smallest token id whose cumulative probability, summed in id order, exceeds u (when rounding
    leaves the total at or below u: the last token with a non-zero probability)."""
    above = np.flatnonzero(np.cumsum(probabilities) > u)
    return int(above[0]) if above.size else int(np.flatnonzero(probabilities)[-1])


def sample(logits, temperature, top_k, seed, step):
    """The token the book's sampler picks from one position's logits at SampleStep `step` (0 for the book's
    own prediction). Temperature 0: the argmax (the lowest id among ties). Raises ValueError for a bad
    Seed (not a whole number 1..2147483646), Temperature, TopK or step."""
    u = sample_uniform(seed, step)  # checks seed and step even at temperature 0, as the book does
    if temperature == 0:
        if not _whole(top_k) or top_k < 0:
            raise ValueError(f"TopK must be a whole number >= 0, got {top_k!r}")
        return int(np.argmax(np.asarray(logits)))  # argmax: first of equal maxima
    return choose(sample_probabilities(logits, temperature, top_k), u)


def sae_params(sae):
    """An SAE's tensors (SAELens names and layout) as float64."""
    return {name: np.asarray(getattr(sae, name), dtype=np.float64) for name in ("W_enc", "b_enc", "W_dec", "b_dec")}


def sae_features(sae_params, x):  # [T, d_in] -> [T, d_sae]
    """A standard (ReLU) SAE's feature activations, b_dec subtracted first: f = ReLU((x - b_dec) W_enc + b_enc)."""
    return np.maximum(0, (x - sae_params["b_dec"]) @ sae_params["W_enc"] + sae_params["b_enc"])


def sae_reconstruction(sae_params, f):  # [T, d_sae] -> [T, d_in]
    """The residual stream an SAE rebuilds from its features: x_hat = f W_dec + b_dec."""
    return f @ sae_params["W_dec"] + sae_params["b_dec"]
