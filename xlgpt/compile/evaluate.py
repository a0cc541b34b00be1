"""Excel formula text evaluated on NumPy arrays: the compiler computes each formula cell's cached value from
the formula it writes, so an op states its math once, as its formula.

    parse("MMULT(W,{x})+{b}").evaluate({"x": x, "b": b}, names)

Values are arrays of shape (B, rows, cols). B is a batch: the same formula evaluated for B cells at once
(each with its own operands), broadcast like numpy's leading axis. The last two axes are Excel's rows and
columns, and numpy's broadcasting of them is Excel's own for arrays: a 1x1, one row or one column stretches
to fit the other operand.

What a cell holds, as an array element:
  number  float64 (an all-number array has dtype float64)
  logical bool (an all-logical array has dtype bool)
  text    Python str, in an object array (which may mix all three)
  error   NaN: #DIV/0!, #N/A, #VALUE!, #NUM! and #REF! are all one NaN. Like Excel, arithmetic, comparisons
          and aggregates of an error are an error; IF and IFERROR drop the errors they do not pick.

Speed: numbers and logicals take numpy's whole-array paths (MMULT of one matrix and a batch is one matrix
product); only object arrays (text) are converted cell by cell, which suits the tokenizer's small rows. A
range INDEX(a,i):INDEX(a,j) whose size differs across the batch is padded with errors where MATCH searches
it, and anywhere else makes the formula evaluate one batch item at a time (correct, but ~0.2 ms an item).

The module imports only numpy and the standard library (nothing of xlgpt), so it can be read, and tested,
on its own.
"""

import functools
import math
import operator
import re
from dataclasses import dataclass

import numpy as np


class Unsupported(Exception):
    """A function or syntax the evaluator does not know."""


class _Ragged(Exception):
    """A range whose size differs across the batch items, read where that matters (outside MATCH): no one
    (B, rows, cols) array holds it, so the formula is evaluated again one batch item at a time."""


# ---------------------------------------------------------------------------------------------------------
# Parsing: text -> a tree of nodes


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<text>"(?:[^"]|"")*")
    | \{(?P<placeholder>[A-Za-z_]\w*)\}
    | (?P<name>[A-Za-z_\\][\w.]*)
    | (?P<op><=|>=|<>|[-+*/^&=<>:%(),])
    )""",
    re.VERBOSE,
)

# Binary operators, loosest first. Range (:), negation and percent bind tighter than all of them, so
# -2^2 is (-2)^2 = 4, as in Excel. All associate to the left: 2^3^2 is 64.
_LEVEL = {"=": 1, "<>": 1, "<": 1, ">": 1, "<=": 1, ">=": 1, "&": 2, "+": 3, "-": 3, "*": 4, "/": 4, "^": 5}


def _tokens(text):
    """(kind, value) for each token of `text`; kind is a group name of _TOKEN."""
    pos, text = 0, text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"cannot read {text[pos : pos + 20]!r} in {text!r}")
        yield m.lastgroup, m.group(m.lastgroup)
        pos = m.end()


class _Parser:
    """Recursive descent over the tokens: one method per level of Excel's grammar."""

    def __init__(self, text):
        self.text, self.tokens, self.at = text, list(_tokens(text)), 0
        self.placeholders = frozenset(value for kind, value in self.tokens if kind == "placeholder")

    def parse(self):
        node = self.expression()
        if self.at < len(self.tokens):
            raise Unsupported(f"unexpected {self.tokens[self.at][1]!r} in {self.text!r}")
        return node

    def peek(self):
        return self.tokens[self.at] if self.at < len(self.tokens) else (None, None)

    def accept(self, op):
        if self.peek() == ("op", op):
            self.at += 1
            return True
        return False

    def expect(self, op):
        if not self.accept(op):
            raise Unsupported(f"expected {op!r} in {self.text!r}")

    def expression(self, level=1):
        """Binary operators of `level` or tighter (precedence climbing)."""
        left = self.operand()
        while True:
            kind, op = self.peek()
            if kind != "op" or _LEVEL.get(op, 0) < level:
                return left
            self.at += 1
            left = Binary(op, left, self.expression(_LEVEL[op] + 1))

    def operand(self):
        """Signs, then a primary with the ranges and percent signs after it."""
        if self.accept("-"):
            return Negate(self.operand())
        if self.accept("+"):  # Excel's unary plus changes nothing, not even text
            return self.operand()
        node = self.primary()
        while self.accept(":"):
            node = Range(node, self.primary())
        while self.accept("%"):
            node = Binary("/", node, Number(100.0))
        return node

    def primary(self):
        kind, value = self.peek()
        self.at += 1
        if kind == "number":
            return Number(float(value))
        if kind == "text":
            return Text(value[1:-1].replace('""', '"'))
        if kind == "placeholder":
            return Placeholder(value)
        if kind == "name":
            if self.accept("("):
                return self.call(value)
            if value.upper() in ("TRUE", "FALSE"):
                return Logical(value.upper() == "TRUE")
            return DefinedName(value)
        if (kind, value) == ("op", "("):
            node = self.expression()
            self.expect(")")
            return node
        raise Unsupported(f"unexpected {value!r} in {self.text!r}" if kind else f"{self.text!r} ends too soon")

    def call(self, name):
        # Newer functions are stored with a prefix (_xlfn.UNICHAR): the function is the same.
        name = re.sub(r"^(_xlfn\.|_xlws\.)+", "", name).upper()
        if name not in FUNCTIONS:
            raise Unsupported(name)
        args = []
        if not self.accept(")"):
            args.append(self.expression())
            while self.accept(","):
                args.append(self.expression())
            self.expect(")")
        low, high = FUNCTIONS[name].arity
        if not low <= len(args) <= high:
            raise Unsupported(f"{name} with {len(args)} arguments")
        return Call(name, tuple(args))


