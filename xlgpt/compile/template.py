"""Pass 1: read a template (templates/*.toml) and expand it into the model spec for one config.

The spec is a flat list of stages in dataflow order: per-layer stages repeated for every layer,
inputs resolved to the stage that produced them, parameter names resolved to checkpoint tensors.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from .. import XlgptError, shipped
from ..weights.checkpoint import tensor_shapes

DEFAULT_TEMPLATE = shipped("templates") / "gpt2.toml"
TOKENS = -1  # the input index of the token ids


@dataclass(frozen=True)
class Stage:
    index: int
    tab: str
    name: str
    op: str
    inputs: tuple  # indices of the producing stages (TOKENS for the token ids)
    params: dict
    title: str
    header: bool = False
    layer: int = None
    options: dict = field(default_factory=dict)  # op-specific keys, e.g. labels


@dataclass
class ModelSpec:
    inputs_tab: str
    inputs_title: str
    stages: list
    names: dict  # defined name -> (stage index or TOKENS, "all" | "last")

    def tabs(self):
        """Computation tabs in order of first appearance."""
        return list(dict.fromkeys(s.tab for s in self.stages))


_KNOWN = {"tab", "name", "op", "in", "params", "title", "header"}


def load_spec(config, template=None):
    path = Path(template or DEFAULT_TEMPLATE)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise XlgptError(f"{path}: cannot read template ({e.strerror or e})")
    except tomllib.TOMLDecodeError as e:
        raise XlgptError(f"{path}: invalid TOML ({e})")
    return expand(raw, config, path)


def expand(raw, config, path="template"):
    tensors = tensor_shapes(config)
    inputs = raw.get("inputs", {})
    stages, bound = [], {"tokens": TOKENS}

    def add(entry, layer):
        def fmt(text):
            return str(text).replace("{layer}", str(layer)) if layer is not None else str(text)

        for key in ("tab", "name", "op"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise XlgptError(f"{path}: every stage needs a '{key}' string ({entry})")
        where = f"{path}: stage '{entry['name']}' on '{fmt(entry['tab'])}'"
        try:
            ins = tuple(bound[name] for name in entry.get("in", []))
        except KeyError as e:
            raise XlgptError(f"{where} reads {e.args[0]!r}, which no earlier stage produces")
        params = {role: fmt(t) for role, t in entry.get("params", {}).items()}
        for tensor in params.values():
            if tensor not in tensors:
                raise XlgptError(f"{where} reads tensor {tensor!r}, which a GPT-2 checkpoint does not have")
        stage = Stage(len(stages), fmt(entry["tab"]), entry["name"], entry["op"], ins, params,
                      fmt(entry.get("title", entry["name"])), bool(entry.get("header", False)), layer,
                      {k: v for k, v in entry.items() if k not in _KNOWN})
        stages.append(stage)
        bound[stage.name] = stage.index

    entries = raw.get("stage", [])
    i = 0
    while i < len(entries):
        if "{layer}" not in entries[i].get("tab", ""):
            add(entries[i], None)
            i += 1
            continue
        j = i  # a run of per-layer stages is repeated as a whole, layer after layer
        while j < len(entries) and "{layer}" in entries[j].get("tab", ""):
            j += 1
        for layer in range(config.n_layer):
            for entry in entries[i:j]:
                add(entry, layer)
        i = j

    names = {}
    for name, target in raw.get("names", {}).items():
        m = re.fullmatch(r"(\w+)(\[last\])?", str(target))
        if not m or m.group(1) not in bound:
            raise XlgptError(f"{path}: name {name} refers to {target!r}, which no stage produces")
        names[name] = (bound[m.group(1)], "last" if m.group(2) else "all")
    return ModelSpec(inputs.get("tab", "Tokens"), inputs.get("title", "Input tokens"), stages, names)
