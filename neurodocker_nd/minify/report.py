"""Report step: what minify did, as a rich summary on stderr and (optionally) JSON."""

from __future__ import annotations

import itertools
import json
import os
import posixpath
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd.core import outfile
from neurodocker_nd.minify.keep import KeepSet
from neurodocker_nd.minify.model import CommandResult, ImageConfig, TraceRecord
from neurodocker_nd.minify.write import Written

# Why an entry was kept (the report's "kept": path -> reason).  A reason is one of these
# kinds, alone or as "KIND:DETAIL" (e.g. "package:dcmtk", "family:zoneinfo").
REASONS: dict[str, str] = {
    "traced": "the workload opened, executed or looked it up (and every symlink hop on the way)",
    "repair": "verify's re-trace of the minified image looked it up in vain",
    "elf-interp": "the ELF program interpreter of a kept binary",
    "elf-needed": "a DT_NEEDED library of a kept binary or library",
    "python-landmark": "CPython's prefix search (os.py, lib-dynload): stat()ed, never opened",
    "python-source": "the .py source of a kept __pycache__ file",
    "symlink": "a symlink whose target is kept",
    "essential": "what every container needs (/etc/passwd, /bin/sh, WORKDIR, HOME, mount points …)",
    "entrypoint": "the image's ENTRYPOINT/CMD program and its #! interpreters",
    "family": "a data family a traced member belongs to (family:zoneinfo, family:gconv, family:locale)",
    "package": "an OS package kept whole (package:NAME): --keep-packages or --keep-package",
    "--keep": "a --keep path or glob",
    "profile": "the profile's keep rules",
    "parent": "a directory above a kept entry (its mode and owner)",
}


def reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


@attrs.frozen
class CommandReport:
    command: str
    exit_code: int
    traced_seconds: float
    untraced_seconds: float | None


@attrs.frozen
class Verdict:
    """How verify ended: `verified` None when it did not run (--no-verify)."""

    verified: bool | None = None
    message: str = ""  # why it failed, in one line
    repaired: tuple[str, ...] = ()  # paths verify added after a first mismatch


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
    kept: dict[str, str] = attrs.field(factory=dict)  # every kept entry -> why (REASONS)
    top_dirs: tuple[tuple[str, int], ...] = ()  # kept file bytes by top directory (/usr/lib, /etc …)
    # kept file bytes by reason: how much the trace itself needs (traced) against what rules
    # add (families, packages, closure) — the floor any minifier keeping output identical hits
    reason_bytes: tuple[tuple[str, int], ...] = ()
    suite: str | None = None  # --tests: the fulltest.yaml traced and run on the result

    @classmethod
    def from_run(
        cls,
        *,
        source_image: str,
        config: ImageConfig,
        pristine: Path,
        record: TraceRecord,
        untraced: Sequence[CommandResult],
        tracer_note: str,
        keep: KeepSet,
        written: Written | None,
        squashfs: Written | None,
        tag: str | None,
        verdict: Verdict,
        steps: Sequence[tuple[str, float]],
        suite: Path | None,
    ) -> Report:
        """The report of one minify run, from what its steps returned.

        `tag` is None when no image was tagged (then no image ID is reported, even if one
        was written for verify); `untraced` is empty when no baseline was run.
        """
        files = kept_files(pristine, keep)
        return cls(
            source_image=source_image,
            source_id=config.image_id,
            tag=tag,
            image_id=written.image_id if written and tag else None,
            tracer=record.tracer,
            tracer_note=tracer_note,
            size_before=config.size,
            size_after=(written.size if written else squashfs.size if squashfs else 0),
            entries_kept=len(keep.paths),
            entries_in_image=keep.image_entries,
            kept_file_bytes=written.file_bytes if written else 0,
            biggest_dirs=biggest_dirs(files),
            traced_seconds=record.seconds,
            untraced_seconds=sum(r.seconds for r in untraced) if untraced else None,
            steps=tuple(steps),
            commands=tuple(
                CommandReport(r.command, r.exit_code, r.seconds, u.seconds if u else None)
                for r, u in itertools.zip_longest(record.results, untraced[: len(record.results)])
            ),
            verified=verdict.verified,
            verify_message=verdict.message,
            repaired=verdict.repaired,
            squashfs=str(squashfs.squashfs) if squashfs else None,
            keep_reasons=dict(keep.reasons),
            packages=keep.packages,
            kept=dict(keep.why),
            top_dirs=top_dirs(files),
            reason_bytes=reason_bytes(files, keep.why),
            suite=str(suite) if suite is not None else None,
        )

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
        data["kept"] = dict(sorted(self.kept.items()))
        data["top_dirs"] = dict(self.top_dirs)
        data["reason_bytes"] = dict(self.reason_bytes)
        data["steps"] = {name: round(sec, 3) for name, sec in self.steps}
        data["entries_removed"] = self.entries_in_image - self.entries_kept
        data["ratio"] = round(self.ratio, 2)
        data["tracer_overhead"] = round(self.overhead, 3) if self.overhead else None
        data["total_seconds"] = round(sum(sec for _, sec in self.steps), 3)
        return data


def kept_files(root: Path, keep: KeepSet) -> tuple[tuple[str, int], ...]:
    """(path, bytes) of every kept regular file, hard links once: one lstat pass that
    every size breakdown below reads."""
    seen: set[tuple[int, int]] = set()
    files: list[tuple[str, int]] = []
    for path in keep.paths:
        try:
            st = os.lstat(str(root) + path)  # kept paths are resolved: no symlink on the way
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            files.append((path, st.st_size))
    return tuple(files)


def _totals(files: Iterable[tuple[str, int]], key: Callable[[str], str]) -> list[tuple[str, int]]:
    """Bytes summed by `key(path)`, largest first."""
    totals: dict[str, int] = {}
    for path, size in files:
        name = key(path)
        totals[name] = totals.get(name, 0) + size
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))


def _prefix(path: str, depth: int) -> str:
    return "/" + "/".join([p for p in posixpath.dirname(path).split("/") if p][:depth])


def biggest_dirs(files: Iterable[tuple[str, int]], depth: int = 4, top: int = 8) -> tuple[tuple[str, int], ...]:
    """Kept bytes per directory prefix of at most `depth` components, largest first."""
    return tuple(_totals(files, lambda path: _prefix(path, depth))[:top])


def top_dirs(files: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """Kept file bytes by top directory — the first two components (/usr/lib, /usr/share,
    /etc/ssl; /etc for a file directly in /etc) — largest first; hard links counted once."""
    return tuple(_totals(files, lambda path: _prefix(path, 2)))


def reason_bytes(files: Iterable[tuple[str, int]], why: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """Kept file bytes by why they were kept (traced, family:gconv, package, …), largest first."""
    return tuple(_totals(files, lambda path: why.get(path, "parent")))


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
    if report.reason_bytes:
        yield "kept by reason: " + ", ".join(f"{r} {_mb(b)}" for r, b in report.reason_bytes[:6])
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
