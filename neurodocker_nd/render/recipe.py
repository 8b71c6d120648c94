"""neurocontainers' recipe format (`recipes/<name>/build.yaml`) → an immutable Plan.

The format is read unchanged (see docs/recipes.md): metadata keys, `build:`
(kind, base-image, pkg-manager, add-default-template, add-tzdata,
fix-locale-def) and every directive, with `condition:` and Jinja
(`context.version`, `arch`, `get_file()`, `parallel_jobs`, variables) evaluated
here, while parsing, in jinja2's ImmutableSandboxedEnvironment — the renderer
only sees plain steps.  What a recipe means follows neurocontainers' own
builder, so the Dockerfile is equivalent to theirs instruction by instruction
(the deliberate differences are listed in docs/recipes.md).

Errors name the file and line of the directive: `build.yaml:42: …`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs

from neurodocker_nd.core import paths
from neurodocker_nd.core.jinja import compiled
from neurodocker_nd.core.yamlfile import line_of, parse_yaml
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render import steps as st
from neurodocker_nd.render.defaults import ENTRYPOINT, default_template
from neurodocker_nd.render.target import Target, _check_image
from neurodocker_nd.render.templatedir import TemplateSource

ARCHES = ("x86_64", "aarch64")
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_TRUE = {"1", "true", "yes", "y", "on"}

# neurocontainers' base layer (their builder's defaults, as data): a `ll`
# helper, the cluster mount points Neurodesk binds, and tzdata on apt.
MOUNT_POINTS = (
    "/afm01 /afm02 /cvmfs /90days /30days /QRISdata /RDS /data /short /proc_temp /TMPDIR /nvme "
    "/neurodesktop-storage /local /gpfs1 /working /winmounts /state /tmp /autofs /cluster /local_mount "
    "/scratch /clusterdata /nvmescratch"
).split()
DIRECTIVES = (
    "install",
    "run",
    "workdir",
    "user",
    "entrypoint",
    "environment",
    "copy",
    "template",
    "variables",
    "group",
    "include",
    "file",
    "deploy",
    "boutique",
    "test",
)


class RecipeError(NdgenError):
    """A recipe that cannot be read or rendered (the message names file:line)."""


# ---------------------------------------------------------------- Jinja context


@attrs.define(slots=False)  # __getattr__ reads __dict__
class _Context:
    """What a recipe's Jinja sees as `context` (and, for variables, bare names)."""

    name: str
    version: str
    original_version: str
    arch: str
    variant: str
    parallel_jobs: int
    options: Any
    values: dict[str, Any]
    file_guest: dict[str, str]  # declared name -> guest file name
    file_source: dict[str, str]  # declared name -> its URL, host path or name (identity for collisions)
    used: list[tuple[str, str]] | None = None  # (guest, name) get_file() handed out in one `run`
    run_key: Callable[[], str] | None = None
    cache_guests: dict[str, dict[str, str]] = attrs.field(factory=dict)  # cache id -> guest -> source

    def __getattr__(self, key: str) -> Any:  # recipe variables: context.foo
        values = self.__dict__.get("values") or {}
        if key in values:
            return values[key]
        raise AttributeError(key)

    def get_file(self, name: str) -> str:
        if name not in self.file_guest:
            raise RecipeError(
                f"get_file({name!r}): no such declared file (files: {', '.join(self.file_guest) or 'none'})"
            )
        guest = self.file_guest[name]
        if self.used is None or self.run_key is None:
            return f"/.neurocontainer-cache/{guest}"
        cache_id = self.run_key()
        names = self.cache_guests.setdefault(cache_id, {})
        source = self.file_source[name]
        if names.get(guest, source) != source:
            # Two different files with one guest name in one mount: as neurocontainers,
            # a digest suffix — of the URL/path (theirs hashes a host cache path).
            digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
            stem, dot, suffix = guest.rpartition(".")
            guest = f"{stem}_{digest}.{suffix}" if dot else f"{guest}_{digest}"
        names[guest] = source
        self.used.append((guest, name))
        return f"/.neurocontainer-cache/{cache_id}/{guest}"

    def has_local(self, key: str) -> bool:
        return False

    def get_local(self, key: str) -> str:
        raise RecipeError(f"get_local({key!r}): local build contexts are not supported")


