"""The template registry: upstream neurodocker's templates plus ndgen's `registry/`.

Data flows one way: YAML files -> validated, immutable `Entry` objects.  Nothing
here touches neurodocker's class-level `_TemplateRegistry`; upstream templates
are read as plain YAML from the installed package's `templates/` directory.
Only the entries a command asks for are read and validated (rendering one
package must stay fast); `list`/`matrix`/`validate` load them all.

Errors name the file, the YAML path and the line (from yaml's node marks).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import attrs

from neurodocker_nd.core import paths, schemamemo
from neurodocker_nd.core.yamlfile import DataFileError, check_schema, line_of, read_yaml, schema_validator
from neurodocker_nd.errors import NdgenError

Origin = Literal["upstream", "registry", "both"]  # where an entry is defined
TEMPLATE_METHODS = ("binaries", "source")
# Version names that are moving targets: never the default unless alone.
MOVING_VERSIONS = frozenset({"latest", "master", "main", "nightly", "dev", "*"})
_PRERELEASE = frozenset({"a", "alpha", "b", "beta", "rc", "pre", "dev"})


# A registry file is malformed or violates its schema: the data-file error, by its
# registry name (callers catch RegistryError).
RegistryError = DataFileError


# ---------------------------------------------------------------- data


@attrs.frozen
class SystemInstall:
    """`meta.system`: install from the OS package manager (method=system)."""

    apt: tuple[str, ...] = ()
    yum: tuple[str, ...] = ()
    neurodebian: bool = False
    epel: bool = False
    test: str | None = None

    def packages(self, pkg_manager: str) -> tuple[str, ...]:
        return self.apt if pkg_manager == "apt" else self.yum


@attrs.frozen
class Source:
    """Where a registry fact was read, and what it shows."""

    url: str
    confirms: str


@attrs.frozen
class VersionInfo:
    """`meta.versions[V]`: provenance (and the sha256) of one template version."""

    status: str  # verified | confirmed | inherited
    sources: tuple[Source, ...]
    sha256: str | None = None


@attrs.frozen
class Waiver:
    """`meta.waivers[]`: a lint finding accepted on purpose."""

    rule: str
    reason: str
    versions: tuple[str, ...] = ()  # empty: every finding of the rule

    def covers(self, rule: str, version: str | None) -> bool:
        return rule == self.rule and (not self.versions or version in self.versions)


@attrs.frozen
class Requirement:
    """`meta.requires[]`: these versions need at least this glibc on the target."""

    versions: tuple[str, ...]
    methods: tuple[str, ...]
    glibc: tuple[int, ...]
    reason: str
    sources: tuple[Source, ...]


def _sources(items) -> tuple[Source, ...]:
    return tuple(Source(url=s["url"], confirms=s["confirms"]) for s in items or ())


@attrs.frozen
class Meta:
    """ndgen's additions to a template (`registry/<name>/meta.yaml`)."""

    name: str
    description: str
    homepage: str
    commands: tuple[str, ...]
    test: str
    categories: tuple[str, ...] = ()
    system: SystemInstall | None = None
    upstream_status: str = "ndgen-only"
    upstream_notes: str | None = None
    versions: Mapping[str, VersionInfo] = attrs.field(factory=dict, eq=False)
    waivers: tuple[Waiver, ...] = ()
    requires: tuple[Requirement, ...] = ()

    def sha256(self, version: str | None) -> str | None:
        info = self.versions.get(version) if version is not None else None
        return info.sha256 if info is not None else None

    def waived(self, rule: str, version: str | None = None) -> Waiver | None:
        return next((w for w in self.waivers if w.covers(rule, version)), None)

    # The upstream revision the template was last synced from (a neurodocker release
    # or a commit of its repository): the base of export's three-way merge.
    upstream_synced_from: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Meta:
        sysd = d.get("system")
        system = None
        if sysd is not None:
            system = SystemInstall(
                apt=tuple(sysd.get("apt") or ()),
                yum=tuple(sysd.get("yum") or ()),
                neurodebian=bool(sysd.get("neurodebian", False)),
                epel=bool(sysd.get("epel", False)),
                test=sysd.get("test"),
            )
        up = d.get("upstream") or {}
        return cls(
            name=d["name"],
            description=d.get("description", ""),
            homepage=d.get("homepage", ""),
            commands=tuple(d.get("commands") or ()),
            test=d.get("test", ""),
            categories=tuple(d.get("categories") or ()),
            system=system,
            upstream_status=up.get("status", "ndgen-only"),
            upstream_notes=up.get("notes"),
            versions=MappingProxyType(
                {
                    str(v): VersionInfo(status=i["status"], sources=_sources(i.get("sources")), sha256=i.get("sha256"))
                    for v, i in (d.get("versions") or {}).items()
                }
            ),
            waivers=tuple(
                Waiver(rule=w["rule"], reason=w["reason"], versions=tuple(str(v) for v in w.get("versions") or ()))
                for w in d.get("waivers") or ()
            ),
            requires=tuple(
                Requirement(
                    versions=tuple(str(v) for v in r["versions"]),
                    methods=tuple(r.get("methods") or ("binaries",)),
                    glibc=tuple(int(x) for x in str(r["glibc"]).split(".")),
                    reason=r["reason"],
                    sources=_sources(r.get("sources")),
                )
                for r in d.get("requires") or ()
            ),
            upstream_synced_from=None if up.get("synced_from") is None else str(up["synced_from"]),
        )


