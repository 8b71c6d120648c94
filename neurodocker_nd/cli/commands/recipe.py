"""`ndgen recipe PATH`: render a neurocontainers recipe (build.yaml) in either format."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from neurodocker_nd.cli.options import format_option, nonempty_path, output_option, parse_options, recipe_dir_options
from neurodocker_nd.cli.output import write_or_print
from neurodocker_nd.errors import NdgenError

if TYPE_CHECKING:
    from neurodocker_nd.render.renderer import Format


@click.command("recipe")
@click.argument("path", type=click.Path())
@format_option
@recipe_dir_options()
@output_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    callback=nonempty_path,
    help="Write a complete build context here.",
)
def recipe_cmd(
    path: str,
    fmt: Format,
    arch: str,
    options: tuple[str, ...],
    templates: tuple[str, ...],
    output: str | None,
    out_dir: str | None,
) -> None:
    """Render a neurocontainers recipe: a directory with build.yaml, or the file.

    e.g. `ndgen recipe recipes/fsl --templates builder/templates --format singularity`.
    """
    from neurodocker_nd.render.recipe import load_recipe
    from neurodocker_nd.render.renderer import render

    if output and out_dir:
        raise NdgenError("give -o FILE or --out DIR, not both")
    plan = load_recipe(path, arch=arch, options=parse_options(options), templates=templates)
    # A build context also gets the cache stage its RUN --mount lines read.
    text = render(plan, fmt, cache_stage=bool(out_dir))
    if out_dir:
        from neurodocker_nd.render.context import write_context

        where = write_context(plan, out_dir, fmt, text)
        click.echo(f"build context written to {where}", err=True)
    else:
        write_or_print(text, output)
