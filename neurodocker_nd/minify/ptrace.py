"""The ptrace tracer: strace follows the sandboxed workload and we parse its log.

strace runs inside the sandbox as the workload's parent (:func:`strace_bundle`):
from outside it would trace runc as well, ≈0.1 s per command.

Why strace and not reprozip's ``_pytracer`` (both measured on the mrtrix3
reference workload through the same bwrap sandbox, see bench/minify.py):

* strace with ``--seccomp-bpf`` stops only on the file syscalls we ask for:
  ≈1.1-1.4x the untraced wall time on the reference workload (more on
  import-heavy Python); reprozip stops on every syscall (≈2x here, ≈4x inside
  a Docker container).
* reprozip resolves paths on the *host*: through bwrap's pivot_root it stats
  "/newroot/…" and "/usr/bin/mrstats" outside the sandbox ("couldn't open
  executed file"), so its record mixes host paths and misses image ones.
* strace reports failed lookups (ENOENT) too; reprozip records successes only,
  so it cannot fill :attr:`TraceRecord.missing`.
* ``-y`` prints the path behind every dirfd and AT_FDCWD as the *tracee* sees
  it, i.e. in-image paths after bwrap's pivot_root, so relative lookups resolve
  without replaying chdir/clone bookkeeping across PID namespaces.

What this tracer adds over fanotify: stat-only lookups (CPython's prefix
search), readlink, access(), every path component a program names on its way
(symlinks included), directories listed, and every program exec'ed, whose ``#!``
interpreter the kernel opens without a syscall: the closure reads that line in
the pristine image (:func:`shebang_interpreters`), never in the view the
workload wrote to nor through a mount's host side.

A process counts once it has exec'ed the workload's program, or when it first
appears after that: whatever strace's own child does before its exec is not
the workload's (and a launcher traced from outside would be excluded the same way).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import attrs

from neurodocker_nd.errors import TraceError
from neurodocker_nd.minify import imagefs
from neurodocker_nd.minify.model import SHELL, CommandResult, ImageConfig, Mount, Tracer, TraceRecord
from neurodocker_nd.minify.sandbox import run_sandboxed, sandbox_command

# %file = every syscall taking a path; fchdir moves the cwd without one.
STRACE_FLAGS = (
    "-f",  # follow forks, vforks and threads
    "--seccomp-bpf",  # stop only on the traced syscalls: the overhead win
    "-qq",  # no attach/exit chatter in the log
    "-xx",  # every string in hex: unambiguous to parse, whatever bytes a path holds
    "-y",  # print the path behind each fd (dirfd, AT_FDCWD, returned fd)
    "-e", "verbose=none",  # no struct decoding (stat buffers): cheaper, nothing we need
    "-e", "signal=none",
    # clone & co. return the child's pid: the launcher's (runc's) own threads and children
    # stay outside the workload even when they appear after it started.
    "-e", "trace=%file,fchdir,clone,clone3,fork,vfork",
)  # fmt: skip

# syscall -> positions of (dirfd, path) argument pairs; dirfd None = relative to the cwd
_PATH_ARGS: dict[str, tuple[tuple[int | None, int], ...]] = {
    **{
        name: ((0, 1),)
        for name in (
            "openat", "openat2", "newfstatat", "fstatat64", "statx", "faccessat",
            "faccessat2", "readlinkat", "mkdirat", "mknodat", "fchownat", "fchmodat",
            "fchmodat2", "utimensat", "futimesat", "unlinkat", "execveat",
            "name_to_handle_at", "open_tree", "fspick",
        )
    },
    **{name: ((0, 1), (2, 3)) for name in ("renameat", "renameat2", "linkat")},
    "symlinkat": ((1, 2),),
    **{
        name: ((None, 0),)
        for name in (
            "open", "creat", "stat", "lstat", "stat64", "lstat64", "access", "readlink",
            "execve", "chdir", "chroot", "mkdir", "rmdir", "unlink", "truncate", "chmod",
            "chown", "lchown", "utime", "utimes", "statfs", "getxattr", "lgetxattr",
            "listxattr", "llistxattr", "setxattr", "lsetxattr", "removexattr",
            "lremovexattr", "mknod", "uselib",
        )
    },
    **{name: ((None, 0), (None, 1)) for name in ("rename", "link")},
    "symlink": ((None, 1),),
}  # fmt: skip

_EXECS = frozenset({"execve", "execveat"})
_CLONES = frozenset({"clone", "clone3", "fork", "vfork"})
# "1234 openat(args) = 3<path>" / "= -1 ENOENT (No such file or directory)"
_LINE = re.compile(
    r"^(?P<pid>\d+) +(?P<name>\w+)\((?P<args>.*)\) += (?P<ret>-?\d+|\?)"
    r"(?:<(?P<retpath>[^>]*)>)?(?: (?P<errno>E[A-Z0-9]+) .*)?$"
)
_UNFINISHED = " <unfinished ...>"
_RESUMED = re.compile(r"^(?P<pid>\d+) +<\.\.\. (?P<name>\w+) resumed>(?P<rest>.*)$")
_FD = re.compile(r"^(?:AT_FDCWD|-?\d+)<(?P<path>[^>]*)>$")
_HEX = re.compile(r"\\x([0-9a-fA-F]{2})")
_MAX_SHEBANG_DEPTH = 4  # the kernel allows a few levels of interpreter scripts


@attrs.frozen
class Syscall:
    """One completed syscall of a traced process, its strings decoded."""

    pid: int
    name: str
    args: tuple[str, ...]
    ok: bool
    errno: str | None
    retpath: str | None  # the path of a returned fd (opens), as the tracee sees it
    ret: int | None = None  # the return value (a child's pid for clone)


def _unhex(text: str) -> str:
    """Decode strace's -xx escapes; surrogateescape keeps non-UTF-8 names round-trippable."""
    try:
        raw = bytes.fromhex(text.replace("\\x", ""))  # -xx escapes every byte: the fast path
    except ValueError:
        raw = bytes(int(h, 16) for h in _HEX.findall(text))
    return raw.decode("utf-8", "surrogateescape")


