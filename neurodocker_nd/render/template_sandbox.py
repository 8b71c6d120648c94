"""neurodocker templates render here, in ndgen's bounded Jinja sandbox: registry entries are untrusted.

neurodocker renders a template's `instructions` and `env` with a module-level,
unsandboxed `jinja2.Environment` (`reproenv.renderers._render_string_from_template`),
so an entry containing `{{ self.__init__.__globals__[…] }}` would run code during
`ndgen validate` or a render. ndgen renders those strings here instead, with the
same semantics — `self.` is the installation method (its arguments, `urls`,
`install()`, `install_dependencies()`, `pkg_manager`), StrictUndefined, neurodocker's
`raise` global, re-rendered until no `{{ … }}` is left — in core.jinja's
`environment()` (an `ImmutableSandboxedEnvironment` with in-process size and time
bounds, shared with recipes), and hands neurodocker's renderer plain text only
(`Renderer.env()` / `Renderer.run()`), so neurodocker's own Jinja never sees a
template. neurodocker itself is not patched.

`isolated()` adds the second layer of bounds: registry templates render in a
forked worker with an address-space limit and a wall-clock deadline after which
it is killed. Some single C-level operations no in-process check sees (the repr
of a list nested 60 levels through shared references, deep equality of two such
lists) run for hours without returning to Python; only a process boundary bounds
those. Without `os.fork` (Windows) rendering stays in-process with core.jinja's
checks.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jinja2.sandbox import SecurityError

from neurodocker_nd.core import reproenv
from neurodocker_nd.core.jinja import MAX_SIZE, RENDER_SECONDS, RenderLimit, compiled, deadline, environment, too_big
from neurodocker_nd.errors import NdgenError

# neurodocker's limit on nested re-rendering (a default such as
# `install_path: /opt/x-{{ self.version }}` needs a second pass).
MAX_RENDERS = 20
# Address space a render worker may add to what it inherits.
RENDER_MEMORY = 1 << 30


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
        _install = reproenv.module("reproenv.renderers")._install

        # Like neurodocker's patch, a template's `opts` is ignored; the target's apply.
        return _install(pkgs=pkgs, pkg_manager=self.pkg_manager, opts=self._install_opts)

    def install_dependencies(self, opts: str | None = None) -> str:
        renderers = reproenv.module("reproenv.renderers")
        _install, _apt_install_debs = renderers._install, renderers._apt_install_debs

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

    RendererError = reproenv.module("reproenv.exceptions").RendererError

    env = environment()
    renders = 0
    with deadline():  # all passes together, not RENDER_SECONDS each
        while env.variable_start_string in source and env.variable_end_string in source:
            source = source.replace("self.", "template.")  # neurodocker's own spelling trick
            try:
                source = compiled(source).render(template=bound)
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
    _compile_strings(method)
    env, command = isolated(lambda: _render_method_here(method, bound))
    return _as_result(env, command)


Rendered = tuple[Mapping[str, str], str]


def render_methods(methods: list[tuple[Any, str, str | None]]) -> list[Rendered | BaseException | None]:
    """`render_method` of several (method, pkg_manager, install_opts) in one worker (one fork
    for a whole recipe): for each, its result or the error `render_method` would raise.

    None where the outcome could depend on the others: from the first method over a bound
    (time and memory are the whole worker's) on, or for all when the worker itself failed.
    The caller renders those alone with `render_method`. Rendering is a pure function of
    the method, so every other outcome is the one it would have had alone."""
    for method, _pm, _opts in methods:
        _compile_strings(method)

    def work() -> list:
        out: list[dict] = []
        for i, (method, pkg_manager, install_opts) in enumerate(methods):
            try:
                out.append({"ok": _render_method_here(method, BoundMethod(method, pkg_manager, install_opts))})
            except BaseException as exc:  # noqa: BLE001 - every failure goes back as data
                error = _error_payload(exc)
                if error["error"] == "limit" and i:
                    break  # it may have had less time or memory than alone
                out.append(error)
                if error["error"] == "limit":
                    break
        return out

    try:
        payloads = isolated(work)
    except Exception:  # noqa: BLE001 - each is rendered alone, with its own error
        payloads = []
    outcomes: list[Rendered | BaseException | None] = [None] * len(methods)
    for i, payload in enumerate(payloads):
        try:
            outcomes[i] = _as_result(*_from_payload(payload))
        except Exception as exc:  # noqa: BLE001 - handed to the caller, raised in its order
            outcomes[i] = exc
    return outcomes


def _compile_strings(method: Any) -> None:
    strings = [*(method.env or {}).keys(), *(method.env or {}).values(), method.instructions or ""]
    with deadline():
        for source in strings:  # compiled here, so the cache serves every later worker
            if "{{" in source:
                _compile_here(source.replace("self.", "template."))


def _render_method_here(method: Any, bound: BoundMethod) -> list:
    with deadline():
        env = [[render_string(k, bound), render_string(v, bound)] for k, v in (method.env or {}).items()]
        return [env, render_string(method.instructions, bound) if method.instructions else ""]


def _as_result(env: Any, command: Any) -> tuple[Mapping[str, str], str]:
    return {str(k): str(v) for k, v in env}, str(command)


@contextlib.contextmanager
def refusals(label: str) -> Iterator[None]:
    """A template's render failure as one NdgenError naming `label` (a step or a registry entry).

    Three kinds, worded alike on every path that renders a template (the renderer and the
    neurocontainers export): over a bound, unsafe, or an error of the template itself.
    """
    import jinja2

    exceptions = reproenv.module("reproenv.exceptions")
    RendererError, TemplateError = exceptions.RendererError, exceptions.TemplateError

    try:
        yield
    except RenderLimit as exc:
        raise NdgenError(f"{label}: template refused: {exc}") from None
    except SecurityError as exc:
        raise NdgenError(f"{label}: unsafe template, refused to render: {exc}") from None
    except (TemplateError, RendererError, jinja2.TemplateError, KeyError, ValueError) as exc:
        raise NdgenError(f"{label}: template error: {exc}") from None


def _compile_here(source: str) -> None:
    try:
        compiled(source)
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
    import resource  # noqa: F401 - loaded once here rather than in every worker

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
    # The worker collects its own garbage (a template's cycles count against its memory limit),
    # never the parent's objects: frozen, they are not scanned, so their pages stay shared.
    gc.freeze()
    gc.enable()
    _limit_resources(seconds)
    try:
        with deadline(seconds):
            payload = {"ok": work()}
    except BaseException as exc:  # noqa: BLE001 - every failure goes back as data
        payload = _error_payload(exc)
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
    import resource  # loaded by isolated() before forking

    try:  # read raw: a text file would import its codec in every worker
        fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        try:
            current = int(os.read(fd, 4096).split()[0]) * os.sysconf("SC_PAGE_SIZE")
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        current = None
    limits = [(resource.RLIMIT_CPU, int(seconds) + 2)]
    if current is not None:
        limits.append((resource.RLIMIT_AS, current + RENDER_MEMORY))
    for which, soft in limits:
        _cur, hard = resource.getrlimit(which)
        if hard == resource.RLIM_INFINITY or soft <= hard:
            resource.setrlimit(which, (soft, hard))


def _error_payload(exc: BaseException) -> dict:
    return {"error": _error_kind(exc), "message": f"{exc}" or type(exc).__name__, "type": type(exc).__name__}


def _error_kind(exc: BaseException) -> str:
    import jinja2

    RendererError = reproenv.module("reproenv.exceptions").RendererError

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
                raise too_big("the rendered result", sum(map(len, chunks)))
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
    return _from_payload(json.loads(data))


def _from_payload(payload: dict) -> Any:
    import jinja2

    RendererError = reproenv.module("reproenv.exceptions").RendererError

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
