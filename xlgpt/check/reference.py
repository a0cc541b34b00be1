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
