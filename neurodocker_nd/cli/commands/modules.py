"""`ndgen modules IMAGE|RECIPE_DIR -o DIR`: wrappers + an Lmod/Tcl modulefile, or an shpc entry (docs/hpc.md)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("modules")
@click.argument("source", metavar="IMAGE|RECIPE_DIR")
@click.option(
    "--format", "fmt", required=True, type=click.Choice(["lmod", "tcl", "shpc"]), help="What to write for DIR."
)
@click.option(
    "--tech",
    type=click.Choice(["apptainer", "singularity", "docker", "podman"]),
    help="The runtime the wrappers call (lmod, tcl).",
)
@click.option(
    "-o", "--out", required=True, type=click.Path(path_type=Path), help="The module directory (module use DIR)."
)
@click.option("--sif", metavar="PATH", help="apptainer/singularity: the SIF file's absolute path on the cluster.")
@click.option("--prefix", metavar="PATH", help="Where DIR is on the cluster (default: DIR's absolute path here).")
@click.option("--maintainer", help="shpc: the maintainer (default: the image's org.opencontainers.image.authors).")
@click.option("--description", help="shpc: the description (default: org.opencontainers.image.description).")
@click.option("--url", help="shpc: the project's URL (default: org.opencontainers.image.url or .source).")
def modules_cmd(
    source: str,
    fmt: str,
    tech: str | None,
    out: Path,
    sif: str | None,
    prefix: str | None,
    maintainer: str | None,
    description: str | None,
    url: str | None,
) -> None:
    """Write environment modules for the commands IMAGE deploys (DEPLOY_BINS, DEPLOY_PATH).

    e.g. `ndgen modules ndtool:2.0 --tech docker --format lmod -o ~/modules`,
    then `module use ~/modules; module load ndtool/2.0`. RECIPE_DIR stands for
    the image `ndgen build RECIPE_DIR -t NAME:VERSION` made (build.yaml's name
    and version). DIR may hold modules written before; anything else in it is refused.
    """
    from neurodocker_nd.cli.output import note
    from neurodocker_nd.deliver.modules import Request, make_modules

    given = {"maintainer": maintainer, "description": description, "url": url}
    request = Request(
        source=source,
        fmt=fmt,
        out=out,
        tech=tech,
        sif=sif,
        prefix=prefix,
        shpc_fields={k: v for k, v in given.items() if v is not None},
    )
    written = make_modules(request)
    for line in written.notes:
        note(line)
    click.echo(f"{written.module}: {len(written.commands)} commands ({' '.join(written.commands)}) in {out}")
