"""What ndgen would send upstream: the registry entries both export targets take, and,
for the neurodocker target, a `Candidate` template and the words for what it changes
(the PR title, the commit message, the change lines of PR.md).

Only entries with their own template whose meta does not say ``upstream.status:
ndgen-only`` are exportable, and only once ``ndgen validate``'s template checks pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd.errors import NdgenError


@attrs.frozen
class Candidate:
    """A registry template to upstream, before it is turned into commits."""

    name: str
    text: str  # formatted for upstream
    data: Mapping[str, Any]
    upstream_data: Mapping[str, Any] | None  # None: upstream lacks it
    description: str
    homepage: str
    notes: str = ""  # meta upstream.notes: why, in the registry's words
    base_label: str = ""  # the revision the three-way merge used as base ("" for none)
    kept: tuple[str, ...] = ()  # upstream's own changes since the base, kept
    conflicts: tuple[str, ...] = ()  # keys both changed: ndgen's value proposed
    glibc: Mapping[str, str] = attrs.field(factory=dict)  # version -> minimum glibc
    system_apt: bool = False  # meta has a Debian-packaged method=system
    # meta `versions:` of this template's versions: (version, status, sha256, ((url, confirms), …));
    # upstream's template schema has no place for them, so the PR body carries them to reviewers.
    provenance: tuple[tuple[str, str, str | None, tuple[tuple[str, str], ...]], ...] = ()


# ---------------------------------------------------------------- exportable entries


def exportable_entries(registry_dir: Path) -> list[Any]:
    """Registry entries with their own template whose meta does not say `ndgen-only`,
    each passing `ndgen validate`'s template checks (schema, test renders in the sandbox):
    an entry validate refuses never travels toward an upstream PR. Raises on the first."""
    from neurodocker_nd.registry.entries import Registry

    registry = Registry(registry_dir=registry_dir)
    root = registry_dir.resolve()
    found = []
    for entry in registry.entries():
        path = entry.template_path
        if entry.meta is None or path is None or path.resolve().parent.parent != root:
            continue  # upstream-only, or system-only (ndgen-only by definition)
        if entry.meta.upstream_status != "ndgen-only":
            found.append(entry)
    for entry in found:
        _validated(registry, entry)
    return found


def _validated(registry: Any, entry: Any) -> None:
    """`ndgen validate registry/<name>`'s template checks of one entry — its schema (checked
    when the registry read it) and test renders in ndgen's sandbox on apt and yum — as an
    export error: what makes a template unsafe or broken. (The provenance lint stays `validate`'s.)"""
    from neurodocker_nd.maintain.matrix import check_renders

    try:
        check_renders(registry, [entry])
    except NdgenError as exc:
        raise NdgenError(f"{entry.name}: not exported, `ndgen validate` refuses it: {exc.message}") from None


# ---------------------------------------------------------------- what changed


def binary_urls(data: Mapping[str, Any] | None) -> dict[str, str]:
    if not data:
        return {}
    return {str(k): str(v) for k, v in ((data.get("binaries") or {}).get("urls") or {}).items()}


def sorted_versions(versions: Iterable[str]) -> list[str]:
    from neurodocker_nd.registry.entries import sort_versions

    return list(sort_versions(versions))


def version_changes(c: Candidate) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, changed URL) versions of the binaries method."""
    ours, theirs = binary_urls(c.data), binary_urls(c.upstream_data)
    added = sorted_versions(v for v in ours if v not in theirs)
    removed = sorted_versions(v for v in theirs if v not in ours)
    changed = sorted_versions(v for v in ours if v in theirs and ours[v] != theirs[v])
    return added, removed, changed


def other_changes(c: Candidate) -> list[str]:
    """Dotted keys (besides binaries.urls) whose content differs from upstream's, down to 3 levels."""
    return _diff_keys(c.data, c.upstream_data or {}, "", 3)


def _diff_keys(a: Any, b: Any, path: str, depth: int) -> list[str]:
    if not (isinstance(a, dict) and isinstance(b, dict)) or depth == 0:
        return [path.rstrip(".")] if a != b else []
    keys = []
    for key in sorted(set(a) | set(b), key=str):
        if f"{path}{key}" == "binaries.urls":
            continue  # reported as versions
        keys += _diff_keys(a.get(key), b.get(key), f"{path}{key}.", depth - 1)
    return keys


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1]


def title_for(c: Candidate) -> str:
    """What the PR does, in upstream's subject style ("Add FSL 6.0.7.20 to fsl template")."""
    if c.upstream_data is None:
        return f"Add {c.name} template"
    added, removed, changed = version_changes(c)
    other = other_changes(c)
    parts = []
    if added:
        parts.append(f"add {c.name} {', '.join(added)}")
    if removed:
        parts.append(f"remove {', '.join(removed)}")
    if changed:
        parts.append(f"fix the download URLs of {', '.join(changed)}")
    if other:
        parts.append(f"fix {_and(other)}")
    if not parts:
        return f"Update {c.name} template"
    if parts == parts[:1] and added:
        return f"Add {c.name} {', '.join(added)} to {c.name} template"
    text = _and(parts)
    return f"{text[0].upper()}{text[1:]} in {c.name} template"


def methods_of(data: Mapping[str, Any]) -> list[str]:
    return [m for m in ("binaries", "source") if m in data]


def change_lines(c: Candidate, code: str = "") -> list[str]:
    """Sentences saying what an update changes (`code` quotes key names, for Markdown)."""
    added, removed, changed = version_changes(c)
    lines = [
        f"{label}: {', '.join(vs)}."
        for label, vs in (("New versions", added), ("Removed versions", removed), ("Changed download URLs", changed))
        if vs
    ]
    other = other_changes(c)
    if other:
        lines.append(f"Also changed: {', '.join(code + k + code for k in other)}.")
    return lines


def commit_message(c: Candidate) -> str:
    lines = [title_for(c), ""]
    if c.upstream_data is None:
        lines.append(f"{c.name} ({c.homepage}): {c.description}".rstrip())
        lines.append(f"Installation methods: {', '.join(methods_of(c.data))}.")
        versions = sorted_versions(binary_urls(c.data))
        if versions:
            lines.append(f"Versions: {', '.join(versions)}.")
    else:
        lines += change_lines(c)
    if c.notes:
        lines += ["", c.notes]
    return "\n".join(lines) + "\n"
