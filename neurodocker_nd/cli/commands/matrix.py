"""`ndgen matrix --out DIR`: every template × OS preset × format, one file each."""

from __future__ import annotations

from pathlib import Path

import click

from neurodocker_nd.cli.options import complete_pkg_names
from neurodocker_nd.cli.output import note
from neurodocker_nd.render.target import PRESETS, preset_names, resolve_target


@click.command("matrix")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@click.option(
    "--os",
    "os_names",
    multiple=True,
    type=click.Choice(preset_names()),
    help="OS presets (repeat); default: every preset.",
)
@click.option(
    "--format",
    "fmts",
    multiple=True,
    type=click.Choice(["docker", "singularity"]),
    help="Formats (repeat); default: both.",
)
@click.option(
    "--pkg",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only these entries (repeat); default: all.",
    shell_complete=complete_pkg_names,
)
def matrix_cmd(out: str, os_names: tuple[str, ...], fmts: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Render every entry (default version and method, plus method=system where
    offered) for every OS preset in both formats into --out, and print the count.

    Everything is rendered before the first file is written: on error nothing is.
    """
    from neurodocker_nd.maintain.matrix import render_matrix, write_all
    from neurodocker_nd.registry.entries import Registry

    registry = Registry()
    for name in names:
        registry.get(name)  # unknown names fail with suggestions before any work
    # Aliases name the same preset (`ubuntu` = `ubuntu:24.04`): one file each.
    oses = tuple(dict.fromkeys(resolve_target(o).os_name for o in os_names or PRESETS))
    items, skipped = render_matrix(
        registry,
        oses,
        tuple(dict.fromkeys(fmts)) or ("docker", "singularity"),  # type: ignore[arg-type]
        tuple(dict.fromkeys(names)) or None,
    )
    outdir = Path(out)
    write_all(outdir, {item.filename: item.recipe.text for item in items})
    # One note per (entry, method, reason), naming the OSes it applies to.
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for s in skipped:
        grouped.setdefault((s.name, s.method, s.reason), []).append(s.os_name)
    for (name, method, reason), skipped_on in grouped.items():
        where = "every OS" if len(skipped_on) == len(oses) else ", ".join(skipped_on)
        note(f"skipped {name} (method={method}) on {where}: {reason}")
    click.echo(f"{len(items)} recipes written to {outdir}")