# ---------------------------------------------------------------------------------------------------------
# The nodes. They are frozen dataclasses, so two nodes are equal when their text means the same: the range
# INDEX(a,i):INDEX(a,j) checks that both ends index the same array that way.


class Node:
    def evaluate(self, scope):
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Node):
    value: float

    def evaluate(self, scope):
        return np.full((1, 1, 1), self.value)


@dataclass(frozen=True)
class Text(Node):
    value: str

    def evaluate(self, scope):
        return np.full((1, 1, 1), self.value, dtype=object)


@dataclass(frozen=True)
class Logical(Node):
    value: bool

    def evaluate(self, scope):
        return np.full((1, 1, 1), self.value)


@dataclass(frozen=True)
class Placeholder(Node):
    name: str

    def evaluate(self, scope):
        return scope.operand(self.name)


@dataclass(frozen=True)
class DefinedName(Node):
    name: str

    def evaluate(self, scope):
        return scope.defined(self.name)


@dataclass(frozen=True)
class Negate(Node):
    operand: Node

    def evaluate(self, scope):
        return -numbers(self.operand.evaluate(scope))


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node

    def evaluate(self, scope):
        a, b = self.left.evaluate(scope), self.right.evaluate(scope)
        _check_shapes(a, b)
        if self.op in _ARITHMETIC:
            return _finite(_ARITHMETIC[self.op](numbers(a), numbers(b)))
        if self.op == "&":
            return _cellwise(lambda x, y: _text(x) + _text(y), a, b)
        return _compare(_COMPARISONS[self.op], a, b)


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple

    def evaluate(self, scope):
        function = FUNCTIONS[self.name]
        if function.lazy:  # IF, IFERROR, CHOOSE evaluate only the arguments they pick
            return function.code(scope, *self.args)
        return function.code(
            *(
                arg.padded(scope) if i in function.searched and isinstance(arg, Range) else arg.evaluate(scope)
                for i, arg in enumerate(self.args)
            )
        )


@dataclass(frozen=True)
class Range(Node):
    """INDEX(a,i):INDEX(a,j): the block of `a` from one picked cell to the other (the only ranges formula text
    holds here; every other array is an operand)."""

    start: Node
    end: Node

    def evaluate(self, scope):
        return self.padded(scope, ragged=False)

    def padded(self, scope, ragged=True):
        """The range of each batch item; where they differ in size, the smaller ones padded with errors at
        their end if `ragged` (a search, such as MATCH, never finds an error: it reads them the same)."""
        ends = (self.start, self.end)
        if not all(isinstance(e, Call) and e.name == "INDEX" for e in ends) or self.start.args[0] != self.end.args[0]:
            raise Unsupported("a range other than INDEX(a,...):INDEX(a,...)")
        array = self.start.args[0].evaluate(scope)
        corners = [_index_positions(array, *(arg.evaluate(scope) for arg in e.args[1:])) for e in ends]
        (r0, c0), (r1, c1) = [np.broadcast_arrays(*map(np.asarray, corner)) for corner in corners]
        if r0.shape[1:] != (1, 1) or r1.shape[1:] != (1, 1):
            raise Unsupported("a range from INDEX with a whole row or column, or many indices")
        top, bottom, left, right = np.minimum(r0, r1), np.maximum(r0, r1), np.minimum(c0, c1), np.maximum(c0, c1)
        broken = np.isnan(top + bottom + left + right)  # an end is an error: the range is one error
        top, bottom, left, right = (np.where(broken, 0.0, x) for x in (top, bottom, left, right))
        rows = top + np.arange(np.max(bottom - top) + 1).reshape(1, -1, 1)
        cols = left + np.arange(np.max(right - left) + 1).reshape(1, 1, -1)
        past = (rows > bottom) | (cols > right)
        if past.any() and not ragged:
            raise _Ragged
        error = broken | past
        out = _pick(array, rows, cols)
        return _with_errors(out, error) if error.any() else out


# ---------------------------------------------------------------------------------------------------------
# The expression and its scope


