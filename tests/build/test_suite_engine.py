"""`ndgen test` on the real engine: suites, timeouts, depends_on, data, deploy check — through the CLI.

Two small images per session (a tool image and a deliberately broken copy),
built from the debootstrapped base with the host network and removed at the end.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import textwrap
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from support import remove_images, table_rows, unique_tag
from support import run_ndgen as _run_ndgen

pytestmark = pytest.mark.docker

GOOD = """\
FROM {base}
RUN mkdir -p /opt/tool/bin \\
 && printf '#!/bin/sh\\necho "tool 1.0 $*"\\n' > /opt/tool/bin/tool && chmod 755 /opt/tool/bin/tool \\
 && cp /bin/ls /opt/tool/bin/lister
ENV PATH=/opt/tool/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    DEPLOY_BINS=tool:lister DEPLOY_PATH=/opt/tool/bin
"""
# Every way the deploy contract can break, in one image.
BROKEN = """\
FROM {good}
RUN printf '#!/opt/nowhere/python\\n' > /opt/tool/bin/badscript && chmod 755 /opt/tool/bin/badscript \\
 && ln -s /nonexistent /opt/tool/bin/dangling \\
 && rm -f /lib/*/libselinux.so.1 /usr/lib/*/libselinux.so.1
ENV DEPLOY_BINS=tool:/bin/ls:nosuchtool DEPLOY_PATH=/opt/tool/bin:/opt/missing
"""

NO_BASH = """\
FROM {good}
RUN rm /usr/bin/bash
"""

PASSING = """\
name: tool
version: "1.0"
default_timeout: 60
required_files:
  - dataset: ds-test
    files: [sub-01/anat/T1w.txt]
test_data:
  t1w: ds-test/sub-01/anat/T1w.txt
  output_dir: test_output
setup:
  script: |
    mkdir -p ${output_dir}/setup-made
cleanup:
  script: rm -rf ${output_dir}/setup-made
tests:
  - name: version
    command: tool --version
    expected_output_contains: "tool ${version}"
  - name: work dir at the same path, invoking user
    command: echo "cwd=$(pwd) uid=$(id -u)"
    expected_output_contains: ["cwd=${work}", "uid=${uid}"]
  - name: reads required data, writes outputs
    command: cat ${t1w} > ${output_dir}/copy.txt && echo made > /tmp/in-container && ls ${output_dir}/setup-made
    validate:
      - output_exists: ${output_dir}/copy.txt
      - output_exists: /tmp/in-container
    depends_on: version
  - name: no network
    command: echo "net=$(ls /sys/class/net | tr '\\n' ' ')"
    expected_output_contains: "net=lo"
  - name: expected failure
    command: tool --bad >&2; exit 4
    expected_exit_code: 4
    expected_output_contains: "tool 1.0 --bad"
  - name: any failure
    command: exit 9
    expected_exit_code_not: 0
  - name: ignored exit
    command: exit 5
    ignore_exit_code: true
  - name: script
    script: |
      set -e
      echo "script sees $(tool)"
    expected_output_contains: script sees tool 1.0
  - name: tagged only
    command: "true"
    tags: [extra]
"""

FAILING = """\
name: tool-failing
default_timeout: 60
tests:
  - name: fine
    command: tool
    tags: [quick]
  - name: wrong exit
    command: exit 3
  - name: after wrong exit
    command: "true"
    depends_on: wrong exit
  - name: chained skip
    command: "true"
    depends_on: [after wrong exit]
  - name: hangs
    command: sleep 300
    timeout: 3
  - name: missing output
    command: "true"
    validate:
      - output_exists: /nowhere/out.nii
  - name: missing text
    command: echo something else
    expected_output_contains: tool 9.9
"""

SETUP_FAILS = """\
name: setup-fails
setup:
  script: exit 7
tests:
  - name: never runs
    command: "true"
