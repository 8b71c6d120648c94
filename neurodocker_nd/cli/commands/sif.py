"""`ndgen sif IMAGE -o FILE.sif`: an Apptainer/Singularity image file from an image on the engine."""

from __future__ import annotations

from pathlib import Path

import click

from neurodocker_nd.deliver.sif import ARCH_ALIASES, COMPRESSORS, DEFAULT_COMPRESSOR, DEFAULT_MAX_GIB, write_sif
from neurodocker_nd.deliver.sifformat import ARCH_CODES


@click.command("sif")
@click.argument("image", metavar="IMAGE")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The SIF file to write."
)
@click.option(
    "--arch",
    type=click.Choice(sorted([*ARCH_CODES, *ARCH_ALIASES])),
    help="Check that the image is of this architecture (x86_64 = amd64, aarch64 = arm64); the SIF records "
    "the image's own.",
)
@click.option(
    "--comp",
    "compressor",
    type=click.Choice(COMPRESSORS),
    default=DEFAULT_COMPRESSOR,
    show_default=True,
    help="squashfs compressor; gzip where the cluster's squashfs driver lacks zstd (docs/hpc.md).",
)
@click.option(
    "--level",
    type=int,
    help="Compression level: gzip 1..9 (default 6), zstd 1..22 (default 8); xz and lz4 take none.",
)
@click.option("--processors", type=click.IntRange(min=1), help="mksquashfs threads (default: every CPU).")
@click.option(
    "--max-size",
    "max_gib",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_GIB,
    show_default=True,
    help="GiB: refuse an image whose files add up to more (apparent sizes: mksquashfs reads a sparse file whole).",
)
def sif_cmd(
    image: str,
    output: Path,
    arch: str | None,
    compressor: str,
    level: int | None,
    processors: int | None,
    max_gib: int,
) -> None:
    """Write IMAGE's root filesystem and /.singularity.d as a SIF file, without Apptainer.

    The image is read in place (its overlay2 layers, read-only), squashed with
    mksquashfs and wrapped as apptainer/sif specifies. With SOURCE_DATE_EPOCH
    set, the same image gives the same bytes.
    """
    result = write_sif(
        image, output, arch=arch, compressor=compressor, level=level, processors=processors, max_gib=max_gib
    )
    click.echo(result.summary())