class Scope:
    """What names mean during one evaluation: placeholders from `env`, defined names from `names`."""

    def __init__(self, env, names, defined):
        self.env, self.names, self._defined = env, names, defined

    def operand(self, name):
        if name not in self.env:
            raise KeyError(f"no value for {{{name}}}")
        return as_array(self.env[name])

    def defined(self, name):
        if name not in self._defined:  # a name's value may be large: convert it once per evaluation
            value = None if self.names is None else self.names(name)
            if value is None:
                raise Unsupported(f"the defined name {name}")
            self._defined[name] = as_array(value)
        return self._defined[name]


class Expression:
    """A parsed formula."""

    def __init__(self, text, root, placeholders):
        self.text, self.root, self.placeholders = text, root, placeholders

    def __repr__(self):
        return f"Expression({self.text!r})"

    def evaluate(self, env, names=None):
        """The formula's value, shape (B, rows, cols), for the operands `env` ({placeholder: array}) and the
        defined names' values `names(name)` (a 2-D array, or None for a name it does not know)."""
        defined = {}
        with np.errstate(all="ignore"):  # x/0, log(0), sqrt(-1) are errors (NaN), not warnings
            try:
                return self.root.evaluate(Scope(env, names, defined))
            except _Ragged:
                pass
            # One item at a time: each item's range then has one size. (Its placeholders' batches are sliced;
            # the defined names, the same for every item, are converted once.)
            arrays = {k: as_array(env[k]) for k in self.placeholders if k in env}
            batch = max(a.shape[0] for a in arrays.values())
            items = [
                self.root.evaluate(
                    Scope({k: a[b : b + 1] if a.shape[0] > 1 else a for k, a in arrays.items()}, names, defined)
                )
                for b in range(batch)
            ]
        if len({item.shape for item in items}) > 1:
            raise Unsupported(f"{self.text!r} gives arrays of different sizes for different batch items")
        if len({item.dtype for item in items}) > 1:
            items = [item.astype(object) for item in items]
        return np.concatenate(items)


@functools.lru_cache(maxsize=100_000)
def parse(text):
    """The Expression of formula `text` (without the leading "="); raises Unsupported for what it cannot
    evaluate. Cached: the compiler writes the same formula text for many cells."""
    parser = _Parser(text)
    return Expression(text, parser.parse(), parser.placeholders)


def as_array(value):
    """An operand as (B, rows, cols): a scalar is one 1x1 item, a 2-D array one item; numbers as float64,
    text as an object array."""
    a = np.asarray(value)
    if a.dtype.kind in "iuf":
        a = a.astype(np.float64, copy=False)
    elif a.dtype.kind in "US":
        a = a.astype(object)
    elif a.dtype.kind not in "bO":
        raise TypeError(f"cannot evaluate with an array of {a.dtype}")
    if a.ndim == 0:
        return a.reshape(1, 1, 1)
    if a.ndim == 2:
        return a[None]
    if a.ndim != 3:
        raise ValueError(f"an operand must be a scalar, or 2-D, or 3-D (batch, rows, cols), not {a.shape}")
    return a


# ---------------------------------------------------------------------------------------------------------
# Cells: Excel's conversions between numbers, text and logicals, one Python value at a time. The whole-array
# versions below use these only for object arrays (text), which are small; numbers take numpy's fast paths.

_NUMERIC_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _is_error(v):
    return isinstance(v, float) and v != v


def _is_number(v):
    return isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))


def _number(v):
    """A cell as arithmetic reads it: TRUE is 1, text that reads as a number is that number, other text is
    #VALUE!, an empty cell (None) is 0."""
    if isinstance(v, str):
        return float(v) if _NUMERIC_TEXT.fullmatch(v) else math.nan
    return 0.0 if v is None else float(v)


def _number_text(x):
    """A number as Excel writes it in text: 3 not 3.0, at most 15 significant digits, 1E+30."""
    if abs(x) < 1e15 and x == int(x):
        return str(int(x))
    return f"{x:.15G}"


def _text(v):
    """A cell as & reads it."""
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return "TRUE" if v else "FALSE"
    return "" if v is None else _number_text(float(v))


def _order(v):
    """What comparisons compare: numbers before text before logicals (Excel's order), text without case."""
    if isinstance(v, str):
        return 1, v.lower()
    if isinstance(v, (bool, np.bool_)):
        return 2, bool(v)
    return 0, 0.0 if v is None else float(v)


def _cellwise(f, *arrays):
    """f applied to each cell of the broadcast `arrays`, as an object array. An error in any argument is an
    error; so is a cell f cannot compute (it raises ValueError or the like: MID from position 0, CHAR(0))."""

    def cell(*values):
        if any(_is_error(v) for v in values):
            return math.nan
        try:
            return f(*values)
        except (ValueError, TypeError, IndexError, OverflowError):
            return math.nan

    return np.frompyfunc(cell, len(arrays), 1)(*arrays)


# ---------------------------------------------------------------------------------------------------------
# Arrays: the same conversions for whole arrays


