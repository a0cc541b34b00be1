"""Steering vectors for a new book's Interventions tab: ActAdd (the difference of two prompts' residual streams,
computed by the reference), a vector from a file, or an SAE feature's decoder direction."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from xlgpt.compile.inputs import Edits
from xlgpt.model import reference
from xlgpt.model.sae import load_sae
from xlgpt.package import XlgptError
from xlgpt.safefile import check_input_file

# A book built without --steer-* still holds a steering vector, switched off (coefficient 0), so that the Guide's
# "put 1 in SteeringCoefficient" changes something: ActAdd from " thee" to " you" at block 0 (for the bundled
# model and its default prompt: ' thou' becomes ' is' at 1, ' have' at 4).
DEFAULT_PAIR = (" thee", " you")


@dataclass
class Steering:
    """The --steer-* options: one source (a pair of texts, a vector file, or an SAE feature), the block whose
    input is steered, and how much of the vector is added."""

    from_text: str = None
    to_text: str = None
    vector_file: Path = None
    feature: int = None
    layer: int = None
    coefficient: float = None

    def sources(self):
        return [
            s
            for s in (
                (self.from_text or self.to_text) and "pair",
                self.vector_file and "file",
                self.feature is not None and "feature",
            )
            if s
        ]

    def given(self):
        return bool(self.sources()) or self.layer is not None or self.coefficient is not None


def edits(ckpt, tok, steer, sae_source=None):
    """The Interventions tab's starting values from `steer` (None: the defaults)."""
    sources = steer.sources()
    if len(sources) > 1:
        raise XlgptError("give one steering source: --steer-from/--steer-to, --steer-vector or --steer-feature")
    if steer.coefficient is not None and not np.isfinite(steer.coefficient):
        raise XlgptError(f"--steer-coef {steer.coefficient}: the coefficient must be a finite number")
    if not sources:  # (--sae alone is the Features tab's SAE: no steering)
        if steer.layer is not None or steer.coefficient is not None:
            raise XlgptError(
                "--steer-layer and --steer-coef need a steering vector (--steer-from/--steer-to, "
                "--steer-vector or --steer-feature)"
            )
        if tok is None:
            return None  # no texts to take a direction from: zeros, and the Guide says how to build a vector
        steer, sources = Steering(*DEFAULT_PAIR, coefficient=0.0), ["pair"]
    cfg, layer = ckpt.config, steer.layer
    if sources[0] == "pair":
        if not (steer.from_text and steer.to_text):
            raise XlgptError("ActAdd steering needs both --steer-from and --steer-to")
        if tok is None:
            raise XlgptError(f"{ckpt.path}: no tokenizer files, so --steer-from/--steer-to cannot be tokenized")
        layer = layer or 0
        if layer >= cfg.n_layer:
            raise XlgptError(f"--steer-layer {layer}: the model has blocks 0 to {cfg.n_layer - 1}")
        entering = lambda text: reference.residual_streams(ckpt, tok.encode(text)[-cfg.n_positions :])[layer][-1]
        vector = entering(steer.to_text) - entering(steer.from_text)
        off = " (off: coefficient 0)" if steer.coefficient == 0 else ""
        source = f"ActAdd at block {layer}: {steer.to_text!r} minus {steer.from_text!r}{off}"
    elif sources[0] == "file":
        vector, source = read_vector(Path(steer.vector_file)), f"from {Path(steer.vector_file).name}"
        layer = layer or 0
    else:
        sae = load_sae(sae_source)
        sae.check_model(cfg)
        if steer.feature >= sae.d_sae:
            raise XlgptError(f"--steer-feature {steer.feature}: the SAE has features 0 to {sae.d_sae - 1}")
        if layer is not None and layer != sae.layer:
            raise XlgptError(f"--steer-layer {layer}: the SAE reads the stream entering block {sae.layer}")
        layer, vector = sae.layer, np.asarray(sae.W_dec[steer.feature], dtype=np.float64)
        labels = {f["index"]: f["label"] for f in (sae.features or {}).get("features", [])}
        source = (
            f"SAE feature {steer.feature}"
            + (f" ({labels[steer.feature]})" if steer.feature in labels else "")
            + f" of {sae.path.name}: its decoder row"
        )
    if layer >= cfg.n_layer:
        raise XlgptError(f"--steer-layer {layer}: the model has blocks 0 to {cfg.n_layer - 1}")
    if np.shape(vector) != (cfg.n_embd,):
        raise XlgptError(f"the steering vector has shape {np.shape(vector)}; the model needs ({cfg.n_embd},)")
    edits = Edits.none(cfg)
    edits.steering_layer, edits.steering_vector, edits.source = layer, vector, source
    edits.steering_coefficient = 1.0 if steer.coefficient is None else steer.coefficient
    return edits


def read_vector(path):
    """One vector from a .npy or .safetensors file (a file with one tensor)."""
    check_input_file(path, "steering vector file")  # a FIFO would block, /dev/zero never end
    try:
        if path.suffix == ".npy":
            vector = np.load(path, allow_pickle=False)
        elif path.suffix == ".safetensors":
            tensors = load_file(str(path))
            if len(tensors) != 1:
                raise XlgptError(f"{path}: holds {len(tensors)} tensors; the steering vector file needs exactly one")
            vector = next(iter(tensors.values()))
        else:
            raise XlgptError(f"{path}: a steering vector is read from a .npy or .safetensors file")
    except XlgptError:
        raise
    except Exception as e:  # numpy and safetensors raise many kinds for a bad file
        raise XlgptError(f"{path}: cannot read a vector ({e})")
    vector = np.asarray(vector, dtype=np.float64)
    if vector.ndim == 2 and 1 in vector.shape:
        vector = vector.reshape(-1)
    if not np.isfinite(vector).all():
        raise XlgptError(f"{path}: the vector holds NaN or infinite values")
    return vector
