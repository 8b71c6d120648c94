"""The render matrix: every registry entry × OS × format, rendered whole, then written all-or-nothing.

`ndgen matrix` writes it; `validate` and `upstream export` use `check_renders` to prove each
entry renders on every package manager it supports.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import attrs

from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render.renderer import Format, Recipe, RecipeRenderer


@attrs.frozen
class MatrixItem:
    """One cell of the matrix: a package (default version) on an OS in a format."""

    name: str
    method: str
    os_name: str
    fmt: Format
    filename: str
    recipe: Recipe


@attrs.frozen
class Skipped:
    name: str
    method: str
    os_name: str
    reason: str


def _variants(entry) -> tuple[str, ...]:
    """The default method, plus `system` when an entry offers it as an alternative."""
    methods: tuple[str, ...] = (entry.default_method,)
    if "system" in entry.methods and entry.default_method != "system":
        methods += ("system",)
    return methods


def render_matrix(
    registry: Registry,
    os_names: Iterable[str],
    fmts: Iterable[Format],
    names: Iterable[str] | None = None,
) -> tuple[list[MatrixItem], list[Skipped]]:
    """Render every entry (default version; default method and `system`) × OS × format.

    Entries that need an argument without a default (e.g. vnc's passwd) or do
    not support an OS's package manager are skipped with the reason; any other
    error aborts (nothing is returned, so nothing is written).
    """
    from neurodocker_nd.render.pkg import MissingArgument, UnsupportedTarget, package_plan
    from neurodocker_nd.render.target import resolve_target

    renderer = RecipeRenderer(registry)
    targets = [resolve_target(o) for o in os_names]
    fmts = tuple(fmts)
    entries = [registry.get(n) for n in (names if names is not None else registry.names())]
    items: list[MatrixItem] = []
    skipped: list[Skipped] = []
    for entry in entries:
        for method in _variants(entry):
            label = entry.name if method == entry.default_method else f"{entry.name}-{method}"
            for target in targets:
                try:
                    plan = package_plan(entry.name, target, registry, method=method)
                except (MissingArgument, UnsupportedTarget) as exc:
                    skipped.append(Skipped(entry.name, method, target.os_name, exc.message))
                    continue
                slug = target.os_name.replace(":", "-")
                for fmt in fmts:
                    ext = "Dockerfile" if fmt == "docker" else "def"
                    items.append(
                        MatrixItem(
                            name=entry.name,
                            method=method,
                            os_name=target.os_name,
                            fmt=fmt,
                            filename=f"{label}.{slug}.{ext}",
                            recipe=renderer.recipe(plan, fmt),
                        )
                    )
    return items, skipped


def check_renders(registry: Registry, entries: Iterable) -> int:
    """Render each entry's methods once per package manager it supports (for `validate`)."""
    probe = {"apt": "debian:bookworm", "yum": "rockylinux:9"}
    names = [e.name for e in entries]
    items, _ = render_matrix(registry, probe.values(), ("docker",), names)
    return len(items)


def write_all(outdir: Path, files: dict[str, str]) -> None:
    """Write every file, or none: a full disk must not leave half a matrix."""
    from neurodocker_nd.core import outfile

    with outfile.new_directory(outdir, merge=True) as stage:
        for name, text in files.items():
            _write_one(stage / name, text)


def _write_one(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
