"""The one Jinja environment for untrusted text: sandboxed, bounded, compiled once per string.

Registry and `--templates` templates, recipes' Jinja and the neurocontainers
export all render in `environment()` (an `ImmutableSandboxedEnvironment`);
`compiled(text)` is its compile cache (in memory, and across runs on disk:
core.jinjacache).  The sandbox alone stops code execution, not exhaustion
(`{{ 9**(9**9) }}` never returns, `"a"*3000000000` ends in MemoryError), so
every render here is bounded in-process:

* `*` `**` `+` `%` are intercepted and refused when the result would exceed
  MAX_INT_BITS or MAX_SIZE; calls of the amplifying str/bytes methods (`ljust`,
  `replace`, `join`, `format`, …), `int.to_bytes` and the filters are checked
  before they allocate and their results after; `~` and the output are capped;
* every for-loop item, call, attribute lookup and filter checks a wall-clock
  deadline (Jinja has no `while`: unbounded work needs a loop or a recursive
  macro call, and each passes one of those checks).

Errors are `RenderLimit` (a SecurityError, so callers report bad input, never an
internal error).  What no in-process check sees (a single C-level operation that
runs for hours) is bounded by the forked worker of render.template_sandbox.
jinja2 and neurodocker load on first use, never at import.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeGuard

from jinja2.sandbox import SecurityError

# Largest string (characters), list/tuple/dict/set (items) a template may produce.
# Real template blocks and recipe strings are tens of KiB.
MAX_SIZE = 1 << 20
# Largest integer a template may compute (2**65536 is instant; 9**(9**9) never ends).
MAX_INT_BITS = 1 << 16
# Wall-clock bound of one render (a template block, a recipe string): real ones take
# milliseconds; generous for a loaded machine.
RENDER_SECONDS = 5.0
# The filter every for-loop's iterable is wrapped in (see _GuardedCodeGenerator).
_ITER_FILTER = "_ndgen_guarded_iter"


class RenderLimit(SecurityError):
    """A template exceeded a size, depth or time bound: bad input, reported in one line."""


# ---------------------------------------------------------------- the deadline

_state = threading.local()


@contextlib.contextmanager
def deadline(seconds: float = RENDER_SECONDS) -> Iterator[None]:
    """Bound the renders inside to `seconds` of wall-clock time (an enclosing,
    earlier deadline stays in force: nested renders never extend it)."""
    outer = getattr(_state, "deadline", None)
    mine = time.monotonic() + seconds
    _state.deadline = mine if outer is None else min(outer, mine)
    try:
        yield
    finally:
        _state.deadline = outer


def _tick() -> None:
    end = getattr(_state, "deadline", None)
    if end is not None and time.monotonic() > end:
        raise RenderLimit(f"rendering took longer than {RENDER_SECONDS:g} s (a loop or recursion too long?)")


# ---------------------------------------------------------------- size checks

_SIZED = (str, bytes, bytearray, list, tuple, dict, set, frozenset)


def _is_int(x: Any) -> TypeGuard[int]:
    return isinstance(x, int)  # bool too: True * "a" is "a"


def too_big(what: str, size: int) -> RenderLimit:
    return RenderLimit(f"{what} would have {size} characters or items, more than the limit of {MAX_SIZE}")


def _sized(value: Any, what: str = "a result") -> Any:
    if isinstance(value, _SIZED) and len(value) > MAX_SIZE:
        raise too_big(what, len(value))
    return value


def _check_int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimit(f"{what} would have about {bits} bits, more than the limit of {MAX_INT_BITS}")


# %-formatting's width and precision: `%999999999d` allocates a GiB in one step.
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_printf(fmt: str | bytes | bytearray) -> None:
    text = fmt.decode("latin-1") if isinstance(fmt, (bytes, bytearray)) else fmt
    for m in _PRINTF.finditer(text):
        for n in m.groups():
            if n == "*" or (n is not None and int(n) > MAX_SIZE):
                raise RenderLimit(f"a %-format width or precision ({n}) above the limit of {MAX_SIZE}")


def _check_format_string(fmt: str) -> None:
    """str.format: a field's spec (`{:>999999999}`) may not ask for more than MAX_SIZE."""
    import string

    for _lit, _field, spec, _conv in string.Formatter().parse(fmt):
        if spec and ("{" in spec or any(int(n) > MAX_SIZE for n in _DIGITS.findall(spec))):
            raise RenderLimit(f"a format spec ({spec[:40]!r}) asks for more than the limit of {MAX_SIZE}")


def _check_binop(op: str, left: Any, right: Any) -> None:
    if op == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        _check_int_bits(right * abs(left).bit_length(), "a power")
    elif op == "*":
        if _is_int(left) and _is_int(right):
            _check_int_bits(left.bit_length() + right.bit_length(), "a product")
        else:
            seq, n = (left, right) if _is_int(right) else (right, left)
            if isinstance(seq, _SIZED) and _is_int(n) and len(seq) * max(n, 0) > MAX_SIZE:
                raise too_big("a repetition", len(seq) * n)
    elif op == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        if len(left) + len(right) > MAX_SIZE:
            raise too_big("a concatenation", len(left) + len(right))
    elif op == "%" and isinstance(left, (str, bytes, bytearray)):
        _check_printf(left)


