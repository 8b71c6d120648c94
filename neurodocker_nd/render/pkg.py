"""From `--pkg` strings and an OS to a validated, immutable RecipeSpec.

`--pkg NAME[==VERSION][,key=value…]`: the version picks a template version;
`method=binaries|source|system` picks how to install; other keys are template
arguments.  Every value ends up inside a RUN line, so values carrying shell
metacharacters, Jinja braces or newlines are rejected here, before rendering.
Package-list arguments (neurodocker's `conda_install="numpy<2 nibabel>=5"`,
`pip_install="nipype[all] git+https://…#egg=x"`) take package specs, whose
`< > = ! ~ [ ] * #` the renderer quotes (render._quote_pkg_words).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

import attrs

from neurodocker_nd import __version__
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Entry, Registry
from neurodocker_nd.render import steps as st
from neurodocker_nd.render.target import Target, resolve_target

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEY_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")
# Characters the shell (or Jinja, which neurodocker re-renders values with)
# would interpret; spaces stay allowed (e.g. conda_install="numpy scipy").
# Control and line-separator characters are steps.control_char's, the one
# list every single-line value is checked against (U+0085, U+2028, C1…).
_UNSAFE_RE = re.compile(r"[;&|$`<>(){}\\'\"!#*?\[\]]")
# Arguments the template splits into package specs (neurodocker's miniconda).
PKG_LIST_ARGS = frozenset({"conda_install", "pip_install"})
# One conda match spec / pip requirement / VCS URL: no quotes, `$`, backticks,
# backslashes, `;&|(){}?` — nothing that could leave the quotes the renderer adds.
_PKG_WORD_RE = re.compile(r"^[A-Za-z0-9._+=<>!~,:/@#%*\[\]-]+$")
# Path arguments are used unquoted by templates (`tar -C {{ self.install_path }}`)
# and inside double quotes (`export PATH="{{ self.install_path }}/bin"`): no single
# quoting is right in both, so a path with whitespace is refused rather than split.
_PATH_ARG_RE = re.compile(r"(_path|_dir|_file|prefix)$")


class MissingArgument(NdgenError):
    """A template needs an argument that has no default (e.g. vnc's passwd)."""


class UnsupportedTarget(NdgenError):
    """The package cannot be installed with the target's package manager."""


class Incompatible(UnsupportedTarget):
    """A `requires:` entry of the registry meta rules this version out on the target OS."""


def check_requires(entry: Entry, method: str, version: str | None, target: Target) -> None:
    """Refuse a version the registry records as incompatible with the target's glibc.

    Unknown images (`--base-image` without `--os`) have no known glibc and pass.
    """
    if entry.meta is None or version is None or target.glibc is None:
        return
    for req in entry.meta.requires:
        if method in req.methods and version in req.versions and target.glibc < req.glibc:
            have = ".".join(map(str, target.glibc))
            need = ".".join(map(str, req.glibc))
            raise Incompatible(
                f"{entry.name} {version} (method={method}) needs glibc >= {need}, "
                f"{target.os_name} has {have}: {req.reason}"
            )


@attrs.frozen
class PkgRequest:
    """One parsed --pkg string, not yet checked against the registry."""

    name: str
    version: str | None
    args: tuple[tuple[str, str], ...]
    text: str


@attrs.frozen
class PackageSpec:
    """One package resolved against the registry and the target OS."""

    name: str
    method: str  # binaries | source | system
    version: str | None
    kwds: tuple[tuple[str, str], ...]  # template arguments, incl. version when it applies
    entry: Entry = attrs.field(eq=False, repr=False)

    @property
    def test(self) -> str | None:
        meta = self.entry.meta
        if meta is None:
            return None
        if self.method == "system" and meta.system is not None and meta.system.test:
            return meta.system.test
        return meta.test or None

    @property
    def commands(self) -> tuple[str, ...]:
        return self.entry.meta.commands if self.entry.meta is not None else ()

    @property
    def alert(self) -> str | None:
        """The template's `alert` (e.g. FSL's licence), which neurodocker asks to confirm."""
        if self.method == "system" or self.entry.template is None:
            return None
        return self.entry.template.get("alert") or None


@attrs.frozen
class RecipeSpec:
    """Everything a renderer needs; identical specs render byte-identical text."""

    target: Target
    packages: tuple[PackageSpec, ...]


def _unsafe(value: str) -> str | None:
    """The first character of `value` a template argument may not hold, described, or None."""
    for ch in value:
        if st.control_char(ch) is not None:
            return st.describe_char(ch)
        if _UNSAFE_RE.match(ch):
            return repr(ch)
    return None


def _check_value(name: str, key: str, value: str) -> None:
    """Refuse a template argument value that could break out of its RUN line."""
    if key in PKG_LIST_ARGS:
        control = st.control_char(value)
        if control is not None:
            raise NdgenError(f"--pkg {name}: value of {key} contains {st.describe_char(control)}")
        for word in value.split():
            if not _PKG_WORD_RE.match(word):
                bad = _unsafe(next(c for c in word if not _PKG_WORD_RE.match(c)))
                raise NdgenError(
                    f"--pkg {name}: {key} package {word!r} contains {bad}; package specs may use "
                    "letters, digits and . _ + - = < > ! ~ , : / @ # % * [ ]"
                )
        return
    what = _unsafe(value)
    if what:
        raise NdgenError(
            f"--pkg {name}: value of {key} contains {what}; shell metacharacters, "
            "quotes and newlines are not allowed in template arguments"
        )
    if value.split() != [value] and value and (_PATH_ARG_RE.search(key) or value.startswith("/")):
        raise NdgenError(
            f"--pkg {name}: {key} {value!r} contains whitespace; templates use paths unquoted, "
            "so a path with spaces would be split (choose a path without spaces)"
        )


def parse_pkg(text: str) -> PkgRequest:
    """Parse `NAME[==VERSION][,key=value…]`; NdgenError names the bad part."""
    parts = text.split(",")
    head = parts[0].strip()
    name, sep, version = head.partition("==")
    name = name.strip()
    if not name or not _NAME_RE.match(name):
        raise NdgenError(f"malformed --pkg {text!r}: expected NAME[==VERSION][,key=value…]")
    ver: str | None = version.strip() if sep else None
    if sep and not ver:
        raise NdgenError(f"malformed --pkg {text!r}: empty version after '=='")
    if ver is not None and not _VERSION_RE.match(ver):
        bad = _unsafe(ver) or "a character outside [A-Za-z0-9._+~-]"
        raise NdgenError(f"--pkg {name}: version {ver!r} contains {bad}")
    args: list[tuple[str, str]] = []
    seen: set[str] = set()
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise NdgenError(f"malformed --pkg {text!r}: {part!r} is not key=value")
        if not _KEY_RE.match(key):
            raise NdgenError(f"malformed --pkg {text!r}: bad argument name {key!r}")
        if key in seen:
            raise NdgenError(f"--pkg {name}: argument {key!r} given twice")
        if not value.strip():
            # Not "use the default": a typo or an unset shell variable would go unnoticed.
            raise NdgenError(f"--pkg {name}: argument {key!r} has an empty value; give {key}=VALUE or leave it out")
        _check_value(name, key, value.strip())
        seen.add(key)
        args.append((key, value.strip()))
    return PkgRequest(name=name, version=ver, args=tuple(args), text=text)


def resolve_package(req: PkgRequest, registry: Registry, target: Target) -> PackageSpec:
    """Check a request against its registry entry and the target; fill defaults."""
    entry = registry.get(req.name)  # case-insensitive: `ANTs` is ants
    args = dict(req.args)  # the phases below take `method` and `version` out of it
    method = _method(entry, args)
    version = _given_version(entry, req.version, args)
    _check_pkg_manager(entry, method, target)
    if method == "system":
        return _system_package(entry, version, args)
    _check_arguments(entry, method, args)
    _fill_version(entry, method, version, args)
    _fill_required(entry, method, args, target)
    check_requires(entry, method, args.get("version"), target)
    return PackageSpec(
        name=entry.name,
        method=method,
        version=args.get("version"),
        kwds=tuple(sorted(args.items())),
        entry=entry,
    )


def _method(entry: Entry, args: dict[str, str]) -> str:
    """`method=` (taken out of `args`), else the entry's default; it must be one of its methods."""
    method = args.pop("method", None) or entry.default_method
    if method not in entry.methods:
        raise NdgenError(f"{entry.name}: unknown method {method!r}; available: {', '.join(entry.methods)}")
    return method


def _given_version(entry: Entry, version: str | None, args: dict[str, str]) -> str | None:
    """`NAME==VERSION` or `version=` (taken out of `args`), not both with different values."""
    if "version" in args:
        if version is not None and version != args["version"]:
            raise NdgenError(f"{entry.name}: version given twice ({version!r} and {args['version']!r})")
        version = args.pop("version")
        if not _VERSION_RE.match(version):
            raise NdgenError(f"--pkg {entry.name}: version {version!r} is not a version name")
    return version


def _check_pkg_manager(entry: Entry, method: str, target: Target) -> None:
    if target.pkg_manager not in entry.pkg_managers(method):
        raise UnsupportedTarget(
            f"{entry.name} (method={method}) cannot install with {target.pkg_manager} "
            f"(supports: {', '.join(sorted(entry.pkg_managers(method))) or 'none'}); choose another --os"
        )


def _system_package(entry: Entry, version: str | None, args: dict[str, str]) -> PackageSpec:
    """method=system installs the OS package: no version, no arguments."""
    if version is not None:
        raise NdgenError(f"{entry.name}: method=system installs the OS package; it takes no version (got {version!r})")
    if args:
        raise NdgenError(
            f"{entry.name}: unknown template argument {next(iter(args))!r} for method=system (it takes none)"
        )
    return PackageSpec(name=entry.name, method="system", version=None, kwds=(), entry=entry)


def _check_arguments(entry: Entry, method: str, args: dict[str, str]) -> None:
    required, optional = entry.arguments(method)
    allowed = set(required) | set(optional)
    for key in args:
        if key not in allowed:
            known = ", ".join(sorted(allowed - {"version"})) or "none"
            raise NdgenError(f"{entry.name}: unknown template argument {key!r} (method={method}; arguments: {known})")


def _fill_version(entry: Entry, method: str, version: str | None, args: dict[str, str]) -> None:
    """The version into `args`: the given one (a known one, for binaries) or the entry's default."""
    required, optional = entry.arguments(method)
    if "version" not in set(required) | set(optional):
        if version is not None:
            raise NdgenError(f"{entry.name}: method={method} has no versions (got {version!r})")
        return
    versions = entry.versions(method)
    if version is None:
        version = entry.default_version(method)
        if version is None and "version" in required:
            raise MissingArgument(f"{entry.name}: method={method} needs a version: --pkg {entry.name}==VERSION")
    elif method == "binaries" and "*" not in versions and version not in versions:
        raise NdgenError(f"{entry.name}: unknown version {version!r}; available: {', '.join(versions)}")
    if version is not None:
        args["version"] = version


def _fill_required(entry: Entry, method: str, args: dict[str, str], target: Target) -> None:
    """Every required argument is given; an OS-derived one (os_codename) comes from the preset."""
    required, _optional = entry.arguments(method)
    if "os_codename" in required and "os_codename" not in args:
        if target.codename is None:
            raise MissingArgument(f"{entry.name}: needs os_codename=…, unknown for {target.os_name}")
        args["os_codename"] = target.codename
    missing = [k for k in required if k not in args]
    if missing:
        raise MissingArgument(
            f"{entry.name}: missing required argument {missing[0]!r}: --pkg {entry.name},{missing[0]}=…"
        )


def _resolve_once(req: PkgRequest, registry: Registry, target: Target, seen: dict[str, str]) -> PackageSpec:
    """Resolve a request, refusing a package already requested (`seen`: name -> as typed).

    Compared after resolving: names are case-insensitive, `ants` and `ANTs` are one package.
    """
    pkg = resolve_package(req, registry, target)
    if pkg.name in seen:
        first = seen[pkg.name]
        also = f" (as {first!r} and {req.name!r})" if first != req.name else ""
        raise NdgenError(f"--pkg {pkg.name} given twice{also}")
    seen[pkg.name] = req.name
    return pkg


def _resolve_items(
    items: Sequence[str | st.Step],
    os_name: str | None,
    base_image: str | None,
    pkg_manager: str | None,
    registry: Registry | None,
) -> tuple[Target, Registry, list[PackageSpec | st.Step]]:
    """The one parse → target → registry → resolve loop: `--pkg` strings become PackageSpecs,
    steps pass through, order kept.  Every string is parsed before the OS is looked at."""
    if not items:
        raise NdgenError("nothing to install: give at least one --pkg NAME")
    requests = [parse_pkg(i) if isinstance(i, str) else i for i in items]
    target = resolve_target(os_name, base_image, pkg_manager)
    registry = registry if registry is not None else Registry()
    seen: dict[str, str] = {}
    resolved: list[PackageSpec | st.Step] = [
        _resolve_once(req, registry, target, seen) if isinstance(req, PkgRequest) else req for req in requests
    ]
    return target, registry, resolved


def _spec(target: Target, items: Iterable[PackageSpec | st.Step]) -> RecipeSpec:
    return RecipeSpec(target=target, packages=tuple(i for i in items if isinstance(i, PackageSpec)))


def resolve(
    pkgs: Iterable[str],
    os_name: str | None,
    base_image: str | None = None,
    pkg_manager: str | None = None,
    registry: Registry | None = None,
) -> RecipeSpec:
    """Parse and resolve every --pkg (order kept) against the registry and OS."""
    target, _registry, resolved = _resolve_items(list(pkgs), os_name, base_image, pkg_manager, registry)
    return _spec(target, resolved)


def package_plan(name: str, target: Target, registry: Registry, *, method: str, version: str | None = None) -> st.Plan:
    """The plan of `--pkg NAME[==VERSION],method=METHOD` alone on `target` (the matrix, validate).
    Raises MissingArgument / UnsupportedTarget when the entry cannot render there without more."""
    req = PkgRequest(name=name, version=version, args=(("method", method),), text=name)
    pkg = resolve_package(req, registry, target)
    return _plan(target, [pkg], RecipeSpec(target=target, packages=(pkg,)), registry)


# ---------------------------------------------------------------- spec -> plan


def plan_from_items(
    items: Sequence[str | st.Step],
    os_name: str | None,
    base_image: str | None = None,
    pkg_manager: str | None = None,
    registry: Registry | None = None,
) -> st.Plan:
    """`--pkg` strings and directive steps, in command-line order, into a Plan.

    As `neurodocker generate` does: the `_default` template first, then every
    item in order, then (ndgen) the labels, then the default entrypoint
    unless a directive set one.
    """
    target, registry, resolved = _resolve_items(list(items), os_name, base_image, pkg_manager, registry)
    return _plan(target, resolved, _spec(target, resolved), registry)


def _plan(target: Target, items: list, spec: RecipeSpec, registry: Registry) -> st.Plan:
    from neurodocker_nd.render.defaults import ENTRYPOINT, default_template

    steps: list[st.Step] = [_template_step("_default", default_template(registry), "source", ())]
    for item in items:
        if isinstance(item, PackageSpec):
            steps.extend(package_steps(item, target, registry))
        else:
            steps.append(item)
    if spec.packages:
        steps.append(st.Label(labels(spec)))
    if not any(isinstance(i, st.Entrypoint) for i in items):
        steps.append(st.Entrypoint((ENTRYPOINT,)))
    return st.Plan(
        target=target,
        steps=tuple(steps),
        packages=tuple(
            st.Package(name=p.name, version=p.version, method=p.method, test=p.test, commands=p.commands, alert=p.alert)
            for p in spec.packages
        ),
        reproduce=reproduce_command(target, items),
        help_text=help_text(spec),
    )


def _template_step(
    key: str, template, method: str, args: tuple[tuple[str, str], ...], name: str | None = None
) -> st.Template:
    return st.Template(name=name or key, method=method, args=args, key=key, template=template)


def package_steps(pkg: PackageSpec, target: Target, registry: Registry) -> list[st.Template]:
    """A package as template steps (method=system: NeuroDebian first when asked, then the OS packages)."""
    from neurodocker_nd.render.defaults import NEURODEBIAN_MIRROR, system_template

    if pkg.method != "system":
        assert pkg.entry.template is not None
        step = _template_step(str(pkg.entry.template_path), pkg.entry.template, pkg.method, pkg.kwds, pkg.name)
        sha = pkg.entry.meta.sha256(pkg.version) if pkg.entry.meta is not None and pkg.method == "binaries" else None
        if sha is not None:
            url = str((pkg.entry.template["binaries"].get("urls") or {}).get(pkg.version, ""))
            step = attrs.evolve(step, sha256=sha, url=url)
        return [step]
    system = pkg.entry.meta.system if pkg.entry.meta else None
    assert system is not None
    out = []
    if target.pkg_manager == "apt" and system.neurodebian:
        if target.codename is None:
            raise NdgenError(f"{pkg.name}: NeuroDebian needs a known release; use --os instead of --base-image")
        nd = registry.get("neurodebian")
        assert nd.template is not None
        kwds = (("os_codename", target.codename), ("version", NEURODEBIAN_MIRROR))
        out.append(_template_step(str(nd.template_path), nd.template, "binaries", kwds, "neurodebian"))
    out.append(_template_step(f"{pkg.entry.meta_path}#system", system_template(pkg.entry), "source", (), pkg.name))
    return out


# ---------------------------------------------------------------- text pieces


def _pkg_arg(p: PackageSpec) -> str:
    s = p.name + (f"=={p.version}" if p.version else "")
    extra = [f"{k}={v}" for k, v in p.kwds if k != "version"]
    if p.method != p.entry.default_method:
        extra.insert(0, f"method={p.method}")
    return ",".join([s, *extra])


def _pairs_arg(flag: str, pairs) -> str:
    return f"{flag} " + " ".join(shlex.quote(f"{k}={v}") for k, v in pairs)


def step_arg(step: st.Step) -> str:
    """The directive flag(s) that make this step (for the Reproduce line)."""
    q = shlex.quote
    if isinstance(step, st.Run):
        return f"--run{'-bash' if step.shell == 'bash' else ''} {q(step.command)}"
    if isinstance(step, st.Install):
        return "--install " + " ".join(q(p) for p in step.pkgs) + (f" {q('opts=' + step.opts)}" if step.opts else "")
    if isinstance(step, st.Env):
        return _pairs_arg("--env", step.values)
    if isinstance(step, st.Label):
        return _pairs_arg("--label", step.values)
    if isinstance(step, st.Copy):
        return "--copy " + " ".join(q(p) for p in (*step.srcs, step.dst))
    if isinstance(step, st.Add):
        return f"--add {q(step.src)} {q(step.dst)}"
    if isinstance(step, st.Workdir):
        return f"--workdir {q(step.path)}"
    if isinstance(step, st.User):
        return f"--user {q(step.name)}"
    if isinstance(step, st.Entrypoint):
        return f"--entrypoint {q(' '.join(step.args))}"  # one word: `-c` must not read as a flag
    if isinstance(step, st.Arg):
        return f"--arg {q(step.key if step.value is None else f'{step.key}={step.value}')}"
    raise NdgenError(f"{type(step).__name__} has no command-line flag")


def reproduce_command(target: Target, items: Iterable[PackageSpec | st.Step]) -> str:
    """The ndgen command line that renders this recipe again (format option excluded)."""
    from neurodocker_nd.render.target import PRESETS

    t = target
    q = shlex.quote  # `conda_install=numpy scipy` must come back as one argument
    preset = PRESETS.get(t.os_name)
    # `--os` only when the preset gives this very target: `--base-image rockylinux:9
    # --pkg-manager yum` is named like a preset but has none of its facts (codename,
    # glibc, dnf's --allowerasing), so `--os rockylinux:9` would render another file.
    if preset is not None and attrs.evolve(preset, base_image=t.base_image) == t:
        where = f"--os {q(t.os_name)}"
        if preset.base_image != t.base_image:
            where += f" --base-image {q(t.base_image)}"
    else:
        where = f"--base-image {q(t.base_image)} --pkg-manager {t.pkg_manager}"
    args = " ".join(f"--pkg {q(_pkg_arg(i))}" if isinstance(i, PackageSpec) else step_arg(i) for i in items)
    return f"ndgen {args} {where}"


def _describe(p: PackageSpec) -> str:
    return f"{p.name} {p.version or ''} ({p.method})".replace("  ", " ")


def labels(spec: RecipeSpec) -> dict[str, str]:
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


def help_text(spec: RecipeSpec) -> str:
    lines = [f"Container rendered by ndgen {__version__} on {spec.target.os_name} ({spec.target.base_image})."]
    if spec.packages:
        lines.append("Packages:")
    for p in spec.packages:
        lines.append(f"    {_describe(p)}")
        if p.commands:
            lines.append(f"        commands: {' '.join(p.commands)}")
        if p.alert:
            lines.append(f"        note: {' '.join(p.alert.split())}")
    lines.append("Usage: apptainer run IMAGE COMMAND [ARGS...]")
    return "\n".join(lines)
