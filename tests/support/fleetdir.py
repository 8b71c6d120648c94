"""A fleet directory for `ndgen fleet` tests, copied from tests/recipes (Debian-packaged, tiny).

- ndtool (x86_64) and ndcount (ndtool renamed: its apt layer is BuildKit's cache hit);
- ndgen-demo (x86_64 and aarch64: its aarch64 target appears in plans only);
- broken: valid YAML, an unknown directive, so its target fails at render.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from support import TESTS

RECIPES = TESTS / "recipes"
BROKEN = """name: broken
version: "1.0"
architectures: [x86_64]
readme: hi
build:
  kind: neurodocker
  base-image: debian:bookworm
  pkg-manager: apt
  directives:
    - no-such-directive: true
"""


def renamed(root: Path, source: str, name: str, version: str | None = None) -> Path:
    """A copy of tests/recipes/SOURCE under root/NAME whose build.yaml and suite say NAME (and VERSION)."""
    dest = root / name
    shutil.copytree(RECIPES / source, dest)
    for file in ("build.yaml", "fulltest.yaml"):
        text = (dest / file).read_text().replace(f"name: {source}\n", f"name: {name}\n")
        if version is not None:
            text = text.replace('version: "2.0"\n', f'version: "{version}"\n').replace("/2.0 ##", f"/{version} ##")
        (dest / file).write_text(text)
    return dest


def make_fleet(root: Path, *, broken: bool = True, demo: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(RECIPES / "ndtool", root / "ndtool")
    renamed(root, "ndtool", "ndcount")
    if demo:
        shutil.copytree(RECIPES / "ndgen-demo", root / "ndgen-demo")
    if broken:
        (root / "broken").mkdir()
        (root / "broken" / "build.yaml").write_text(BROKEN)
    return root
