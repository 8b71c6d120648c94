"""Template strings render in a Jinja sandbox: registry entries are untrusted input.

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
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

# neurodocker's limit on nested re-rendering (a default such as
# `install_path: /opt/x-{{ self.version }}` needs a second pass).
MAX_RENDERS = 20


@functools.cache
def _environment():
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from neurodocker.reproenv.renderers import _raise_helper

    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    env.globals["raise"] = _raise_helper  # `{{ raise("…") }}` in upstream templates
    return env


@functools.lru_cache(maxsize=4096)
def _compiled(source: str):
    """Compile each template string once: the same `instructions` render for every
    set of arguments (52 neurocontainers recipes share one miniconda template)."""
    return _environment().from_string(source)


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
            cmd += _install(pkgs=pkgs, pkg_manager=self.pkg_manager, opts=opts if opts is not None else self._install_opts)
        if self.pkg_manager == "apt":
            debs = self._method.dependencies("debs")
            if debs:
                cmd += "\n" + _apt_install_debs(debs)
        return cmd


def render_string(source: str, bound: BoundMethod) -> str:
    """Render one template string in the sandbox until no `{{ … }}` is left.

    Raises jinja2.TemplateError (SecurityError for unsafe access) or
    neurodocker's RendererError (`raise(…)`, too deep nesting).
    """
    import jinja2
    from neurodocker.reproenv.exceptions import RendererError

    env = _environment()
    renders = 0
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


def render_method(method: Any, pkg_manager: str, install_opts: str | None = None) -> tuple[Mapping[str, str], str]:
    """(env, instructions) of a neurodocker installation method, rendered safely."""
    bound = BoundMethod(method, pkg_manager, install_opts)
    env = {render_string(k, bound): render_string(v, bound) for k, v in method.env.items()}
    command = render_string(method.instructions, bound) if method.instructions else ""
    return env, command