def _split_args(args: str) -> tuple[str, ...]:
    """Split the top-level comma-separated arguments (strings are hex, so no quoted commas)."""
    if "{" not in args and "[" not in args and "(" not in args:
        return tuple(part.strip() for part in args.split(","))  # the common case, fast
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(args):
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(args[start:i].strip())
            start = i + 1
    parts.append(args[start:].strip())
    return tuple(parts)


def parse_strace(lines: Iterable[str]) -> Iterable[Syscall]:
    """Yield completed syscalls from an ``strace -f -xx -y`` log, joining interrupted lines."""
    pending: dict[str, str] = {}
    for raw in lines:
        line = raw.rstrip("\n")
        if line.endswith(_UNFINISHED):
            pid = line.split(" ", 1)[0]
            pending[pid] = line[: -len(_UNFINISHED)]
            continue
        resumed = _RESUMED.match(line)
        if resumed:
            head = pending.pop(resumed["pid"], None)
            if head is None:
                continue
            line = head + resumed["rest"]
        match = _LINE.match(line)
        if match is None:
            continue  # "+++ exited", "--- SIG", ptrace notes: not file accesses
        retpath = match["retpath"]
        yield Syscall(
            pid=int(match["pid"]),
            name=match["name"],
            args=_split_args(match["args"]),
            ok=match["ret"] != "?" and not match["ret"].startswith("-"),
            errno=match["errno"],
            retpath=_unhex(retpath) if retpath else None,
            ret=int(match["ret"]) if match["ret"] != "?" else None,
        )


def _string_arg(arg: str) -> str | None:
    if len(arg) >= 2 and arg[0] == '"' and arg[-1] in '"':
        return _unhex(arg[1:-1])
    if arg.startswith('"') and arg.endswith('"...'):
        return None  # truncated: never for paths, but do not guess
    return None


def _fd_path(arg: str) -> str | None:
    match = _FD.match(arg)
    if match is None:
        return None
    path = _unhex(match["path"]).removesuffix(" (deleted)")
    return path if path.startswith("/") else None  # pipe:[…], socket:[…] are not paths