_SIMPLE = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)\s*\}\}")
_MISSING = object()


def _lookup(ns: Mapping[str, Any], dotted: str) -> Any:
    """`a.b.c` as Jinja resolves it, for the plain cases only (else _MISSING: Jinja decides)."""
    head, *rest = dotted.split(".")
    value = ns.get(head, _MISSING)
    for attr in rest:
        if value is _MISSING:
            return _MISSING
        if isinstance(value, dict):
            # Jinja tries the attribute first: dict methods (`items`) are not plain values.
            value = value[attr] if attr in value and not hasattr(dict, attr) else _MISSING
        elif isinstance(value, (_Context, SimpleNamespace)):
            value = getattr(value, attr, _MISSING)
        else:
            return _MISSING
    if isinstance(value, (str, int)):  # bool is an int: str(True) == "True", as Jinja prints it
        return str(value)
    return _MISSING


def _substitute(text: str, ns: Mapping[str, Any]) -> str | None:
    """`{{ context.version }}`-only strings without compiling a template (most of a
    recipe's Jinja); None when anything else is in the string."""
    if "{%" in text or "{#" in text:
        return None
    out, pos = [], 0
    for m in _SIMPLE.finditer(text):
        value = _lookup(ns, m.group(1))
        if value is _MISSING:
            return None
        out += [text[pos : m.start()], value]
        pos = m.end()
    out.append(text[pos:])
    result = "".join(out)
    if "{{" in "".join(out[::2]):
        return None
    return _drop_final_newline(result) if text.endswith("\n") else result


def _drop_final_newline(text: str) -> str:
    # Jinja with keep_trailing_newline=False drops one final newline of the template.
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _has_jinja(text: str) -> bool:
    # Shell's ${VAR} is not Jinja: only {{ }}, {% %} and {# #} need the engine.
    return "{{" in text or "{%" in text or "{#" in text


# ---------------------------------------------------------------- the loader


@attrs.frozen
class _Where:
    path: Path
    parts: tuple[Any, ...]
    # The text the loader parsed: line numbers come from it, never from reading the path
    # again (that would go around the contained reader, and the file may have changed).
    text: str = attrs.field(default="", repr=False)

    def line(self) -> str:
        try:
            return f"{self.path}:{line_of(self.path, list(self.parts), self.text)}"
        except Exception:  # noqa: BLE001 - best effort: the file name alone still names the culprit
            return str(self.path)

    def child(self, *parts: Any) -> _Where:
        return _Where(self.path, self.parts + parts, self.text)


def find_recipe(path: str | Path) -> Path:
    """A recipe directory or its build.yaml → the build.yaml path."""
    p = Path(path)
    if p.is_dir():
        p = p / "build.yaml"
    if not os.path.lexists(p):  # what is there (a link, a FIFO) is for the contained reader to judge
        raise RecipeError(f"{path}: no recipe here (expected a directory with build.yaml, or the file)")
    return p


def read_recipe_file(root: Path, rel: str, shown: Path) -> str:
    """A file of a recipe tree (build.yaml, README.md, an include): the one contained reader.

    A recipe is untrusted: the file must resolve inside `root` (symlinks
    included), be regular (a FIFO would hang, /dev/zero never end) and stay
    under paths.MAX_RECIPE_TEXT, or it is one RecipeError naming it.
    """
    try:
        return paths.read_text_inside(root, rel, shown=str(shown))
    except paths.UnsafePath as exc:
        raise RecipeError(exc.message) from None


