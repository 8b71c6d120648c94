"""Minify's shared vocabulary: the types and constants that more than one step uses.

Each step (:mod:`source`, :mod:`sandbox`, the tracers :mod:`fanotify` and
:mod:`ptrace`, :mod:`keep`, :mod:`write`, :mod:`verify`) imports its inputs'
types from here and never another step just for a type, so data flows one way.

The record every tracer produces is the contract between tracing and the
keep-set.  Both tracers run the same commands in the same sandbox
(:func:`sandbox.sandbox_command`) and return a :class:`TraceRecord`.  Nothing
downstream knows which tracer made it.

Paths are *in-image* absolute paths ("/usr/bin/mrconvert", not
"/tmp/ndgen-…/rootfs/usr/bin/mrconvert"), lexically normalised, and may still
contain symlinks: resolving them is the closure's job (:mod:`keep`), which
also drops paths outside the image (/proc, /dev, /sys, /tmp, bind-mount
targets).  So a tracer may report whatever it saw without filtering.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from neurodocker_nd.errors import NdgenError

HOSTNAME = "ndgen-minify"  # verify uses the same name, so `hostname` output compares equal
SHELL = "/bin/sh"
DEFAULT_TIMEOUT = 600.0  # seconds per command: a hung workload must not hang ndgen
# Output of one command kept per stream, in the trace and in verify alike (they are compared
# byte for byte): the image's program decides how much it prints, ndgen's memory must not.
OUTPUT_BYTES = 64 * 1024 * 1024
# the PATH Docker gives a container whose image sets none
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@attrs.frozen
class ImageConfig:
    """The parts of a Docker image config that a run needs and a new image copies."""

    image_id: str
    name: str  # as the user wrote it
    repo_digests: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "KEY=VALUE", in image order
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    workdir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    size: int = 0
    # The image config as the engine reports it (architecture, os, author, and the whole
    # `config`: HEALTHCHECK, STOPSIGNAL, SHELL, ONBUILD …), JSON text: the new image carries it.
    image_json: str = ""

    @classmethod
    def from_inspect(cls, name: str, attrs_: dict[str, Any]) -> ImageConfig:
        """Build from the Docker SDK's ``Image.attrs`` (the ``docker image inspect`` JSON)."""
        config = attrs_.get("Config") or {}
        return cls(
            image_id=attrs_["Id"],
            name=name,
            repo_digests=tuple(attrs_.get("RepoDigests") or ()),
            env=tuple(config.get("Env") or ()),
            entrypoint=tuple(config["Entrypoint"]) if config.get("Entrypoint") else None,
            cmd=tuple(config["Cmd"]) if config.get("Cmd") else None,
            workdir=config.get("WorkingDir") or "",
            user=config.get("User") or "",
            exposed_ports=tuple(sorted(config.get("ExposedPorts") or {})),
            volumes=tuple(sorted(config.get("Volumes") or {})),
            labels=tuple(sorted((config.get("Labels") or {}).items())),
            size=int(attrs_.get("Size") or 0),
            image_json=json.dumps(
                {
                    "architecture": attrs_.get("Architecture") or "amd64",
                    "os": attrs_.get("Os") or "linux",
                    **({"variant": attrs_["Variant"]} if attrs_.get("Variant") else {}),
                    **({"author": attrs_["Author"]} if attrs_.get("Author") else {}),
                    "config": config,
                },
                ensure_ascii=False,
            ),
        )

    @property
    def env_dict(self) -> dict[str, str]:
        return {key: value for key, _, value in (item.partition("=") for item in self.env)}

    @property
    def digest(self) -> str:
        """The most specific identity available: a repo digest, else the image ID."""
        return self.repo_digests[0] if self.repo_digests else self.image_id


@attrs.frozen
class Mount:
    """A bind mount, as given with ``-v HOST:CTR[:ro]``."""

    host: Path
    target: str
    read_only: bool = False

    @classmethod
    def parse(cls, spec: str) -> Mount:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise NdgenError(f"bad -v {spec!r}: expected HOST:CONTAINER[:ro|rw]")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise NdgenError(f"bad -v {spec!r}: mode must be ro or rw, not {mode!r}")
        host = Path(parts[0]).expanduser()
        if not host.exists():
            raise NdgenError(f"-v {spec}: host path {host} does not exist")
        if not parts[1].startswith("/"):
            raise NdgenError(f"-v {spec}: container path {parts[1]!r} must be absolute")
        return cls(host=host.resolve(), target=os.path.normpath(parts[1]), read_only=mode == "ro")

    def with_host(self, host: Path) -> Mount:
        return attrs.evolve(self, host=host)

    def docker_spec(self) -> str:
        return f"{self.host}:{self.target}:{'ro' if self.read_only else 'rw'}"


@attrs.frozen
class UserIds:
    """Who a command runs as: the image's USER resolved against its /etc/passwd and /etc/group."""

    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = ()  # supplementary groups from the image's /etc/group, as Docker adds


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


class TraceSession(Protocol):
    """One trace under way: how each command runs under the tracer, and what record it makes."""

    def run(self, command: str, timeout: float | None) -> CommandResult: ...

    def record(self, results: tuple[CommandResult, ...], tracer: str) -> TraceRecord: ...


class Tracer:
    """A tracer runs `commands` one after another in the sandbox on `rootfs`.

    It stops after the first command that exits non-zero when
    `stop_on_failure` is true (the record then ends with that result), kills a
    command's sandbox after `timeout` seconds (raising ``sandbox.CommandTimeout``), and
    raises :class:`neurodocker_nd.errors.TraceError` only when tracing itself
    cannot work (no permission, no kernel support).

    This loop is the same for every tracer; what differs is the session a tracer opens
    around all the commands (:meth:`session`: the fanotify mark, the strace bundle and
    its logs), which runs each command and makes the record once it has closed
    (fanotify's queue drained, strace's directory removed).
    """

    name: str

    def session(
        self, rootfs: Path, config: ImageConfig, mounts: Sequence[Mount]
    ) -> contextlib.AbstractContextManager[TraceSession]:
        raise NotImplementedError

    def trace(
        self,
        rootfs: Path,
        config: ImageConfig,
        commands: Sequence[str],
        mounts: Sequence[Mount],
        *,
        stop_on_failure: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> TraceRecord:
        results: list[CommandResult] = []
        with self.session(rootfs, config, mounts) as session:
            for command in commands:
                results.append(session.run(command, timeout))
                if stop_on_failure and not results[-1].ok:
                    break
        return session.record(tuple(results), self.name)


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
