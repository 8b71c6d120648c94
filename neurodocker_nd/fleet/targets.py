"""A directory of recipes → targets: one recipe × one architecture of its `architectures:` list.

Only `name`, `version` and `architectures` are read here (through the recipe
tree's contained reader, capped); the whole recipe is parsed later, per target,
so one invalid build.yaml fails its own target at render and no other.  A recipe
whose build.yaml cannot even give those three keys becomes a target named after
its directory that fails at render with the loader's message.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Sequence
from pathlib import Path

import attrs

from neurodocker_nd.core import paths, yamlfile
from neurodocker_nd.core.arch import Arch, normalise
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.fleet.oci import TAG
from neurodocker_nd.render.recipe import ARCHES

_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
MAX_RECIPES = 5000  # neurocontainers has 244; a bound on an untrusted directory listing
# neurocontainers' builder knows aarch64 as linux/arm64 (builder/build.py, get_build_platform);
# the tag suffix of an aarch64 image is the issue's `_arm64` (see docs/fleet.md).
ARCH_SUFFIX = {"x86_64": "", "aarch64": "_arm64"}


@attrs.frozen
class Target:
    name: str
    version: str
    arch: Arch
    recipe_dir: Path
    problem: str | None = None  # why it cannot be planned: it fails at `problem_stage` without any work
    problem_stage: str = "render"

    @property
    def key(self) -> str:
        return f"{self.name}/{self.arch}"

    def identity(self) -> dict[str, str]:
        """What a plan's and a report's JSON say of the target itself."""
        return {"name": self.name, "version": self.version, "arch": self.arch}

    @property
    def tag(self) -> str:
        """The promoted tag: VERSION, with neurocontainers' suffix for aarch64."""
        return self.version + ARCH_SUFFIX[self.arch]


def find_targets(directory: Path, arches: Sequence[str] = (), only: Sequence[str] = ()) -> list[Target]:
    """Every target of the recipes under `directory` (`DIR/NAME/build.yaml`), sorted by name and arch.

    `arches`/`only` select; an architecture no recipe declares, or an `--only` name no
    recipe has, is an error (a typo would otherwise plan nothing and pass).
    """
    arches = [normalise(a) for a in arches]  # arm64/amd64 too, as everywhere; `mips` is one line
    recipes = _recipe_dirs(directory)
    targets = [t for recipe_dir in recipes for t in _recipe_targets(recipe_dir)]
    targets = _mark_duplicates(targets)
    declared = {t.arch for t in targets if t.problem is None}
    for arch in arches:
        if arch not in declared:
            raise NdgenError(f"--arch {arch}: no recipe in {directory} declares it in architectures:")
    names = {t.name for t in targets}
    for name in only:
        if name not in names:
            raise NdgenError(f"--only {name!r}: no recipe of that name in {directory}")
    return sorted(
        (t for t in targets if (not arches or t.arch in arches) and (not only or t.name in only)),
        key=lambda t: (t.name, t.arch, str(t.recipe_dir)),
    )


def _recipe_dirs(directory: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise NdgenError(f"{directory}: cannot list the recipes: {exc.strerror}") from None
    found = [
        Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and os.path.lexists(Path(e.path, "build.yaml"))
    ]
    if not found:
        raise NdgenError(f"{directory}: no recipes here (expected NAME/build.yaml directories)")
    if len(found) > MAX_RECIPES:
        raise NdgenError(f"{directory}: {len(found)} recipes, more than {MAX_RECIPES}")
    return found


def _recipe_targets(recipe_dir: Path) -> list[Target]:
    shown = str(recipe_dir / "build.yaml")
    try:
        data = yamlfile.parse_yaml(paths.read_text_inside(recipe_dir, "build.yaml", shown=shown), shown)
    except NdgenError as exc:
        return [Target(_shown(recipe_dir.name), "", "x86_64", recipe_dir, exc.message)]
    if not isinstance(data, dict) or not data.get("name") or data.get("version") in (None, ""):
        return [Target(_shown(recipe_dir.name), "", "x86_64", recipe_dir, f"{shown}: needs name: and version:")]
    name, version = str(data["name"]), str(data["version"])
    arches = data.get("architectures") or ["x86_64"]
    if not isinstance(arches, list) or any(a not in ARCHES for a in arches):
        bad = f"{shown}: architectures must list {' or '.join(ARCHES)}"
        return [Target(_shown(name), _shown(version), "x86_64", recipe_dir, bad)]
    problem: str | None = None
    if not _NAME.match(name):  # it becomes a repository, a local tag and a progress line
        problem = f"{shown}: name {name[:80]!r} is not an image name (lower case, digits, . _ -)"
    elif not TAG.match(version + "_arm64"):
        problem = f"{shown}: version {version[:80]!r} is not a valid image tag"
    if problem is not None:
        name, version = _shown(name), _shown(version)
    return [Target(name, version, normalise(a), recipe_dir, problem) for a in dict.fromkeys(arches)]


def _shown(text: str) -> str:
    """A name fit for a progress line and a report: a bad one (escapes, newlines) as its repr, cut."""
    return text if _NAME.match(text) or TAG.match(text) else repr(text)[:80]


def _mark_duplicates(targets: list[Target]) -> list[Target]:
    """Two recipe directories with the same name: both fail (which one is meant is not ours to guess)."""
    dirs: dict[str, set[Path]] = collections.defaultdict(set)
    for t in targets:
        dirs[t.name].add(t.recipe_dir)
    out = []
    for t in targets:
        if len(dirs[t.name]) > 1 and t.problem is None:
            where = " and ".join(str(d) for d in sorted(dirs[t.name]))
            t = attrs.evolve(t, problem=f"two recipes are named {t.name}: {where}", problem_stage="plan")
        out.append(t)
    return out
