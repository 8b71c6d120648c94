"""`ndgen modules`: an image's deploy commands → wrappers + an Lmod/Tcl modulefile, or an shpc entry.

Layout of the output directory DIR (`module use DIR`, then `module load NAME/VERSION`):

    DIR/NAME/VERSION.lua          --format lmod
    DIR/NAME/VERSION              --format tcl (starts with #%Module1.0)
    DIR/NAME/VERSION.bin/CMD      one wrapper per command (lmod, tcl)
    DIR/NAME/container.yaml       --format shpc
    DIR/.ndgen-modules            the files ndgen wrote here (JSON), so a later run may add modules

DIR may be new, empty, or a directory this command wrote before: its modules
stay, the one being written replaces its namesake. Any other file in it is
refused (`ndgen: error:`, nothing written). The new tree is staged beside DIR
and renamed into place whole (`outfile.new_directory(replace=True)`).

The source is an image on the engine (never pulled), or a recipe directory:
RECIPE_DIR stands for the image `ndgen build RECIPE_DIR -t NAME:VERSION`
made, NAME and VERSION being its build.yaml's; that image must exist.
NAME and VERSION of an image are its repository's last component and its tag.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import attrs

from neurodocker_nd.core import engine, outfile
from neurodocker_nd.deliver import modulefiles, shpc, wrappers
from neurodocker_nd.deliver.commands import Deploy, read_deploy
from neurodocker_nd.errors import NdgenError, clip

FORMATS = ("lmod", "tcl", "shpc")
MANIFEST = ".ndgen-modules"
MAX_ENTRIES = 100_000  # files and directories looked at in an existing DIR
MAX_MANAGED_BYTES = 64 * 1024 * 1024  # what a previous run wrote and this one copies over
_PART = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]{0,127}")  # a module name or version: one path component


@attrs.frozen
class Request:
    source: str  # IMAGE or RECIPE_DIR
    fmt: str
    out: Path
    tech: str | None = None
    sif: str | None = None  # apptainer/singularity: the SIF file's path on the cluster
    prefix: str | None = None  # where DIR is on the cluster (default: DIR's absolute path here)
    shpc_fields: Mapping[str, str] = attrs.field(factory=dict)  # maintainer/description/url given by the user


@attrs.frozen
class Written:
    module: str  # NAME/VERSION
    files: tuple[str, ...]  # relative to DIR
    commands: tuple[str, ...]
    notes: tuple[str, ...] = ()


def make_modules(req: Request) -> Written:
    _check_options(req)
    image, from_recipe = _image_of(req.source)
    name, version = _name_version(image)
    owned = _owned_files(req.out)  # before the engine is asked anything: a wrong DIR is cheap to report
    deploy = read_deploy(engine.connect(), image)
    notes: list[str] = []
    if req.fmt == "shpc":
        repo, _ = engine.split_ref(image)
        data, note = shpc.entry(deploy, repo, version, {**from_recipe, **req.shpc_fields})
        files = {f"{name}/container.yaml": (shpc.text(data), 0o644)}
        notes += [note] if note else []
    else:
        files = _module_files(req, deploy, name, version)
    mine = _module_paths(req.fmt, name, version)
    kept = {rel for rel in owned if not _is_module_file(rel, mine)}
    _write_tree(req.out, kept, files)
    return Written(f"{name}/{version}", tuple(sorted(files)), deploy.commands, tuple(notes))


def _check_options(req: Request) -> None:
    if req.fmt not in FORMATS:
        raise NdgenError(f"--format {clip(req.fmt)}: expected one of {', '.join(FORMATS)}")
    if req.fmt == "shpc":
        for given, flag in ((req.tech, "--tech"), (req.sif, "--sif"), (req.prefix, "--prefix")):
            if given is not None:
                raise NdgenError(f"{flag} does not apply to --format shpc (shpc picks the backend at install)")
        return
    if req.shpc_fields:
        raise NdgenError(f"--{sorted(req.shpc_fields)[0]} applies only to --format shpc")
    if req.tech not in wrappers.TECHS:
        raise NdgenError(f"--format {req.fmt} needs --tech, one of {', '.join(wrappers.TECHS)}")
    if req.tech in wrappers.SIF_TECHS and not req.sif:
        raise NdgenError(f"--tech {req.tech} needs --sif PATH: where the SIF file is on the cluster")
    if req.tech not in wrappers.SIF_TECHS and req.sif is not None:
        raise NdgenError(f"--sif applies to --tech apptainer|singularity, not {req.tech}")
    for given, flag in ((req.sif, "--sif"), (req.prefix, "--prefix")):
        if given is not None and (not given.startswith("/") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in given)):
            raise NdgenError(f"{flag} {clip(repr(given))}: expected an absolute path on one line")


def _image_of(source: str) -> tuple[str, dict[str, str]]:
    """The image reference — SOURCE itself, or the NAME:VERSION a recipe directory's build tags —
    and what the recipe says of shpc's text fields."""
    if not os.path.isdir(source):
        if not engine.is_image_name(source, host=True):
            raise NdgenError(f"{clip(source)}: neither a recipe directory nor an image name")
        return source, {}
    from neurodocker_nd.render.recipe import load_recipe

    plan = load_recipe(source)
    ref = f"{plan.name}:{plan.version}"
    if not engine.is_image_name(ref, host=False):
        raise NdgenError(f"{clip(source)}: name:version {clip(ref)} is not an image name")
    return ref, _recipe_fields(plan.metadata)