def numbers(x):
    """x for arithmetic, as float64."""
    if x.dtype == np.float64:
        return x
    if x.dtype == bool:
        return x.astype(np.float64)
    return np.frompyfunc(_number, 1, 1)(x).astype(np.float64)


def errors(x):
    """Which cells of x are errors."""
    if x.dtype == np.float64:
        return np.isnan(x)
    if x.dtype == bool:
        return np.zeros(x.shape, bool)
    return np.frompyfunc(_is_error, 1, 1)(x).astype(bool)


def _finite(x):
    """A numeric result with overflow (and x/0) as an error: Excel has no infinity."""
    np.copyto(x, np.nan, where=np.isinf(x))
    return x


def _with_errors(x, mask):
    """A copy of x, broadcast to the mask's shape, with errors where `mask` is set."""
    shape = np.broadcast_shapes(x.shape, mask.shape)
    out = np.array(np.broadcast_to(x, shape), dtype=np.float64 if x.dtype == np.float64 else object)
    out[np.broadcast_to(mask, shape)] = np.nan
    return out


def _logicals(x):
    """An object array of logicals and errors as a bool array, when it holds no error."""
    return x if errors(x).any() else x.astype(bool)


def _truth(x):
    """(is TRUE, is an error) for each cell, as IF and NOT read a condition: a number is TRUE unless 0, text
    is #VALUE!."""
    if x.dtype == bool:
        return x, np.zeros(x.shape, bool)
    if x.dtype != np.float64:
        x = np.frompyfunc(lambda v: math.nan if isinstance(v, str) else _number(v), 1, 1)(x).astype(np.float64)
    return x != 0, np.isnan(x)


def _where(mask, a, b):
    """np.where, keeping each value's type: a logical next to a number stays a logical, not 1.0."""
    _check_shapes(mask, a, b)
    if a.dtype != b.dtype:
        a, b = a.astype(object), b.astype(object)
    return np.where(mask, a, b)


def _check_shapes(*arrays):
    try:
        np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        raise Unsupported(
            "arrays of sizes "
            + " and ".join("x".join(map(str, a.shape[1:])) for a in arrays)
            + " (Excel fills the difference with #N/A)"
        ) from None


# ---------------------------------------------------------------------------------------------------------
# Operators


def _power(a, b):
    return np.where((a == 0) & (b == 0), np.nan, np.power(a, b))  # 0^0 is #NUM! in Excel


_ARITHMETIC = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": _power}
_COMPARISONS = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def _compare(op, a, b):
    if a.dtype == b.dtype and a.dtype in (np.float64, bool):  # numbers with numbers: numpy's comparison
        out = op(a, b)
        if a.dtype == np.float64:
            error = np.isnan(a) | np.isnan(b)
            if error.any():
                return _with_errors(out, error)
        return out
    return _logicals(_cellwise(lambda x, y: op(_order(x), _order(y)), a, b))


# ---------------------------------------------------------------------------------------------------------
# Functions


@dataclass(frozen=True)
class Function:
    code: object
    arity: tuple  # (fewest, most) arguments
    lazy: bool  # takes (scope, *argument nodes), to evaluate only what it needs
    searched: tuple = ()  # arguments searched for a value: a range there may be padded (see Range.padded)


FUNCTIONS = {}


def function(name, low, high=None, lazy=False, searched=()):
    """Register `code` as Excel function `name`, of `low` to `high` arguments (high None: exactly low)."""

    def register(code):
        FUNCTIONS[name] = Function(code, (low, low if high is None else high), lazy, searched)
        return code

    return register


def _elementwise(name, f):
    """Register numpy's `f` as a function of one number, cell by cell (its NaN and inf are Excel's errors)."""
    FUNCTIONS[name] = Function(lambda x: _finite(f(numbers(x))), (1, 1), False)


for _name, _f in {
    "SQRT": np.sqrt,
    "EXP": np.exp,
    "LN": np.log,
    "TANH": np.tanh,
    "INT": np.floor,
    "ABS": np.abs,
}.items():
    _elementwise(_name, _f)
del _name, _f


@function("MOD", 2)
def _mod(a, b):
    return _finite(np.mod(numbers(a), numbers(b)))  # the sign of the divisor, as Excel; MOD(x, 0) is NaN


@function("PI", 0)
def _pi():
    return np.full((1, 1, 1), math.pi)


@function("TRUE", 0)
def _true():
    return np.full((1, 1, 1), True)


@function("FALSE", 0)
def _false():
    return np.full((1, 1, 1), False)


@function("N", 1)
def _n(x):
    """A number as itself, a logical as 1 or 0, text as 0."""
    if x.dtype != object:
        return numbers(x)
    return np.frompyfunc(lambda v: 0.0 if isinstance(v, str) else _number(v), 1, 1)(x).astype(np.float64)


# --- aggregates: each batch item's whole array to one value, (B, 1, 1). Like Excel's over a range, they skip
# text and logicals (even one given directly) and propagate errors.

