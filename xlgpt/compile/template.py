"""Pass 1: read a template (templates/*.toml), check it, and expand it into the spec for one config.

The spec is a flat list of stages in dataflow order: per-layer stages repeated for every layer, inputs
resolved to the stage that produced them, parameter roles resolved to checkpoint tensors. Anything the
compiler would not honour (an unknown key, op, input or tensor) is an error here, with the template's line.
"""

import re
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from xlgpt.compile.backward import MIRRORS
from xlgpt.compile.ops import OPS
from xlgpt.model.checkpoint import tensor_shapes
from xlgpt.package import XlgptError, shipped
from xlgpt.safefile import read_bounded
from xlgpt.sheet.contract import STAGE_OF, TOKEN_IDS
from xlgpt.tokenizer.tabs import TOKEN_TEXTS

DEFAULT_TEMPLATE = shipped("templates") / "gpt2.toml"
TRAIN_TEMPLATE = shipped("templates") / "gpt2-train.toml"  # the forward pass and its loss
GENERATE_TEMPLATE = shipped("templates") / "gpt2-generate.toml"  # xlgpt generate's: without the instruments
STAGE_KEYS = ("tab", "name", "op", "in", "params", "title", "header")
BAD_TAB_CHARS = re.compile(r"[\[\]:*?/\\\x00-\x1f\x7f\ufffe\uffff\ud800-\udfff]")  # and control characters
# Tabs the compiler makes itself, besides the template's: the Guide, the tokenizer's tabs and tables; and for each
# template tab, its weights tab, its backward tab and the optimizer's tabs ("<tab> weights", "<tab> backward",
# "<tab> gradients", ...). A template tab may be none of them (a sheet's name ignores case).
COMPILER_TABS = ("Guide", "Prompt", "Prompts", "Chars", "Bytes", "BPE", "Merges", "Byte symbols", "Unicode classes")
COMPILER_TABS += (TOKEN_TEXTS,)
COMPILER_SUFFIXES = ("weights", "backward") + tuple(suffix for suffix, *_ in MIRRORS.values())
TOP_K_OP, TOP_K_ROWS = "top_k", 5  # the top-k table's stage, and the tokens it shows (ops/output.top_k)


@dataclass(frozen=True)
class Stage:
    index: int
    tab: str
    name: str
    op: str
    inputs: tuple  # indices of the producing stages (a tuple of them for "name*")
    params: dict  # role -> tensor name
    title: str
    header: bool = False
    layer: int = None


@dataclass
class Spec:
    stages: list

    def tabs(self):
        """Computation tabs in order of first appearance."""
        return list(dict.fromkeys(s.tab for s in self.stages))

    def ancestors(self, index):
        """The stages stage `index` is computed from, and itself, in dataflow order."""
        needed = {index}
        for stage in reversed(self.stages):
            if stage.index in needed:
                needed.update(j for i in stage.inputs for j in (i if isinstance(i, tuple) else (i,)))
        return [s for s in self.stages if s.index in needed]

    def output(self, name):
        """The last stage called `name` (what a defined name of the contract shows)."""
        return [s for s in self.stages if s.name == name][-1]


def load_spec(config, template=None, training=False):
    """The spec of `template` (default: gpt2.toml, or gpt2-train.toml for a training book)."""

    path = Path(template or (TRAIN_TEMPLATE if training else DEFAULT_TEMPLATE))
    try:
        text = read_bounded(path, 1 << 20, "template").decode("utf-8")
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as e:
        raise XlgptError(f"{path}: cannot read template ({getattr(e, 'strerror', None) or e})")
    except tomllib.TOMLDecodeError as e:
        raise XlgptError(f"{path}: invalid TOML ({e})")
    except RecursionError:
        raise XlgptError(f"{path}: invalid TOML (nested too deeply)")
    spec = expand(raw, config, Lines(path, text))
    losses = [s for s in spec.stages if s.op == "cross_entropy"]
    if training and (not losses or spec.stages[-1] is not losses[-1]):
        raise XlgptError(f'{path}: a training book\'s template ends with its loss (op = "cross_entropy")')
    if losses and not training:
        raise XlgptError(f"{path}: this template has a loss stage: build it with --train")
    return spec


class Lines:
    """Where things are in the template's text, for error messages."""

    def __init__(self, path, text=""):
        self.path, self.lines = path, text.splitlines()
        self.stages = [i for i, line in enumerate(self.lines) if re.match(r"\s*\[\[\s*stage\s*\]\]", line)]

    def at(self, stage=None, key=None):
        """'path:line' of stage number `stage` (0-based), of its `key` if given."""
        if stage is None or stage >= len(self.stages):
            return str(self.path)
        first = self.stages[stage]
        last = self.stages[stage + 1] if stage + 1 < len(self.stages) else len(self.lines)
        for i in range(first, last):
            if key and re.match(rf"\s*{re.escape(key)}\s*=", self.lines[i]):
                return f"{self.path}:{i + 1}"
        return f"{self.path}:{first + 1}"


