"""`ndgen --pkg … --os …` (the default command): render one recipe."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import click

from neurodocker_nd.core import outfile


def render_default(
    pkgs: Iterable[str],
    os_name: str | None,
    base_image: str | None,
    pkg_manager: str | None,
    fmt: str,
    output: str | None,
) -> None:
    """Render and print (or write to `output`); everything is checked before writing."""
    from neurodocker_nd.render.renderer import render_recipe

    recipe = render_recipe(
        pkgs=pkgs,
        os_name=os_name,
        base_image=base_image,
        pkg_manager=pkg_manager,
        fmt=fmt,  # type: ignore[arg-type]
    )
    if output and output != "-":
        outfile.write_text(output, recipe.text)
    else:
        sys.stdout.write(recipe.text)
        sys.stdout.flush()
    # neurodocker asks to confirm a template's alert (FSL's licence, …); a
    # renderer in a pipeline should not prompt, so it only tells.
    for pkg in recipe.packages:
        if pkg.alert:
            click.echo(f"ndgen: note: {pkg.name}: {' '.join(pkg.alert.split())}", err=True)
    from neurodocker_nd.maintain.lint import dead_download_notes

    for note in dead_download_notes(recipe.packages):
        click.echo(note, err=True)