_ALL = (1, 2)


def _numeric_cells(x):
    """(values as float64, which cells are numbers or errors: None for all of them)."""
    if x.dtype == np.float64:
        return x, None
    if x.dtype == bool:
        return np.zeros(x.shape), np.zeros(x.shape, bool)
    kept = np.frompyfunc(lambda v: _is_number(v) or _is_error(v), 1, 1)(x).astype(bool)
    return np.where(kept, x, 0.0).astype(np.float64), kept


def _sum(x):
    values, kept = _numeric_cells(x)
    return np.sum(values, axis=_ALL, keepdims=True, where=True if kept is None else kept)


def _count(x, errors_too=False):
    values, kept = _numeric_cells(x)
    counted = np.ones(x.shape, bool) if kept is None else kept
    if not errors_too:
        counted = counted & ~np.isnan(values)
    return np.sum(counted, axis=_ALL, keepdims=True).astype(np.float64)


def _extreme(x, reduce, empty):
    values, kept = _numeric_cells(x)
    return reduce(values, axis=_ALL, keepdims=True, initial=empty, where=True if kept is None else kept)


@function("SUM", 1, 255)
def _sum_all(*arrays):
    return _finite(sum(_sum(a) for a in arrays))


@function("COUNT", 1, 255)
def _count_all(*arrays):
    return sum(_count(a) for a in arrays)


@function("AVERAGE", 1, 255)
def _average(*arrays):
    return _finite(sum(_sum(a) for a in arrays) / sum(_count(a, errors_too=True) for a in arrays))


@function("MAX", 1, 255)
def _max(*arrays):
    out = functools.reduce(np.maximum, (_extreme(a, np.max, -np.inf) for a in arrays))
    return np.where(out == -np.inf, 0.0, out)  # no numbers at all: 0, as Excel


@function("MIN", 1, 255)
def _min(*arrays):
    out = functools.reduce(np.minimum, (_extreme(a, np.min, np.inf) for a in arrays))
    return np.where(out == np.inf, 0.0, out)


@function("SUMPRODUCT", 1, 255)
def _sumproduct(*arrays):
    """The sum of the arrays' elementwise product; a cell that is not a number counts as 0."""
    if len({a.shape[1:] for a in arrays}) > 1:  # #VALUE!
        return np.full((max(a.shape[0] for a in arrays), 1, 1), np.nan)
    values = [v if kept is None else np.where(kept, v, 0.0) for v, kept in map(_numeric_cells, arrays)]
    return _finite(functools.reduce(np.multiply, values).sum(axis=_ALL, keepdims=True))


def _kth(array, k, largest):
    """LARGE/SMALL: the k-th largest (smallest) number of each batch item's array, k elementwise."""
    values, kept = _numeric_cells(array)
    B = values.shape[0]
    values, kept = values.reshape(B, -1), np.ones(values.shape, bool) if kept is None else kept
    kept = kept.reshape(B, -1)
    failed = (np.isnan(values) & kept).any(axis=1)  # an error in the array
    sign = -1.0 if largest else 1.0  # the k-th largest is the k-th smallest of the negated values
    ordered = np.sort(np.where(kept & ~np.isnan(values), sign * values, np.inf), axis=1) * sign
    count = (kept & ~np.isnan(values)).sum(axis=1)
    k = np.ceil(numbers(k))  # (LibreOffice rounds a fractional k up)
    shape = np.broadcast_shapes(k.shape, (B, 1, 1))
    k = np.broadcast_to(k, shape)
    b = np.arange(shape[0]).reshape(-1, 1, 1) % B  # B is 1 or the batch
    valid = (k >= 1) & (k <= count[b]) & ~failed[b]
    return np.where(valid, ordered[b, np.where(valid, k - 1, 0).astype(np.intp)], np.nan)


@function("LARGE", 2)
def _large(array, k):
    return _kth(array, k, largest=True)


@function("SMALL", 2)
def _small(array, k):
    return _kth(array, k, largest=False)


@function("MMULT", 2)
def _mmult(a, b):
    a, b = numbers(a), numbers(b)
    if a.shape[2] != b.shape[1]:  # #VALUE!
        return np.full((max(a.shape[0], b.shape[0]), 1, 1), np.nan)
    if a.shape[0] == 1 and b.shape[0] > 1:
        # One matrix times a batch of them: one product of the matrix with all the batch side by side (a
        # single large matrix product instead of B small ones; 10-50x faster for a weight times columns).
        B, k, n = b.shape
        wide = a[0] @ b.transpose(1, 0, 2).reshape(k, B * n)
        return _finite(np.ascontiguousarray(wide.reshape(-1, B, n).transpose(1, 0, 2)))
    return _finite(np.matmul(a, b))


@function("TRANSPOSE", 1)
def _transpose(x):
    return x.transpose(0, 2, 1)


# --- logic


