"""Issue 17, findings 9-11: the host reads an image's files (and copies the mounts a
workload or setup wrote) as hostile data: regular files only, nothing followed out of
the image, nothing that blocks (FIFO) or never ends (a device like /dev/zero), with caps.

Every hostile case runs in a child process with a deadline and limits (address space,
file size): on code that still blocks, reads forever or fills the disk, the child is
killed and the test FAILS instead of hanging the suite.  Real files, real FIFOs, real
device nodes (mknod: the suite runs as root), real ELF binaries; no mocks.
"""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from neurodocker_nd.minify import imagefs, verify
from neurodocker_nd.minify.model import Mount
from support import MULTIARCH, merged_usr_tree

DEADLINE = 30.0  # seconds: every case below takes milliseconds when handled

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")


def bounded(code: str, *, fsize: int = 256 << 20) -> subprocess.CompletedProcess[str]:
    """Run `code` in a child python: killed after DEADLINE, 2 GiB of memory, `fsize` per file."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True, text=True, timeout=DEADLINE, preexec_fn=limits,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {DEADLINE:g} s: blocked on or reading a hostile file")
    assert time.monotonic() - start < DEADLINE
    return proc


def zero_device(path: Path) -> None:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # what the host's /dev/zero is


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A Debian-shaped merged-/usr tree with the host's real `true` and its libraries."""
    r = merged_usr_tree(tmp_path / "rootfs")
    (r / "opt").mkdir()
    (r / "usr/bin/dash").write_text("#!/usr/bin/true\n")
    (r / "etc/ld.so.conf.d/x86_64-linux-gnu.conf").write_text(f"{MULTIARCH}\n")
    (r / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (r / "etc/group").write_text("root:x:0:\n")
    return r


# -- the helper ------------------------------------------------------------------------------


def test_helper_reads_regular_files_through_in_image_links(root, tmp_path):
    (root / "etc/abs").symlink_to("/etc/passwd")  # absolute: the image's /etc, not the host's
    (root / "opt/etc").symlink_to("../etc")
    assert imagefs.read_bytes(str(root), "/etc/abs") == b"root:x:0:0:root:/root:/bin/sh\n"
    assert imagefs.read_bytes(str(root), "/opt/etc/passwd") == b"root:x:0:0:root:/root:/bin/sh\n"
    assert imagefs.read_bytes(str(root), "/etc/absent") is None


def test_helper_never_leaves_the_image(root, tmp_path):
    """A final or an intermediate link pointing out of the root (absolute or by ..) resolves
    inside the image: the host file of that name is never read."""
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    (root / "etc/final").symlink_to(secret)
    (root / "etc/dotdot").symlink_to("../../../../../../../.." + str(secret))
    (root / "opt/up").symlink_to("../../../../../../../.." + str(tmp_path))
    (root / "opt/abs-dir").symlink_to(str(tmp_path))
    for path in ("/etc/final", "/etc/dotdot", "/opt/up/host-secret", "/opt/abs-dir/host-secret"):
        assert imagefs.read_bytes(str(root), path) is None, path
    # The same name inside the image is what is read.
    inside = root / str(tmp_path).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "host-secret").write_text("image")
    assert imagefs.read_bytes(str(root), "/opt/up/host-secret") == b"image"
    assert imagefs.read_bytes(str(root), "/etc/final") == b"image"


@needs_root
@pytest.mark.parametrize("kind", ["fifo", "zero-device", "directory", "fifo-via-link"])
def test_helper_refuses_non_regular_files_without_blocking(root, kind):
    target = root / "etc/x"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "zero-device":
        zero_device(target)
    elif kind == "directory":
        target.mkdir()
    else:
        os.mkfifo(root / "opt/pipe")
        target.symlink_to("/opt/pipe")
    proc = bounded(f"""
        from neurodocker_nd.minify import imagefs
        try:
            imagefs.read_bytes({str(root)!r}, "/etc/x")
        except imagefs.ImageFileError as exc:
            print(exc)
        print(imagefs.shebang({str(root)!r}, "/etc/x"))
    """)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    shown, what = {
        "fifo": ("/etc/x", "a FIFO"),
        "zero-device": ("/etc/x", "a character device"),
        "directory": ("/etc/x", "a directory"),
        "fifo-via-link": ("/etc/x (-> /opt/pipe)", "a FIFO"),
    }[kind]
    assert first == f"image file {shown} is {what}, not a regular file"
    assert second == "[]"  # a #! read of such a file is "no interpreter", not an error


