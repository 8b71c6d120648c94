"""Report step: what minify did, as a rich summary on stderr and (optionally) JSON."""

from __future__ import annotations

import json
import os
import posixpath
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd import outfile
from neurodocker_nd.minify.keep import KeepSet


@attrs.frozen
class CommandReport:
    command: str
    exit_code: int
    traced_seconds: float
    untraced_seconds: float | None


@attrs.frozen
class Report:
    source_image: str
    source_id: str
    tag: str | None
    image_id: str | None
    tracer: str
    tracer_note: str  # why this tracer (e.g. the fanotify → ptrace fallback)
    size_before: int
    size_after: int
    entries_kept: int
    entries_in_image: int
    kept_file_bytes: int
    biggest_dirs: tuple[tuple[str, int], ...]
    traced_seconds: float
    untraced_seconds: float | None
    steps: tuple[tuple[str, float], ...]  # (step, seconds) in order
    commands: tuple[CommandReport, ...]
    verified: bool | None  # None: --no-verify
    verify_message: str
    repaired: tuple[str, ...]  # paths verify added after a first mismatch
    squashfs: str | None
    keep_reasons: dict[str, int]
    packages: tuple[tuple[str, int], ...] = ()  # --keep-packages: (package, kept bytes), largest first
    suite: str | None = None  # --tests: the fulltest.yaml traced and run on the result

    @property
    def ratio(self) -> float:
        return self.size_before / self.size_after if self.size_after else 0.0

    @property
    def overhead(self) -> float | None:
        if not self.untraced_seconds:
            return None
        return self.traced_seconds / self.untraced_seconds

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=True)
        data["biggest_dirs"] = [{"path": p, "bytes": b} for p, b in self.biggest_dirs]
        data["packages"] = [{"name": n, "bytes": b} for n, b in self.packages]
        data["steps"] = {name: round(sec, 3) for name, sec in self.steps}
        data["entries_removed"] = self.entries_in_image - self.entries_kept
        data["ratio"] = round(self.ratio, 2)
        data["tracer_overhead"] = round(self.overhead, 3) if self.overhead else None
        data["total_seconds"] = round(sum(sec for _, sec in self.steps), 3)
        return data


def biggest_dirs(root: Path, keep: KeepSet, depth: int = 4, top: int = 8) -> tuple[tuple[str, int], ...]:
    """Kept bytes per directory prefix of at most `depth` components, largest first."""
    totals: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    for path in keep.paths:
        try:
            st = os.lstat(str(root) + path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        parts = posixpath.dirname(path).strip("/").split("/")[:depth]
        key = "/" + "/".join(p for p in parts if p)
        totals[key] = totals.get(key, 0) + st.st_size
    return tuple(sorted(totals.items(), key=lambda kv: -kv[1])[:top])


def write_json(report: Report, path: Path) -> None:
    outfile.write_text(path, json.dumps(report.to_json(), indent=2) + "\n")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def summary_lines(report: Report) -> Iterable[str]:
    yield f"{report.source_image}: {_mb(report.size_before)} → {_mb(report.size_after)} ({report.ratio:.1f}x smaller)"
    yield (
        f"entries kept {report.entries_kept:,} of {report.entries_in_image:,} "
        f"(removed {report.entries_in_image - report.entries_kept:,})"
    )
    timing = f"tracer {report.tracer}: traced {report.traced_seconds:.2f} s"
    if report.untraced_seconds is not None:
        timing += f" vs untraced {report.untraced_seconds:.2f} s ({report.overhead or 0:.2f}x)"
    yield timing + (f" — {report.tracer_note}" if report.tracer_note else "")
    yield "biggest kept: " + ", ".join(f"{p} {_mb(b)}" for p, b in report.biggest_dirs[:5])
    yield "steps: " + ", ".join(f"{n} {s:.1f} s" for n, s in report.steps)
    if report.packages:
        total = sum(b for _, b in report.packages)
        yield (
            f"packages kept whole: {len(report.packages)} ({_mb(total)}): "
            + ", ".join(f"{n} {_mb(b)}" for n, b in report.packages[:8])
            + (" …" if len(report.packages) > 8 else "")
        )
    if report.repaired:
        yield f"verify repaired: {', '.join(report.repaired[:8])}"
    if report.verified is not None:
        yield f"verify: {'passed' if report.verified else report.verify_message}"
    if report.suite and report.verified:
        yield f"test suite {report.suite}: every test and the deploy check passed in the minified image"
    if report.tag:
        yield f"wrote {report.tag} ({report.image_id[:19] if report.image_id else ''})"
    if report.squashfs:
        yield f"wrote {report.squashfs}"