"""


def run_ndgen(*args: str):
    # A wide console, so that rich's table never folds a detail cell the tests read.
    return _run_ndgen(*args, env={"COLUMNS": "500"})


def _build(client, dockerfile: str, tag: str) -> str:
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="host", rm=True, forcerm=True)
    return tag


@pytest.fixture(scope="module")
def images(docker_client, base_image):
    good = _build(docker_client, GOOD.format(base=base_image), unique_tag("ndgen-test-suite", "good"))
    broken = _build(docker_client, BROKEN.format(good=good), unique_tag("ndgen-test-suite", "broken"))
    nobash = _build(docker_client, NO_BASH.format(good=good), unique_tag("ndgen-test-suite", "nobash"))
    yield {"good": good, "broken": broken, "nobash": nobash}
    remove_images(docker_client, (nobash, broken, good))


def _suite(tmp_path: Path, text: str, name: str = "fulltest.yaml", **values: str) -> Path:
    path = tmp_path / name
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    path.write_text(textwrap.dedent(text))
    return path


def _left_containers(client, image: str) -> list:
    """Test containers left from `image` (this run's: other runs on the engine have their own)."""
    return client.containers.list(all=True, filters={"label": "org.ndgen.test", "ancestor": image})


@pytest.fixture(scope="module")
def passing_run(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("passing")
    work, data = root / "work", root / "data"
    (data / "ds-test/sub-01/anat").mkdir(parents=True)
    (data / "ds-test/sub-01/anat/T1w.txt").write_text("T1 voxels\n")
    suite = _suite(root, PASSING, work=str(work), uid=str(os.getuid()))
    junit = root / "junit.xml"
    proc = run_ndgen(
        "test", images["good"], "--suite", str(suite), "--work", str(work), "--data", str(data), "--junit", str(junit)
    )
    return proc, work, junit


def test_passing_suite_exit_0_with_table_and_junit(passing_run):
    proc, work, junit = passing_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # no live display and no warnings off a terminal
    rows = table_rows(proc.stdout)
    for name in (
        "version",
        "reads required data, writes outputs",
        "expected failure",
        "any failure",
        "ignored exit",
        "script",
    ):
        assert rows[name][0] == "PASS", (name, rows)
    assert rows["setup: setup"][0] == "PASS" and rows["cleanup: cleanup"][0] == "PASS"
    assert rows["deploy: bin tool"] == ("PASS", "/opt/tool/bin/tool")
    assert rows["deploy: bin lister"][0] == "PASS" and rows["deploy: path /opt/tool/bin"] == ("PASS", "2 executables")
    # required data was copied from --data into WORK/<suite>/, outputs landed in the mounted work dir
    assert (work / "tool/ds-test/sub-01/anat/T1w.txt").read_text() == "T1 voxels\n"
    assert (work / "test_output/copy.txt").read_text() == "T1 voxels\n"
    assert not (work / "test_output/setup-made").exists()  # cleanup ran (in the image)
    assert not list(work.glob(".ndgen-test-*"))  # the runner's scripts are gone
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "0" and int(suite.get("tests")) == len(rows)


def test_commands_have_no_network(passing_run):
    proc, _, _ = passing_run
    log = Path(re.search(r"^log: (.+)$", proc.stdout, re.M).group(1)).read_text()
    assert re.findall(r"^net=(.*)$", log, re.M) == ["lo "]  # --network none: loopback only


def test_failing_suite_exit_1_timeouts_and_skips(images, docker_client, tmp_path):
    suite = _suite(tmp_path, FAILING)
    junit = tmp_path / "junit.xml"
    started = time.monotonic()
    proc = run_ndgen("test", images["good"], "--suite", str(suite), "--junit", str(junit))
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert rows["fine"][0] == "PASS"
    assert rows["wrong exit"] == ("FAIL", "expected exit 0, got 3")
    assert rows["after wrong exit"] == ("SKIP", "depends on failed test(s): wrong exit")
    assert rows["chained skip"] == ("SKIP", "depends on failed test(s): after wrong exit")
    assert rows["hangs"] == ("FAIL", "timed out after 3 s (killed)") and elapsed < 120
    assert rows["missing output"] == ("FAIL", "output not found: /nowhere/out.nii")
    assert rows["missing text"][0] == "FAIL" and "'tool 9.9'" in rows["missing text"][1]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"ndgen: error: 4 of {len(rows)} checks failed in {images['good']}: wrong exit"
    )
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "4"
    assert not _left_containers(docker_client, images["good"])  # the hung test's container is gone too
    kept = re.search(r"^work: (\S+) \(kept: a test failed\)$", proc.stdout, re.M)
    assert kept and Path(kept.group(1)).is_dir()
    shutil.rmtree(kept.group(1))


def test_tagged_runs_only_those_tests(images, tmp_path):
    proc = run_ndgen(
        "test", images["good"], "--suite", str(_suite(tmp_path, FAILING)), "--tagged", "quick", "--no-deploy-check"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert table_rows(proc.stdout) == {"fine": ("PASS", "exit 0")}


def test_setup_failure_skips_every_test(images, tmp_path):
    suite = _suite(tmp_path, SETUP_FAILS)
    proc = run_ndgen("test", images["good"], "--suite", str(suite), "--no-deploy-check", "--work", str(tmp_path / "w"))
    assert proc.returncode == 1
    rows = table_rows(proc.stdout)
    assert rows["setup: setup"] == ("FAIL", "exit 7") and rows["never runs"] == ("SKIP", "setup failed")
    assert not any(name.startswith("deploy:") for name in rows)


def test_deploy_check_finds_every_defect(images):
    proc = run_ndgen("test", images["broken"])  # no --suite: the deploy check alone
    assert proc.returncode == 1
    rows = table_rows(proc.stdout)
    assert rows["deploy: bin tool"][0] == "PASS"
    assert rows["deploy: bin /bin/ls"] == ("FAIL", "not a bare command name")
    assert rows["deploy: bin nosuchtool"] == ("FAIL", "not found on PATH")
    assert rows["deploy: path /opt/missing"] == ("FAIL", "directory does not exist")
    status, detail = rows["deploy: path /opt/tool/bin"]
    assert status == "FAIL"
    assert "lister: libselinux.so.1 not found" in detail
    assert "badscript: interpreter /opt/nowhere/python missing" in detail
    assert "dangling: broken link" in detail


def test_an_image_without_bash_fails_its_tests_not_the_run(images, docker_client, tmp_path):
    suite = _suite(tmp_path, SETUP_FAILS.replace("setup:\n  script: exit 7\n", ""))
    proc = run_ndgen("test", images["nobash"], "--suite", str(suite), "--work", str(tmp_path / "w"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    status, detail = table_rows(proc.stdout)["never runs"]
    assert status == "FAIL" and detail.startswith("expected exit 0, got 127: ") and "bash" in detail
    assert table_rows(proc.stdout)["deploy: bin tool"][0] == "PASS"  # the deploy check needs only /bin/sh
    assert not _left_containers(docker_client, images["nobash"])


def test_missing_required_data_is_one_line_exit_2(images, tmp_path):
    suite = _suite(tmp_path, PASSING, work=str(tmp_path), uid="0")
    proc = run_ndgen("test", images["good"], "--suite", str(suite), "--work", str(tmp_path / "w"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        f"ndgen: error: {suite}: required_files: ds-test/sub-01/anat/T1w.txt is not in the data cache"
    )
    assert proc.stderr.count("\n") == 1


def test_missing_image_is_one_line(tmp_path):
    proc = run_ndgen("test", f"ndgen-no-such-image:{os.getpid()}")
    assert proc.returncode == 2
    assert (
        proc.stderr
        == f"ndgen: error: image ndgen-no-such-image:{os.getpid()} is not on this engine (ndgen never pulls): "
        "build it or `docker load` it\n"
    )
