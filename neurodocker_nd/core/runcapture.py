"""One command in a throw-away container, its output streamed with a bounded memory cost.

Every throw-away container ndgen runs goes through :func:`run` (`ndgen test`,
`engine.run_once` and so `ndgen build`'s package tests, minify's verify rerun).
Reading a finished container's whole log three times (stdout, stderr, both) and
decoding each cost ndgen 1.47 GB for a test printing 300 MB. Here the output is read while the command runs, from an attach made before
the container starts (the engine keeps no log of its own: log driver `none`),
and each chunk goes once through:

* bounded tails — the last `tail_bytes` (default 64 KiB) of stdout, of stderr
  and of both interleaved, for messages, the report and JUnit;
* substring watchers — each expected text is searched in the whole stream
  (stdout then stderr, as `expected in stdout + stderr` did), keeping only the
  last len(text) - 1 bytes between chunks;
* the step log — the first `log_bytes` (default 4 MiB) of the interleaved
  output, then a note of what was left out, then the tail;
* exact heads — only when asked (`keep_bytes`, for verify's byte comparison):
  the first `keep_bytes` of stdout and of stderr, as raw bytes.

So memory is O(tail + log chunk + longest expected text + keep_bytes) whatever
the command prints. A frame is at most the engine's copy buffer (32 KiB).
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

TAIL_BYTES = 64 * 1024
LOG_BYTES = 4 * 1024 * 1024
_STDOUT, _STDERR = 0, 1
_DRAIN_S = 30.0  # after the command ended, how long the attach may take to deliver what is left


@attrs.frozen
class CapturedRun:
    """What one command returned; its output as bounded tails (docs: module docstring)."""

    exit_code: int | None  # None: still running at the timeout (then killed)
    stdout: str  # the last tail_bytes of each, marked when cut
    stderr: str
    output: str  # stdout and stderr interleaved, as the container printed them
    seconds: float
    present: tuple[str, ...] = ()  # which of the asked-for paths exist in the container afterwards
    found: frozenset[str] = frozenset()  # which expected texts appeared anywhere in stdout + stderr
    stdout_bytes: int = 0  # the whole stream's size
    stderr_bytes: int = 0
    stdout_cut: bool = False  # `stdout` lacks the stream's beginning
    # the first keep_bytes of each stream, exact (empty unless asked); whole when len == *_bytes
    stdout_head: bytes = b""
    stderr_head: bytes = b""


@attrs.define
class _Tail:
    """The last `limit` bytes of a stream, and how many bytes it had in all."""

    limit: int
    data: bytearray = attrs.field(factory=bytearray)
    total: int = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(chunk) >= self.limit:
            self.data[:] = chunk[len(chunk) - self.limit :]
            return
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        cut = self.total - len(self.data)
        # A cut may split a UTF-8 sequence at the start: it decodes as U+FFFD, like any bad byte.
        body = bytes(self.data).decode(errors="replace")
        return f"[ndgen: the first {cut} bytes are not kept]\n{body}" if cut else body


@attrs.define
class _Head:
    """The first `limit` bytes of a stream, exact (nothing kept when the limit is 0)."""

    limit: int
    data: bytearray = attrs.field(factory=bytearray)

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]


@attrs.define
class _Watch:
    """Which expected texts occur in stdout + stderr, searched chunk by chunk."""

    needles: tuple[bytes, ...]
    found: set[int] = attrs.field(factory=set)
    carry: list[bytes] = attrs.field(factory=lambda: [b"", b""])  # per stream: its last `keep` bytes
    err_head: bytes = b""  # stderr's first `keep` bytes: a match may span the stdout + stderr seam

    @property
    def keep(self) -> int:
        return max((len(n) for n in self.needles), default=1) - 1

    def add(self, stream: int, chunk: bytes) -> None:
        keep = self.keep
        window = self.carry[stream] + chunk
        for index, needle in enumerate(self.needles):
            if index not in self.found and needle in window:
                self.found.add(index)
        self.carry[stream] = window[len(window) - keep :] if keep else b""
        if stream == _STDERR and len(self.err_head) < keep:
            self.err_head = (self.err_head + chunk)[:keep]

    def result(self) -> set[int]:
        seam = self.carry[_STDOUT] + self.err_head
        return self.found | {i for i, n in enumerate(self.needles) if n in seam}


@attrs.define
class _LogCopy:
    """The interleaved output into the step log: the first `limit` bytes, decoded as they come."""

    write: Callable[[str], None]
    limit: int
    written: int = 0
    decoder: Any = attrs.field(factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    def add(self, chunk: bytes) -> None:
        room = self.limit - self.written
        if room > 0:
            part = chunk[:room]
            self.written += len(part)
            self.write(self.decoder.decode(part))

    def finish(self, tail: _Tail) -> None:
        text = self.decoder.decode(b"", final=True)
        start = tail.total - len(tail.data)  # the tail's first byte in the whole stream
        if tail.total > self.written:
            skip = max(0, self.written - start)
            if start > self.written:
                text += f"\n[ndgen: {start - self.written} bytes of output not logged]\n"
            text += bytes(tail.data[skip:]).decode(errors="replace")
        if text:
            self.write(text)


@attrs.define
class _Capture:
    """Every chunk once through the tails, the watchers and the log copy (thread-safe)."""

    tails: tuple[_Tail, _Tail, _Tail]  # stdout, stderr, both
    heads: tuple[_Head, _Head]  # stdout, stderr
    watch: _Watch
    log: _LogCopy | None
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def add(self, stream: int, chunk: bytes) -> None:
        with self.lock:
            self.tails[stream].add(chunk)
            self.tails[2].add(chunk)
            self.heads[stream].add(chunk)
            self.watch.add(stream, chunk)
            if self.log is not None:
                self.log.add(chunk)


def run(
    client: Any,
    image: str,
    argv: list[str] | None,
    *,
    entrypoint: list[str] | None = None,
    timeout: float | None,
    binds: tuple[Path, ...] = (),
    mounts: Sequence[tuple[Path, str, bool]] = (),
    workdir: str | None = None,
    hostname: str | None = None,
    user: str | None = None,
    labels: dict[str, str] | None = None,
    probe: tuple[str, ...] = (),
    expect: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    tail_bytes: int = TAIL_BYTES,
    log_bytes: int = LOG_BYTES,
    keep_bytes: int = 0,
) -> CapturedRun:
    """Run `argv` in a fresh container of `image` with no network at all; always remove it.

    `binds` are host directories mounted read-write at the same path (as
    Apptainer binds them); `mounts` are (host, target, read_only) triples.
    `probe` paths are looked up by the engine inside the stopped container
    (never on the host). `timeout` None waits for the command however long it
    runs. The output is streamed (module docstring): `expect` texts are watched
    for, `log` receives the capped interleaved output, `keep_bytes` > 0 keeps
    that much of each stream exact.
    """
    import docker.errors
    import docker.types
    from requests.exceptions import RequestException  # the SDK's transport: a read timeout lands here

    from neurodocker_nd.core import engine

    capture = _Capture(
        tails=(_Tail(tail_bytes), _Tail(tail_bytes), _Tail(tail_bytes)),
        heads=(_Head(keep_bytes), _Head(keep_bytes)),
        watch=_Watch(tuple(text.encode() for text in expect)),
        log=_LogCopy(log, log_bytes) if log is not None else None,
    )
    volumes = {str(p): {"bind": str(p), "mode": "rw"} for p in binds}
    volumes.update({str(host): {"bind": target, "mode": "ro" if ro else "rw"} for host, target, ro in mounts})
    started = time.monotonic()
    container = client.containers.create(
        image,
        command=argv,
        entrypoint=entrypoint,
        network_mode="none",
        volumes=volumes,
        working_dir=workdir,
        hostname=hostname,
        user=user,
        labels=labels or {},
        # The output reaches ndgen through the attach below; the engine keeps no second copy on its disk.
        log_config=docker.types.LogConfig(type="none"),
    )
    reader: threading.Thread | None = None
    stream: Any = None
    exit_code: int | None = 127
    present: tuple[str, ...] = ()
    try:
        # Attached before the start, so not a byte is missed; demux keeps stdout and stderr apart.
        stream = client.api.attach(container.id, stdout=True, stderr=True, stream=True, logs=False, demux=True)
        problems: list[str] = []
        reader = threading.Thread(target=_pump, args=(stream, capture, problems), daemon=True)
        reader.start()
        try:
            container.start()
        except docker.errors.APIError as exc:
            # The runtime could not start the command (e.g. no bash in the image): report it
            # as the shell would (127), so a test fails with the reason instead of aborting the run.
            capture.add(_STDERR, (engine.first_line(exc) + "\n").encode())
        else:
            try:
                exit_code = container.wait(timeout=timeout)["StatusCode"]
            except RequestException:  # no answer within the timeout: a hung command
                exit_code = None
                try:
                    container.kill()
                except docker.errors.APIError:  # it exited between the timeout and the kill
                    pass
            reader.join(_DRAIN_S)
            present = tuple(p for p in probe if engine._exists_in(client, container.id, p))
        seconds = time.monotonic() - started
    finally:
        if stream is not None:
            stream.close()  # unblocks the reader if the engine still holds the attach open
        if reader is not None:
            reader.join(_DRAIN_S)
        container.remove(force=True)
    for problem in problems:
        capture.add(_STDERR, f"[ndgen: the output stream broke: {problem}]\n".encode())
    with capture.lock:
        out, err, both = capture.tails
        if capture.log is not None:
            capture.log.finish(both)
        found = capture.watch.result()
        return CapturedRun(
            exit_code=exit_code,
            stdout=out.text(),
            stderr=err.text(),
            output=both.text(),
            seconds=seconds,
            present=present,
            found=frozenset(text for index, text in enumerate(expect) if index in found),
            stdout_bytes=out.total,
            stderr_bytes=err.total,
            stdout_cut=out.total > len(out.data),
            stdout_head=bytes(capture.heads[_STDOUT].data),
            stderr_head=bytes(capture.heads[_STDERR].data),
        )


def _pump(stream: Any, capture: _Capture, problems: list[str]) -> None:
    """The reader thread: each (stdout, stderr) frame into the capture until the stream ends."""
    try:
        for out, err in stream:
            if out:
                capture.add(_STDOUT, out)
            if err:
                capture.add(_STDERR, err)
    except Exception as exc:  # noqa: BLE001 - closed by us after the drain wait, or the engine went away
        problems.append(f"{type(exc).__name__}: {exc}")
