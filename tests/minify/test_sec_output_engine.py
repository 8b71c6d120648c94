"""Issue 17, finding 18 (the class): every throw-away container's output costs ndgen bounded memory.

`ndgen test` streamed its output (test_sec_output.py), but `engine.run_once` still read a
finished container's whole log three times, `ndgen build --pkg`'s package tests
(`build._run_one`) wrote it whole into the step log, and minify's verify rerun kept every byte.
Each child below runs one of them on a container printing 300 MB; its peak RSS is measured
as the kernel accounts it for a waited-for child (before: well over 1 GB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from support import REPO

pytestmark = pytest.mark.docker

LOUD = "head -c 300000000 /dev/zero | tr '\\0' a; echo; "
MAX_RSS_MB = 300

# Runs CHILD (argv[1:]) and prints its result line, then the child's peak RSS in kB.
MEASURE = """\
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(proc.stderr)
print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}")
print(f"exit={proc.returncode} maxrss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
"""

# argv: repo, what, image, label value, work dir. Prints one JSON line.
CHILD = """\
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from neurodocker_nd.core import engine
what, image, label, work = sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5])
client = engine.connect()
if what == "run_once":
    r = engine.run_once(client, image, ["/bin/sh", "-c", sys.argv[6]], timeout=600, labels={"org.ndgen.test": label})
    print(json.dumps({"exit": r.exit_code, "stdout": r.stdout[:200], "stdout_end": r.stdout[-200:],
                      "stdout_len": len(r.stdout), "output_len": len(r.output), "stderr": r.stderr}))
elif what == "build":
    from neurodocker_nd.build import docker_build as build
    log_path = work / "build.log"
    with engine.step_log(log_path, "test") as log:
        o = build._run_one(client, image, label, sys.argv[6], None, log, 600)
    print(json.dumps({"exit": o.exit_code, "reason": o.reason, "output_len": len(o.output),
                      "log_size": log_path.stat().st_size, "log_head": log_path.read_text()[:300],
                      "log_end": log_path.read_text()[-300:]}))
elif what == "verify":
    from neurodocker_nd.errors import NdgenError
    from neurodocker_nd.minify import verify
    try:
        r = verify.run_in_image(client, image, sys.argv[6], (), 600)
        out = {"exit": r.exit_code, "stdout": r.stdout.decode("latin-1"), "stderr": r.stderr.decode("latin-1")}
        print(json.dumps(out))
    except NdgenError as exc:
        print(json.dumps({"error": str(exc)}))
elif what == "trace":
    from neurodocker_nd.errors import NdgenError
    from neurodocker_nd.minify.sandbox import run_plain
    from neurodocker_nd.minify.source import open_source
    with open_source(client, image) as source:
        try:
            r = run_plain(source.view("loud"), source.config, sys.argv[6], timeout=600)
            out = {"exit": r.exit_code, "stdout": r.stdout.decode("latin-1"), "stderr": r.stderr.decode("latin-1")}
            print(json.dumps(out))
        except NdgenError as exc:
            print(json.dumps({"error": str(exc)}))
"""


def _measure(what: str, image: str, command: str, work: Path) -> tuple[dict, float, str]:
    """(the child's JSON result, its peak RSS in MB, its label) for one loud container run."""
    label = f"sec-output-engine-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-c", CHILD, str(REPO), what, image, label, str(work), command]
    proc = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, timeout=900,
                          env={**os.environ})  # fmt: skip
    result_line, exit_line = proc.stdout.strip().splitlines()[-2:]
    assert exit_line.startswith("exit=0 "), proc.stdout + proc.stderr
    return json.loads(result_line), int(exit_line.split("maxrss_kb=")[1]) / 1024, label


def _no_container_left(docker_client, label: str) -> None:
    assert not docker_client.containers.list(all=True, filters={"label": f"org.ndgen.test={label}"})


def test_run_once_keeps_a_bounded_tail_of_300_mb(base_image, docker_client, tmp_path: Path):
    result, maxrss_mb, label = _measure("run_once", base_image, LOUD + "echo last-marker >&2", tmp_path)
    assert maxrss_mb < MAX_RSS_MB, result  # before: the log read three times, > 1 GB
    assert result["exit"] == 0
    assert result["stdout"].startswith("[ndgen: the first ") and result["stdout_end"].endswith("a" * 100 + "\n")
    assert result["stdout_len"] < 70_000 and result["output_len"] < 70_000
    assert result["stderr"] == "last-marker\n"
    _no_container_left(docker_client, label)


def test_a_build_package_test_logs_a_capped_copy_and_names_its_last_line(base_image, docker_client, tmp_path: Path):
    # All on stdout: one pipe, so last-marker is the interleaved output's last line.
    result, maxrss_mb, label = _measure("build", base_image, LOUD + "echo last-marker; exit 3", tmp_path)
    assert maxrss_mb < MAX_RSS_MB, result
    assert result["exit"] == 3 and result["reason"] == "exit 3: last-marker"
    assert result["output_len"] < 70_000
    assert result["log_size"] < 20_000_000  # before: the whole 300 MB
    assert result["log_head"].startswith(f"\n# test {label}: head -c 300000000 ")
    assert "last-marker\n" in result["log_end"] and result["log_end"].endswith(f"# test {label} → 3\n")
    _no_container_left(docker_client, label)


def test_verify_rerun_refuses_output_it_cannot_hold_and_keeps_bytes_exact(base_image, tmp_path: Path):
    result, maxrss_mb, _ = _measure("verify", base_image, LOUD, tmp_path)
    assert maxrss_mb < MAX_RSS_MB, result
    assert result["error"].startswith("verify: command ") and "head -c 300000000 " in result["error"]
    assert "printed more than 64 MiB on stdout in the minified image" in result["error"]
    assert "--no-verify" in result["error"]
    # Under the cap: the streams come back exact, invalid UTF-8 and all.
    exact, _, _ = _measure("verify", base_image, r"printf 'a\377b\n'; printf 'err\n' >&2; exit 4", tmp_path)
    assert exact == {"exit": 4, "stdout": "a\xffb\n", "stderr": "err\n"}


def test_a_traced_command_cannot_make_ndgen_hold_its_output(base_image, tmp_path: Path):
    """The trace side (minify/run.py) kept every byte too (communicate()): the same bound as verify."""
    result, maxrss_mb, _ = _measure("trace", base_image, LOUD, tmp_path)
    assert maxrss_mb < MAX_RSS_MB, result
    assert result["error"].startswith("command ") and "printed more than 64 MiB on stdout" in result["error"]
    exact, _, _ = _measure("trace", base_image, r"printf 'a\377b\n'; printf 'err\n' >&2; exit 4", tmp_path)
    assert exact == {"exit": 4, "stdout": "a\xffb\n", "stderr": "err\n"}