def check_entry(entry, k, lines):
    """One [[stage]] table as written: known keys of the right types, a known op with its inputs and params."""

    def fail(key, message):
        raise XlgptError(f"{lines.at(k, key)}: {message}")

    if not isinstance(entry, dict):
        fail(None, "each stage must be a [[stage]] table")
    for key in entry:
        if key not in STAGE_KEYS:
            fail(key, f"unknown key {key!r} in a stage (known: {', '.join(STAGE_KEYS)})")
    for key in ("tab", "name", "op"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            fail(key, f"every stage needs a '{key}' string")
    if not isinstance(entry.get("title", ""), str):
        fail("title", "'title' must be a string")
    if not isinstance(entry.get("header", False), bool):
        fail("header", "'header' must be true or false")
    tab = entry["tab"].replace("{layer}", "0")
    if (
        BAD_TAB_CHARS.search(tab)
        or not tab.strip()
        or len(tab) > 31
        or tab.startswith("'")
        or tab.endswith("'")
        or tab.lower() == "history"
    ):
        fail(
            "tab",
            f"tab name {entry['tab']!r} cannot name a sheet (1 to 31 characters, none of []:*?/\\ or "
            f"control characters, no ' at either end, not 'History')",
        )
    folded = tab.casefold()
    if folded in {t.casefold() for t in COMPILER_TABS} or any(
        folded.endswith(" " + suffix.casefold()) for suffix in COMPILER_SUFFIXES
    ):
        fail(
            "tab",
            f"tab name {entry['tab']!r} is taken: the compiler makes the tabs {', '.join(COMPILER_TABS)} itself, "
            f"and '<tab> {' / '.join(COMPILER_SUFFIXES)}' beside each template tab",
        )
    op = OPS.get(entry["op"])
    if op is None:
        fail("op", f"unknown op {entry['op']!r} (known: {', '.join(sorted(OPS))})")
    ins = entry.get("in", [])
    if not isinstance(ins, list) or not all(isinstance(i, str) for i in ins):
        fail("in", "'in' must be a list of stage names")
    if len(ins) != op.inputs:
        fail("in", f"op {entry['op']!r} reads {op.inputs} input(s), the stage gives {len(ins)}")
    params = entry.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(t, str) for t in params.values()):
        fail("params", "'params' must be a table of role = \"tensor name\"")
    if set(params) != set(op.params):
        fail("params", f"op {entry['op']!r} takes params {list(op.params) or 'none'}, the stage gives {list(params)}")


def expand(raw, config, lines=None):
    lines = lines or Lines("template")
    for key in raw:
        if key != "stage":
            raise XlgptError(f"{lines.path}: unknown top-level key {key!r} (a template is a list of [[stage]])")
    entries = raw.get("stage", [])
    if not isinstance(entries, list):
        raise XlgptError(f"{lines.path}: 'stage' must be an array of [[stage]] tables")
    for k, entry in enumerate(entries):
        check_entry(entry, k, lines)

    tensors = tensor_shapes(config)
    stages, bound, every = [], {}, {}  # every: name -> all the stages that produced it, in order

    def add(k, entry, layer):
        def fmt(text):
            return str(text).replace("{layer}", str(layer)) if layer is not None else str(text)

        unknown = [name for name in entry.get("in", []) if name.rstrip("*") not in bound]
        if unknown:
            raise XlgptError(
                f"{lines.at(k, 'in')}: stage '{entry['name']}' reads {unknown[0]!r}, which no earlier stage produces"
            )
        params = {role: fmt(t) for role, t in entry.get("params", {}).items()}
        for tensor in params.values():
            if tensor not in tensors:
                raise XlgptError(
                    f"{lines.at(k, 'params')}: stage '{entry['name']}' reads tensor {tensor!r}, "
                    f"which a GPT-2 checkpoint does not have"
                )
        stage = Stage(
            len(stages),
            fmt(entry["tab"]),
            entry["name"],
            entry["op"],
            tuple(every[name[:-1]] if name.endswith("*") else bound[name] for name in entry.get("in", [])),
            params,
            fmt(entry.get("title", entry["name"])),
            entry.get("header", False),
            layer,
        )
        stages.append(stage)
        bound[stage.name] = stage.index
        every[stage.name] = every.get(stage.name, ()) + (stage.index,)

    i = 0
    while i < len(entries):
        j = i  # a run of per-layer stages is repeated as a whole, layer after layer
        while j < len(entries) and "{layer}" in entries[j]["tab"]:
            j += 1
        if j == i:
            add(i, entries[i], None)
            i += 1
            continue
        for layer in range(config.n_layer):
            for k in range(i, j):
                add(k, entries[k], layer)
        i = j

    if [s.op for s in stages].count("tokens") != 1 or stages[0].op != "tokens":
        raise XlgptError(f'{lines.path}: the first stage, and only it, must be the input (op = "tokens")')
    for name, stage_name in STAGE_OF.items():
        if stage_name not in bound:
            raise XlgptError(f"{lines.path}: no stage named {stage_name!r}, which the defined name {name} shows")
    if stages[bound[STAGE_OF[TOKEN_IDS]]].op != "tokens":
        raise XlgptError(f'{lines.path}: the stage named {STAGE_OF[TOKEN_IDS]!r} must be the input (op = "tokens")')
    tabs = {}
    for stage in stages:  # one sheet per name, whatever its case: Excel ignores it
        first = tabs.setdefault(stage.tab.casefold(), stage.tab)
        if first != stage.tab:
            raise XlgptError(f"{lines.path}: tabs {first!r} and {stage.tab!r} would be one sheet (case is ignored)")
    if config.vocab_size < 2:
        raise XlgptError(f"the model's vocabulary has {config.vocab_size} token; a book needs 2 or more to predict")
    shown = [s for s in stages if s.op == TOP_K_OP]
    if shown and config.vocab_size < TOP_K_ROWS:
        raise XlgptError(
            f"{lines.path}: stage '{shown[0].name}' shows the {TOP_K_ROWS} most probable tokens, but the model's "
            f"vocabulary has only {config.vocab_size} (use a template without it, or a larger model)"
        )
    return Spec(stages)
