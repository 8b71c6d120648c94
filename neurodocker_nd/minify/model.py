"""The record every tracer produces: the contract between tracing and the keep-set.

Both tracers (fanotify in :mod:`trace`, ptrace in :mod:`ptrace`) run the same
commands in the same sandbox (:func:`run.sandbox_command`) and return a
:class:`TraceRecord`.  Nothing downstream knows which tracer made it.

Paths are *in-image* absolute paths ("/usr/bin/mrconvert", not
"/tmp/ndgen-…/rootfs/usr/bin/mrconvert"), lexically normalised, and may still
contain symlinks: resolving them is the closure's job (:mod:`keep`), which
also drops paths outside the image (/proc, /dev, /sys, /tmp, bind-mount
targets).  So a tracer may report whatever it saw without filtering.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:  # only for annotations: importing run/source costs nothing, but keep one-way flow
    from neurodocker_nd.minify.sandbox import Mount
    from neurodocker_nd.minify.source import ImageConfig


@attrs.frozen
class CommandResult:
    """What one workload command did: compared by verify against the minified rerun."""

    command: str
    exit_code: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@attrs.frozen
class TraceRecord:
    """Everything the workload touched inside the image, plus how each command ended."""

    # opened / executed / stat'ed / readlink'ed / listed, as in-image absolute paths
    paths: frozenset[str]
    # looked up but absent (ENOENT): hints for verify, never kept
    missing: frozenset[str]
    results: tuple[CommandResult, ...]
    tracer: str  # "fanotify" | "ptrace"
    seconds: float  # wall time of all commands under the tracer
    # programs exec'ed, when the tracer cannot see the #! interpreter the kernel loads for
    # a script (ptrace): the closure reads those in the pristine image, never in the view
    # the workload could change (fanotify sees the interpreter's exec itself: empty)
    executed: frozenset[str] = frozenset()

    @property
    def failed(self) -> CommandResult | None:
        """The first command that exited non-zero, if any."""
        return next((r for r in self.results if not r.ok), None)


class Tracer(Protocol):
    """A tracer runs `commands` one after another in the sandbox on `rootfs`.

    It stops after the first command that exits non-zero when
    `stop_on_failure` is true (the record then ends with that result), kills a
    command's sandbox after `timeout` seconds (raising ``run.CommandTimeout``), and
    raises :class:`neurodocker_nd.errors.TraceError` only when tracing itself
    cannot work (no permission, no kernel support).
    """

    @property
    def name(self) -> str: ...

    def trace(
        self,
        rootfs: Path,
        config: ImageConfig,
        commands: Sequence[str],
        mounts: Sequence[Mount],
        *,
        stop_on_failure: bool = True,
        timeout: float | None = None,
    ) -> TraceRecord: ...


def in_image_path(host_path: str, rootfs: str) -> str | None:
    """Map a host path under `rootfs` to its in-image path; None when outside it.

    Shared by both tracers: fanotify sees host paths of the overlay mount, a
    ptrace tracer sees in-sandbox paths (already in-image) and need not call it.
    """
    root = rootfs.rstrip("/")
    if host_path == root:
        return "/"
    if host_path.startswith(root + "/"):
        return host_path[len(root) :]
    return None