def _bounded_list(value: Any, what: str) -> list:
    """An iterable as a list, refused past MAX_SIZE items without reading further."""
    out = []
    for i, item in enumerate(value):
        if i >= MAX_SIZE:
            raise RenderLimit(f"{what}: more than {MAX_SIZE} items")
        if not i & 1023:
            _tick()
        out.append(item)
    return out


def _joined_size(items: list, sep: Any) -> int:
    sizes = [len(x) if isinstance(x, _SIZED) else len(str(x)) for x in items]
    return sum(sizes) + len(sep) * max(len(items) - 1, 0)


def _check_method_call(obj: Any, args: tuple, kwargs: dict) -> tuple:
    """Refuse a call of an amplifying method before it allocates; returns the
    arguments to call with (a consumed iterator comes back as a list)."""
    target = getattr(obj, "__wrapped__", obj)  # jinja wraps str.format at lookup
    owner: Any = getattr(target, "__self__", None)  # str, bytes or bytearray: checked below
    name = getattr(target, "__name__", "")
    if isinstance(owner, (str, bytes, bytearray)):
        first = args[0] if args else None
        if name in ("ljust", "rjust", "center", "zfill") and _is_int(first) and first > MAX_SIZE:
            raise too_big(f"str.{name}()", first)
        if name == "expandtabs":
            tab = first if _is_int(first) else kwargs.get("tabsize", 8)
            if _is_int(tab) and len(owner) * max(tab, 1) > MAX_SIZE:
                raise too_big("str.expandtabs()", len(owner) * tab)
        if (
            name == "replace"
            and len(args) >= 2
            and isinstance(args[0], type(owner))
            and isinstance(args[1], type(owner))
        ):
            old: Any = args[0]  # the same type as owner (checked above)
            new: Any = args[1]
            count = owner.count(old) if old else len(owner) + 1
            if len(args) > 2 and _is_int(args[2]) and args[2] >= 0:
                count = min(count, args[2])
            size = len(owner) + count * (len(new) - len(old))
            if size > MAX_SIZE:
                raise too_big("str.replace()", size)
        if name == "join" and args:
            items = _bounded_list(args[0], "str.join()")
            if _joined_size(items, owner) > MAX_SIZE:
                raise too_big("str.join()", _joined_size(items, owner))
            args = (items, *args[1:])
        if name == "translate" and isinstance(first, Mapping):
            longest = max((len(v) for v in first.values() if isinstance(v, _SIZED)), default=1)
            if len(owner) * longest > MAX_SIZE:
                raise too_big("str.translate()", len(owner) * longest)
        if name in ("format", "format_map") and isinstance(owner, str):
            _check_format_string(owner)
    elif _is_int(owner) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if _is_int(length) and length > MAX_SIZE:
            raise too_big("int.to_bytes()", length)
    return args


# ---------------------------------------------------------------- filters


def _guarded_filter(name: str, func: Callable) -> Callable:
    """A builtin filter with a deadline check, pre-checks for the ones that can
    allocate far more than they are given, and a size check of the result."""

    @functools.wraps(func)  # keeps jinja's pass_context/eval_context marker
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        args = _check_filter_args(name, args, kwargs)
        return _sized(func(*args, **kwargs), f"the {name} filter's result")

    return guarded


def _check_filter_args(name: str, args: tuple, kwargs: dict) -> tuple:
    from jinja2.utils import _PassArg

    raw = _RAW_FILTERS().get(name)
    lead = 1 if args and raw is not None and _PassArg.from_obj(raw) is not None else 0
    value, rest = (args[lead], args[lead + 1 :]) if len(args) > lead else (None, ())
    # Every count/width argument: `center(10**9)`, `batch(10**9, 'x')`, `indent(10**9)`.
    for n in (*rest, *kwargs.values()):
        if _is_int(n) and not isinstance(n, bool) and n > MAX_SIZE:
            raise RenderLimit(f"the {name} filter: an argument ({n}) above the limit of {MAX_SIZE}")
    if name == "join" and value is not None and "attribute" not in kwargs and len(rest) < 2:
        items = _bounded_list(value, "the join filter")
        sep = rest[0] if rest else kwargs.get("d", "")
        if _joined_size(items, str(sep)) > MAX_SIZE:
            raise too_big("the join filter", _joined_size(items, str(sep)))
        args = (*args[:lead], items, *rest)
    elif name == "sum" and value is not None:
        items = _bounded_list(value, "the sum filter")
        total = sum(len(x) for x in items if isinstance(x, _SIZED))
        if total > MAX_SIZE:
            raise too_big("the sum filter", total)
        args = (*args[:lead], items, *rest)
    elif name == "format" and isinstance(value, str):
        _check_printf(value)
    elif name in ("indent", "wordwrap", "replace") and isinstance(value, str):
        extra = [v for v in (*rest, *kwargs.values()) if isinstance(v, str)]
        longest = max(map(len, extra), default=0)
        if name == "replace" and len(rest) >= 2 and isinstance(rest[0], str) and isinstance(rest[1], str):
            size = len(value) + (value.count(rest[0]) if rest[0] else len(value) + 1) * (len(rest[1]) - len(rest[0]))
        else:
            size = len(value) * (1 + longest)
        if size > MAX_SIZE:
            raise too_big(f"the {name} filter", size)
    return args


