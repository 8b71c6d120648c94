"""Render a RecipeSpec with neurodocker's reproenv renderers.

A thin layer over `DockerRenderer` / `SingularityRenderer`:

* templates are added with `renderer.add_template(Template(...), method)` from
  our own immutable registry — never through neurodocker's global registry;
* a template's rendered instructions depend only on (template, method,
  arguments, package manager), so a `RecipeRenderer` renders each such block
  once into a scratch renderer and replays its instruction list (the same
  list `Renderer.from_dict` consumes) into every recipe that needs it.  This
  is what makes `ndgen matrix` fast: neurodocker recompiles every Jinja
  template on every call;
* `method=system` installs the entry's OS packages with the renderer's own
  apt/yum command, through an in-memory template (`system_template`), after
  the NeuroDebian template or EPEL when the entry asks for them;
* two subclasses fix the JSON-saving printf (shellcheck SC2016, and invalid
  JSON from escaped parentheses) and complete the Singularity file with
  `%help`; the `_default` template's entrypoint snippet is rewritten to
  double quotes (SC2016).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Iterable, Literal, Mapping

import attrs

from neurodocker_nd import __version__
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry import Registry
from neurodocker_nd.spec import PackageSpec, RecipeSpec, resolve

Format = Literal["docker", "singularity"]
FORMATS: tuple[Format, ...] = ("docker", "singularity")
ENTRYPOINT = "/neurodocker/startup.sh"
# The NeuroDebian mirror used when an entry asks for NeuroDebian (the main
# server; the `neurodebian` template calls mirrors "versions").
NEURODEBIAN_MIRROR = "usa-nh"

# hadolint rules a rendered Dockerfile may still trigger, each caused by
# upstream template text we render unchanged (see docs/render.md).
HADOLINT_IGNORE: tuple[str, ...] = (
    "DL3003",  # `cd` inside RUN (source builds in upstream templates)
    "DL3008",  # apt packages not pinned: recipes track the distribution
    "DL3015",  # afni/spm12 `apt-get install` of .deb files without --no-install-recommends
    "DL3033",  # yum packages not pinned: same reason as DL3008
    "DL3044",  # ENV referring to itself in the same statement (upstream mrtrix3 template)
    "DL4006",  # pipes without `set -o pipefail` (curl | tar in upstream templates)
    "SC2006",  # backticks in the bids_validator template
    "SC2086",  # unquoted variables in the afni template
    "SC2155",  # `export X=$(…)` in the matlabmcr/spm12 templates
)

# neurodocker's `_default` template writes the entrypoint script with
# single-quoted `$` (shellcheck SC2016).  Same script, double quotes.
_ENTRYPOINT_FIX = {
    """echo 'export USER="${USER:=`whoami`}"' >> "$ND_ENTRYPOINT\"""":
        """echo "export USER=\\"\\${USER:=\\`whoami\\`}\\"" >> "$ND_ENTRYPOINT\"""",
    """echo 'if [ -n "$1" ]; then "$@"; else /usr/bin/env bash; fi' >> "$ND_ENTRYPOINT";""":
        """echo "if [ -n \\"\\$1\\" ]; then \\"\\$@\\"; else /usr/bin/env bash; fi" >> "$ND_ENTRYPOINT";""",
}


@attrs.frozen
class RenderedPackage:
    """What a recipe installs, for `ndgen build` to test."""

    name: str
    version: str | None
    method: str
    test: str | None
    commands: tuple[str, ...]
    alert: str | None = None  # e.g. a licence notice from the template


@attrs.frozen
class Recipe:
    """A rendered Dockerfile or Singularity definition and what it contains."""

    text: str
    fmt: Format
    base_image: str
    pkg_manager: str
    os_name: str
    packages: tuple[RenderedPackage, ...]


# ---------------------------------------------------------------- renderer subclasses


def _printf_spec(cmd: str) -> str:
    """Fix the printf command neurodocker writes /.reproenv.json with.

    * `$` and backticks sit in single quotes (shellcheck SC2016): printf's own
      octal escapes (`\\044`, `\\140`) print the same bytes;
    * neurodocker escapes parentheses as `\\(`, which printf prints verbatim,
      so the saved file is invalid JSON whenever a command contains `(`:
      inside single quotes parentheses need no escaping at all.

    Backslashes are already doubled by neurodocker, so an escape we insert
    cannot merge with a preceding one.
    """
    cmd = cmd.replace("\\(", "(").replace("\\)", ")")
    return cmd.replace("$", "\\044").replace("`", "\\140")


