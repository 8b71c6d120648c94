"""Recipe options shared by the default render command, `build` and `matrix`."""

from __future__ import annotations

from typing import Callable, TypeVar

import click

F = TypeVar("F", bound=Callable)


def recipe_options(func: F) -> F:
    """Add --pkg/--os/--base-image/--pkg-manager/--format to a click command."""
    decorators = [
        click.option(
            "--pkg",
            "pkgs",
            multiple=True,
            metavar="NAME[==VERSION][,KEY=VALUE…]",
            help="Software to install; repeat for more, order is kept.",
        ),
        click.option(
            "--os",
            "os_name",
            metavar="OS[:VERSION]",
            help="OS preset: ubuntu[:20.04|22.04|24.04], debian[:bullseye|bookworm], "
            "rockylinux[:8|9].",
        ),
        click.option("--base-image", metavar="IMAGE", help="Any base image (with --pkg-manager)."),
        click.option(
            "--pkg-manager",
            type=click.Choice(["apt", "yum"]),
            help="Package manager of --base-image.",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["docker", "singularity"]),
            default="docker",
            show_default=True,
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func