def test_helper_caps_reads(root):
    big = root / "etc/big"
    with open(big, "wb") as fh:  # sparse: 3 GiB long, nothing on disk
        fh.truncate(3 << 30)
    with pytest.raises(imagefs.ImageFileError, match="larger than"):
        imagefs.read_bytes(str(root), "/etc/big")
    assert imagefs.read_bytes(str(root), "/etc/big", 20, head=True) == bytes(20)


# -- every reader of image files in minify uses it (finding 9) ---------------------------------


@needs_root
@pytest.mark.parametrize("kind", ["fifo", "zero-device"])
@pytest.mark.parametrize("name", ["passwd", "group"])
def test_user_tables_that_are_not_files_are_one_error(root, kind, name):
    target = root / "etc" / name
    target.unlink()
    os.mkfifo(target) if kind == "fifo" else zero_device(target)
    proc = bounded(f"""
        from pathlib import Path
        from neurodocker_nd.errors import NdgenError
        from neurodocker_nd.minify.sandbox import resolve_user
        try:
            resolve_user(Path({str(root)!r}), "root")
        except NdgenError as exc:
            print(exc)
    """)
    assert proc.returncode == 0, proc.stderr[-500:]
    kind_text = "a FIFO" if kind == "fifo" else "a character device"
    assert proc.stdout.strip() == f"image file /etc/{name} is {kind_text}, not a regular file"


CLOSURE = """
    from pathlib import Path
    from neurodocker_nd.errors import NdgenError
    from neurodocker_nd.minify import keep
    from neurodocker_nd.minify.model import ImageConfig, TraceRecord
    config = ImageConfig(image_id="sha256:abc", name="src:1", entrypoint={entrypoint!r})
    extra = {{"executed": frozenset({executed!r})}} if {executed!r} else {{}}  # older records had no field
    record = TraceRecord(frozenset({{"/bin/true"}}), frozenset(), (), "test", 0.0, **extra)
    try:
        kept = keep.closure(Path({root!r}), config, record).paths
        print("kept", " ".join(sorted(kept)))
    except NdgenError as exc:
        print("error", exc)
"""


def closure(root: Path, entrypoint: tuple[str, ...] | None = None, executed: frozenset[str] = frozenset()) -> str:
    proc = bounded(CLOSURE.format(root=str(root), entrypoint=entrypoint, executed=set(executed) or set()))
    assert proc.returncode == 0, proc.stderr[-800:]
    return proc.stdout.strip()


@needs_root
@pytest.mark.parametrize("kind", ["fifo", "zero-device"])
@pytest.mark.parametrize("where", ["/etc/ld.so.conf", "/etc/ld.so.conf.d/x86_64-linux-gnu.conf"])
def test_ld_so_conf_that_is_not_a_file_is_one_error(root, kind, where):
    target = root / where.lstrip("/")
    target.unlink()
    os.mkfifo(target) if kind == "fifo" else zero_device(target)
    kind_text = "a FIFO" if kind == "fifo" else "a character device"
    assert closure(root) == f"error image file {where} is {kind_text}, not a regular file"


def test_ld_so_conf_including_itself_is_read_once(root):
    # ldconfig's include globs: a file including its own directory's glob recursed 9 levels,
    # each level multiplying the work by the number of files.
    for i in range(40):
        (root / f"etc/ld.so.conf.d/{i:02}.conf").write_text("include /etc/ld.so.conf.d/*.conf\n/opt/lib\n")
    assert closure(root).startswith("kept ")


@needs_root
@pytest.mark.parametrize("kind", ["fifo", "zero-device"])
def test_elf_candidates_and_entrypoint_that_are_not_files_are_skipped(root, kind):
    """A FIFO or device named like a DT_NEEDED library, as ENTRYPOINT, or as an exec'ed
    script: the closure finishes (those entries are kept as they are, nothing is read)."""
    lib = root / MULTIARCH[1:] / "libc.so.6"
    lib.unlink()
    make = os.mkfifo if kind == "fifo" else zero_device
    make(lib)
    make(root / "opt/entry")
    make(root / "opt/script")
    out = closure(root, entrypoint=("/opt/entry",), executed=frozenset({"/opt/script"}))
    assert out.startswith("kept ")
    assert {"/opt/entry", "/usr/bin/true"} <= set(out.split()[1:])


