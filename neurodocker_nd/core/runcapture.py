"""A throw-away container's output, captured while it streams with a bounded memory cost.

Every throw-away container ndgen runs goes through `engine.run_once` (`ndgen
test`, `ndgen build`'s package tests, minify's verify rerun), which feeds the
attach stream to a :class:`Capture`. Reading a finished container's whole log
three times (stdout, stderr, both) and decoding each cost ndgen 1.47 GB for a
test printing 300 MB. Here the output is read while the command runs, from an
attach made before the container starts (the engine keeps no log of its own:
log driver `none`), and each chunk goes once through:

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
This module knows nothing of the engine: the container's lifecycle is
`engine.run_once`'s.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

TAIL_BYTES = 64 * 1024
LOG_BYTES = 4 * 1024 * 1024
_STDOUT, _STDERR = 0, 1


@attrs.frozen
class CapturedRun:
    """What one command returned; its output as bounded tails (docs: module docstring).

    The one result of `engine.run_once`. The callers' own types are not this one
    folded in: `docker_build.TestOutcome` and `testrun.CaseResult` are report rows
    (a name, a verdict by their own rules, SKIP and WARN rows that ran nothing),
    and minify's `model.CommandResult` holds exact bytes from host-sandbox runs too.
    """

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
class Capture:
    """Every chunk once through the tails, the heads, the watchers and the log copy (thread-safe)."""

    expect: tuple[str, ...]
    tails: tuple[_Tail, _Tail, _Tail]  # stdout, stderr, both
    heads: tuple[_Head, _Head]  # stdout, stderr
    watch: _Watch
    log: _LogCopy | None
    problems: list[str] = attrs.field(factory=list)  # what broke the stream, said on stderr at the end
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    @classmethod
    def new(
        cls,
        *,
        expect: Sequence[str] = (),
        log: Callable[[str], None] | None = None,
        tail_bytes: int = TAIL_BYTES,
        log_bytes: int = LOG_BYTES,
        keep_bytes: int = 0,
    ) -> Capture:
        """`expect` texts are watched for, `log` receives the capped interleaved output,
        `keep_bytes` > 0 keeps that much of each stream exact (module docstring)."""
        return cls(
            expect=tuple(expect),
            tails=(_Tail(tail_bytes), _Tail(tail_bytes), _Tail(tail_bytes)),
            heads=(_Head(keep_bytes), _Head(keep_bytes)),
            watch=_Watch(tuple(text.encode() for text in expect)),
            log=_LogCopy(log, log_bytes) if log is not None else None,
        )

    def add(self, stream: int, chunk: bytes) -> None:
        with self.lock:
            self.tails[stream].add(chunk)
            self.tails[2].add(chunk)
            self.heads[stream].add(chunk)
            self.watch.add(stream, chunk)
            if self.log is not None:
                self.log.add(chunk)

    def say(self, line: str) -> None:
        """One line of ndgen's own on stderr (e.g. why the runtime could not start the command)."""
        self.add(_STDERR, (line + "\n").encode())

    def follow(self, stream: Any) -> threading.Thread:
        """A started daemon thread reading `stream`'s (stdout, stderr) frames until it ends."""
        reader = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        reader.start()
        return reader

    def _pump(self, stream: Any) -> None:
        try:
            for out, err in stream:
                if out:
                    self.add(_STDOUT, out)
                if err:
                    self.add(_STDERR, err)
        except Exception as exc:  # noqa: BLE001 - closed by us after the drain wait, or the engine went away
            self.problems.append(f"{type(exc).__name__}: {exc}")

    def result(self, exit_code: int | None, seconds: float, present: tuple[str, ...] = ()) -> CapturedRun:
        """What the command did, once its stream has ended (or been given up on)."""
        for problem in self.problems:
            self.say(f"[ndgen: the output stream broke: {problem}]")
        with self.lock:
            out, err, both = self.tails
            if self.log is not None:
                self.log.finish(both)
            found = self.watch.result()
            return CapturedRun(
                exit_code=exit_code,
                stdout=out.text(),
                stderr=err.text(),
                output=both.text(),
                seconds=seconds,
                present=present,
                found=frozenset(text for index, text in enumerate(self.expect) if index in found),
                stdout_bytes=out.total,
                stderr_bytes=err.total,
                stdout_cut=out.total > len(out.data),
                stdout_head=bytes(self.heads[_STDOUT].data),
                stderr_head=bytes(self.heads[_STDERR].data),
            )
