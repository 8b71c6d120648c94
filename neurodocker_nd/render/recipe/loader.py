"""The recipe loader: build.yaml's phases and one handler per directive, each adding plain steps.

A recipe is untrusted: every file of it is read through the contained reader
(core.paths), every path it names must stay inside its directory, and every
string is evaluated in the bounded sandbox (recipe.jinja).  What a recipe means
follows neurocontainers' own builder, so the Dockerfile is equivalent to theirs
instruction by instruction (the deliberate differences are listed in docs/recipes.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from neurodocker_nd.core import paths
from neurodocker_nd.core.arch import canonical, normalise
from neurodocker_nd.core.yamlfile import parse_yaml
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render import steps as st
from neurodocker_nd.render.defaults import ENTRYPOINT, default_template
from neurodocker_nd.render.recipe import jinja
from neurodocker_nd.render.recipe.jinja import Context, RecipeError, Where
from neurodocker_nd.render.recipe.templates import TemplateSource
from neurodocker_nd.render.target import Target, check_image, resolve_target

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

_S = TypeVar("_S", bound=st.Step)


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


def _http_url(url: str, what: str, where: Where) -> str:
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


class Loader:
    """One build.yaml → one Plan.  `load()` runs the phases in order; the directive
    handlers (`d_<directive>`) append to `steps`, `files` and `context_files`."""

    def __init__(
        self,
        path: Path,
        arch: str,
        options: dict[str, str],
        templates: Sequence[str | Path] = (),
        registry: Registry | None = None,
        parallel_jobs: int | None = None,
    ) -> None:
        self.path = path
        self.dir = path.parent.resolve()
        self.arch = normalise(arch)  # either spelling; anything else is one error line
        self.option_args = options
        self.templates = TemplateSource([Path(t) for t in templates], registry)
        self.registry = self.templates.registry
        self.parallel_jobs = parallel_jobs or os.cpu_count() or 1
        self.text = ""  # build.yaml as read (_read): the Plan keeps it, line numbers come from it
        self.ctx = Context(arch=self.arch, parallel_jobs=self.parallel_jobs)  # named by _context
        self.steps: list[st.Step] = []
        self.files: dict[str, st.File] = {}
        self.context_files: list[tuple[str, str | None]] = []
        self.deploy_bins: list[str] = []
        self.deploy_path: list[str] = []

    # ---- Jinja, against this recipe's context
    def render_str(self, text: str, where: Where) -> str:
        return jinja.render_str(self.ctx, text, where)

    def render(self, value: Any, where: Where) -> Any:
        return jinja.render(self.ctx, value, where)

    def condition(self, cond: Any, where: Where) -> bool:
        return jinja.condition(self.ctx, cond, where)

    # ---- the phases of load()
    def load(self) -> st.Plan:
        data, top = self._read()
        self._context(data, top)
        readme = self.readme(data, top)
        target, add_default = self._build_section(data["build"], top)
        directives = data["build"].get("directives") or []
        if not isinstance(directives, list):
            raise RecipeError(f"{top.child('build', 'directives').line()}: directives must be a list")
        for i, d in enumerate(directives):
            self.directive(d, top.child("build", "directives", i))
        self._closing_steps(data, top, add_default)
        return self._plan(data, target, readme)

    def _read(self) -> tuple[Mapping[str, Any], Where]:
        """build.yaml through the contained reader: a mapping with name, version and build, for our arch."""
        self.text = read_recipe_file(self.dir, self.path.name, self.path)
        data = parse_yaml(self.text, self.path)
        top = Where(self.path, (), self.text)
        if not isinstance(data, Mapping):
            raise RecipeError(f"{self.path}: a recipe must be a mapping")
        for key in ("name", "version", "build"):
            if data.get(key) is None:
                raise RecipeError(f"{self.path}: missing required key {key!r}")
        if not isinstance(data["build"], Mapping):
            raise RecipeError(f"{top.child('build').line()}: build must be a mapping")
        archs = [canonical(str(a)) for a in (data.get("architectures") or ["x86_64"])]
        if self.arch not in archs:
            raise RecipeError(
                f"{self.path}: {data['name']} does not support {self.arch} (architectures: {', '.join(archs)})"
            )
        return data, top

    def _context(self, data: Mapping[str, Any], top: Where) -> None:
        """Name, version and options into the Jinja context, then `variables:` and `files:`."""
        name, version = str(data["name"]), str(data["version"])
        opts, suffix = self._options(data, top, name)
        # neurocontainers names the aarch64 build of a recipe NAME_arm64 (variant "arm64").
        variant = "arm64" if self.arch == "aarch64" else ""
        self.ctx.name = f"{name}_{variant}" if variant else name
        self.ctx.version = version + suffix
        self.ctx.original_version = version
        self.ctx.variant = variant
        self.ctx.options = SimpleNamespace(**opts)
        for key, value in (data.get("variables") or {}).items():
            self.ctx.values[str(key)] = self.render(value, top.child("variables", key))
        for i, mapping in enumerate(data.get("files") or []):
            self.register_file(mapping, top.child("files", i))

    def _options(self, data: Mapping[str, Any], top: Where, name: str) -> tuple[dict[str, bool], str]:
        """The declared options with --option applied, and the version suffix the enabled ones add."""
        declared = data.get("options") or {}
        if not isinstance(declared, Mapping):
            raise RecipeError(f"{top.child('options').line()}: options must be a mapping")
        opts = {str(k): bool((v or {}).get("default", False)) for k, v in declared.items() if isinstance(v, Mapping)}
        for k, v in self.option_args.items():
            if k not in opts:
                raise RecipeError(f"--option {k}: {name} has no such option (options: {', '.join(opts) or 'none'})")
            opts[k] = str(v).strip().lower() in _TRUE
        suffix = "".join(str((declared[k] or {}).get("version_suffix") or "") for k in declared if opts.get(str(k)))
        return opts, suffix

    def _build_section(self, build: Mapping[str, Any], top: Where) -> tuple[Target, bool]:
        """`build:` → the Target (base image, package manager) and neurocontainers' base layer.
        Returns the Target and whether the default template was added."""
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
            check_image(base)
        except NdgenError as exc:
            raise RecipeError(f"{top.child('build', 'base-image').line()}: {exc.message}") from None
        pm = str(self.render(build.get("pkg-manager", "apt"), top.child("build", "pkg-manager")))
        if pm not in ("apt", "yum"):
            raise RecipeError(f"{top.child('build', 'pkg-manager').line()}: pkg-manager {pm!r}: choose apt or yum")
        add_default = bool(build.get("add-default-template", True))
        add_tzdata = bool(build.get("add-tzdata", add_default)) and pm == "apt"
        self.default_steps(add_default, add_tzdata, bool(build.get("fix-locale-def", False)))
        return resolve_target(None, base, pm), add_default

    def _closing_steps(self, data: Mapping[str, Any], top: Where, add_default: bool) -> None:
        """After the directives: deploy (a directive's, else the top-level one), the README and
        build.yaml copies, and neurocontainers' entrypoint unless the recipe set one."""
        top_deploy = self.render(data.get("deploy") or {}, top.child("deploy"))
        if not self.deploy_bins and isinstance(top_deploy, Mapping) and isinstance(top_deploy.get("bins"), list):
            self.deploy_bins = [str(b) for b in top_deploy["bins"]]
        if not self.deploy_path and isinstance(top_deploy, Mapping) and isinstance(top_deploy.get("path"), list):
            self.deploy_path = [str(p) for p in top_deploy["path"]]
        self.steps.append(st.Deploy(bins=tuple(self.deploy_bins), path=tuple(self.deploy_path)))
        self.steps.append(st.Copy(("README.md",), "/README.md"))
        self.steps.append(st.Copy(("build.yaml",), "/build.yaml"))
        if add_default and not any(isinstance(s, st.Entrypoint) for s in self.steps):
            self.steps.append(st.Entrypoint((ENTRYPOINT,)))

    def _plan(self, data: Mapping[str, Any], target: Target, readme: str) -> st.Plan:
        return st.Plan(
            target=target,
            steps=tuple(self.steps),
            files=tuple(self.files.values()),
            context_files=tuple(dict.fromkeys(self.context_files)),
            readme=readme,
            name=self.ctx.name,
            version=self.ctx.version,
            arch=self.arch,
            recipe_dir=str(self.dir),
            metadata=dict(data),
            reproduce=self._reproduce(),
            help_text=_help(readme),
            recipe_text=self.text,
        )

    def _reproduce(self) -> str:
        """The `ndgen recipe …` command line that renders this Plan again."""
        reproduce = f"ndgen recipe {shlex.quote(str(self.path.parent))}"
        if self.arch != "x86_64":
            reproduce += f" --arch {self.arch}"
        for k, v in sorted(self.option_args.items()):
            reproduce += f" --option {shlex.quote(f'{k}={v}')}"
        for d in self.templates.dirs:
            reproduce += f" --templates {shlex.quote(str(d))}"
        return reproduce

    def make(self, where: Where, cls: Callable[..., _S], *args: Any, **kwds: Any) -> _S:
        """Construct a step; a StepError names the directive's file:line."""
        try:
            return cls(*args, **kwds)
        except NdgenError as exc:
            raise RecipeError(f"{where.line()}: {exc.message}") from None

    # ---- pieces
    def readme(self, data: Mapping[str, Any], top: Where) -> str:
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

    def register_file(self, mapping: Any, where: Where) -> None:
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
        if add_tzdata:
            self.steps.append(st.Env({"DEBIAN_FRONTEND": "noninteractive"}))
            self.steps.append(st.Env({"TZ": "UTC"}))
            self.steps.append(st.Install(("tzdata",)))
            self.steps.append(st.Run("ln -snf /usr/share/zoneinfo/UTC /etc/localtime && echo UTC > /etc/timezone"))

    # ---- directives
    def directive(self, d: Any, where: Where, scoped: Mapping[str, Any] | None = None) -> None:
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

    def d_install(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        value = self.render(value, where)
        if isinstance(value, str):
            pkgs = shlex.split(value)
        elif isinstance(value, list):
            pkgs = [str(v) for v in value if str(v)]
        else:
            raise RecipeError(f"{where.line()}: install must be a string or a list")
        self.steps.append(self.make(where, st.Install, tuple(pkgs)))

    def d_run(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
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
        mounts: tuple[st.CacheMount, ...] = ()
        if used:
            files = tuple(dict.fromkeys(used))
            mounts = (st.CacheMount(cache_id=cache_id[0], files=files),)
        # neurocontainers joins a list with `&&` continuations, after one leading space.
        self.steps.append(self.make(where, st.Run, " " + " \\\n && ".join(commands), mounts=mounts))

    def d_workdir(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        self.steps.append(self.make(where, st.Workdir, str(self.render(value, where))))

    def d_user(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        self.steps.append(self.make(where, st.User, str(self.render(value, where))))

    def d_entrypoint(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        self.steps.append(self.make(where, st.Entrypoint, (str(self.render(value, where)),)))

    def d_environment(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        env = self.render(value, where)
        if not isinstance(env, Mapping):
            raise RecipeError(f"{where.line()}: environment must be a mapping")
        for k, v in env.items():  # one ENV per variable, as neurocontainers writes them
            self.steps.append(self.make(where.child(k), st.Env, {str(k): str(v)}))

    def d_copy(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
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

    def inside(self, src: str, what: str, where: Where) -> Path:
        """`src` resolved, symlinks included, inside the recipe directory.

        A recipe is untrusted: an absolute path, a `..` or a symlink out of the
        directory would stage a host file (say /etc/shadow) into the image.
        """
        p = paths.resolve_inside(self.dir, src)
        if p is None:
            raise RecipeError(f"{where.line()}: {what} {src!r} is outside the recipe directory")
        return p

    def contained(self, src: str, what: str, where: Where, *, directory_ok: bool = False) -> None:
        """`src` opens through the contained reader context.py copies with (paths.copy_inside):
        a regular file (or directory), never a FIFO or device, never through a link out."""
        try:
            fd, _ = paths.open_inside(self.dir, src, shown=f"{what} {src!r}", directory_ok=directory_ok)
        except paths.UnsafePath as exc:
            raise RecipeError(f"{where.line()}: {exc.message}") from None
        os.close(fd)

    def check_context_path(self, src: str, where: Where) -> None:
        p = self.inside(src, "copy source", where)
        if not os.path.lexists(p):
            raise RecipeError(f"{where.line()}: copy source {src!r} does not exist in {self.dir}")
        self.contained(src, "copy source", where, directory_ok=True)

    def d_variables(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where.line()}: variables must be a mapping")
        for k, v in value.items():
            self.ctx.values[str(k)] = self.render(v, where.child(k))

    def d_group(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        if not isinstance(value, list):
            raise RecipeError(f"{where.line()}: group must be a list of directives")
        with_values = {str(k): self.render(v, where.child(k)) for k, v in (d.get("with") or {}).items()}
        for i, child in enumerate(value):
            self.directive(child, where.child(i), with_values)

    def d_include(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
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
        inc = Where(target, (), text)
        if not isinstance(data, Mapping) or not isinstance(data.get("directives", []), list):
            raise RecipeError(f"{target}: an include file is a mapping with a directives: list")
        for i, child in enumerate(data.get("directives") or []):
            self.directive(child, inc.child("directives", i))

    def d_file(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        self.register_file(value, where)

    def d_deploy(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        deploy = self.render(value, where)
        if not isinstance(deploy, Mapping):
            raise RecipeError(f"{where.line()}: deploy must be a mapping (bins:, path:)")
        for key, into in (("bins", self.deploy_bins), ("path", self.deploy_path)):
            if key in deploy:
                if not isinstance(deploy[key], list):
                    raise RecipeError(f"{where.line()}: deploy {key} must be a list")
                into.extend(str(v) for v in deploy[key])

    def d_template(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where.line()}: template must be a mapping with a name")
        name = str(self.render(value.get("name", ""), where.child("name")))
        params = {str(k): str(self.render(v, where.child(k))) for k, v in value.items() if k != "name"}
        try:
            self.steps.extend(self.templates.steps(name, params, self.arch))
        except NdgenError as exc:
            raise RecipeError(f"{where.line()}: {exc.message}") from None

    def d_boutique(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
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

    def d_test(self, d: Mapping[str, Any], value: Any, where: Where) -> None:
        return  # tests run with `ndgen test` (fulltest.yaml), not while building


def _help(readme: str) -> str:
    # A README line starting with `%` would open a Singularity section: indent it.
    return "\n".join((" " + ln) if ln.lstrip().startswith("%") else ln for ln in readme.rstrip().splitlines())
