"""A target's fingerprint: sha256 over everything that changes its image (docs/fleet.md).

The parts, each a hex digest or an id, kept separately so a plan can say what changed:

- `recipe`: every file of the recipe directory (relative path, kind, bytes; a link's
  target text), read through the contained reader — build.yaml, fulltest.yaml, the
  files it stages.  neurocontainers' own fingerprint is this one alone.
- `render`: the Dockerfile the recipe renders to for this architecture, which is where
  the templates it names (registry, neurodocker or `--templates`), its `include:`
  macros and ndgen's defaults show up; a template edit that renders the same text
  builds the same image and changes nothing.
- `base`: the base image's registry digest when it was pulled (the same on every
  runner), else its id on the engine (`ndgen base`'s debootstrapped images), or
  `absent:REF` when it is not there (the build then fails at its stage).
- `renderer`: ndgen's version plus a digest of the render/ package's source: the
  version alone stays 0.1.0 between releases while the render code changes.
- `arch`: the architecture itself.
- `variant`: `full`, or `minified` with `--minify` (another image from the same recipe).
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from neurodocker_nd import __version__
from neurodocker_nd.core import paths
from neurodocker_nd.errors import NdgenError

PARTS = ("recipe", "render", "base", "renderer", "arch", "variant")
MAX_FILES = 20000  # in one recipe directory
MAX_BYTES = paths.MAX_CONTEXT_BYTES


def combine(parts: Mapping[str, str]) -> str:
    """The fingerprint: sha256 over the named parts, in PARTS order."""
    digest = hashlib.sha256()
    for name in PARTS:
        digest.update(f"{name}={parts[name]}\n".encode())
    return digest.hexdigest()


def encode_parts(parts: Mapping[str, str]) -> str:
    """The parts as one label value: `recipe=…,render=…` (what a later plan compares)."""
    return ",".join(f"{name}={parts[name]}" for name in PARTS)


def decode_parts(value: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in value.split(",")[: len(PARTS) + 1] if "=" in item)
    return {k: v for k, v in pairs if k in PARTS}


def changed(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """The parts that differ (all of them when the old label is missing or unreadable)."""
    return [name for name in PARTS if old.get(name) != new.get(name)]


def tree_digest(root: Path) -> str:
    """sha256 over a recipe directory: every entry's relative path and kind, a file's bytes, a
    link's target text (never followed).  Bounded in entries and bytes: the tree is untrusted."""
    digest = hashlib.sha256()
    count = total = 0
    for top, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            count += 1
            if count > MAX_FILES:
                raise NdgenError(f"{root}: more than {MAX_FILES} files")
            full = os.path.join(top, name)
            rel = os.path.relpath(full, root)
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                digest.update(f"L\0{rel}\0{os.readlink(full)}\0".encode())
            elif stat.S_ISREG(info.st_mode):
                data = paths.read_inside(root, rel, limit=MAX_BYTES - total, shown=full)
                total += len(data)
                mode = "x" if info.st_mode & 0o111 else "-"
                digest.update(f"F\0{rel}\0{mode}\0{len(data)}\0".encode() + data)
            else:
                digest.update(f"O\0{rel}\0{paths.kind(info.st_mode)}\0".encode())
    return digest.hexdigest()


@functools.cache
def renderer_version() -> str:
    """`VERSION+sha12` over the render package's Python source, read once per process."""
    from neurodocker_nd import render

    root = Path(render.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"