@function("IF", 2, 3, lazy=True)
def _if(scope, condition, then, otherwise=Logical(False)):
    """Elementwise; a branch no cell picks is not evaluated (so neither are its errors)."""
    truth, error = _truth(condition.evaluate(scope))
    a = then.evaluate(scope) if (truth & ~error).any() else None
    b = otherwise.evaluate(scope) if (~truth & ~error).any() else None
    if a is None and b is None:
        return np.full(truth.shape, np.nan)
    out = b if a is None else a if b is None else _where(truth, a, b)
    return _with_errors(out, error) if error.any() else _broadcast_to_shape(out, truth.shape)


def _broadcast_to_shape(x, shape):
    """x broadcast with `shape` (a condition's), as a new array."""
    full = np.broadcast_shapes(x.shape, shape)
    return x if x.shape == full else np.array(np.broadcast_to(x, full))


@function("IFERROR", 2, lazy=True)
def _iferror(scope, value, fallback):
    x = value.evaluate(scope)
    error = errors(x)
    if not error.any():
        return x
    return _where(error, fallback.evaluate(scope), x)


@function("CHOOSE", 2, 255, lazy=True)
def _choose(scope, index, *choices):
    """CHOOSE(k, v1, v2, ...): v_k, with k elementwise; only the choices some cell picks are evaluated."""
    k = np.trunc(numbers(index.evaluate(scope)))
    out, picked = None, np.zeros(k.shape, bool)
    for j, choice in enumerate(choices, 1):
        here = k == j
        if here.any():
            value = choice.evaluate(scope)
            out = value if out is None else _where(here, value, out)
            picked |= here
    if out is None:
        return np.full(k.shape, np.nan)
    return _with_errors(out, ~picked) if not picked.all() else _broadcast_to_shape(out, k.shape)


@function("NOT", 1)
def _not(x):
    truth, error = _truth(x)
    return _with_errors(~truth, error) if error.any() else ~truth


def _logical_cells(x):
    """(is TRUE, counts: a number or logical, is an error) per cell, as AND and OR read them: text is
    skipped."""
    if x.dtype == bool:
        return x, np.ones(x.shape, bool), np.zeros(x.shape, bool)
    if x.dtype == np.float64:
        return x != 0, np.ones(x.shape, bool), np.isnan(x)
    kept = np.frompyfunc(lambda v: not (isinstance(v, str) or v is None), 1, 1)(x).astype(bool)
    code = np.frompyfunc(lambda v: 0.0 if isinstance(v, str) or v is None else _number(v), 1, 1)(x)
    code = code.astype(np.float64)  # 1/0 for TRUE/FALSE, the number, NaN for an error
    return (code != 0) & kept, kept, np.isnan(code)


def _and_or(arrays, every):
    cells = [_logical_cells(a) for a in arrays]
    reduce = (
        (lambda t, kept: np.all(t | ~kept, axis=_ALL, keepdims=True))
        if every
        else (lambda t, kept: np.any(t & kept, axis=_ALL, keepdims=True))
    )
    combine = np.logical_and if every else np.logical_or
    result = functools.reduce(combine, (reduce(t, kept) for t, kept, _ in cells))
    counted = sum(np.sum(kept, axis=_ALL, keepdims=True) for _, kept, _ in cells)
    error = functools.reduce(np.logical_or, (np.any(e, axis=_ALL, keepdims=True) for _, _, e in cells))
    error = error | (counted == 0)  # nothing to judge: #VALUE!
    return _with_errors(result, error) if error.any() else result


@function("AND", 1, 255)
def _and(*arrays):
    return _and_or(arrays, every=True)


@function("OR", 1, 255)
def _or(*arrays):
    return _and_or(arrays, every=False)


@function("ISNUMBER", 1)
def _isnumber(x):
    if x.dtype == np.float64:
        return ~np.isnan(x)
    if x.dtype == bool:
        return np.zeros(x.shape, bool)
    return np.frompyfunc(lambda v: _is_number(v) and not _is_error(v), 1, 1)(x).astype(bool)


# --- lookup. Positions are 0-based float arrays inside; NaN is "no such position".


def _positions_along(index, size, axis):
    """0-based positions INDEX counts from a 1-based index (truncated, as Excel); an index of 0 is the whole
    row or column."""
    p = np.trunc(numbers(index)) - 1
    if p.size == 1 and p.flat[0] == -1:
        return np.arange(size, dtype=np.float64).reshape((1, size, 1) if axis == 1 else (1, 1, size))
    return p


def _index_positions(array, row, col=None):
    """(rows, cols) that INDEX(array, row[, col]) picks: with one index, a one-column or one-row array is
    counted along its length and any other array gives the whole row."""
    R, C = array.shape[1:]
    if col is not None:
        return _positions_along(row, R, 1), _positions_along(col, C, 2)
    if C == 1:
        return _positions_along(row, R, 1), 0.0
    if R == 1:
        return 0.0, _positions_along(row, C, 2)
    return _positions_along(row, R, 1), np.arange(C, dtype=np.float64).reshape(1, 1, C)