@attrs.define
class _Collector:
    """Folds one command's syscalls into in-image paths, following which pids are in the sandbox."""

    workdir: str
    paths: set[str] = attrs.field(factory=set)
    missing: set[str] = attrs.field(factory=set)
    executed: set[str] = attrs.field(factory=set)
    program: str = SHELL  # the workload's first exec: what runs before it is the launcher's
    _started: bool = False
    _outside: set[int] = attrs.field(factory=set)  # the launcher's processes (runc, bwrap)
    _cwd: dict[int, str] = attrs.field(factory=dict)

    def feed(self, call: Syscall) -> None:
        if not self._inside(call):
            return
        cwd = self._cwd.get(call.pid, self.workdir)
        for dir_index, path_index in _PATH_ARGS.get(call.name, ()):
            if path_index >= len(call.args):
                continue
            path = _string_arg(call.args[path_index])
            if not path:
                continue  # NULL or "" with AT_EMPTY_PATH: the fd itself, seen when opened
            base = cwd
            if dir_index is not None and dir_index < len(call.args):
                base = _fd_path(call.args[dir_index]) or cwd
                if call.args[dir_index].startswith("AT_FDCWD<"):
                    self._cwd[call.pid] = cwd = base  # free cwd tracking
            full = posixpath.normpath(posixpath.join(base, path))
            full = "/" + full.lstrip("/")  # normpath keeps a leading "//"
            if call.ok:
                self.paths.add(full)
                if call.name in _EXECS:
                    self.executed.add(full)
                if call.name == "chdir":
                    self._cwd[call.pid] = full
            elif call.errno == "ENOENT":
                self.missing.add(full)
        if call.ok and call.retpath and call.retpath.startswith("/"):
            self.paths.add(call.retpath)
        if call.ok and call.name == "fchdir" and call.args:
            self._cwd[call.pid] = _fd_path(call.args[0]) or cwd

    def _inside(self, call: Syscall) -> bool:
        """True for processes of the workload, False for the launcher's (host paths).

        Everything before the exec of the workload's program belongs to the launcher,
        and so does every process or thread the launcher creates later (runc's Go
        threads, its cleanup after the workload exits).
        """
        pid = call.pid
        if call.name in _CLONES and call.ok and call.ret and (not self._started or pid in self._outside):
            self._outside.add(call.ret)
        if self._started:
            return pid not in self._outside
        if call.name == "execve" and call.ok and _string_arg(call.args[0]) == self.program:
            self._started = True
            self._outside.discard(pid)
            self._cwd.pop(pid, None)  # the exec'ed command starts in the workdir
            return True
        self._outside.add(pid)
        return False


def _under_mount(path: str, mounts: Sequence[Mount]) -> bool:
    return any(path == m.target or path.startswith(m.target.rstrip("/") + "/") for m in mounts)


def shebang_interpreters(root: Path, executed: Iterable[str], mounts: Sequence[Mount] = ()) -> set[str]:
    """Interpreters named on the ``#!`` line of executed scripts (the kernel loads them unseen).

    `root` is the *pristine* image (the closure passes it): the trace's writable view
    holds whatever the workload left there, a FIFO in place of a script included.
    Files are read with :func:`imagefs.shebang` (regular files only, 256 bytes, no link
    followed out of the image).  A script under a mount target is not read at all: its
    host side is the user's directory or a run's copy, not the image.
    """
    found: set[str] = set()
    todo = [path for path in executed if not _under_mount(path, mounts)]
    for _ in range(_MAX_SHEBANG_DEPTH):
        next_round: list[str] = []
        for path in todo:
            words = imagefs.shebang(str(root), path)
            if words and words[0].startswith("/"):
                interpreter = posixpath.normpath(words[0])
                if interpreter not in found and not _under_mount(interpreter, mounts):
                    found.add(interpreter)
                    next_round.append(interpreter)
        todo = next_round
    return found


def strace_binary() -> str:
    strace = shutil.which("strace")
    if strace is None:
        raise TraceError("the ptrace tracer needs strace on the host: apt-get install strace")
    return strace


# Inside the sandbox, on runc's (or bwrap's) own /dev tmpfs: never in the image's tree, so
# `ls /` and the keep-set are unchanged.  The bundle is read-only; the logs directory is
# the one thing the workload could also write, and its log is only ever parsed as data.
STRACE_DIR = "/dev/.ndgen-strace"
LOG_DIR = "/dev/.ndgen-strace-log"


def strace_bundle(strace: str, dest: Path) -> tuple[str, ...]:
    """Copy the host's strace, the libraries it links and its loader into `dest`; the argv
    that runs it from STRACE_DIR inside the sandbox, whatever libc the image has.

    strace runs *inside* the sandbox, as the workload's parent: tracing runc (a Go
    program with dozens of threads and its own file syscalls) cost ≈0.1 s per command,
    more than most neuroimaging commands take.
    """
    proc = subprocess.run(["ldd", strace], capture_output=True, text=True, check=False)
    libs: list[str] = []
    loader = None
    for line in proc.stdout.splitlines():
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        fields = line.split()
        if "=>" in fields and len(fields) >= 3 and fields[2].startswith("/"):
            libs.append(fields[2])
        elif fields and fields[0].startswith("/"):
            loader = fields[0]
    if proc.returncode != 0 or loader is None:
        raise TraceError(
            f"the ptrace tracer cannot list the libraries of {strace}: {proc.stderr.strip() or 'no loader'}"
        )
    (dest / "lib").mkdir(parents=True)
    for lib in libs:
        shutil.copy(lib, dest / "lib" / os.path.basename(lib))  # follows the .so symlinks
    shutil.copy(loader, dest / "ld.so")
    shutil.copy(strace, dest / "strace")
    return (f"{STRACE_DIR}/ld.so", "--library-path", f"{STRACE_DIR}/lib", f"{STRACE_DIR}/strace")


# One command's strace log, read whole: ~100 bytes a traced syscall, so room for millions.
MAX_LOG_BYTES = 512 * 1024 * 1024