def version_key(version: str) -> tuple:
    """Sort key for version names: numeric runs compare as numbers.

    `v1.0.20250506` > `v1.0.20241211`, `2.10` > `2.9`, `12.9_R2023b` >
    `r2166_R2017b`, `1.2.0` > `1.2.0-rc1`; dates written as digits sort by date.
    """
    v = version[1:] if re.match(r"v\d", version) else version
    key = []
    for tok in re.findall(r"\d+|[A-Za-z]+", v):
        if tok.isdigit():
            key.append((2, int(tok), ""))
        elif tok.lower() in _PRERELEASE:
            key.append((0, 0, tok.lower()))
        else:
            key.append((1, 0, tok.lower()))
    key.append((1, 0, ""))  # end of version: after pre-release tags, before more numbers
    return tuple(key)


def sort_versions(versions: Iterable[str]) -> tuple[str, ...]:
    """Newest first; moving names (latest, master, …) last."""
    vs = list(versions)
    fixed = sorted((v for v in vs if v.lower() not in MOVING_VERSIONS), key=version_key, reverse=True)
    moving = sorted(v for v in vs if v.lower() in MOVING_VERSIONS)
    return tuple(fixed + moving)


@attrs.frozen
class Entry:
    """One installable software: an upstream and/or registry template plus meta."""

    name: str
    source: Origin
    template: Mapping[str, Any] | None = attrs.field(eq=False, default=None)
    template_path: Path | None = None
    meta: Meta | None = None
    meta_path: Path | None = None

    @property
    def methods(self) -> tuple[str, ...]:
        ms = tuple(m for m in TEMPLATE_METHODS if self.template and m in self.template)
        if self.meta is not None and self.meta.system is not None:
            ms += ("system",)
        return ms

    @property
    def default_method(self) -> str:
        return self.methods[0]

    def method_template(self, method: str) -> Mapping[str, Any]:
        assert self.template is not None and method in TEMPLATE_METHODS
        return self.template[method]

    def arguments(self, method: str) -> tuple[tuple[str, ...], Mapping[str, str]]:
        """(required names, optional name -> default) of a template method."""
        if method == "system":
            return (), {}
        args = self.method_template(method).get("arguments") or {}
        return tuple(args.get("required") or ()), dict(args.get("optional") or {})

    def versions(self, method: str | None = None) -> tuple[str, ...]:
        """Known versions, newest first (binaries URLs; source builds take any)."""
        if not self.template or "binaries" not in self.template:
            return ()
        if method not in (None, "binaries", "source"):
            return ()
        return sort_versions(str(v) for v in (self.template["binaries"].get("urls") or {}))

    def default_version(self, method: str) -> str | None:
        """The newest fixed version (see docs/render.md); None if there is none."""
        if method == "system":
            return None
        required, optional = self.arguments(method)
        vs = [v for v in self.versions(method) if v != "*"]
        if vs:
            return vs[0]
        default = optional.get("version")
        return str(default) if default is not None else None

    def pkg_managers(self, method: str) -> frozenset[str]:
        """Package managers a method supports (from its dependencies or instructions)."""
        if method == "system":
            assert self.meta and self.meta.system
            sysm = self.meta.system
            return frozenset(pm for pm in ("apt", "yum") if sysm.packages(pm))
        mt = self.method_template(method)
        declared = frozenset(mt.get("dependencies") or {}) & {"apt", "yum"}
        if declared:
            return declared
        text = mt.get("instructions", "")
        uses_apt, uses_yum = "apt-get" in text, re.search(r"\b(yum|dnf)\b", text) is not None
        if uses_apt and not uses_yum:
            return frozenset({"apt"})
        if uses_yum and not uses_apt:
            return frozenset({"yum"})
        return frozenset({"apt", "yum"})