def test_interpreters_of_executed_scripts_are_read_in_the_given_root(root):
    """finding 10: the closure reads #! lines of what the tracer saw exec'ed, in the root it
    is given (the pristine image), following in-image links only."""
    (root / "opt/tool").write_text("#!/bin/sh\necho\n")
    out = closure(root, executed=frozenset({"/opt/tool"}))
    assert {"/usr/bin/dash", "/usr/bin/sh", "/bin"} <= set(out.split()[1:])


@needs_root
def test_shebang_interpreters_never_read_through_a_mount_or_block(root, tmp_path):
    from neurodocker_nd.minify.ptrace import shebang_interpreters

    host = tmp_path / "mounted"
    host.mkdir()
    (host / "run").write_text("#!/usr/bin/host-only\n")
    os.mkfifo(root / "opt/fifo")
    proc = bounded(f"""
        from pathlib import Path
        from neurodocker_nd.minify.ptrace import shebang_interpreters
        from neurodocker_nd.minify.model import Mount
        mounts = [Mount(host=Path({str(host)!r}), target="/data")]
        print(sorted(shebang_interpreters(Path({str(root)!r}), ["/opt/fifo", "/data/run"], mounts)))
    """)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.strip() == "[]"
    # The image's own scripts still name their interpreters.
    (root / "opt/tool").write_text("#!/bin/sh\n")
    found = shebang_interpreters(root, ["/opt/tool"], [Mount(host=host, target="/data")])
    assert found == {"/bin/sh", "/usr/bin/true"}  # sh -> dash, whose #! names true


def test_ptrace_no_longer_has_its_own_resolver():
    from neurodocker_nd.minify import ptrace

    assert not hasattr(ptrace, "resolve_in_image")  # folded into imagefs.resolve_in_root


@needs_root
@pytest.mark.parametrize("kind", ["status-fifo", "list-device", "status-huge"])
def test_dpkg_database_is_read_as_capped_regular_files(root, kind):
    dpkg = root / "var/lib/dpkg"
    (dpkg / "info").mkdir(parents=True)
    (dpkg / "status").write_text("Package: coreutils\nStatus: install ok installed\nArchitecture: amd64\n\n")
    (dpkg / "info/coreutils.list").write_text("/usr/bin/true\n")
    if kind == "status-fifo":
        (dpkg / "status").unlink()
        os.mkfifo(dpkg / "status")
    elif kind == "list-device":
        (dpkg / "info/coreutils.list").unlink()
        zero_device(dpkg / "info/coreutils.list")
    else:
        with open(dpkg / "status", "r+b") as fh:  # 4 GiB, sparse
            fh.truncate(4 << 30)
    proc = bounded(f"""
        from neurodocker_nd.errors import NdgenError
        from neurodocker_nd.minify.packages import read_database
        try:
            read_database({str(root)!r})
            print("read")
        except NdgenError as exc:
            print(exc)
    """)
    assert proc.returncode == 0, proc.stderr[-500:]
    expected = {
        "status-fifo": "image file /var/lib/dpkg/status is a FIFO, not a regular file",
        "list-device": "image file /var/lib/dpkg/info/coreutils.list is a character device, not a regular file",
        "status-huge": "image file /var/lib/dpkg/status is larger than",
    }[kind]
    assert proc.stdout.strip().startswith(expected)


def test_dpkg_database_still_read(root):
    from neurodocker_nd.minify.packages import read_database

    dpkg = root / "var/lib/dpkg"
    (dpkg / "info").mkdir(parents=True)
    (dpkg / "status").write_text("Package: coreutils\nStatus: install ok installed\nArchitecture: amd64\n\n")
    (dpkg / "info/coreutils.list").write_text("/.\n/bin\n/bin/true\n")
    db = read_database(str(root))
    assert db.packages["coreutils"].files == ("/bin", "/usr/bin/true")


# -- mount copies (finding 11) -----------------------------------------------------------------

