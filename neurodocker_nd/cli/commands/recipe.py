"""`ndgen recipe PATH`: render a neurocontainers recipe (build.yaml) in either format."""

from __future__ import annotations

import sys

import click

from neurodocker_nd.errors import NdgenError


def parse_options(values: tuple[str, ...]) -> dict[str, str]:
    """`--option KEY=VALUE` (repeatable) → {KEY: VALUE}."""
    from neurodocker_nd.render.flags import key_values

    return key_values("--option", values)


@click.command("recipe")
@click.argument("path", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["docker", "singularity"]), default="docker", show_default=True)
@click.option("--arch", type=click.Choice(["x86_64", "aarch64"]), default="x86_64", show_default=True)
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Set a recipe option (repeat).")
@click.option(
    "--templates",
    multiple=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Template directory searched before ndgen's registry (repeat).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the recipe here instead of stdout.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write a complete build context here.")
def recipe_cmd(path, fmt, arch, options, templates, output, out_dir) -> None:
    """Render a neurocontainers recipe: a directory with build.yaml, or the file.

    e.g. `ndgen recipe recipes/fsl --templates builder/templates --format singularity`.
    """
    from neurodocker_nd.core import outfile
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
    elif output and output != "-":
        outfile.write_text(output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
