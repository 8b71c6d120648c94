"""Unit tests for the minify steps that need no engine: real files, real ELF binaries, real tar."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.minify import keep, verify
from neurodocker_nd.minify import write as image
from neurodocker_nd.minify.model import CommandResult, ImageConfig, Mount, TraceRecord, UserIds, in_image_path
from neurodocker_nd.minify.sandbox import resolve_user, sandbox_command, sandbox_env
from support import MULTIARCH, merged_usr_tree


def _config(**kwargs) -> ImageConfig:
    return ImageConfig(image_id="sha256:abc", name="src:1", **kwargs)


def _record(*paths: str) -> TraceRecord:
    return TraceRecord(paths=frozenset(paths), missing=frozenset(), results=(), tracer="test", seconds=0.0)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A Debian-shaped merged-/usr tree holding the host's real `true` and its libraries."""
    root = merged_usr_tree(tmp_path / "rootfs")
    (root / "usr/bin/dash").write_text("not really dash")
    (root / "etc/ld.so.conf.d/x86_64-linux-gnu.conf").write_text("# multiarch\n/lib/x86_64-linux-gnu\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nneuro:x:1000:1000::/home/neuro:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nneuro:x:1000:\nusers:x:100:\n")
    (root / "etc/unrelated.conf").write_text("x")
    return root


def test_closure_keeps_elf_closure_symlink_chains_and_essentials(rootfs):
    kept = keep.closure(rootfs, _config(), _record("/bin/true", "/proc/self/maps", "/tmp/scratch")).paths
    # the traced name's own symlink, its target, DT_NEEDED, and the PT_INTERP chain /lib64 → …
    assert {"/bin", "/usr/bin/true", f"{MULTIARCH}/libc.so.6", "/lib64", "/usr/lib64/ld-linux-x86-64.so.2",
            f"{MULTIARCH}/ld-linux-x86-64.so.2"} <= kept  # fmt: skip
    assert {"/bin/sh", "/usr/bin/sh", "/usr/bin/dash", "/etc/passwd", "/etc/group", "/etc/ld.so.conf"} & kept >= {
        "/usr/bin/sh",
        "/usr/bin/dash",
        "/etc/passwd",
        "/etc/group",
        "/etc/ld.so.conf",
    }
    assert "/etc/ld.so.conf.d/x86_64-linux-gnu.conf" in kept
    assert {"/tmp", "/proc", "/root"} <= kept  # runtime dirs and HOME exist, empty
    assert "/proc/self/maps" not in kept and "/tmp/scratch" not in kept
    assert "/etc/unrelated.conf" not in kept


def test_library_resolved_through_runpath_origin(rootfs, tmp_path):
    # A library only reachable through RUNPATH=$ORIGIN/../lib, as relocatable installs ship them.
    closure = keep._Closure(keep._Image(rootfs), _config(), keep.RUNTIME_DIRS)
    (rootfs / "opt/app/lib").mkdir(parents=True)
    (rootfs / "opt/app/bin").mkdir()
    shutil.copy2(f"{MULTIARCH}/libc.so.6", rootfs / "opt/app/lib/libfoo.so.1")
    ident = keep._elf_ident(closure.image, "/usr/bin/true")
    found = closure._find_library("libfoo.so.1", "/opt/app/bin", [], ["$ORIGIN/../lib"], [], ident)
    assert found == "/opt/app/bin/../lib/libfoo.so.1"
    assert closure._find_library("libfoo.so.1", "/opt/app/bin", [], [], [], ident) is None
    # a 32-bit (or other-machine) file of the right name is skipped
    (rootfs / "opt/app/lib/libbar.so").write_bytes(b"\x7fELF\x01\x01" + bytes(14))
    assert closure._find_library("libbar.so", "/x", ["/opt/app/lib"], [], [], ident) is None


def test_python_rules_landmark_and_sources_of_bytecode(rootfs):
    lib = rootfs / "usr/lib/python3.11"
    (lib / "__pycache__").mkdir(parents=True)
    (lib / "lib-dynload").mkdir()
    (lib / "os.py").write_text("")
    (lib / "json.py").write_text("")
    (lib / "__pycache__/json.cpython-311.pyc").write_bytes(b"")
    (lib / "__pycache__/gone.cpython-311.pyc").write_bytes(b"")
    shutil.copy2("/usr/bin/true", rootfs / "usr/bin/python3.11")
    kept = keep.closure(
        rootfs, _config(), _record("/usr/bin/python3.11", "/usr/lib/python3.11/__pycache__/json.cpython-311.pyc")
    ).paths
    assert {"/usr/lib/python3.11/os.py", "/usr/lib/python3.11/lib-dynload", "/usr/lib/python3.11/json.py"} <= kept
    assert "/usr/lib/python3.11/gone.py" not in kept


