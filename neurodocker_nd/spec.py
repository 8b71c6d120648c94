"""From `--pkg` strings and an OS to a validated, immutable RecipeSpec.

`--pkg NAME[==VERSION][,key=value…]`: the version picks a template version;
`method=binaries|source|system` picks how to install; other keys are template
arguments.  Every value ends up inside a RUN line, so values carrying shell
metacharacters, Jinja braces or newlines are rejected here, before rendering.
"""

from __future__ import annotations

import re
from typing import Iterable

import attrs

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.oses import Target, resolve_target
from neurodocker_nd.registry import Entry, Registry, unknown_name_message

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEY_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")
# Characters the shell (or Jinja, which neurodocker re-renders values with)
# would interpret; spaces stay allowed (e.g. conda_install="numpy scipy").
_UNSAFE_RE = re.compile(r"[;&|$`<>(){}\\'\"!#*?\[\]\x00-\x1f\x7f]")


class MissingArgument(NdgenError):
    """A template needs an argument that has no default (e.g. vnc's passwd)."""


class UnsupportedTarget(NdgenError):
    """The package cannot be installed with the target's package manager."""


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
    m = _UNSAFE_RE.search(value)
    if m is None:
        return None
    ch = m.group(0)
    return {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}.get(ch, repr(ch))


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
        what = _unsafe(value)
        if what:
            raise NdgenError(
                f"--pkg {name}: value of {key} contains {what}; shell metacharacters, "
                "quotes and newlines are not allowed in template arguments"
            )
        seen.add(key)
        args.append((key, value.strip()))
    return PkgRequest(name=name, version=ver, args=tuple(args), text=text)


def resolve_package(req: PkgRequest, registry: Registry, target: Target) -> PackageSpec:
    """Check a request against its registry entry and the target; fill defaults."""
    name = req.name if req.name in registry else req.name.lower()  # `ANTs` is ants
    if name not in registry:
        raise NdgenError(unknown_name_message("package", req.name, registry.names()))
    entry = registry.get(name)
    args = dict(req.args)
    method = args.pop("method", None) or entry.default_method
    if method not in entry.methods:
        raise NdgenError(
            f"{entry.name}: unknown method {method!r}; available: {', '.join(entry.methods)}"
        )
    version = req.version
    if "version" in args:
        if version is not None and version != args["version"]:
            raise NdgenError(f"{entry.name}: version given twice ({version!r} and {args['version']!r})")
        version = args.pop("version")
        if not _VERSION_RE.match(version):
            raise NdgenError(f"--pkg {entry.name}: version {version!r} is not a version name")

    if target.pkg_manager not in entry.pkg_managers(method):
        raise UnsupportedTarget(
            f"{entry.name} (method={method}) cannot install with {target.pkg_manager} "
            f"(supports: {', '.join(sorted(entry.pkg_managers(method))) or 'none'}); choose another --os"
        )

    if method == "system":
        if version is not None:
            raise NdgenError(
                f"{entry.name}: method=system installs the OS package; it takes no version (got {version!r})"
            )
        if args:
            raise NdgenError(
                f"{entry.name}: unknown template argument {next(iter(args))!r} for method=system (it takes none)"
            )
        return PackageSpec(name=entry.name, method=method, version=None, kwds=(), entry=entry)

    required, optional = entry.arguments(method)
    allowed = set(required) | set(optional)
    for key in args:
        if key not in allowed:
            known = ", ".join(sorted(allowed - {"version"})) or "none"
            raise NdgenError(f"{entry.name}: unknown template argument {key!r} (method={method}; arguments: {known})")
    if "version" in allowed:
        versions = entry.versions(method)
        if version is None:
            version = entry.default_version(method)
            if version is None and "version" in required:
                raise MissingArgument(f"{entry.name}: method={method} needs a version: --pkg {entry.name}==VERSION")
        elif method == "binaries" and "*" not in versions and version not in versions:
            raise NdgenError(
                f"{entry.name}: unknown version {version!r}; available: {', '.join(versions)}"
            )
        if version is not None:
            args["version"] = version
    elif version is not None:
        raise NdgenError(f"{entry.name}: method={method} has no versions (got {version!r})")
    if "os_codename" in required and "os_codename" not in args:
        # An OS-derived argument: fill it from the preset rather than asking.
        if target.codename is None:
            raise MissingArgument(f"{entry.name}: needs os_codename=…, unknown for {target.os_name}")
        args["os_codename"] = target.codename
    missing = [k for k in required if k not in args]
    if missing:
        raise MissingArgument(
            f"{entry.name}: missing required argument {missing[0]!r}: --pkg {entry.name},{missing[0]}=…"
        )
    return PackageSpec(
        name=entry.name,
        method=method,
        version=args.get("version"),
        kwds=tuple(sorted(args.items())),
        entry=entry,
    )


def resolve(
    pkgs: Iterable[str],
    os_name: str | None,
    base_image: str | None = None,
    pkg_manager: str | None = None,
    registry: Registry | None = None,
) -> RecipeSpec:
    """Parse and resolve every --pkg (order kept) against the registry and OS."""
    pkgs = list(pkgs)
    if not pkgs:
        raise NdgenError("nothing to install: give at least one --pkg NAME")
    requests = [parse_pkg(p) for p in pkgs]
    target = resolve_target(os_name, base_image, pkg_manager)
    registry = registry if registry is not None else Registry()
    seen: set[str] = set()
    packages = []
    for req in requests:
        if req.name in seen:
            raise NdgenError(f"--pkg {req.name} given twice")
        seen.add(req.name)
        packages.append(resolve_package(req, registry, target))
    return RecipeSpec(target=target, packages=tuple(packages))
