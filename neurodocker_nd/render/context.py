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

import hashlib
import os
import shutil
from pathlib import Path

from neurodocker_nd.core import outfile, paths
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.render import steps as st

RECIPE_FILES = {"docker": "Dockerfile", "singularity": "Singularity.def"}


def _local_source(f: st.File, recipe_dir: Path, dest: Path, into: Path, budget: paths.Budget) -> None:
    """A declared `filename:` file, copied by the contained reader (the loader checked the
    same path: inside the recipe directory, regular) and verified by its sha256."""
    rel = os.path.relpath(f.path, recipe_dir)  # type: ignore[arg-type]
    paths.copy_inside(recipe_dir, rel, dest, within=into, budget=budget, shown=f"file {f.name!r}: {recipe_dir / rel}")
    if f.sha256:
        from neurodocker_nd.core import fetch

        expected = fetch.check_sha256(f.sha256, f.name)
        digest = hashlib.sha256()
        with open(dest, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise NdgenError(f"{f.name}: sha256 mismatch: expected {expected}, got {digest.hexdigest()}")


def _file_source(f: st.File, recipe_dir: Path, dest: Path, into: Path, budget: paths.Budget) -> None:
    """Materialise one declared file at `dest`: inline contents, a file of the recipe
    directory, or an http(s) download (fetch.stage: sha256-verified, cached)."""
    paths.destination(dest, into, f"file {f.name!r}")
    if f.contents is not None:
        dest.write_text(f.contents, encoding="utf-8")
    elif f.path is not None:
        _local_source(f, recipe_dir, dest, into, budget)
    else:
        from neurodocker_nd.core import fetch

        fetch.stage(f.url, f.sha256, dest)  # type: ignore[arg-type]
    if f.executable:
        dest.chmod(0o755)


def write_context(plan: st.Plan, out: str | os.PathLike, fmt: str, text: str) -> Path:
    """Write `text` (the rendered recipe) and everything it needs into `out`.

    Every file of the recipe directory is read through paths.copy_inside (the
    directory is untrusted: no link out, no FIFO or device, a size budget), and
    build.yaml is the text the loader parsed, never the file read a second time.
    """
    if plan.recipe_dir is None:
        raise NdgenError("--out needs a recipe (ndgen recipe PATH --out DIR)")
    if plan.recipe_text is None:
        raise NdgenError("--out needs the recipe's own text (a plan from recipe.load_recipe)")
    recipe_dir = Path(plan.recipe_dir)
    budget = paths.Budget()
    with outfile.new_directory(out) as tmp:
        staged: dict[str, Path] = {}
        for dest, declared in plan.context_files:
            target = tmp / dest
            if declared is not None:
                _file_source(plan.file(declared), recipe_dir, target, tmp, budget)
                staged[declared] = target
            else:
                paths.copy_inside(recipe_dir, dest, target, within=tmp, budget=budget, shown=str(recipe_dir / dest))
        for mount in plan.cache_mounts:
            for guest, name in mount.files:
                target = tmp / "cache" / mount.cache_id / guest
                if name in staged:
                    paths.destination(target, tmp, f"file {name!r}")
                    shutil.copyfile(staged[name], target)
                    shutil.copymode(staged[name], target)
                else:
                    _file_source(plan.file(name), recipe_dir, target, tmp, budget)
                    staged[name] = target
        # ndgen's own files last: a copied tree's link or file by these names never replaces them.
        own = {
            RECIPE_FILES[fmt]: text,
            "README.md": (plan.readme or "").rstrip() + "\n",
            "build.yaml": plan.recipe_text,
        }
        for name, content in own.items():
            paths.destination(tmp / name, tmp, name).write_text(content, encoding="utf-8")
    return Path(out)