def _recipe_fields(metadata: Mapping[str, object]) -> dict[str, str]:
    """shpc's description and url from a build.yaml's structured_readme (neurocontainers' keys
    `description` and `documentation`, as the recipe loader reads them for the README); text that
    still holds Jinja is the recipe's template, not its value, and is left to the labels."""
    readme = metadata.get("structured_readme")
    fields: dict[str, str] = {}
    if isinstance(readme, Mapping):
        for key, field in (("description", "description"), ("documentation", "url")):
            value = readme.get(key)
            if isinstance(value, str) and value.strip() and "{{" not in value and "{%" not in value:
                fields[field] = value.strip()
    if "url" in fields and not fields["url"].startswith(("https://", "http://")):
        del fields["url"]  # documentation may be prose; shpc's url is a link
    return fields


def _name_version(image: str) -> tuple[str, str]:
    repo, tag = engine.split_ref(image)
    name = repo.rsplit("/", 1)[-1]
    for part, what in ((name, "name"), (tag, "version")):
        if not _PART.fullmatch(part):
            raise NdgenError(f"image {clip(image)}: module {what} {clip(repr(part))} is not one path component")
    return name, tag


def _module_paths(fmt: str, name: str, version: str) -> tuple[str, ...]:
    """The paths (a directory ends in /) that belong to module NAME/VERSION in format `fmt`."""
    if fmt == "shpc":
        return (f"{name}/container.yaml",)
    return (f"{name}/{version}.lua" if fmt == "lmod" else f"{name}/{version}", f"{name}/{version}.bin/")


def _is_module_file(rel: str, mine: Iterable[str]) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in mine)


def _module_files(req: Request, deploy: Deploy, name: str, version: str) -> dict[str, tuple[str, int]]:
    assert req.tech is not None
    prefix = req.prefix or str(Path(os.path.abspath(req.out)))
    bin_rel = f"{name}/{version}.bin"
    container = req.sif if req.tech in wrappers.SIF_TECHS else deploy.image
    assert container is not None
    # BASEPATH is the container's path (transparent-singularity); a Docker image's files are
    # reachable only inside it, where its root is /: BASEPATH is empty there.
    basepath = container if req.tech in wrappers.SIF_TECHS else ""
    text = modulefiles.ModuleText(
        name=name,
        version=version,
        image=deploy.image,
        tech=req.tech,
        help=deploy.readme.rstrip("\n") or f"{name} {version}: the container {deploy.image}",
        commands=deploy.commands,
        bin_dir=f"{prefix.rstrip('/')}/{bin_rel}",
        env=modulefiles.with_basepath(deploy.env, basepath),
    )
    files: dict[str, tuple[str, int]] = {
        f"{bin_rel}/{c}": (wrappers.wrapper(req.tech, container, c), 0o755) for c in deploy.commands
    }
    if req.fmt == "lmod":
        files[f"{name}/{version}.lua"] = (modulefiles.lua(text, f"image {deploy.image}: /README.md"), 0o644)
    else:
        files[f"{name}/{version}"] = (modulefiles.tcl(text), 0o644)
    return files


# --------------------------------------------------------------------------- the output directory


def _owned_files(out: Path) -> set[str]:
    """The files an earlier run wrote in `out` (empty for a new or empty directory).

    Any other entry — a file not in the manifest, a link, a device — is another program's, and
    `out` is refused whole rather than mixed with it.
    """
    if not out.exists():
        return set()
    if not out.is_dir():
        raise NdgenError(f"-o {out}: exists and is not a directory")
    manifest = out / MANIFEST
    listed = _read_manifest(manifest) if manifest.exists() else set()
    dirs = {str(PurePosixPath(rel).parents[i]) for rel in listed for i in range(len(PurePosixPath(rel).parts) - 1)}
    seen, present = 0, set()
    for root, subdirs, names in os.walk(out):
        for entry in [*subdirs, *names]:
            seen += 1
            if seen > MAX_ENTRIES:
                raise NdgenError(f"-o {out}: more than {MAX_ENTRIES} entries; give a new directory")
            path = Path(root) / entry
            rel = path.relative_to(out).as_posix()
            mode = os.lstat(path).st_mode
            ours = (stat.S_ISDIR(mode) and rel in dirs) or (stat.S_ISREG(mode) and (rel in listed or rel == MANIFEST))
            if not ours:
                raise NdgenError(
                    f"-o {out}: holds {clip(rel)}, which ndgen modules did not write; give a new or empty directory"
                )
            present.add(rel)
    return listed & present  # a module file deleted by hand since is no longer DIR's


def _read_manifest(path: Path) -> set[str]:
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as handle:
            data = json.loads(handle.read(4 * 1024 * 1024 + 1))
    except (OSError, ValueError) as exc:
        raise NdgenError(f"{path}: not a manifest ndgen modules wrote ({exc})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) and _safe_rel(f) for f in files):
        raise NdgenError(f"{path}: not a manifest ndgen modules wrote")
    return set(files)


def _safe_rel(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and p.as_posix() == rel and rel != MANIFEST


def _write_tree(out: Path, kept: set[str], files: Mapping[str, tuple[str, int]]) -> None:
    """DIR = the kept files of earlier runs + `files` + the manifest, all at once."""
    copied = 0
    with outfile.new_directory(out, replace=True) as stage:
        for rel in sorted(kept):
            with open(out / rel, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as handle:
                mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
                data = handle.read(MAX_MANAGED_BYTES + 1 - copied)
            copied += len(data)
            if copied > MAX_MANAGED_BYTES:
                raise NdgenError(f"-o {out}: its modules hold more than {MAX_MANAGED_BYTES} bytes")
            _put(stage / rel, data, mode)
        for rel, (text, mode) in files.items():
            _put(stage / rel, text.encode(), mode)
        manifest = {"files": sorted(kept | set(files))}
        _put(stage / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode(), 0o644)


def _put(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode & ~outfile.umask())
