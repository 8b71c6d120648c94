"""A fleet run's report: JSON (`--report`), JUnit XML (`--junit`, one case per target) and a
Markdown table (`--markdown`, e.g. "$GITHUB_STEP_SUMMARY").  Each file is written whole or not
at all (core/outfile.py); where each will go is checked before any target runs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

from neurodocker_nd.core import outfile
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.fleet.run import Result

COLUMNS = ("target", "arch", "status", "stage", "time", "size", "tests", "reason")


def check_writable(path: Path, option: str) -> None:
    """Refuse a report path that cannot be written, before hours of builds (one line naming it)."""
    parent = path.absolute().parent
    if path.is_dir():
        raise NdgenError(f"{option} {path}: is a directory")
    if not parent.is_dir():
        raise NdgenError(f"{option} {path}: no directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise NdgenError(f"{option} {path}: not writable")


def rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    """The summary table's rows (COLUMNS), shared by the terminal and the Markdown summary."""
    return [
        (
            f"{r.target.name} {r.target.version}",
            r.target.arch,
            r.status,
            r.stage,
            f"{r.seconds:.0f} s",
            f"{r.size / 1e6:.0f} MB" if r.size else "-",
            r.tests or "-",
            r.reason,
        )
        for r in results
    ]


def write_json(results: Sequence[Result], path: Path) -> None:
    outfile.write_text(path, json.dumps({"targets": [r.as_json() for r in results]}, indent=2) + "\n")


def write_junit(results: Sequence[Result], path: Path) -> None:
    failed = [r for r in results if r.status in ("failed", "stopped")]
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="ndgen fleet",
        tests=str(len(results)),
        failures=str(len(failed)),
        skipped=str(sum(r.status == "skipped" for r in results)),
        time=f"{sum(r.seconds for r in results):.2f}",
    )
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"fleet.{r.target.arch}",
            name=f"{r.target.name}:{r.target.tag}",
            time=f"{r.seconds:.2f}",
        )
        if r.status in ("failed", "stopped"):
            node = ET.SubElement(case, "failure", message=f"{r.stage}: {r.reason}"[:1000], type=r.stage)
            node.text = "\n".join(r.log_tail)
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.reason)
        else:
            ET.SubElement(case, "system-out").text = f"{r.status} {r.digest} ({r.tests})"
    outfile.write_text(path, ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")


def markdown(results: Sequence[Result]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("promoted", "candidate", "skipped", "failed", "stopped")}
    head = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no targets"
    lines = [f"### ndgen fleet: {head}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows(results):
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |")
    for r in results:
        if r.status == "failed" and r.log_tail:
            lines += ["", f"<details><summary>{r.target.name} {r.target.arch}: {r.stage}</summary>", "", "```"]
            lines += [line.replace("```", "` ` `") for line in r.log_tail] + ["```", "</details>"]
    return "\n".join(lines) + "\n"


def write_markdown(results: Sequence[Result], path: Path) -> None:
    """Appended (a job summary file collects several steps' summaries)."""
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(markdown(results))
    except OSError as exc:
        raise NdgenError(f"--markdown {path}: {exc.strerror}") from None