COPY = """
    from pathlib import Path
    from neurodocker_nd.errors import NdgenError
    from neurodocker_nd.minify import verify
    from neurodocker_nd.minify.model import Mount
    scratch = Path({scratch!r})
    mounts = verify.MountSet(mounts=(Mount(host=Path({host!r}), target="/data"),), snapshots=(Path({snap!r}),))
    try:
        mounts.fresh(scratch, "trace")
        print("copied")
    except NdgenError as exc:
        print(exc)
"""


@needs_root
@pytest.mark.parametrize("kind", ["zero-device", "fifo"])
def test_fresh_mount_copy_refuses_what_setup_left_that_is_not_a_file(tmp_path, kind):
    """Profile setup runs the image's programs on the snapshot: a device node it made must
    not be read by the copy for the next run (/dev/zero filled the disk), a FIFO not block it."""
    snap = tmp_path / "initial"
    (snap / "sub").mkdir(parents=True)
    (snap / "sub/input.txt").write_text("data")
    (zero_device if kind == "zero-device" else os.mkfifo)(snap / "sub/zero")
    proc = bounded(COPY.format(scratch=str(tmp_path / "scratch"), host=str(tmp_path), snap=str(snap)), fsize=64 << 20)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    what = "a device node" if kind == "zero-device" else "a FIFO"
    assert proc.stdout.strip() == (
        f"mount copy of {snap}: sub/zero is {what}; only regular files, directories and symlinks are copied"
    )


def test_mount_copy_keeps_files_links_modes_and_is_capped(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/f").write_bytes(b"x" * 1000)
    (src / "d/f").chmod(0o640)
    (src / "link").symlink_to("/etc/passwd")  # copied as a link, never followed
    (src / "up").symlink_to("..")
    verify._copy(src, tmp_path / "copy")
    assert (tmp_path / "copy/d/f").read_bytes() == b"x" * 1000
    assert stat.S_IMODE((tmp_path / "copy/d/f").stat().st_mode) == 0o640
    assert os.readlink(tmp_path / "copy/link") == "/etc/passwd"
    assert os.readlink(tmp_path / "copy/up") == ".."
    assert verify._tree_diff(src, tmp_path / "copy") is None
    with pytest.raises(verify.NdgenError, match="more than 999 bytes"):
        verify._copy(src, tmp_path / "copy2", max_bytes=999)
    with pytest.raises(verify.NdgenError, match="more than 3 entries"):
        verify._copy(src, tmp_path / "copy3", max_entries=3)


def test_mount_copy_refuses_a_sparse_file_over_the_cap_before_writing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as fh:
        fh.truncate(1 << 40)  # 1 TiB of holes
    start = time.monotonic()
    with pytest.raises(verify.NdgenError, match="more than"):
        verify._copy(src, tmp_path / "copy")
    assert time.monotonic() - start < 5
    assert not (tmp_path / "copy/sparse").exists()  # refused before a byte was written


@needs_root
def test_output_comparison_does_not_follow_or_block(tmp_path):
    """Both copies are what workloads wrote: a FIFO or a link to a host file in them is
    compared as what it is, never opened through."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        os.mkfifo(d / "pipe")
    (a / "link").symlink_to("/etc/passwd")
    (b / "link").symlink_to("/etc/passwd")
    proc = bounded(f"""
        from pathlib import Path
        from neurodocker_nd.minify import verify
        print(verify._tree_diff(Path({str(a)!r}), Path({str(b)!r})))
    """)
    assert proc.stdout.strip() == "None", proc.stderr[-500:]
    (b / "link").unlink()
    (b / "link").symlink_to("/etc/group")
    assert verify._tree_diff(a, b) == "link"


def test_a_trace_log_over_the_cap_is_one_error_not_held(tmp_path, monkeypatch):
    """The strace log directory is writable by the workload: its log is read with a bound."""
    from neurodocker_nd.errors import TraceError
    from neurodocker_nd.minify import ptrace

    log = tmp_path / "0.log"
    log.write_bytes(b'1 execve("/bin/true", ["true"], 0x0 /* 0 vars */) = 0\n' * 64)
    monkeypatch.setattr(ptrace, "MAX_LOG_BYTES", 1024)
    with pytest.raises(TraceError, match="larger than"):
        ptrace.read_log(log, "true")
    monkeypatch.setattr(ptrace, "MAX_LOG_BYTES", 1 << 20)
    assert len(ptrace.read_log(log, "true")) == 64
