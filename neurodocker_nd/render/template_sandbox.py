"""Template strings render in a Jinja sandbox: registry entries and recipes are untrusted input.

neurodocker renders a template's `instructions` and `env` with a module-level,
unsandboxed `jinja2.Environment` (`reproenv.renderers._render_string_from_template`),
so an entry containing `{{ self.__init__.__globals__[…] }}` would run code during
`ndgen validate` or a render. ndgen renders those strings here instead, with the
same semantics — `self.` is the installation method (its arguments, `urls`,
`install()`, `install_dependencies()`, `pkg_manager`), StrictUndefined, neurodocker's
`raise` global, re-rendered until no `{{ … }}` is left — in an
`ImmutableSandboxedEnvironment`, and hands neurodocker's renderer plain text only
(`Renderer.env()` / `Renderer.run()`), so neurodocker's own Jinja never sees a
template. neurodocker itself is not patched.

`environment()` is the one Jinja environment for untrusted text (registry and
`--templates` templates, the neurocontainers export, recipes). The sandbox alone
stops code execution, not exhaustion (`{{ 9**(9**9) }}` never returns,
`"a"*3000000000` ends in MemoryError), so it is also bounded, in two layers:

* in-process, for every render: `*` `**` `+` `%` are intercepted and refused when
  the result would exceed MAX_INT_BITS or MAX_SIZE; calls of the amplifying str/bytes
  methods (`ljust`, `replace`, `join`, `format`, …), `int.to_bytes` and the filters are
  checked before they allocate and their results after; `~` and the output are capped;
  every for-loop item, call, attribute lookup and filter checks a wall-clock deadline
  (Jinja has no `while`: unbounded work needs a loop or a recursive macro call, and
  each passes one of those checks). Errors are `RenderLimit` (a SecurityError, so
  callers report bad input, never an internal error).
* `isolated()`: registry templates render in a forked worker with an address-space
  limit and a wall-clock deadline after which it is killed. Some single C-level
  operations no in-process check sees (the repr of a list nested 60 levels through
  shared references, deep equality of two such lists) run for hours without
  returning to Python; only a process boundary bounds those. Without `os.fork`
  (Windows) rendering stays in-process with the checks above.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2.sandbox import SecurityError

from neurodocker_nd.errors import NdgenError

# neurodocker's limit on nested re-rendering (a default such as
# `install_path: /opt/x-{{ self.version }}` needs a second pass).
MAX_RENDERS = 20
# Largest string (characters), list/tuple/dict/set (items) a template may produce.
# Real template blocks and recipe strings are tens of KiB.
MAX_SIZE = 1 << 20
# Largest integer a template may compute (2**65536 is instant; 9**(9**9) never ends).
MAX_INT_BITS = 1 << 16
# Wall-clock bound of one render (a template block, a recipe string): real ones take
# milliseconds; generous for a loaded machine.
RENDER_SECONDS = 5.0
# Address space a render worker may add to what it inherits.
RENDER_MEMORY = 1 << 30
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


def _is_int(x: Any) -> bool:
    return isinstance(x, int)  # bool too: True * "a" is "a"


def _too_big(what: str, size: int) -> RenderLimit:
    return RenderLimit(f"{what} would have {size} characters or items, more than the limit of {MAX_SIZE}")


def _sized(value: Any, what: str = "a result") -> Any:
    if isinstance(value, _SIZED) and len(value) > MAX_SIZE:
        raise _too_big(what, len(value))
    return value


def _check_int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimit(f"{what} would have about {bits} bits, more than the limit of {MAX_INT_BITS}")


# %-formatting's width and precision: `%999999999d` allocates a GiB in one step.
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_printf(fmt: str | bytes) -> None:
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
                raise _too_big("a repetition", len(seq) * n)
    elif op == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        if len(left) + len(right) > MAX_SIZE:
            raise _too_big("a concatenation", len(left) + len(right))
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
    owner, name = getattr(target, "__self__", None), getattr(target, "__name__", "")
    if isinstance(owner, (str, bytes, bytearray)):
        first = args[0] if args else None
        if name in ("ljust", "rjust", "center", "zfill") and _is_int(first) and first > MAX_SIZE:
            raise _too_big(f"str.{name}()", first)
        if name == "expandtabs":
            tab = first if _is_int(first) else kwargs.get("tabsize", 8)
            if _is_int(tab) and len(owner) * max(tab, 1) > MAX_SIZE:
                raise _too_big("str.expandtabs()", len(owner) * tab)
        if (
            name == "replace"
            and len(args) >= 2
            and isinstance(args[0], type(owner))
            and isinstance(args[1], type(owner))
        ):
            old, new = args[0], args[1]
            count = owner.count(old) if old else len(owner) + 1
            if len(args) > 2 and _is_int(args[2]) and args[2] >= 0:
                count = min(count, args[2])
            size = len(owner) + count * (len(new) - len(old))
            if size > MAX_SIZE:
                raise _too_big("str.replace()", size)
        if name == "join" and args:
            items = _bounded_list(args[0], "str.join()")
            if _joined_size(items, owner) > MAX_SIZE:
                raise _too_big("str.join()", _joined_size(items, owner))
            args = (items, *args[1:])
        if name == "translate" and isinstance(first, Mapping):
            longest = max((len(v) for v in first.values() if isinstance(v, _SIZED)), default=1)
            if len(owner) * longest > MAX_SIZE:
                raise _too_big("str.translate()", len(owner) * longest)
        if name in ("format", "format_map") and isinstance(owner, str):
            _check_format_string(owner)
    elif _is_int(owner) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        if _is_int(length) and length > MAX_SIZE:
            raise _too_big("int.to_bytes()", length)
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

    lead = 1 if args and _PassArg.from_obj(_RAW_FILTERS().get(name)) is not None else 0
    value, rest = (args[lead], args[lead + 1 :]) if len(args) > lead else (None, ())
    # Every count/width argument: `center(10**9)`, `batch(10**9, 'x')`, `indent(10**9)`.
    for n in (*rest, *kwargs.values()):
        if _is_int(n) and not isinstance(n, bool) and n > MAX_SIZE:
            raise RenderLimit(f"the {name} filter: an argument ({n}) above the limit of {MAX_SIZE}")
    if name == "join" and value is not None and "attribute" not in kwargs and len(rest) < 2:
        items = _bounded_list(value, "the join filter")
        sep = rest[0] if rest else kwargs.get("d", "")
        if _joined_size(items, str(sep)) > MAX_SIZE:
            raise _too_big("the join filter", _joined_size(items, str(sep)))
        args = (*args[:lead], items, *rest)
    elif name == "sum" and value is not None:
        items = _bounded_list(value, "the sum filter")
        total = sum(len(x) for x in items if isinstance(x, _SIZED))
        if total > MAX_SIZE:
            raise _too_big("the sum filter", total)
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
            raise _too_big(f"the {name} filter", size)
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
def environment():
    """The one Jinja environment for untrusted templates (sandboxed and bounded)."""
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
            from neurodocker.reproenv.renderers import _raise_helper

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

        def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]
            """The output of a template, a macro or a `{% set %}` block, capped as it grows."""
            out, size = [], 0
            for part in parts:
                size += len(part)
                if size > MAX_SIZE:
                    raise _too_big("the rendered text", size)
                out.append(part)
            return "".join(out)

        @staticmethod
        def capped_join(joined: str) -> str:
            _tick()
            return _sized(joined, "a `~` concatenation")

    return BoundedEnvironment


@functools.lru_cache(maxsize=4096)
def _compiled(source: str):
    """Compile each template string once: the same `instructions` render for every
    set of arguments (52 neurocontainers recipes share one miniconda template)."""
    return environment().from_string(source)


class BoundMethod:
    """What `self` means inside a template: a neurodocker installation method
    bound to a package manager (what `Renderer.add_template` patches onto it)."""

    def __init__(self, method: Any, pkg_manager: str, install_opts: str | None = None) -> None:
        self._method = method
        self.pkg_manager = pkg_manager
        self._install_opts = install_opts  # the target's (oses.Target.install_opts); None: neurodocker's

    def __getattr__(self, name: str) -> Any:
        # Arguments and neurodocker's properties (urls, versions, …); the sandbox
        # refuses every `_`-prefixed name before this is reached from a template.
        return getattr(self._method, name)

    def install(self, pkgs: list[str], opts: str | None = None) -> str:
        from neurodocker.reproenv.renderers import _install

        # Like neurodocker's patch, a template's `opts` is ignored; the target's apply.
        return _install(pkgs=pkgs, pkg_manager=self.pkg_manager, opts=self._install_opts)

    def install_dependencies(self, opts: str | None = None) -> str:
        from neurodocker.reproenv.renderers import _apt_install_debs, _install

        cmd = ""
        pkgs = self._method.dependencies(pkg_manager=self.pkg_manager)
        if pkgs:
            cmd += _install(
                pkgs=pkgs, pkg_manager=self.pkg_manager, opts=opts if opts is not None else self._install_opts
            )
        if self.pkg_manager == "apt":
            debs = self._method.dependencies("debs")
            if debs:
                cmd += "\n" + _apt_install_debs(debs)
        return cmd


def render_string(source: str, bound: BoundMethod) -> str:
    """Render one template string in the sandbox until no `{{ … }}` is left.

    Raises jinja2.TemplateError (SecurityError for unsafe access, RenderLimit for a
    size or time bound) or neurodocker's RendererError (`raise(…)`, too deep nesting).
    """
    import jinja2
    from neurodocker.reproenv.exceptions import RendererError

    env = environment()
    renders = 0
    with deadline():  # all passes together, not RENDER_SECONDS each
        while env.variable_start_string in source and env.variable_end_string in source:
            source = source.replace("self.", "template.")  # neurodocker's own spelling trick
            try:
                source = _compiled(source).render(template=bound)
            except jinja2.UndefinedError as exc:
                what = str(exc.message).replace(f"'{BoundMethod.__module__}.BoundMethod object'", "self")
                raise RendererError(
                    f"{what} (a required argument may be missing from the template's arguments)"
                ) from None
            renders += 1
            if renders > MAX_RENDERS:
                raise RendererError(f"reached maximum rendering iterations ({MAX_RENDERS})")
    return source


def render_method(
    method: Any, pkg_manager: str, install_opts: str | None = None, *, bound: BoundMethod | None = None
) -> tuple[Mapping[str, str], str]:
    """(env, instructions) of a neurodocker installation method, rendered safely
    in a bounded worker (`bound`: a BoundMethod of one's own, e.g. the export's)."""
    bound = bound if bound is not None else BoundMethod(method, pkg_manager, install_opts)
    strings = [*(method.env or {}).keys(), *(method.env or {}).values(), method.instructions or ""]
    with deadline():
        for source in strings:  # compiled here, so the cache serves every later worker
            if "{{" in source:
                _compile_here(source.replace("self.", "template."))

    def work() -> list:
        with deadline():
            env = [[render_string(k, bound), render_string(v, bound)] for k, v in (method.env or {}).items()]
            return [env, render_string(method.instructions, bound) if method.instructions else ""]

    env, command = isolated(work)
    return {str(k): str(v) for k, v in env}, str(command)


def _compile_here(source: str) -> None:
    try:
        _compiled(source)
    except RecursionError:
        raise RenderLimit("a template nested too deeply to compile") from None


# ---------------------------------------------------------------- the worker


def isolated(work: Callable[[], Any], seconds: float = RENDER_SECONDS) -> Any:
    """`work()` in a forked child limited to RENDER_MEMORY more address space and
    killed after `seconds`; returns its result (JSON data only: a template never
    decides what the parent unpickles) or raises its error as a known type.

    Nothing the child changes reaches the parent (caches, counters): `work` must
    be a pure function of its inputs.
    """
    if not hasattr(os, "fork"):  # Windows: the in-process bounds only
        with deadline(seconds):
            return work()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage does not follow a fork)
        try:
            os.close(read_fd)
            _child(work, write_fd, seconds)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        data = _collect(read_fd, pid, time.monotonic() + seconds + 1.0, seconds)
    finally:
        os.close(read_fd)
    return _result(data)


def _child(work: Callable[[], Any], fd: int, seconds: float) -> None:
    _limit_resources(seconds)
    try:
        with deadline(seconds):
            payload = {"ok": work()}
    except BaseException as exc:  # noqa: BLE001 - every failure goes back as data
        payload = {"error": _error_kind(exc), "message": f"{exc}" or type(exc).__name__, "type": type(exc).__name__}
    try:
        data = json.dumps(payload).encode()
    except (TypeError, ValueError) as exc:
        data = json.dumps(
            {"error": "template", "message": f"unserialisable result: {exc}", "type": "TypeError"}
        ).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _limit_resources(seconds: float) -> None:
    import resource

    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        current = None
    limits = [(resource.RLIMIT_CPU, int(seconds) + 2)]
    if current is not None:
        limits.append((resource.RLIMIT_AS, current + RENDER_MEMORY))
    for which, soft in limits:
        _cur, hard = resource.getrlimit(which)
        if hard == resource.RLIM_INFINITY or soft <= hard:
            resource.setrlimit(which, (soft, hard))


def _error_kind(exc: BaseException) -> str:
    import jinja2
    from neurodocker.reproenv.exceptions import RendererError

    if isinstance(exc, (RenderLimit, MemoryError, RecursionError)):
        return "limit"
    if isinstance(exc, SecurityError):
        return "security"
    if isinstance(exc, RendererError):
        return "renderer"
    if isinstance(exc, NdgenError):
        return "ndgen"
    if isinstance(exc, jinja2.TemplateError):
        return "template"
    return "other"


def _collect(fd: int, pid: int, end: float, seconds: float) -> bytes:
    chunks = []
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RenderLimit(f"rendering took longer than {seconds:g} s (a loop or recursion too long?)")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            if sum(map(len, chunks)) > 16 * MAX_SIZE:
                raise _too_big("the rendered result", sum(map(len, chunks)))
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    _pid, status = os.waitpid(pid, 0)
    if not chunks:
        died = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
                else f"exit status {os.waitstatus_to_exitcode(status)}")  # fmt: skip
        raise RenderLimit(f"the rendering process ended without a result ({died}): out of time or memory?")
    return b"".join(chunks)


def _result(data: bytes) -> Any:
    import jinja2
    from neurodocker.reproenv.exceptions import RendererError

    payload = json.loads(data)
    if "ok" in payload:
        return payload["ok"]
    kind, message, name = payload["error"], str(payload["message"]), str(payload["type"])
    if kind == "limit":
        raise RenderLimit(message if name == "RenderLimit" else f"rendering failed: {name}: {message}")
    if kind == "security":
        raise SecurityError(message)
    if kind == "renderer":
        raise RendererError(message)
    if kind == "ndgen":
        raise NdgenError(message)
    if kind == "template":
        raise jinja2.TemplateError(message)
    # A Python error inside the template (`{{ 1 + "a" }}`, a KeyError): the template's fault.
    raise jinja2.TemplateError(f"{name}: {message}")