_ONE = np.empty((1, 1, 1))


def _pick(array, rows, cols):
    """array[b, rows, cols] for each batch item b, with rows and cols (0-based, broadcast) elementwise; a
    position outside the array is #REF! (NaN)."""
    rows, cols, _ = np.broadcast_arrays(np.asarray(rows, np.float64), np.asarray(cols, np.float64), _ONE)
    R, C = array.shape[1:]
    valid = (rows >= 0) & (rows < R) & (cols >= 0) & (cols < C)  # False for NaN too
    r = np.where(valid, rows, 0).astype(np.intp)
    c = np.where(valid, cols, 0).astype(np.intp)
    b = np.arange(array.shape[0]).reshape(-1, 1, 1) if array.shape[0] > 1 else 0
    out = array[b, r, c]
    return out if valid.all() else _with_errors(out, ~valid)


@function("INDEX", 2, 3)
def _index(array, row, col=None):
    return _pick(array, *_index_positions(array, row, col))


def _vector(x):
    """A one-row or one-column array as (B, n), or None for a 2-D one."""
    if x.shape[1] == 1 or x.shape[2] == 1:
        return x.reshape(x.shape[0], -1)
    return None


def _number_positions(values, vector, kind):
    """MATCH on numbers, for 1-D `values` in one 1-D `vector`: positions (0-based, NaN: none). kind 0: the
    first equal value; 1: the last value <= each in an ascending vector; -1: the last >= in a descending one."""
    if kind == 0:
        order = np.argsort(vector, kind="stable")  # equal values keep their order: the first comes first
        ordered = vector[order]
        at = np.minimum(np.searchsorted(ordered, values), len(vector) - 1)
        return np.where(ordered[at] == values, order[at], np.nan)
    where = np.flatnonzero(~np.isnan(vector))  # a binary search skips errors
    sign = 1.0 if kind > 0 else -1.0
    at = np.searchsorted(sign * vector[where], sign * values, side="right") - 1
    return np.where((at >= 0) & ~np.isnan(values), where[np.maximum(at, 0)], np.nan)


def _any_positions(values, vector, kind):
    """MATCH for text or logical values, one cell at a time: a value is found only among cells of its kind,
    text without case."""
    keys = [None if _is_error(v) or v is None else _order(v) for v in vector]
    out = np.full(len(values), np.nan)
    if kind == 0:
        first = {}
        for i, key in enumerate(keys):
            if key is not None:
                first.setdefault(key, i)
        for j, v in enumerate(values):
            out[j] = np.nan if _is_error(v) else first.get(_order(v), np.nan)
        return out
    for j, v in enumerate(values):
        if _is_error(v):
            continue
        wanted = _order(v)
        # the last cell of its kind before the first one past the value: where a binary search over sorted
        # cells ends
        for i, key in enumerate(keys):
            if key is None or key[0] != wanted[0]:
                continue
            if (key <= wanted) if kind > 0 else (key >= wanted):
                out[j] = i
            else:
                break
    return out


def _lookup_numbers(x):
    """x's numbers as float64, NaN for any other cell: a number is only ever found among numbers."""
    values, kept = _numeric_cells(x)
    return values if kept is None else np.where(kept, values, np.nan)


_CHUNK = 1 << 22  # cells compared at once when each batch item has its own vector