def read_log(log: Path, command: str) -> list[str]:
    """The log strace wrote, never what the workload put in its place.

    The logs directory is writable inside the sandbox (strace runs as the image's
    USER): a workload could swap a log for a symlink to a host file or a FIFO.  So it is
    opened without following a symlink and read only if it is a regular file.
    """
    try:
        fd = os.open(log, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return []  # strace never started: _check_started says why
    except OSError as exc:  # ELOOP: a symlink
        raise TraceError(f"ptrace tracer: {command!r} replaced its trace log ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise TraceError(f"ptrace tracer: {command!r} replaced its trace log with a non-regular file")
        data = handle.read(MAX_LOG_BYTES + 1)  # the workload can write to it: read a bounded amount
    if len(data) > MAX_LOG_BYTES:
        raise TraceError(
            f"ptrace tracer: the trace log of {command!r} is larger than {MAX_LOG_BYTES >> 20} MiB "
            "(a workload this busy is for the fanotify tracer)"
        )
    return data.decode(errors="surrogateescape").splitlines(keepends=True)


def _check_started(lines: Sequence[str], result: CommandResult) -> None:
    """strace itself failing (no ptrace permission, seccomp refused) leaves no exec in the log."""
    first = lines[0] if lines else ""
    if " execve(" not in first:
        detail = next(
            # strace prefixes its own messages with its argv[0] ("/usr/bin/strace: …")
            (line for line in result.stderr.decode(errors="replace").splitlines() if "strace: " in line),
            f"exit code {result.exit_code}",
        )
        raise TraceError(f"ptrace tracer could not run {result.command!r}: {detail}")


@attrs.define
class _Session:
    """A strace trace under way: the launcher and log directory mounted into every sandbox,
    and what the commands' logs showed so far."""

    rootfs: Path
    config: ImageConfig
    mounts: Sequence[Mount]
    launcher: tuple[str, ...]
    own: tuple[Mount, ...]  # strace's bundle and the log directory
    logs: Path
    paths: set[str] = attrs.field(factory=set)
    missing: set[str] = attrs.field(factory=set)
    executed: set[str] = attrs.field(factory=set)
    index: int = 0  # the next command's log number

    def run(self, command: str, timeout: float | None) -> CommandResult:
        index, self.index = self.index, self.index + 1
        log = self.logs / f"{index}.log"
        inner = (*self.launcher, *STRACE_FLAGS, "-o", f"{LOG_DIR}/{index}.log", "--")
        sandbox = sandbox_command(self.rootfs, self.config, command, [*self.mounts, *self.own], inner=inner)
        result = run_sandboxed(sandbox, command, timeout=timeout)
        lines = read_log(log, command)
        _check_started(lines, result)
        collector = _Collector(workdir=self.config.workdir or "/")
        for call in parse_strace(lines):
            collector.feed(call)
        self.paths |= collector.paths
        self.missing |= collector.missing
        self.executed |= collector.executed
        return result

    def record(self, results: tuple[CommandResult, ...], tracer: str) -> TraceRecord:
        # The kernel follows the exec'ed path's symlinks without a syscall we see: add the
        # targets, resolved in the image by lstat/readlink alone.  It also opens a script's
        # interpreter unseen: that is read by the closure in the pristine image
        # (`executed`), never here, where the workload's writes and mounts are.
        executed = self.executed
        root = str(self.rootfs)
        paths = self.paths | executed
        paths |= {
            resolved
            for p in executed
            if not _under_mount(p, self.mounts) and (resolved := imagefs.resolve_in_root(root, p, strict=False))
        }
        return TraceRecord(
            paths=frozenset(paths),
            missing=frozenset(self.missing - paths),
            results=results,
            tracer=tracer,
            seconds=sum(r.seconds for r in results),
            executed=frozenset(executed),
        )


@attrs.frozen
class PtraceTracer(Tracer):
    """A :class:`neurodocker_nd.minify.model.Tracer` with strace."""

    name: str = "ptrace"

    @contextlib.contextmanager
    def session(self, rootfs: Path, config: ImageConfig, mounts: Sequence[Mount]) -> Iterator[_Session]:
        strace = strace_binary()
        with tempfile.TemporaryDirectory(prefix="ndgen-strace-") as tmp:
            bundle, logs = Path(tmp) / "bundle", Path(tmp) / "logs"
            launcher = strace_bundle(strace, bundle)
            logs.mkdir()
            logs.chmod(0o777)  # strace runs as the image's USER
            own = (Mount(host=bundle, target=STRACE_DIR, read_only=True), Mount(host=logs, target=LOG_DIR))
            yield _Session(rootfs, config, mounts, launcher, own, logs)
