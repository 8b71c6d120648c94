"""A recipe's complete build context (`ndgen recipe --out DIR`), written whole or not at all.

Layout (neurocontainers' own, so their tools read it too):

    DIR/Dockerfile | DIR/Singularity.def   the rendered recipe
    DIR/README.md, DIR/build.yaml          copied into the image (/README.md, /build.yaml)
    DIR/<copy source>                      every COPY source (recipe files, declared files)
    DIR/cache/<cache_id>/<guest name>      declared files a RUN reads through get_file()

The context is assembled in a temporary directory beside DIR and renamed into
place at the end; on any error nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from neurodocker_nd import outfile
from neurodocker_nd import steps as st
from neurodocker_nd.errors import NdgenError

RECIPE_FILES = {"docker": "Dockerfile", "singularity": "Singularity.def"}


def _file_source(f: st.File, dest: Path) -> None:
    """Materialise one declared file at `dest` (inline contents, or a local path or URL via fetch.stage)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if f.contents is not None:
        dest.write_text(f.contents, encoding="utf-8")
    else:
        from neurodocker_nd import fetch  # sha256-verified download, content-addressed cache

        fetch.stage(f.url or f.path, f.sha256, dest)  # type: ignore[arg-type]
    if f.executable:
        dest.chmod(0o755)


def _copy_in(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copyfile(src, dest)
        shutil.copymode(src, dest)


def write_context(plan: st.Plan, out: str | os.PathLike, fmt: str, text: str) -> Path:
    """Write `text` (the rendered recipe) and everything it needs into `out`."""
    if plan.recipe_dir is None:
        raise NdgenError("--out needs a recipe (ndgen recipe PATH --out DIR)")
    recipe_dir = Path(plan.recipe_dir)
    with outfile.new_directory(out) as tmp:
        (tmp / RECIPE_FILES[fmt]).write_text(text, encoding="utf-8")
        (tmp / "README.md").write_text((plan.readme or "").rstrip() + "\n", encoding="utf-8")
        shutil.copyfile(recipe_dir / "build.yaml", tmp / "build.yaml")
        staged: dict[str, Path] = {}
        for dest, declared in plan.context_files:
            target = tmp / dest
            if declared is not None:
                _file_source(plan.file(declared), target)
                staged[declared] = target
            else:
                _copy_in(recipe_dir / dest, target)
        for mount in plan.cache_mounts:
            for guest, name in mount.files:
                target = tmp / "cache" / mount.cache_id / guest
                if name in staged:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(staged[name], target)
                    shutil.copymode(staged[name], target)
                else:
                    _file_source(plan.file(name), target)
                    staged[name] = target
    return Path(out)
