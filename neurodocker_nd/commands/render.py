"""`ndgen --pkg … --os …` (the default command): render one recipe."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import click

from neurodocker_nd.errors import NdgenError


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temp file in the same directory and a rename.

    A failure leaves no half-written file behind (and an old file untouched).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise NdgenError(f"cannot write {path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise NdgenError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_default(
    pkgs: Iterable[str],
    os_name: str | None,
    base_image: str | None,
    pkg_manager: str | None,
    fmt: str,
    output: str | None,
) -> None:
    """Render and print (or write to `output`); everything is checked before writing."""
    from neurodocker_nd.render import render_recipe

    recipe = render_recipe(
        pkgs=pkgs, os_name=os_name, base_image=base_image, pkg_manager=pkg_manager, fmt=fmt  # type: ignore[arg-type]
    )
    if output and output != "-":
        write_atomic(output, recipe.text)
    else:
        sys.stdout.write(recipe.text)
        sys.stdout.flush()
    # neurodocker asks to confirm a template's alert (FSL's licence, …); a
    # renderer in a pipeline should not prompt, so it only tells.
    for pkg in recipe.packages:
        if pkg.alert:
            click.echo(f"ndgen: note: {pkg.name}: {' '.join(pkg.alert.split())}", err=True)