def test_keep_globs_and_directories_keep_whole_trees(rootfs):
    (rootfs / "opt/data/sub").mkdir(parents=True)
    (rootfs / "opt/data/sub/a.txt").write_text("a")
    (rootfs / "opt/other.txt").write_text("b")
    (rootfs / "opt/unrelated").write_text("u")
    (rootfs / "etc/extra.conf").write_text("c")
    (rootfs / "opt/data/sub/link").symlink_to("../../other.txt")
    result = keep.closure(rootfs, _config(), _record(), keep=["/opt/data"], profile_keep=["/etc/*.conf"])
    assert {
        "/opt/data",
        "/opt/data/sub",
        "/opt/data/sub/a.txt",
        "/etc/extra.conf",
        "/etc/unrelated.conf",
    } <= result.paths
    assert "/opt/data/sub/link" in result.paths and "/opt/other.txt" in result.paths  # links out keep targets
    assert "/opt/unrelated" not in result.paths
    assert result.reasons["--keep"] >= 3 and result.reasons["profile"] >= 2
    assert result.unmatched == ()
    missing = keep.closure(rootfs, _config(), _record(), keep=["/opt/data", "/opt/nope", "/etc/*.nope"])
    assert missing.unmatched == ("/opt/nope", "/etc/*.nope")


def test_mount_targets_are_not_image_content(rootfs):
    (rootfs / "data").mkdir()
    (rootfs / "data/input.nii").write_text("x")
    mounts = [Mount(host=rootfs, target="/data")]
    kept = keep.closure(rootfs, _config(), _record("/data/input.nii"), mounts=mounts).paths
    assert "/data/input.nii" not in kept


def test_write_tar_preserves_hardlinks_setuid_xattrs_and_mtimes(rootfs):
    target = rootfs / "usr/bin/suid"
    shutil.copy2("/usr/bin/true", target)
    target.chmod(0o4755)
    os.link(target, rootfs / "usr/bin/suid-link")
    os.utime(target, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    os.setxattr(target, "user.ndgen", b"\xff\x00binary")
    keep_set = keep.KeepSet(
        paths=frozenset({"/usr", "/usr/bin", "/usr/bin/suid", "/usr/bin/suid-link"}),
        trees=frozenset(), traced=0, reasons={}, image_entries=0,
    )  # fmt: skip
    buffer = io.BytesIO()
    entries, size = image.write_tar(rootfs, keep_set, buffer)
    assert entries == 4 and size == target.stat().st_size  # the hard link's bytes count once
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["usr/bin/suid"].mode == 0o4755
    assert members["usr/bin/suid-link"].islnk() and members["usr/bin/suid-link"].linkname == "usr/bin/suid"
    assert (
        members["usr/bin/suid"].pax_headers["SCHILY.xattr.user.ndgen"].encode("utf-8", "surrogateescape")
        == b"\xff\x00binary"
    )
    assert members["usr/bin/suid"].mtime == pytest.approx(1_600_000_000.123456789)


def test_image_config_carries_the_source_config_whole():
    """Every field of the source's config, values untouched (no Dockerfile re-parsing)."""
    source = {
        "Env": ["PATH=/opt/bin:/usr/bin", 'MSG=cost $5 "now"', "CAFE=café ☕"],
        "Entrypoint": ["/bin/tini", "--"], "Cmd": ["mrinfo"], "WorkingDir": "/work", "User": "neuro",
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5000000000}, "StopSignal": "SIGINT",
        "Shell": ["/bin/bash", "-c"], "OnBuild": ["RUN echo hi"],
        "Labels": {"org.example": "café ☕", "org.ndgen.recipe-hash": "abc"},
        "ExposedPorts": {"8080/tcp": {}}, "Volumes": {"/data": {}}, "Image": "sha256:parent",
    }  # fmt: skip
    config = _config(image_json=json.dumps({"architecture": "amd64", "os": "linux", "config": source}))
    made = image.image_config(config, ["mrinfo x"], ["sha256:layer"])
    inner = made["config"]
    assert {k: v for k, v in inner.items() if k != "Labels"} == {
        k: v for k, v in source.items() if k not in ("Labels", "Image")
    }
    assert "org.ndgen.recipe-hash" not in inner["Labels"]  # `ndgen build` must never reuse it as its build
    assert inner["Labels"]["org.example"] == "café ☕" and json.loads(inner["Labels"]["org.ndgen.minify.commands"]) == [
        "mrinfo x"
    ]
    assert made["rootfs"] == {"type": "layers", "diff_ids": ["sha256:layer"]} and made["architecture"] == "amd64"