@functools.cache
def _RAW_FILTERS() -> Mapping[str, Callable]:  # noqa: N802 - a constant, built lazily
    from jinja2.filters import FILTERS

    return FILTERS


def _guarded_iter(value: Any) -> Iterator[Any]:
    """What every `{% for %}` iterates: the deadline is checked at each item."""
    for item in value:
        _tick()
        yield item


# ---------------------------------------------------------------- the environment


@functools.cache
def environment() -> Any:
    """The one Jinja environment for untrusted text (sandboxed and bounded).

    It holds no per-render state (the context is passed at render time), so one
    instance serves registry templates, `--templates`, recipes and exports."""
    return _environment_class()()


@functools.cache
def _environment_class() -> type:
    """Built on first use: jinja2's compiler and neurodocker load only when rendering."""
    import jinja2
    from jinja2 import nodes
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GuardedCodeGenerator(CodeGenerator):
        """Compiles every for-loop's iterable through `_guarded_iter` (a deadline check per
        item) and every `~` through a size-checked join."""

        def visit_Template(self, node: Any, frame: Any = None) -> None:  # noqa: N802 - jinja's visitor
            for loop in node.find_all(nodes.For):
                if not (isinstance(loop.iter, nodes.Filter) and loop.iter.name == _ITER_FILTER):
                    guard = nodes.Filter(loop.iter, _ITER_FILTER, [], [], None, None, lineno=loop.iter.lineno)
                    loop.iter = guard.set_environment(self.environment)
            super().visit_Template(node, frame)

        def visit_Concat(self, node: Any, frame: Any) -> None:  # noqa: N802
            self.write("environment.capped_join(")
            super().visit_Concat(node, frame)  # writes `str_join((a, b, ))`: capped_join receives its result
            self.write(")")

    class BoundedTemplate(jinja2.Template):
        def render(self, *args: Any, **kwargs: Any) -> str:
            with deadline():
                try:
                    return super().render(*args, **kwargs)
                except RecursionError:
                    raise RenderLimit("templates nested or recursing too deeply") from None
                except MemoryError:
                    raise RenderLimit("rendering ran out of memory") from None

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+", "%"})
        code_generator_class = GuardedCodeGenerator
        template_class = BoundedTemplate

        def __init__(self) -> None:
            from neurodocker_nd.core import reproenv

            _raise_helper = reproenv.module("reproenv.renderers")._raise_helper
            super().__init__(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
            self.globals["raise"] = _raise_helper  # `{{ raise("…") }}` in upstream templates
            # lipsum(n) writes n paragraphs of text: unbounded output, and no template needs it.
            del self.globals["lipsum"]
            self.filters = {name: _guarded_filter(name, f) for name, f in self.filters.items()}
            self.filters[_ITER_FILTER] = _guarded_iter

        def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
            _tick()
            _check_binop(operator_, left, right)
            return _sized(super().call_binop(context, operator_, left, right))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's signature
            _tick()
            args = _check_method_call(__obj, args, kwargs)
            return _sized(super().call(__context, __obj, *args, **kwargs))

        def getattr(self, obj: Any, attribute: str) -> Any:
            _tick()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            _tick()
            return super().getitem(obj, argument)

        def concat(self, parts: Iterable[str]) -> str:
            """The output of a template, a macro or a `{% set %}` block, capped as it grows."""
            out, size = [], 0
            for part in parts:
                size += len(part)
                if size > MAX_SIZE:
                    raise too_big("the rendered text", size)
                out.append(part)
            return "".join(out)

        @staticmethod
        def capped_join(joined: str) -> str:
            _tick()
            return _sized(joined, "a `~` concatenation")

    return BoundedEnvironment


@functools.lru_cache(maxsize=8192)
def compiled(source: str) -> Any:
    """`source` compiled in `environment()`, once per distinct string: the same template
    `instructions` render for every set of arguments (52 neurocontainers recipes share one
    miniconda template) and recipes repeat their conditions and macros.  Raises
    jinja2.TemplateSyntaxError, or RecursionError for text nested too deeply to compile."""
    from neurodocker_nd.core import jinjacache

    return jinjacache.template(environment(), source, _fingerprint())


@functools.cache
def _fingerprint() -> bytes:
    """What compiled code depends on besides its source: this file (the code generator, the
    intercepted operators, the environment's options), jinja2's version and Python's bytecode."""
    import importlib.util
    from pathlib import Path

    import jinja2

    own = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    return f"{own} jinja2 {jinja2.__version__}".encode() + importlib.util.MAGIC_NUMBER
