"""GPT-2's forward pass in NumPy: the independent reference the workbook is checked against.

Written to read like a textbook (after picoGPT), in float64, sharing nothing with the compiler.
"""
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


def attention(q, k, v, mask):  # [T, d] x3, [T, T] -> [T, d]
    return softmax(q @ k.T / np.sqrt(q.shape[-1]) + mask) @ v


def mha(x, c_attn, c_proj, n_head):
    x = linear(x, **c_attn)                                          # [T, 3C]
    qkv_heads = [np.split(m, n_head, axis=-1) for m in np.split(x, 3, axis=-1)]
    causal_mask = (1 - np.tri(x.shape[0])) * -1e10                  # hide future tokens
    heads = [attention(q, k, v, causal_mask) for q, k, v in zip(*qkv_heads)]
    return linear(np.hstack(heads), **c_proj)


def ffn(x, c_fc, c_proj):
    return linear(gelu(linear(x, **c_fc)), **c_proj)


def transformer_block(x, attn, mlp, ln_1, ln_2, n_head, eps):
    x = x + mha(layer_norm(x, **ln_1, eps=eps), **attn, n_head=n_head)
    x = x + ffn(layer_norm(x, **ln_2, eps=eps), **mlp)
    return x


def gpt2(inputs, wte, wpe, blocks, ln_f, n_head, eps):
    x = wte[inputs] + wpe[range(len(inputs))]
    for block in blocks:
        x = transformer_block(x, **block, n_head=n_head, eps=eps)
    return layer_norm(x, **ln_f, eps=eps) @ wte.T                    # LM head tied to wte


def params(ckpt):
    """Nest a checkpoint's flat tensors the way gpt2() takes them, as float64."""
    t = {name: value.astype(np.float64) for name, value in ckpt.tensors.items()}

    def lin(prefix):
        return {"w": t[prefix + ".weight"], "b": t[prefix + ".bias"]}

    def norm(prefix):
        return {"g": t[prefix + ".weight"], "b": t[prefix + ".bias"]}

    blocks = [{"attn": {"c_attn": lin(f"h.{i}.attn.c_attn"), "c_proj": lin(f"h.{i}.attn.c_proj")},
               "mlp": {"c_fc": lin(f"h.{i}.mlp.c_fc"), "c_proj": lin(f"h.{i}.mlp.c_proj")},
               "ln_1": norm(f"h.{i}.ln_1"), "ln_2": norm(f"h.{i}.ln_2")}
              for i in range(ckpt.config.n_layer)]
    return {"wte": t["wte.weight"], "wpe": t["wpe.weight"], "blocks": blocks, "ln_f": norm("ln_f")}


def logits(ckpt, tokens):
    """Logits [T, vocab] for every position of `tokens`."""
    cfg = ckpt.config
    return gpt2(np.asarray(tokens), **params(ckpt), n_head=cfg.n_head, eps=cfg.layer_norm_epsilon)


# ---------------------------------------------------------------- the residual stream, SAE features, steering

def residual_streams(ckpt, tokens, add=None):
    """The residual stream [T, C] entering each block, then after the last one: n_layer + 1 arrays.

    streams[i] is what TransformerLens/SAELens call blocks.{i}.hook_resid_pre (streams[0]: the embeddings);
    streams[-1] is what the final layer norm and the LM head read. `add` ({block index: [C] vector}) is added
    to the stream entering that block at every position, before the block reads it (steering)."""
    cfg, p = ckpt.config, params(ckpt)
    tokens = np.asarray(tokens)
    x = p["wte"][tokens] + p["wpe"][range(len(tokens))]
    streams = []
    for i, block in enumerate(p["blocks"]):
        x = x + (add or {}).get(i, 0)
        streams.append(x)
        x = transformer_block(x, **block, n_head=cfg.n_head, eps=cfg.layer_norm_epsilon)
    return streams + [x]


def steered_logits(ckpt, tokens, add):
    """Logits [T, vocab] with vectors added to the residual stream (see residual_streams)."""
    p = params(ckpt)
    x = residual_streams(ckpt, tokens, add)[-1]
    return layer_norm(x, **p["ln_f"], eps=ckpt.config.layer_norm_epsilon) @ p["wte"].T


def sae_params(sae):
    """An SAE's tensors (SAELens names and layout) as float64."""
    return {name: np.asarray(getattr(sae, name), dtype=np.float64) for name in ("W_enc", "b_enc", "W_dec", "b_dec")}


def sae_features(sae_params, x):  # [T, d_in] -> [T, d_sae]
    """A standard (ReLU) SAE's feature activations, b_dec subtracted first: f = ReLU((x - b_dec) W_enc + b_enc)."""
    return np.maximum(0, (x - sae_params["b_dec"]) @ sae_params["W_enc"] + sae_params["b_enc"])


def sae_reconstruction(sae_params, f):  # [T, d_sae] -> [T, d_in]
    """The residual stream an SAE rebuilds from its features: x_hat = f W_dec + b_dec."""
    return f @ sae_params["W_dec"] + sae_params["b_dec"]