def test_mount_parse_errors_name_the_culprit(tmp_path):
    assert Mount.parse(f"{tmp_path}:/data:ro") == Mount(host=tmp_path, target="/data", read_only=True)
    for spec, words in (
        (f"{tmp_path}/missing:/data", "does not exist"),
        (f"{tmp_path}:data", "must be absolute"),
        (f"{tmp_path}:/data:rx", "mode must be ro or rw"),
        ("/only", "expected HOST:CONTAINER"),
    ):
        with pytest.raises(NdgenError, match=words):
            Mount.parse(spec)


def test_sandbox_is_docker_like(rootfs, tmp_path):
    """As root the sandbox is an OCI bundle with `docker run`'s defaults (run by runc)."""
    config = _config(env=("PATH=/opt/bin", "FOO=1"), workdir="/work", user="neuro:users")
    (rootfs / "etc/group").write_text("root:x:0:\nneuro:x:1000:\nusers:x:100:\naudio:x:29:neuro\n")
    assert resolve_user(rootfs, "neuro:users") == UserIds(1000, 100, "/home/neuro", (29,))
    assert resolve_user(rootfs, "").home == "/root"
    with pytest.raises(NdgenError, match="no such user"):
        resolve_user(rootfs, "ghost")
    env = sandbox_env(rootfs, config)
    assert env == {"PATH": "/opt/bin", "HOSTNAME": "ndgen-minify", "HOME": "/home/neuro", "FOO": "1"}
    if os.geteuid() != 0:
        pytest.skip("the runc sandbox is for root")
    sandbox = sandbox_command(rootfs, config, "echo hi", [Mount(host=tmp_path, target="/data", read_only=True)])
    assert sandbox.argv[1:4] == ("--root", str(rootfs.parent / "runc"), "run") and sandbox.kill and sandbox.cleanup
    spec = json.loads((Path(sandbox.argv[sandbox.argv.index("--bundle") + 1]) / "config.json").read_text())
    process, linux = spec["process"], spec["linux"]
    assert process["args"] == ["/bin/sh", "-c", "echo hi"] and process["cwd"] == "/work"
    assert process["user"] == {"uid": 1000, "gid": 100, "additionalGids": [29]}
    assert process["capabilities"]["effective"] == [] and len(process["capabilities"]["bounding"]) == 14
    assert process["noNewPrivileges"] is False  # setuid works as under docker run
    assert "/proc/sys" in linux["readonlyPaths"] and "/proc/kcore" in linux["maskedPaths"]
    assert {n["type"] for n in linux["namespaces"]} >= {"pid", "network", "ipc", "uts", "mount"}
    # Docker's allow-list (moby's profile, tests/test_sec_seccomp.py): what it does not allow is refused
    allowed = {n for rule in linux["seccomp"]["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO" and "read" in allowed
    assert not {"mount", "keyctl", "unshare", "setns", "bpf", "io_uring_setup"} & allowed
    assert {
        "destination": "/data",
        "type": "bind",
        "source": str(tmp_path),
        "options": ["rbind", "rprivate", "ro"],
    } in spec["mounts"]


def test_compare_names_first_differing_command_and_outputs(tmp_path):
    a = [CommandResult("one", 0, b"x\n", b"", 0.1), CommandResult("two", 0, b"y\n", b"", 0.1)]
    b = [CommandResult("one", 0, b"x\n", b"", 0.2), CommandResult("two", 127, b"", b"sh: 1: two: not found\n", 0.2)]
    mismatch = verify.compare_results(a, b)
    assert mismatch is not None and mismatch.command == "two" and "0 → 127" in mismatch.what
    assert "two: not found" in mismatch.message()
    assert verify.compare_results(a, a) is None
    left, right = tmp_path / "l", tmp_path / "r"
    for d in (left, right):
        (d / "sub").mkdir(parents=True)
        (d / "sub/same").write_bytes(b"1")
    (left / "sub/out").write_bytes(b"1")
    (right / "sub/out").write_bytes(b"2")
    found = verify.compare_outputs([Mount(left, "/data")], [Mount(right, "/data")])
    assert found is not None and found.what == "output file /data/sub/out"
    hinted = verify.Mismatch("two", "stdout", missing=("/etc/flag",))
    assert "likely missing: /etc/flag" in hinted.message()


def test_in_image_path():
    assert in_image_path("/tmp/x/rootfs/usr/bin/a", "/tmp/x/rootfs") == "/usr/bin/a"
    assert in_image_path("/tmp/x/rootfs", "/tmp/x/rootfs/") == "/"
    assert in_image_path("/tmp/x/rootfs2/a", "/tmp/x/rootfs") is None


def test_singularity_runscript_and_env_follow_docker_semantics():
    config = _config(env=("A=it's $HOME",), entrypoint=("/bin/tini", "--"), cmd=("mrinfo", "a b"))
    script = image.singularity_runscript(config)
    assert "exec '/bin/tini' '--' \"$@\"" in script and script.endswith("exec '/bin/tini' '--' 'mrinfo' 'a b'\n")
    assert image.singularity_runscript(_config()).endswith("exec /bin/sh\n")
    assert "export A='it'\"'\"'s $HOME'" in image.singularity_env(config)


def test_entrypoint_script_keeps_its_interpreter_chain(rootfs):
    (rootfs / "usr/bin/env").write_text("fake env")
    shutil.copy2("/usr/bin/true", rootfs / "usr/bin/bash")
    (rootfs / "opt/entry").mkdir(parents=True)
    (rootfs / "opt/entry/startup.sh").write_text('#!/usr/bin/env bash\nexec "$@"\n')
    config = _config(entrypoint=("/opt/entry/startup.sh",), cmd=("true",), env=("PATH=/usr/bin",))
    kept = keep.closure(rootfs, config, _record()).paths
    assert {"/opt/entry/startup.sh", "/usr/bin/env", "/usr/bin/bash", "/usr/bin/true"} <= kept
    assert f"{MULTIARCH}/libc.so.6" in kept  # and the ELF closure of what they run


def test_first_line_diff_says_which_side():
    assert verify._first_line_diff(b"a\nb\n", b"a\nB\n") == "B"
    assert verify._first_line_diff(b"a\nb\n", b"a\n") == "line 2 missing: b"
    assert verify._first_line_diff(b"a\n", b"a\nextra\n") == "extra"


def test_write_tar_skips_sockets(tmp_path):
    import socket

    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    (tmp_path / "f").write_text("x")
    keep_set = keep.KeepSet(paths=frozenset({"/sock", "/f"}), trees=frozenset(), traced=0, reasons={}, image_entries=0)
    assert image.write_tar(tmp_path, keep_set, io.BytesIO()) == (1, 1)
    server.close()


def _escapes(monkeypatch, root: Path) -> list[str]:
    """Record every file-system call under `root` whose real target lies outside it."""
    import builtins

    real_root = os.path.realpath(root)
    escapes: list[str] = []
    realpath, join, dirname, basename = os.path.realpath, os.path.join, os.path.dirname, os.path.basename

    def check(path, follow: bool) -> None:
        if isinstance(path, int) or not str(os.fsdecode(path)).startswith(str(root)):
            return
        text = os.fsdecode(path)
        target = realpath(text) if follow else join(realpath(dirname(text)), basename(text))
        if not (target == real_root or target.startswith(real_root + "/")):
            escapes.append(text)

    def wrap(module, name: str, follow) -> None:
        original = getattr(module, name)

        def spy(path, *args, **kwargs):
            nofollow = kwargs.get("follow_symlinks") is False or (
                name == "open" and module is os and args and args[0] & os.O_NOFOLLOW
            )
            check(path, follow and not nofollow)
            return original(path, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)

    for name, follow in (
        ("lstat", False),
        ("readlink", False),
        ("stat", True),
        ("scandir", True),
        ("listdir", True),
        ("open", True),
    ):
        wrap(os, name, follow)
    wrap(builtins, "open", True)
    return escapes


def test_lookups_stay_inside_the_image_root(rootfs, tmp_path, monkeypatch):
    """Symlinks out of the image (absolute, /proc/self/root) are followed inside it, never on the host."""
    host = tmp_path / "host-only"
    host.mkdir()
    (host / "passwd").write_text("ghost:x:4242:4242::/home/ghost:/bin/sh\n")
    (host / "secret").write_text("host")
    (rootfs / "opt/s").mkdir(parents=True)
    (rootfs / "opt/s/x").symlink_to("/etc")  # the image's /etc, not the host's
    (rootfs / "opt/procroot").symlink_to("/proc/self/root")  # the host's / when followed on the host
    (rootfs / "opt/out").symlink_to(host)  # an absolute host path: absent in the image
    (rootfs / "etc/passwd").unlink()
    (rootfs / "etc/passwd").symlink_to(host / "passwd")
    escapes = _escapes(monkeypatch, rootfs)
    keep.closure(rootfs, _config(), _record("/bin/true"), keep=("/opt/s/**",))
    assert escapes == []  # before the walk below: on the host it would roam the whole machine
    kept = keep.closure(rootfs, _config(), _record("/bin/true"), keep=("/opt/s/**", "/opt/**")).paths
    with pytest.raises(NdgenError, match="no such user"):
        resolve_user(rootfs, "ghost")  # the host file names ghost; the image has no such file
    present = verify.present_in_source(rootfs, ["/opt/s/x/unrelated.conf", "/opt/out/secret", "/opt/s/x/secret"], ())
    monkeypatch.undo()
    assert escapes == []
    assert {"/opt/s/x", "/opt/procroot", "/opt/out", "/etc/unrelated.conf", "/etc/ld.so.conf.d"} <= kept
    assert not any(p.startswith(("/opt/procroot/", "/opt/out/", "/proc/")) for p in kept)
    assert present == ("/opt/s/x/unrelated.conf",)


def test_every_kept_entry_says_why(rootfs):
    from neurodocker_nd.minify import report

    kept = keep.closure(rootfs, _config(), _record("/bin/true"), keep=("/etc/unrelated.conf",))
    assert set(kept.why) == set(kept.paths)
    assert {report.reason_kind(r) for r in kept.why.values()} <= set(report.REASONS)
    assert kept.why["/usr/bin/true"] == "traced" and kept.why["/bin"] == "traced"  # the symlink hop
    assert kept.why[f"{MULTIARCH}/libc.so.6"] == "elf-needed" and kept.why["/lib64"] in ("elf-interp", "symlink")
    assert kept.why["/etc/unrelated.conf"] == "--keep" and kept.why["/etc/passwd"] == "essential"
    assert kept.why["/usr"] == "parent" or kept.why["/usr"] == "traced"
    assert sum(kept.reasons.values()) == len(kept.paths)


def test_report_from_run_reads_each_step_result(rootfs):
    """Report.from_run: sizes from the written image, timings paired per command, the verdict as is."""
    from neurodocker_nd.minify import report
    from neurodocker_nd.minify.write import Written

    kept = keep.closure(rootfs, _config(size=10_000_000), _record("/bin/true"))
    traced = (CommandResult("true", 0, b"", b"", 0.5), CommandResult("false", 1, b"", b"", 0.25))
    record = TraceRecord(frozenset({"/bin/true"}), frozenset(), traced, "test", 0.75)
    written = Written(tag="tmp", image_id="sha256:new", size=2_000_000, entries=len(kept.paths), file_bytes=1234)
    verdict = report.Verdict(verified=True, repaired=("/etc/x",))
    common = dict(source_image="src:1", config=_config(size=10_000_000), pristine=rootfs, record=record,
                  untraced=(CommandResult("true", 0, b"", b"", 0.25),), tracer_note="", keep=kept,
                  squashfs=None, verdict=verdict, steps=[("trace", 1.0)], suite=None)  # fmt: skip
    rep = report.Report.from_run(written=written, tag="new:1", **common)
    assert (rep.tag, rep.image_id, rep.size_after, rep.kept_file_bytes) == ("new:1", "sha256:new", 2_000_000, 1234)
    assert rep.ratio == 5.0 and rep.traced_seconds == 0.75 and rep.untraced_seconds == 0.25
    assert [(c.command, c.exit_code, c.untraced_seconds) for c in rep.commands] == [
        ("true", 0, 0.25),
        ("false", 1, None),
    ]
    assert (rep.verified, rep.repaired, rep.entries_kept) == (True, ("/etc/x",), len(kept.paths))
    assert rep.kept == kept.why and sum(b for _, b in rep.top_dirs) == sum(b for _, b in rep.reason_bytes)
    # Written for verify but not tagged: no image ID is reported; without any image, size 0.
    assert report.Report.from_run(written=written, tag=None, **common).image_id is None
    assert report.Report.from_run(written=None, tag=None, **common).size_after == 0
