"""`ndgen base IMAGE[:TAG]`: a Debian/Ubuntu base image from an apt mirror (no registry)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from neurodocker_nd.cli.options import arch_option

if TYPE_CHECKING:
    from neurodocker_nd.core.arch import Arch


@click.command("base")
@click.argument("image", metavar="IMAGE[:TAG]")
@click.option("--mirror", metavar="URL", help="Apt mirror (default: deb.debian.org, or archive.ubuntu.com for Ubuntu).")
@click.option("--suite", metavar="CODENAME", help="Release to bootstrap (default: inferred from the tag).")
@click.option(
    "--keyring",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Archive keyring to verify the mirror with (default: the distribution's installed keyring).",
)
@click.option("--force", is_flag=True, help="Rebuild even when the tag already exists.")
@arch_option(
    "Architecture of the image: x86_64 (amd64) or aarch64 (arm64: bootstrapped under qemu, "
    "tagged arm64v8/NAME:TAG, see docs/arch.md)."
)
def base_cmd(image: str, mirror: str | None, suite: str | None, keyring: Path | None, force: bool, arch: Arch) -> None:
    """Build IMAGE with debootstrap --variant=minbase and docker import.

    The image gets the official image's ENV and CMD, e.g. `ndgen base
    debian:bookworm-slim` or `ndgen base ubuntu:24.04`. Nothing happens when
    the tag exists, unless --force.
    """
    from neurodocker_nd.build.base_image import build_base, plan_base

    spec = plan_base(image, mirror=mirror, suite=suite, keyring=keyring, arch=arch)
    result = build_base(spec, force=force)
    if not result.created:
        click.echo(f"{result.ref} exists ({result.image_id[:19]}); nothing to do (--force rebuilds it)")
        return
    click.echo(
        f"built {result.ref} ({result.image_id[:19]}, {spec.arch}) from {spec.distro} {spec.suite} "
        f"at {spec.mirror} in {result.seconds:.0f} s; log: {result.log_path}"
    )