def _http_url(url: str, what: str, where: _Where) -> str:
    """`url:` is a download: http(s) only — a path or file:// would stage a host file into the image."""
    bad = st.control_char(url)
    if bad is not None:
        raise RecipeError(f"{where.line()}: {what} {url[:60]!r} contains {st.describe_char(bad)}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise RecipeError(
            f"{where.line()}: {what} {url[:80]!r} is not an http(s) URL (a file of the recipe directory is `filename:`)"
        )
    return url


def repository_root(recipe_dir: Path) -> Path | None:
    """The neurocontainers checkout a recipe lives in: the first parent with macros/."""
    for d in (recipe_dir, *recipe_dir.parents):
        if (d / "macros").is_dir():
            return d
    return None


def load_recipe(
    path: str | Path,
    *,
    arch: str = "x86_64",
    options: Mapping[str, str] | None = None,
    templates: Sequence[str | Path] = (),
    registry: Registry | None = None,
    parallel_jobs: int | None = None,
) -> st.Plan:
    """Read a recipe (directory or build.yaml) into a Plan. Raises RecipeError (one line)."""
    return _Loader(find_recipe(path), arch, dict(options or {}), templates, registry, parallel_jobs).load()


class _Loader:
    def __init__(self, path: Path, arch: str, options: dict[str, str], templates, registry, parallel_jobs) -> None:
        self.path = path
        self.dir = path.parent.resolve()
        if arch not in _ARCH_ALIASES:
            raise RecipeError(f"unknown architecture {arch!r}; choose x86_64 or aarch64")
        self.arch = _ARCH_ALIASES[arch]
        self.option_args = options
        self.templates = TemplateSource([Path(t) for t in templates], registry)
        self.registry = self.templates.registry
        self.parallel_jobs = parallel_jobs or os.cpu_count() or 1
        self.steps: list[st.Step] = []
        self.files: dict[str, st.File] = {}
        self.context_files: list[tuple[str, str | None]] = []
        self.deploy_bins: list[str] = []
        self.deploy_path: list[str] = []
        self.mounts_seen = 0

    # ---- Jinja
    def _ns(self) -> dict[str, Any]:
        c = self.ctx
        ns = {
            "context": c,
            "local": c,
            "arch": c.arch,
            "parallel_jobs": c.parallel_jobs,
            "get_file": c.get_file,
            "has_local": c.has_local,
            "get_local": c.get_local,
        }
        ns.update(c.values)
        return ns

    def render_str(self, text: str, where: _Where) -> str:
        import jinja2

        if not _has_jinja(text):  # the common case: nothing to evaluate
            return _drop_final_newline(text)  # ...but as Jinja would
        ns = self._ns()
        fast = _substitute(text, ns)
        if fast is not None:
            return fast
        try:
            # core.jinja's bounded sandbox: a recipe's Jinja is as hostile as a template's
            # (`{{ 9**(9**9) }}` in a build.yaml hung `ndgen recipe`).
            return compiled(text).render(**ns)
        except RecipeError as exc:
            raise RecipeError(f"{where.line()}: {exc.message}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise RecipeError(f"{where.line()}: Jinja syntax error: {exc.message}") from None
        except (
            jinja2.TemplateError,
            TypeError,
            ValueError,
            ArithmeticError,
            AttributeError,
            KeyError,
            IndexError,
        ) as exc:
            msg = getattr(exc, "message", None) or str(exc)
            raise RecipeError(f"{where.line()}: {type(exc).__name__}: {msg}") from None

    def render(self, value: Any, where: _Where) -> Any:
        if isinstance(value, str):
            return self.render_str(value, where)
        if isinstance(value, list):
            return [self.render(v, where.child(i)) for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            if isinstance(value.get("try"), list):
                for i, option in enumerate(value["try"]):
                    if isinstance(option, Mapping) and isinstance(option.get("condition"), str):
                        if self.condition(option["condition"], where.child("try", i, "condition")):
                            return self.render(option.get("value"), where.child("try", i, "value"))
                raise RecipeError(f"{where.line()}: no `try` condition matched")
            return {str(self.render(k, where)): self.render(v, where.child(k)) for k, v in value.items()}
        return value

    def condition(self, cond: Any, where: _Where) -> bool:
        import jinja2

        try:
            compiled("{{ " + str(cond) + " }}")
        except jinja2.TemplateSyntaxError as exc:
            raise RecipeError(f"{where.line()}: condition {str(cond)!r} does not parse: {exc.message}") from None
        return self.render_str("{{ " + str(cond) + " }}", where).strip() == "True"

    # ---- top level
    def load(self) -> st.Plan:
        self.text = read_recipe_file(self.dir, self.path.name, self.path)
        data = parse_yaml(self.text, self.path)
        top = _Where(self.path, (), self.text)
        if not isinstance(data, Mapping):
            raise RecipeError(f"{self.path}: a recipe must be a mapping")
        for key in ("name", "version", "build"):
            if data.get(key) is None:
                raise RecipeError(f"{self.path}: missing required key {key!r}")
        self.data = data
        name, version = str(data["name"]), str(data["version"])
        build = data["build"]
        if not isinstance(build, Mapping):
            raise RecipeError(f"{top.child('build').line()}: build must be a mapping")
        archs = [str(a) for a in (data.get("architectures") or ["x86_64"])]
        if self.arch not in archs:
            raise RecipeError(f"{self.path}: {name} does not support {self.arch} (architectures: {', '.join(archs)})")

        declared = data.get("options") or {}
        if not isinstance(declared, Mapping):
            raise RecipeError(f"{top.child('options').line()}: options must be a mapping")
        opts = {str(k): bool((v or {}).get("default", False)) for k, v in declared.items() if isinstance(v, Mapping)}
        for k, v in self.option_args.items():
            if k not in opts:
                raise RecipeError(f"--option {k}: {name} has no such option (options: {', '.join(opts) or 'none'})")
            opts[k] = str(v).strip().lower() in _TRUE
        full_version = version + "".join(
            str((declared[k] or {}).get("version_suffix") or "") for k in declared if opts.get(str(k))
        )
        # neurocontainers names the aarch64 build of a recipe NAME_arm64 (variant "arm64").
        variant = "arm64" if self.arch == "aarch64" else ""
        self.ctx = _Context(
            name=f"{name}_{variant}" if variant else name,
            version=full_version,
            original_version=version,
            arch=self.arch,
            variant=variant,
            parallel_jobs=self.parallel_jobs,
            options=SimpleNamespace(**opts),
            values={},
            file_guest={},
            file_source={},
        )
        for key, value in (data.get("variables") or {}).items():
            self.ctx.values[str(key)] = self.render(value, top.child("variables", key))
        for i, mapping in enumerate(data.get("files") or []):
            self.register_file(mapping, top.child("files", i))
        readme = self.readme(top)

        kind = str(build.get("kind", "neurodocker"))
        if kind != "neurodocker":
            raise RecipeError(
                f"{top.child('build', 'kind').line()}: build kind {kind!r} is not supported (neurodocker)"
            )
        base = str(self.render(build.get("base-image"), top.child("build", "base-image")) or "")
        if not base:
            raise RecipeError(f"{top.child('build').line()}: build.base-image is missing")
        if ":" not in base:
            base += ":latest"  # as neurocontainers' builder does
        try:
            _check_image(base)
        except NdgenError as exc:
            raise RecipeError(f"{top.child('build', 'base-image').line()}: {exc.message}") from None
        pm = str(self.render(build.get("pkg-manager", "apt"), top.child("build", "pkg-manager")))
        if pm not in ("apt", "yum"):
            raise RecipeError(f"{top.child('build', 'pkg-manager').line()}: pkg-manager {pm!r}: choose apt or yum")
        self.pm = pm
        add_default = bool(build.get("add-default-template", True))
        self.default_steps(
            add_default, bool(build.get("add-tzdata", add_default)), bool(build.get("fix-locale-def", False))
        )

        directives = build.get("directives") or []
        if not isinstance(directives, list):
            raise RecipeError(f"{top.child('build', 'directives').line()}: directives must be a list")
        for i, d in enumerate(directives):
            self.directive(d, top.child("build", "directives", i))

        top_deploy = self.render(data.get("deploy") or {}, top.child("deploy"))
        if not self.deploy_bins and isinstance(top_deploy, Mapping) and isinstance(top_deploy.get("bins"), list):
            self.deploy_bins = [str(b) for b in top_deploy["bins"]]
        if not self.deploy_path and isinstance(top_deploy, Mapping) and isinstance(top_deploy.get("path"), list):
            self.deploy_path = [str(p) for p in top_deploy["path"]]
        self.add(st.Deploy(bins=tuple(self.deploy_bins), path=tuple(self.deploy_path)), top.child("deploy"))
        self.add(st.Copy(("README.md",), "/README.md"), top)
        self.add(st.Copy(("build.yaml",), "/build.yaml"), top)
        if add_default and not any(isinstance(s, st.Entrypoint) for s in self.steps):
            self.add(st.Entrypoint((ENTRYPOINT,)), top)

        reproduce = f"ndgen recipe {shlex.quote(str(self.path.parent))}"
        if self.arch != "x86_64":
            reproduce += f" --arch {self.arch}"
        for k, v in sorted(self.option_args.items()):
            reproduce += f" --option {shlex.quote(f'{k}={v}')}"
        for d in self.templates.dirs:
            reproduce += f" --templates {shlex.quote(str(d))}"
        return st.Plan(
            target=Target(base_image=base, pkg_manager=pm, os_name=base),  # type: ignore[arg-type]
            steps=tuple(self.steps),
            files=tuple(self.files.values()),
            context_files=tuple(dict.fromkeys(self.context_files)),
            readme=readme,
            name=self.ctx.name,
            version=full_version,
            arch=self.arch,
            recipe_dir=str(self.dir),
            metadata=dict(data),
            reproduce=reproduce,
            help_text=_help(readme),
            recipe_text=self.text,
        )

    def add(self, step_or_fn, where: _Where) -> None:
        self.steps.append(step_or_fn)

    def make(self, where: _Where, cls, *args, **kwds):
        """Construct a step; a StepError names the directive's file:line."""
        try:
            return cls(*args, **kwds)
        except NdgenError as exc:
            raise RecipeError(f"{where.line()}: {exc.message}") from None

    # ---- pieces
    def readme(self, top: _Where) -> str:
        data = self.data
        text = str(data.get("readme") or "")
        if not text.strip() and os.path.lexists(self.dir / "README.md"):
            # Contained like copy:/file: — a README.md linking to a host file would
            # otherwise land in /README.md and %help.
            text = read_recipe_file(self.dir, "README.md", self.dir / "README.md")
        text = self.render_str(text, top.child("readme"))
        if not text.strip() and isinstance(data.get("structured_readme"), Mapping):
            sr = self.render(data["structured_readme"], top.child("structured_readme"))
            parts = [f"## {self.ctx.name}/{self.ctx.version} ##"]
            for key, head in (
                ("description", ""),
                ("example", "Example:\n"),
                ("documentation", "More documentation: "),
                ("citation", "Citation:\n"),
            ):
                if str(sr.get(key) or "").strip():
                    parts.append(head + str(sr[key]).strip())
            if len(parts) > 1:
                text = "\n\n".join(parts)
        if not text.strip() and data.get("readme_url"):
            url = self.render_str(str(data["readme_url"]), top.child("readme_url"))
            raise RecipeError(
                f"{top.child('readme_url').line()}: readme_url {url} needs the network; "
                "add the README as readme: or README.md"
            )
        if not text.strip():
            raise RecipeError(f"{self.path}: no README (set readme, structured_readme, or add README.md)")
        return text

    def register_file(self, mapping: Any, where: _Where) -> None:
        if not isinstance(mapping, Mapping) or "name" not in mapping:
            raise RecipeError(f"{where.line()}: a file needs a name")
        if "condition" in mapping and not self.condition(mapping["condition"], where.child("condition")):
            return
        name = self.render_str(str(mapping["name"]), where.child("name"))
        if name in self.files:
            raise RecipeError(f"{where.line()}: file {name!r} declared twice")
        r = {
            k: self.render(mapping[k], where.child(k))
            for k in ("filename", "url", "contents")
            if mapping.get(k) is not None
        }
        sha = mapping.get("sha256") or mapping.get("checksum")
        url = _http_url(str(r["url"]), f"file {name!r}: url", where.child("url")) if "url" in r else None
        guest = name
        if url:
            base = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
            if base not in ("", ".", ".."):
                guest = base
        path = None
        if "filename" in r:
            src = self.inside(str(r["filename"]), f"file {name!r}: filename", where.child("filename"))
            if not os.path.lexists(src):
                raise RecipeError(f"{where.line()}: file {name!r}: {self.dir / str(r['filename'])} does not exist")
            self.contained(str(r["filename"]), f"file {name!r}: filename", where.child("filename"))
            path = str(src)
        if url is None and path is None and "contents" not in r:
            raise RecipeError(f"{where.line()}: file {name!r} has no url, filename or contents")
        st.check_line(f"file {name}", guest, forbid='"\\/', spaces=False) if guest else None
        self.files[name] = st.File(
            name=name,
            guest_filename=guest,
            url=url,
            path=path,
            contents=str(r["contents"]) if "contents" in r else None,
            sha256=str(sha) if sha else None,
            executable=bool(mapping.get("executable", False)),
        )
        self.ctx.file_guest[name] = guest
        self.ctx.file_source[name] = url or path or name

    def default_steps(self, add_default: bool, add_tzdata: bool, fix_locale_def: bool) -> None:
        """neurocontainers' base layer, before the recipe's directives."""
        self.steps.append(st.User("root"))
        if add_default:
            template = dict(default_template(self.registry))
            if fix_locale_def:
                source = dict(template["source"])
                lines = source["instructions"].split("\n")
                source["instructions"] = "\n".join(ln for ln in lines if "localedef" not in ln)
                template["source"] = source
            key = "_default" + ("#no-localedef" if fix_locale_def else "")
            self.steps.append(st.Template(name="_default", method="source", args=(), key=key, template=template))
        self.steps.append(st.Run("printf '#!/bin/bash\\nls -la' > /usr/bin/ll"))
        self.steps.append(st.Run("chmod +x /usr/bin/ll"))
        self.steps.append(st.Run("mkdir -p " + " ".join(MOUNT_POINTS)))
        if self.pm == "apt" and add_tzdata:
            self.steps.append(st.Env({"DEBIAN_FRONTEND": "noninteractive"}))
            self.steps.append(st.Env({"TZ": "UTC"}))
            self.steps.append(st.Install(("tzdata",)))
            self.steps.append(st.Run("ln -snf /usr/share/zoneinfo/UTC /etc/localtime && echo UTC > /etc/timezone"))

    # ---- directives
    def directive(self, d: Any, where: _Where, scoped: Mapping[str, Any] | None = None) -> None:
        if not isinstance(d, Mapping):
            raise RecipeError(f"{where.line()}: a directive must be a mapping, got {type(d).__name__}")
        if "condition" in d and not self.condition(d["condition"], where.child("condition")):
            return
        kinds = [k for k in d if k in DIRECTIVES]
        unknown = [k for k in d if k not in DIRECTIVES and k not in ("condition", "with")]
        if not kinds:
            bad = unknown[0] if unknown else next(iter(d), "")
            raise RecipeError(f"{where.line()}: unknown directive {bad!r} (known: {', '.join(DIRECTIVES)})")
        kind = kinds[0]
        saved = dict(self.ctx.values) if scoped else None
        if scoped:
            self.ctx.values.update(scoped)
        try:
            getattr(self, f"d_{kind}")(d, d[kind], where.child(kind))
        finally:
            if saved is not None:
                self.ctx.values = saved

    def d_install(self, d, value, where):
        value = self.render(value, where)
        if isinstance(value, str):
            pkgs = shlex.split(value)
        elif isinstance(value, list):
            pkgs = [str(v) for v in value if str(v)]
        else:
            raise RecipeError(f"{where.line()}: install must be a string or a list")
        self.steps.append(self.make(where, st.Install, tuple(pkgs)))

    def d_run(self, d, value, where):
        used: list[tuple[str, str]] = []
        cache_id: list[str] = []

        def run_key() -> str:
            # neurocontainers' cache id: the directive's YAML, hashed — the suite/build
            # stage stages files under the same name.
            if not cache_id:
                import yaml

                cache_id.append("h" + hashlib.sha256(yaml.dump(st.thaw(d)).encode("utf-8")).hexdigest()[:8])
            return cache_id[0]

        self.ctx.used, self.ctx.run_key = used, run_key
        try:
            rendered = self.render(value, where)
        finally:
            self.ctx.used, self.ctx.run_key = None, None
        if isinstance(rendered, str):
            rendered = [rendered]
        elif not isinstance(rendered, list):
            raise RecipeError(f"{where.line()}: run must be a string or a list")
        commands = [str(c) for c in rendered if c is not None and str(c) != ""]
        if not commands:
            raise RecipeError(f"{where.line()}: empty run")
        mounts = ()
        if used:
            files = tuple(dict.fromkeys(used))
            mounts = (st.CacheMount(cache_id=cache_id[0], files=files),)
        # neurocontainers joins a list with `&&` continuations, after one leading space.
        self.steps.append(self.make(where, st.Run, " " + " \\\n && ".join(commands), mounts=mounts))

    def d_workdir(self, d, value, where):
        self.steps.append(self.make(where, st.Workdir, str(self.render(value, where))))

    def d_user(self, d, value, where):
        self.steps.append(self.make(where, st.User, str(self.render(value, where))))

    def d_entrypoint(self, d, value, where):
        self.steps.append(self.make(where, st.Entrypoint, (str(self.render(value, where)),)))

    def d_environment(self, d, value, where):
        env = self.render(value, where)
        if not isinstance(env, Mapping):
            raise RecipeError(f"{where.line()}: environment must be a mapping")
        for k, v in env.items():  # one ENV per variable, as neurocontainers writes them
            self.steps.append(self.make(where.child(k), st.Env, {str(k): str(v)}))

    def d_copy(self, d, value, where):
        value = self.render(value, where)
        parts = (
            shlex.split(value)
            if isinstance(value, str)
            else [str(v) for v in value]
            if isinstance(value, list)
            else None
        )
        if not parts or len(parts) < 2:
            raise RecipeError(f"{where.line()}: copy needs a source and a destination")
        srcs = []
        for src in parts[:-1]:
            if src in self.files:
                guest = self.files[src].guest_filename
                self.context_files.append((guest, src))
                srcs.append(guest)
            else:
                self.check_context_path(src, where)
                self.context_files.append((src, None))
                srcs.append(src)
        self.steps.append(self.make(where, st.Copy, tuple(srcs), parts[-1]))

    def inside(self, src: str, what: str, where: _Where) -> Path:
        """`src` resolved, symlinks included, inside the recipe directory.

        A recipe is untrusted: an absolute path, a `..` or a symlink out of the
        directory would stage a host file (say /etc/shadow) into the image.
        """
        p = paths.resolve_inside(self.dir, src)
        if p is None:
            raise RecipeError(f"{where.line()}: {what} {src!r} is outside the recipe directory")
        return p

    def contained(self, src: str, what: str, where: _Where, *, directory_ok: bool = False) -> None:
        """`src` opens through the contained reader context.py copies with (paths.copy_inside):
        a regular file (or directory), never a FIFO or device, never through a link out."""
        try:
            fd, _ = paths.open_inside(self.dir, src, shown=f"{what} {src!r}", directory_ok=directory_ok)
        except paths.UnsafePath as exc:
            raise RecipeError(f"{where.line()}: {exc.message}") from None
        os.close(fd)

    def check_context_path(self, src: str, where: _Where) -> None:
        p = self.inside(src, "copy source", where)
        if not os.path.lexists(p):
            raise RecipeError(f"{where.line()}: copy source {src!r} does not exist in {self.dir}")
        self.contained(src, "copy source", where, directory_ok=True)

    def d_variables(self, d, value, where):
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where.line()}: variables must be a mapping")
        for k, v in value.items():
            self.ctx.values[str(k)] = self.render(v, where.child(k))

    def d_group(self, d, value, where):
        if not isinstance(value, list):
            raise RecipeError(f"{where.line()}: group must be a list of directives")
        with_values = {str(k): self.render(v, where.child(k)) for k, v in (d.get("with") or {}).items()}
        for i, child in enumerate(value):
            self.directive(child, where.child(i), with_values)

    def d_include(self, d, value, where):
        name = str(self.render(value, where))
        root = repository_root(self.dir)
        if root is None:
            raise RecipeError(f"{where.line()}: include {name!r}: no repository root (a parent directory with macros/)")
        target = (root / name).resolve()
        try:
            text = paths.read_text_inside(root, name, shown=name)
        except paths.UnsafePath as exc:
            raise RecipeError(f"{where.line()}: include {name!r} not found under {root} ({exc.message})") from None
        data = parse_yaml(text, target)
        inc = _Where(target, (), text)
        if not isinstance(data, Mapping) or not isinstance(data.get("directives", []), list):
            raise RecipeError(f"{target}: an include file is a mapping with a directives: list")
        for i, child in enumerate(data.get("directives") or []):
            self.directive(child, inc.child("directives", i))

    def d_file(self, d, value, where):
        self.register_file(value, where)

    def d_deploy(self, d, value, where):
        deploy = self.render(value, where)
        if not isinstance(deploy, Mapping):
            raise RecipeError(f"{where.line()}: deploy must be a mapping (bins:, path:)")
        for key, into in (("bins", self.deploy_bins), ("path", self.deploy_path)):
            if key in deploy:
                if not isinstance(deploy[key], list):
                    raise RecipeError(f"{where.line()}: deploy {key} must be a list")
                into.extend(str(v) for v in deploy[key])

    def d_template(self, d, value, where):
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where.line()}: template must be a mapping with a name")
        name = str(self.render(value.get("name", ""), where.child("name")))
        params = {str(k): str(self.render(v, where.child(k))) for k, v in value.items() if k != "name"}
        try:
            self.steps.extend(self.templates.steps(name, params, self.arch))
        except NdgenError as exc:
            raise RecipeError(f"{where.line()}: {exc.message}") from None

    def d_boutique(self, d, value, where):
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where.line()}: boutique must be a mapping (a Boutique descriptor)")
        fname = f"{value.get('name', 'tool')}.json"
        st.check_line("boutique name", fname, forbid='"\\/', spaces=False)
        self.files.setdefault(
            fname, st.File(name=fname, guest_filename=fname, contents=json.dumps(st.thaw(value), indent=2))
        )
        self.context_files.append((fname, fname))
        self.steps.append(st.Run("mkdir -p /boutique"))
        self.steps.append(st.Copy((fname,), f"/boutique/{fname}"))

    def d_test(self, d, value, where):
        return  # tests run with `ndgen test` (fulltest.yaml), not while building


def _help(readme: str) -> str:
    # A README line starting with `%` would open a Singularity section: indent it.
    return "\n".join((" " + ln) if ln.lstrip().startswith("%") else ln for ln in readme.rstrip().splitlines())
