"""`ndgen validate`: schemas, then test renders and the lint rules, for files or the whole registry.

The first problem raises one NdgenError line (file:line when known); a clean
run returns the counts the CLI reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs

from neurodocker_nd.maintain.lint import check_or_raise
from neurodocker_nd.maintain.matrix import check_renders
from neurodocker_nd.registry.entries import Registry, validate_paths


@attrs.frozen
class Validation:
    """What a clean validation checked."""

    files: int  # template.yaml and meta.yaml files
    renders: int  # test renders: every method per package manager, plus each checksummed version
    waived: int  # lint findings a `waivers:` entry covers
    entries: int | None = None  # the whole registry's entry count; None for given paths


def validate_files(paths: Sequence[Path], registry: Registry) -> Validation:
    """Given template/meta files or entry directories; a directory is also rendered and linted,
    as an entry of a registry of its own parent."""
    checked = validate_paths(paths, registry)
    renders = waived = 0
    for p in paths:
        if p.is_dir():
            own = Registry(registry_dir=p.resolve().parent)
            entry = own.get(p.resolve().name)
            renders += check_renders(own, [entry])
            w, c = check_or_raise([entry], own)
            waived, renders = waived + w, renders + c
    return Validation(len(checked), renders, waived)


def validate_registry(registry: Registry) -> Validation:
    """Every entry's files; ndgen's own entries (not upstream's) are also rendered and linted."""
    entries = list(registry.entries())
    ours = [e for e in entries if e.source != "upstream"]
    renders = check_renders(registry, ours)
    waived, sums = check_or_raise(ours, registry)
    files = sum(bool(e.template_path) + bool(e.meta_path) for e in entries)
    return Validation(files, renders + sums, waived, len(entries))