# ---------------------------------------------------------------- YAML + schemas


def _check_name(data: Mapping[str, Any], path: Path, expect_name: str | None) -> None:
    """An entry's `name` must be its directory name (= the template name)."""
    if expect_name is not None and data["name"] != expect_name:
        raise RegistryError(
            f"{path}:{line_of(path, ['name'])}: name: {data['name']!r} must be {expect_name!r} (the directory name)"
        )


def _check_version_keys(data: Mapping[str, Any], path: Path) -> None:
    """Version keys must be strings: YAML reads an unquoted `3.0:` as the float 3.0."""
    urls = (data.get("binaries") or {}).get("urls") or {}
    for key in urls:
        if not isinstance(key, str):
            raise RegistryError(
                f"{path}:{line_of(path, ['binaries', 'urls', key])}: binaries.urls.{key}: "
                f'version {key!r} is not a string; quote it ("{key}")'
            )


def upstream_templates_dir() -> Path:
    """The installed neurodocker's own `templates/` directory."""
    import importlib.util

    spec = importlib.util.find_spec("neurodocker")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "templates"


def upstream_template_schema_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("neurodocker")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "reproenv" / "schemas" / "template.json"


# ---------------------------------------------------------------- registry


def default_registry_dir() -> Path:
    """$NDGEN_REGISTRY (a user's own registry) or the bundled `registry/`."""
    env = os.environ.get("NDGEN_REGISTRY")
    if not env:
        return paths.registry_dir()
    # A typo must not silently fall back to upstream-only templates.
    if not Path(env).is_dir():
        raise NdgenError(f"NDGEN_REGISTRY={env}: no such directory")
    return Path(env)