def _positions(values, vectors, kind):
    """Positions (0-based, NaN: none) of `values` (B, rows, cols, elementwise) in `vectors` (B, n), per batch
    item. See _number_positions for `kind`."""
    B = max(values.shape[0], vectors.shape[0])
    shape = (B,) + values.shape[1:]
    if values.dtype == np.float64 or (values.dtype == object and _numeric_cells(values)[1].all()):
        find, values, vectors = _number_positions, _lookup_numbers(values), _lookup_numbers(vectors)
    else:
        find = _any_positions
    if vectors.shape[0] == 1:  # one vector for the whole batch: all values in one go
        return find(np.broadcast_to(values, shape).ravel(), vectors[0], kind).reshape(shape)
    if find is _number_positions and kind == 0 and values.shape[1:] == (1, 1):
        # one value per item, each in its own vector: compare them all, a chunk of the batch at a time
        n = vectors.shape[1]
        values, vectors = np.broadcast_to(values.reshape(-1, 1), (B, 1)), np.broadcast_to(vectors, (B, n))
        out, step = np.empty(B), max(1, _CHUNK // n)
        for s in range(0, B, step):
            equal = vectors[s : s + step] == values[s : s + step]
            out[s : s + step] = np.where(equal.any(axis=1), equal.argmax(axis=1), np.nan)
        return out.reshape(shape)
    values = np.broadcast_to(values, shape)
    return np.stack(
        [find(values[b].ravel(), vectors[b if vectors.shape[0] > 1 else 0], kind).reshape(shape[1:]) for b in range(B)]
    )


def _match_kind(kind):
    k = numbers(kind).ravel()
    if (k != k[0]).any():
        raise Unsupported("a match type that differs across the batch")
    return int(np.sign(k[0]))


@function("MATCH", 2, 3, searched=(1,))
def _match(value, array, kind=None):
    vector = _vector(array)
    if vector is None:  # #N/A
        return np.full((max(value.shape[0], array.shape[0]),) + value.shape[1:], np.nan)
    return _positions(value, vector, 1 if kind is None else _match_kind(kind)) + 1


@function("LOOKUP", 2, 3)
def _lookup(value, lookup_vector, result_vector=None):
    """The result at the position of the largest value <= `value` in the ascending lookup vector."""
    keys = _vector(lookup_vector)
    results = _vector(lookup_vector if result_vector is None else result_vector)
    if keys is None or results is None:
        raise Unsupported("LOOKUP in a 2-D array")
    at = _positions(value, keys, 1)
    return _pick(results[:, :, None], at, 0.0)


@function("VLOOKUP", 3, 4)
def _vlookup(value, table, col, approximate=None):
    exact = approximate is not None and not _truth(approximate)[0].all()
    at = _positions(value, table[:, :, 0], 0 if exact else 1)
    return _pick(table, at, np.trunc(numbers(col)) - 1)


_CRITERION = re.compile(r"(<=|>=|<>|<|>|=)?(.*)", re.DOTALL)


def _criterion(criterion):
    """SUMIF's criterion as (comparison, what cells are compared with, as _order gives it): a number means
    equal to it; text may start with a comparison: "<=3", "<>0", "=abc" (text compared without case)."""
    if not isinstance(criterion, str):
        return operator.eq, _order(criterion)
    op, operand = _CRITERION.fullmatch(criterion).groups()
    return _COMPARISONS[op or "="], _order(float(operand) if _NUMERIC_TEXT.fullmatch(operand) else operand)


def _meets(cells, op, target):
    """Which `cells` (rows, cols) meet the criterion. A cell of another kind than the target meets none but
    <> (it is not equal)."""
    if cells.dtype == np.float64 and target[0] == 0:
        return op(cells, target[1])

    def meets(v):
        key = None if _is_error(v) or v is None else _order(v)
        return op(key, target) if key is not None and key[0] == target[0] else op is operator.ne

    return np.frompyfunc(meets, 1, 1)(cells).astype(bool)


@function("SUMIF", 2, 3)
def _sumif(cells, criteria, sum_cells=None):
    """The sum of sum_cells where cells meet the criterion; the criterion is elementwise. A loop over its
    cells (SUMIF sums small arrays: the tokenizer's)."""
    sum_cells = cells if sum_cells is None else sum_cells
    if sum_cells.shape[1:] != cells.shape[1:]:
        raise Unsupported("SUMIF with a sum range of another size")
    values, kept = _numeric_cells(sum_cells)
    values = values if kept is None else np.where(kept, values, 0.0)
    B = max(cells.shape[0], criteria.shape[0], sum_cells.shape[0])
    shape = (B,) + criteria.shape[1:]
    criteria = np.broadcast_to(criteria, shape)
    out = np.empty(shape)
    for index in np.ndindex(shape):
        b = index[0]
        if _is_error(criteria[index]):
            out[index] = np.nan
            continue
        mask = _meets(cells[b if cells.shape[0] > 1 else 0], *_criterion(criteria[index]))
        out[index] = np.sum(values[b if values.shape[0] > 1 else 0], where=mask)
    return _finite(out)


# --- text. Characters are Python's (code points); Excel counts UTF-16 units, which differs only past U+FFFF.


def _text_function(name, arity, f, result=None):
    """Register an elementwise text function; result=np.float64 for one that gives numbers, bool for
    logicals."""

    def code(*arrays):
        out = _cellwise(f, *arrays)
        if result is np.float64:
            return out.astype(np.float64)
        return _logicals(out) if result is bool else out

    FUNCTIONS[name] = Function(code, (arity, arity), False)


def _mid(text, start, count):
    start, count = int(_number(start)), int(_number(count))
    if start < 1 or count < 0:
        raise ValueError
    return _text(text)[start - 1 : start - 1 + count]


def _char(code):
    """CHAR: Excel's character set is Windows-1252 (on Windows), Latin-1 where that has no character."""
    code = int(_number(code))
    if not 1 <= code <= 255:
        raise ValueError
    try:
        return bytes([code]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(code)


def _unichar(code):
    code = int(_number(code))
    if not 1 <= code <= 0x10FFFF:
        raise ValueError
    return chr(code)


def _unicode(text):
    return float(ord(_text(text)[0]))  # IndexError for "": #VALUE!


_text_function("LEN", 1, lambda v: float(len(_text(v))), np.float64)
_text_function("MID", 3, _mid)
_text_function("CHAR", 1, _char)
_text_function("UNICHAR", 1, _unichar)
_text_function("UNICODE", 1, _unicode, np.float64)
_text_function("EXACT", 2, lambda a, b: _text(a) == _text(b), bool)
