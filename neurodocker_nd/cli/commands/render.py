"""`ndgen --pkg … --os …` (the default command): render one recipe."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from neurodocker_nd.cli.output import package_notes, write_or_print

if TYPE_CHECKING:
    from neurodocker_nd.render.renderer import Format
    from neurodocker_nd.render.steps import Step


def render_default(
    pkgs: Iterable[str | Step],
    os_name: str | None,
    base_image: str | None,
    pkg_manager: str | None,
    fmt: Format,
    output: str | None,
) -> None:
    """Render and print (or write to `output`); everything is checked before writing."""
    from neurodocker_nd.registry.entries import Registry
    from neurodocker_nd.render.renderer import render_recipe

    registry = Registry()
    recipe = render_recipe(
        pkgs=pkgs,
        os_name=os_name,
        base_image=base_image,
        pkg_manager=pkg_manager,
        fmt=fmt,
        registry=registry,
    )
    write_or_print(recipe.text, output)
    package_notes(recipe.packages, registry)