@attrs.frozen
class Registry:
    """Upstream templates + registry entries, read lazily, validated on read.

    Immutable from the outside; the private memo only caches pure reads of
    files so each one is parsed and validated once per command.
    """

    registry_dir: Path = attrs.field(factory=lambda: default_registry_dir(), converter=Path)
    upstream_dir: Path = attrs.field(factory=upstream_templates_dir, converter=Path)
    meta_schema_path: Path = attrs.field(factory=lambda: paths.schemas_dir() / "meta.schema.json", converter=Path)
    _memo: dict = attrs.field(factory=dict, eq=False, repr=False, init=False)

    # ---- names
    @cached_property
    def _upstream_names(self) -> frozenset[str]:
        return frozenset(p.stem for p in self.upstream_dir.glob("*.yaml"))

    @cached_property
    def _registry_names(self) -> frozenset[str]:
        if not self.registry_dir.is_dir():
            return frozenset()
        return frozenset(
            p.name
            for p in self.registry_dir.iterdir()
            if p.is_dir() and ((p / "meta.yaml").exists() or (p / "template.yaml").exists())
        )

    def names(self) -> tuple[str, ...]:
        """Public entry names (templates starting with `_` are internal)."""
        return tuple(sorted(n for n in self._upstream_names | self._registry_names if not n.startswith("_")))

    def __contains__(self, name: str) -> bool:
        return name in self._upstream_names or name in self._registry_names

    def canonical(self, name: str) -> str:
        """The entry name `name` means: names are case-insensitive (`ANTs` is `ants`)."""
        if name in self:
            return name
        folded = {n.lower(): n for n in self._upstream_names | self._registry_names}
        return folded.get(name.lower(), name)

    # ---- validators (built on first use)
    @cached_property
    def _template_validator(self):
        return schema_validator(upstream_template_schema_path())

    @cached_property
    def _meta_validator(self):
        if not self.meta_schema_path.is_file():
            raise RegistryError(f"{self.meta_schema_path}: meta schema not found")
        return schema_validator(self.meta_schema_path)

    # ---- loading
    def load_template(self, path: Path, expect_name: str | None = None, check: bool = True) -> Mapping[str, Any]:
        """Read and validate a neurodocker template file.

        `check=False` is for neurodocker's own templates: neurodocker validates
        them when it is imported and again in `Template()`, so a third pass
        would only slow down every render.
        """
        data = read_yaml(path)
        if check:
            schemamemo.checked(
                data,
                upstream_template_schema_path(),
                lambda: check_schema(data, path, self._template_validator, "neurodocker template"),
            )
            _check_version_keys(data, path)
        _check_name(data, path, expect_name)
        return MappingProxyType(data)

    def load_meta(self, path: Path, expect_name: str | None = None) -> Meta:
        """Read and validate an ndgen meta.yaml file."""
        data = read_yaml(path)
        schemamemo.checked(
            data, self.meta_schema_path, lambda: check_schema(data, path, self._meta_validator, "ndgen meta")
        )
        _check_name(data, path, expect_name)
        return Meta.from_dict(data)

    def get(self, name: str) -> Entry:
        """The entry `name` (case-insensitive), validated; NdgenError with suggestions if unknown."""
        name = self.canonical(name)
        if name in self._memo:
            return self._memo[name]
        if name not in self:
            raise NdgenError(unknown_name_message("package", name, self.names()))
        up = self.upstream_dir / f"{name}.yaml"
        reg = self.registry_dir / name
        in_up, in_reg = name in self._upstream_names, name in self._registry_names
        template = template_path = meta = meta_path = None
        if in_reg and (reg / "template.yaml").exists():
            template_path = reg / "template.yaml"
        elif in_up:
            template_path = up
        if template_path is not None:
            template = self.load_template(template_path, expect_name=name, check=template_path != up)
        if in_reg:
            meta_path = reg / "meta.yaml"
            if not meta_path.exists():
                raise RegistryError(f"{reg}: registry entry has no meta.yaml")
            meta = self.load_meta(meta_path, expect_name=name)
        source: Origin = "both" if in_up and in_reg else ("registry" if in_reg else "upstream")
        entry = Entry(
            name=name,
            source=source,
            template=template,
            template_path=template_path,
            meta=meta,
            meta_path=meta_path,
        )
        if not entry.methods:
            raise RegistryError(f"{meta_path}: {name} has no template and no `system` install: nothing to install")
        self._memo[name] = entry
        return entry

    def entries(self) -> Iterator[Entry]:
        for name in self.names():
            yield self.get(name)

    def internal(self, name: str) -> Mapping[str, Any]:
        """An upstream internal template (e.g. `_default`), validated."""
        key = ("internal", name)
        if key not in self._memo:
            self._memo[key] = self.load_template(self.upstream_dir / f"{name}.yaml", expect_name=name, check=False)
        return self._memo[key]


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """`unknown package 'antz'; did you mean: ants?` (difflib close matches)."""
    import difflib

    known = list(known)
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else "; see `ndgen list`"
    return f"unknown {kind} {name!r}{hint}"


def validate_paths(paths_: Iterable[Path], registry: Registry) -> list[str]:
    """Validate template.yaml / meta.yaml files or entry directories; return what was checked."""
    checked: list[str] = []
    for p in paths_:
        p = Path(p)
        if p.is_dir():
            files = [f for f in (p / "template.yaml", p / "meta.yaml") if f.exists()]
            if not files:
                raise RegistryError(f"{p}: no template.yaml or meta.yaml here")
            if not (p / "meta.yaml").exists():
                raise RegistryError(f"{p}: registry entry has no meta.yaml")
        elif p.exists() or p.is_symlink():
            files = [p]  # read_yaml refuses FIFOs, devices, non-UTF-8 text with one line
        else:
            raise RegistryError(f"{p}: no such file or directory")
        for f in files:
            expect = f.parent.name if f.name in ("template.yaml", "meta.yaml") else None
            if f.name == "meta.yaml" or _looks_like_meta(f):
                registry.load_meta(f, expect_name=expect)
            else:
                registry.load_template(f, expect_name=expect)
            checked.append(str(f))
    return checked


def _looks_like_meta(path: Path) -> bool:
    data = read_yaml(path)
    return isinstance(data, dict) and "commands" in data and "binaries" not in data and "source" not in data
