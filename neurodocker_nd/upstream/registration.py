"""What upstream's template PRs touch besides the template: a new template on a full
checkout (docs/ and .github/ present) is added to the software list in
``docs/user_guide/examples.rst`` and, when upstream's CI can build it, to the docker-build
matrix in ``.github/workflows/create_workflows.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

from neurodocker_nd.upstream.candidate import Candidate, binary_urls, methods_of

EXAMPLES_RST = "docs/user_guide/examples.rst"
CI_MATRIX = ".github/workflows/create_workflows.py"


def register_in_docs(tree: Path, c: Candidate) -> bool:
    """Add the software list line upstream's docs keep (list_softwares.py format)."""
    path = tree / EXAMPLES_RST
    if not path.is_file():
        return False
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(".. INSERT LIST START"))
        end = next(i for i, line in enumerate(lines) if line.startswith(".. INSERT LIST END"))
    except StopIteration:
        return False
    item = re.compile(r"^- `(\S+) <")
    new = f"- `{c.name} <{c.data.get('url', c.homepage)}>`_\n"
    pos = None
    for i in range(start, end):
        m = item.match(lines[i])
        if m and m.group(1) > c.name:
            pos = i
            break
        if m:
            pos = i + 1
    if pos is None:
        return False
    lines.insert(pos, new)
    path.write_text("".join(lines), encoding="utf-8")
    return True


def ci_plan(c: Candidate) -> tuple[list[str] | None, str]:
    """(versions upstream's CI must skip, or None for no CI entry; why, for PR.md).

    Upstream's docker-build matrix builds every version on every OS it lists, apt-
    and yum-based alike, some with an older glibc than recent release binaries need;
    it can skip versions but not OSes. So a version with a glibc floor is skipped, and
    a template that cannot work on every listed OS gets no entry at all.
    """
    versions = list(binary_urls(c.data))
    if not versions:  # create_workflows.py reads versions from binaries.urls
        return (
            None,
            "not added to upstream's CI build matrix:"
            " it reads versions from `binaries.urls`, which this template lacks",
        )
    deps = (c.data.get("binaries") or {}).get("dependencies") or {}
    if deps.get("apt") and not deps.get("yum"):
        return None, (
            "not added to upstream's CI build matrix, which also builds on yum-based OSes:"
            " the template installs its dependencies on apt only"
        )
    skip = [v for v in versions if v in c.glibc]
    if len(skip) == len(versions):
        return None, (
            f"not added to upstream's CI build matrix: every version needs glibc >= "
            f"{min(c.glibc.values())}, older than some of its OSes have"
        )
    note = "added to upstream's CI build matrix"
    if skip:
        note += (
            f", skipping {', '.join(skip)} (needs glibc >= {min(c.glibc[v] for v in skip)},"
            " which some of its OSes lack)"
        )
    return skip, note


def register_in_ci(tree: Path, c: Candidate) -> bool:
    """Add the template to upstream's docker-build CI matrix (software() dict)."""
    path = tree / CI_MATRIX
    skip, _ = ci_plan(c)
    if not path.is_file() or skip is None:
        return False
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("def software()"))
    except StopIteration:
        return False
    key = re.compile(r'^        "(\w+)": ')
    pos = None
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("    }"):
            pos = pos if pos is not None else i
            break
        m = key.match(lines[i])
        if m and m.group(1) == "miniconda":
            continue  # upstream keeps miniconda last, outside the alphabetical run
        if m and m.group(1) > c.name and pos is None:
            pos = i
    if pos is None:
        return False
    methods = ", ".join(f'"{m}"' for m in methods_of(c.data))
    quoted = ", ".join(f'"{v}"' for v in skip)
    skips = f', "skip_versions": [{quoted}]' if skip else ""
    lines.insert(pos, f'        "{c.name}": {{"methods": [{methods}]{skips}}},\n')
    path.write_text("".join(lines), encoding="utf-8")
    return True