@functools.cache
def _renderer_classes():
    """Imported lazily: neurodocker (and jsonschema, jinja2) only when rendering."""
    from neurodocker.reproenv.renderers import DockerRenderer, SingularityRenderer

    class NdgenDockerRenderer(DockerRenderer):
        def _get_instructions(self) -> str:
            return _printf_spec(super()._get_instructions())

    class NdgenSingularityRenderer(SingularityRenderer):
        help_text: str = ""

        def _get_instructions(self) -> str:
            return _printf_spec(super()._get_instructions())

        def render(self) -> str:
            s = super().render()
            if self.help_text:
                s += "\n\n%help\n" + self.help_text
            return s

    return NdgenDockerRenderer, NdgenSingularityRenderer


# ---------------------------------------------------------------- the session


class RecipeRenderer:
    """Renders specs; memoises template blocks for the lifetime of this object.

    Not shared globally: `render_recipe` makes one per call, `ndgen matrix`
    one per run.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        self._blocks: dict[tuple, tuple[tuple[str, Mapping[str, Any]], ...]] = {}
        self._templates: dict[tuple, Any] = {}
        self._default: Mapping[str, Any] | None = None
        self._docker_cls, self._singularity_cls = _renderer_classes()

    # ---- template blocks
    def _block(
        self, key: str, template: Mapping[str, Any], method: str, kwds: tuple[tuple[str, str], ...], pkg_manager: str
    ) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        memo_key = (key, method, kwds, pkg_manager)
        block = self._blocks.get(memo_key)
        if block is None:
            block = self._render_block(key, template, method, kwds, pkg_manager)
            self._blocks[memo_key] = block
        return block

    def _render_block(self, key, template, method, kwds, pkg_manager):
        from neurodocker.reproenv.exceptions import RendererError, TemplateError

        import jinja2

        scratch = self._docker_cls(pkg_manager=pkg_manager)
        try:
            scratch.add_template(self._template(key, template, method, kwds), method)
        except (TemplateError, RendererError, jinja2.TemplateError, KeyError) as exc:
            raise NdgenError(f"{key}: template error: {exc}") from None
        return tuple((i["name"], i["kwds"]) for i in json.loads(scratch.to_json())["instructions"])

    def _template(self, key, template, method, kwds):
        """One neurodocker Template per (template, arguments), shared by apt and yum.

        `Template()` re-validates against the JSON schema (including checking
        the schema itself) on every construction; `add_template` re-binds the
        package manager each time it is called, so sharing is safe.
        """
        from neurodocker.reproenv.exceptions import TemplateError
        from neurodocker.reproenv.template import Template

        memo_key = (key, method, kwds)
        tmpl = self._templates.get(memo_key)
        if tmpl is None:
            args = dict(kwds)
            try:
                tmpl = Template(
                    dict(template),
                    binaries_kwds=args if method == "binaries" else None,
                    source_kwds=args if method == "source" else None,
                )
            except TemplateError as exc:
                raise NdgenError(f"{key}: template error: {exc}") from None
            self._templates[memo_key] = tmpl
        return tmpl

    def _default_template(self) -> Mapping[str, Any]:
        upstream = self.registry.internal("_default")
        source = dict(upstream["source"])
        text = source["instructions"]
        for old, new in _ENTRYPOINT_FIX.items():
            if old not in text:
                # Upstream changed the snippet: fail loudly rather than render SC2016.
                raise NdgenError(f"neurodocker's _default template changed; update ndgen's entrypoint fix ({old!r})")
            text = text.replace(old, new)
        source["instructions"] = text
        return {**upstream, "source": source}

    # ---- rendering
    def render(self, spec: RecipeSpec, fmt: Format = "docker") -> Recipe:
        if fmt not in FORMATS:
            raise NdgenError(f"unknown format {fmt!r}; choose docker or singularity")
        target = spec.target
        pm = target.pkg_manager
        r = (self._docker_cls if fmt == "docker" else self._singularity_cls)(pkg_manager=pm)
        r.from_(target.base_image)
        if self._default is None:
            self._default = self._default_template()
        self._replay(r, self._block("_default", self._default, "source", (), pm))
        for pkg in spec.packages:
            if pkg.method == "system":
                self._add_system(r, pkg, spec)
            else:
                assert pkg.entry.template is not None
                self._replay(r, self._block(str(pkg.entry.template_path), pkg.entry.template, pkg.method, pkg.kwds, pm))
        r.labels(_labels(spec))
        if fmt == "docker":
            r.entrypoint([ENTRYPOINT])
        else:
            # Singularity passes `run` arguments only when the runscript forwards them.
            r.entrypoint([ENTRYPOINT, '"$@"'])
            r.help_text = _help_text(spec)
        text = f"{_masthead(spec, fmt)}\n{r.render()}\n"
        return Recipe(
            text=text,
            fmt=fmt,
            base_image=target.base_image,
            pkg_manager=pm,
            os_name=target.os_name,
            packages=tuple(
                RenderedPackage(
                    name=p.name, version=p.version, method=p.method, test=p.test, commands=p.commands, alert=p.alert
                )
                for p in spec.packages
            ),
        )

    @staticmethod
    def _replay(r, block: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        for name, kwds in block:
            getattr(r, name)(**kwds)

    def _add_system(self, r, pkg: PackageSpec, spec: RecipeSpec) -> None:
        system = pkg.entry.meta.system if pkg.entry.meta else None
        assert system is not None
        target = spec.target
        if target.pkg_manager == "apt" and system.neurodebian:
            if target.codename is None:
                raise NdgenError(f"{pkg.name}: NeuroDebian needs a known release; use --os instead of --base-image")
            nd = self.registry.get("neurodebian")
            assert nd.template is not None
            kwds = (("os_codename", target.codename), ("version", NEURODEBIAN_MIRROR))
            self._replay(r, self._block(str(nd.template_path), nd.template, "binaries", kwds, "apt"))
        key = f"{pkg.entry.meta_path}#system"
        self._replay(r, self._block(key, system_template(pkg.entry), "source", (), target.pkg_manager))


def system_template(entry) -> dict[str, Any]:
    """An in-memory neurodocker template installing an entry's OS packages.

    The packages are the template's `dependencies`, so neurodocker's renderer
    writes its own apt/yum install command (`install_dependencies()`), the
    same one `Renderer.install()` writes — in a single, singly-indented RUN and
    logged once in the saved spec (`install()` is logged together with the
    `run()` it makes, so a replayed spec would install twice).  EPEL comes
    first on yum when the entry asks for it.
    """
    system = entry.meta.system
    instructions = "{{ self.install_dependencies() }}"
    if system.epel:
        # Decided at render time, as upstream templates do: one template serves apt and yum.
        instructions = "{% if self.pkg_manager == 'yum' %}{{ self.install(['epel-release']) }}\n{% endif %}" + instructions
    deps = {pm: list(system.packages(pm)) for pm in ("apt", "yum") if system.packages(pm)}
    return {
        "name": entry.name,
        "url": entry.meta.homepage,
        "source": {"dependencies": deps, "instructions": instructions},
    }


# ---------------------------------------------------------------- text pieces


def _pkg_arg(p: PackageSpec) -> str:
    s = p.name + (f"=={p.version}" if p.version else "")
    extra = [f"{k}={v}" for k, v in p.kwds if k != "version"]
    if p.method != p.entry.default_method:
        extra.insert(0, f"method={p.method}")
    return ",".join([s, *extra])


def reproduce_command(spec: RecipeSpec, fmt: Format) -> str:
    """The ndgen command line that renders this recipe again."""
    from neurodocker_nd.oses import PRESETS

    t = spec.target
    preset = PRESETS.get(t.os_name)
    if preset is None:
        where = f"--base-image {t.base_image} --pkg-manager {t.pkg_manager}"
    else:
        where = f"--os {t.os_name}"
        if preset.base_image != t.base_image:
            where += f" --base-image {t.base_image}"
    pkgs = " ".join(f"--pkg {_pkg_arg(p)}" for p in spec.packages)
    fmt_opt = " --format singularity" if fmt == "singularity" else ""
    return f"ndgen {pkgs} {where}{fmt_opt}"


def _masthead(spec: RecipeSpec, fmt: Format) -> str:
    from neurodocker import __version__ as nd_version

    return (
        f"# Generated by ndgen {__version__} with neurodocker {nd_version}.\n"
        f"# Reproduce: {reproduce_command(spec, fmt)}\n"
    )


def _describe(p: PackageSpec) -> str:
    return f"{p.name} {p.version or ''} ({p.method})".replace("  ", " ")


def _labels(spec: RecipeSpec) -> dict[str, str]:
    names = [p.name for p in spec.packages]
    return {
        "org.opencontainers.image.title": "-".join(names),
        "org.opencontainers.image.description": "; ".join(_describe(p) for p in spec.packages)
        + f" on {spec.target.os_name}",
        "org.opencontainers.image.base.name": spec.target.base_image,
        "org.opencontainers.image.vendor": "ndgen",
        "org.ndgen.version": __version__,
        "org.ndgen.packages": " ".join(f"{p.name}={p.version or p.method}" for p in spec.packages),
    }


def _help_text(spec: RecipeSpec) -> str:
    lines = [f"Container rendered by ndgen {__version__} on {spec.target.os_name} ({spec.target.base_image})."]
    lines.append("Packages:")
    for p in spec.packages:
        lines.append(f"    {_describe(p)}")
        if p.commands:
            lines.append(f"        commands: {' '.join(p.commands)}")
        if p.alert:
            lines.append(f"        note: {' '.join(p.alert.split())}")
    lines.append("Usage: apptainer run IMAGE COMMAND [ARGS...]")
    return "\n".join(lines)


# ---------------------------------------------------------------- public API


def render_recipe(
    pkgs: Iterable[str],
    os_name: str | None = None,
    base_image: str | None = None,
    pkg_manager: str | None = None,
    fmt: Format = "docker",
    registry: Registry | None = None,
) -> Recipe:
    """Render `--pkg …` strings for an OS into a Recipe (stable API for `ndgen build`)."""
    registry = registry if registry is not None else Registry()
    spec = resolve(pkgs, os_name, base_image, pkg_manager, registry)
    return RecipeRenderer(registry).render(spec, fmt)


# ---------------------------------------------------------------- many recipes


@attrs.frozen
class MatrixItem:
    """One cell of the matrix: a package (default version) on an OS in a format."""

    name: str
    method: str
    os_name: str
    fmt: Format
    filename: str
    recipe: Recipe


@attrs.frozen
class Skipped:
    name: str
    method: str
    os_name: str
    reason: str


def _variants(entry) -> tuple[str, ...]:
    """The default method, plus `system` when an entry offers it as an alternative."""
    methods: tuple[str, ...] = (entry.default_method,)
    if "system" in entry.methods and entry.default_method != "system":
        methods += ("system",)
    return methods


def render_matrix(
    registry: Registry,
    os_names: Iterable[str],
    fmts: Iterable[Format],
    names: Iterable[str] | None = None,
) -> tuple[list[MatrixItem], list[Skipped]]:
    """Render every entry (default version; default method and `system`) × OS × format.

    Entries that need an argument without a default (e.g. vnc's passwd) or do
    not support an OS's package manager are skipped with the reason; any other
    error aborts (nothing is returned, so nothing is written).
    """
    from neurodocker_nd.oses import resolve_target
    from neurodocker_nd.spec import MissingArgument, PkgRequest, UnsupportedTarget, resolve_package

    renderer = RecipeRenderer(registry)
    targets = [resolve_target(o) for o in os_names]
    fmts = tuple(fmts)
    entries = [registry.get(n) for n in (names if names is not None else registry.names())]
    items: list[MatrixItem] = []
    skipped: list[Skipped] = []
    for entry in entries:
        for method in _variants(entry):
            label = entry.name if method == entry.default_method else f"{entry.name}-{method}"
            req = PkgRequest(name=entry.name, version=None, args=(("method", method),), text=entry.name)
            for target in targets:
                try:
                    pkg = resolve_package(req, registry, target)
                except (MissingArgument, UnsupportedTarget) as exc:
                    skipped.append(Skipped(entry.name, method, target.os_name, exc.message))
                    continue
                spec = RecipeSpec(target=target, packages=(pkg,))
                slug = target.os_name.replace(":", "-")
                for fmt in fmts:
                    ext = "Dockerfile" if fmt == "docker" else "def"
                    items.append(
                        MatrixItem(
                            name=entry.name,
                            method=method,
                            os_name=target.os_name,
                            fmt=fmt,
                            filename=f"{label}.{slug}.{ext}",
                            recipe=renderer.render(spec, fmt),
                        )
                    )
    return items, skipped


def check_renders(registry: Registry, entries: Iterable) -> int:
    """Render each entry's methods once per package manager it supports (for `validate`)."""
    probe = {"apt": "debian:bookworm", "yum": "rockylinux:9"}
    names = [e.name for e in entries]
    items, _ = render_matrix(registry, probe.values(), ("docker",), names)
    return len(items)
