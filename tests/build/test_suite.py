"""fulltest.yaml suites: loading, schema errors with file:line, variables, planning, JUnit — no engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from neurodocker_nd.build.suite import load_suite, plan_suite, select, substitute
from neurodocker_nd.build.testrun import FAIL, PASS, SKIP, WARN, CaseResult, SuiteRun, write_junit
from neurodocker_nd.errors import NdgenError
from support import run_ndgen

NEUROCONTAINERS = Path(os.environ.get("NDGEN_NEUROCONTAINERS", "/work/.mirror/neurodesk+neurocontainers/repo"))

FULL = """\
name: demo
version: "2.1"
label: demo-${version}
default_timeout: 30
required_files:
  - dataset: ds000001
    files: [sub-01/anat/T1w.nii.gz]
test_data:
  t1w: ds000001/sub-01/anat/T1w.nii.gz
  atlas: /opt/atlas.nii
  output_dir: test_output
env:
  MODE: fast
env_setup: |
  source /etc/profile
setup:
  script: mkdir -p ${output_dir}/x
cleanup:
  script: rm -rf ${output_dir}
tests:
  - name: version
    description: prints its version
    command: tool --version
    expected_output_contains: "tool ${version}"
    tags: [quick]
  - name: convert
    command: tool ${t1w} $output_dir/out.nii $output_dirx ${unknown}
    timeout: 300
    validate:
      - output_exists: ${output_dir}/out.nii
      - same_dimensions: ["${t1w}", "${output_dir}/out.nii"]
    depends_on: version
  - name: script test
    script: |
      echo ${label}
    env_setup: export ONLY=me
    expected_exit_code_not: 0
  - name: report
    command: tool report
    depends_on: [convert]
    ignore_exit_code: true
    tags: [slow]
"""


def write(tmp_path: Path, text: str, name: str = "fulltest.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_load_reads_every_field(tmp_path):
    suite = load_suite(write(tmp_path, FULL))
    assert (suite.name, suite.version, suite.default_timeout) == ("demo", "2.1", 30.0)
    assert dict(suite.scalars)["label"] == "demo-2.1"  # top-level scalars use each other
    assert suite.required_files[0].dataset == "ds000001"
    assert suite.env_setup == 'export MODE="fast"\nsource /etc/profile\n'
    assert suite.setup_script.startswith("mkdir") and suite.cleanup_script.startswith("rm")
    version, convert, script, report = suite.tests
    assert version.tags == ("quick",) and version.expected_output_contains == ("tool ${version}",)
    assert convert.depends_on == ("version",) and convert.timeout == 300
    assert [v.kind for v in convert.validate] == ["output_exists", "same_dimensions"]
    assert script.script and script.command is None and script.expected_exit_code_not == 0
    assert report.ignore_exit_code and report.depends_on == ("convert",)
    assert convert.line == FULL.splitlines().index("  - name: convert") + 1


def test_plan_substitutes_variables_as_their_runner(tmp_path):
    suite = load_suite(write(tmp_path, FULL))
    work = tmp_path / "work"
    plan = plan_suite(suite, work)
    variables = dict(plan.variables)
    # required_files put relative test_data under WORK/<name>; output_dir is under WORK itself.
    assert plan.data_dir == work / "demo"
    assert variables["t1w"] == str(work / "demo/ds000001/sub-01/anat/T1w.nii.gz")
    assert variables["output_dir"] == str(work / "test_output") and plan.output_dir == work / "test_output"
    assert variables["atlas"] == "/opt/atlas.nii" and variables["version"] == "2.1"
    version, convert, script, report = plan.tests
    assert "tool 2.1" in version.expected_output
    assert version.timeout == 30 and convert.timeout == 300
    command = convert.script.splitlines()[-1]
    # ${x} and whole-word $x are replaced; $output_dirx and unknown variables are left to the shell.
    assert command == f"tool {variables['t1w']} {work}/test_output/out.nii $output_dirx ${{unknown}}"
    assert convert.outputs == (f"{work}/test_output/out.nii",)
    assert convert.same_dimensions == ((variables["t1w"], f"{work}/test_output/out.nii"),)
    assert convert.script.startswith('#!/usr/bin/env bash\nexport MODE="fast"\nsource /etc/profile\n')
    # A script test: its text becomes a file in the work directory that the command runs.
    assert script.extra_script.strip() == "echo demo-2.1"
    assert script.extra_path.parent == work and script.script.splitlines()[-1] == str(script.extra_path)
    assert "export ONLY=me" in script.script and "MODE" not in script.script  # its env_setup replaces the suite's
    assert plan.setup == f"mkdir -p {work}/test_output/x" and plan.cleanup == f"rm -rf {work}/test_output"
    assert len({t.script_path for t in plan.tests}) == 4 and all(t.script_path.parent == work for t in plan.tests)


def test_substitute_nested_and_bounded():
    assert substitute("${a}", {"a": "${b}/x", "b": "B"}) == "B/x"
    assert substitute("$a $ab ${a}b", {"a": "1"}) == "1 $ab 1b"
    assert substitute("${loop}", {"loop": "${loop}${loop}"}).count("${loop}") == 2**10  # stops after 10 rounds


def test_select_by_tag_keeps_dependencies(tmp_path):
    suite = load_suite(write(tmp_path, FULL))
    assert [t.name for t in select(suite.tests, ["slow"])] == ["version", "convert", "report"]
    assert [t.name for t in select(suite.tests, ["quick"])] == ["version"]
    assert [t.name for t in plan_suite(suite, tmp_path, tags=["nope"]).tests] == []


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "name: x\ntests:\n  - name: a\n    comand: ls\n",
            r":3: tests\[0\]: Additional properties are not allowed \('comand' was unexpected\)",
        ),
        ("name: x\ntests:\n  - name: a\n", r":3: tests\[0\]: .*"),
        (
            "name: x\ntests:\n  - name: a\n    command: ls\n    timeout: soon\n",
            r":5: tests\[0\]\.timeout: 'soon' is not of type 'number'",
        ),
        (
            "name: x\ntests:\n  - name: a\n    command: ls\n    validate:\n      - is_big: x\n",
            r":6: tests\[0\]\.validate\[0\]",
        ),
        ("tests: []\n", r":1: \(top level\): 'name' is a required property"),
        ("name: x\ntests:\n  - name: a\n    command: [ls\n", r":[45]: malformed YAML"),
        ("- a\n- b\n", r":1: a test suite is a mapping"),
        (
            "name: x\ntests:\n  - name: a\n    command: ls\n    depends_on: b\n  - name: b\n    command: ls\n",
            r":3: test 'a': depends_on 'b' names a later test",
        ),
        (
            "name: x\ntests:\n  - name: a\n    command: ls\n    depends_on: zz\n",
            r":3: test 'a': depends_on 'zz' names no test",
        ),
        ("name: x\ntest_data:\n  output_dir: ../../etc\ntests: []\n", r":3: test_data.output_dir '../../etc' must be"),
        ("name: x\ntest_data:\n  output_dir: /tmp/o\ntests: []\n", r":3: test_data.output_dir '/tmp/o' must be"),
        (
            "name: x\nrequired_files:\n  - dataset: ds1\n    files: [../../etc/passwd]\ntests: []\n",
            r":4: required_files\[0\]\.files\[0\]",
        ),
        ("name: x\nsetup:\n  scrpit: ls\ntests: []\n", r":2: setup: Additional properties .*'scrpit'"),
    ],
)
def test_bad_suites_are_one_line_with_file_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(NdgenError) as info:
        load_suite(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    assert re.search(expected, message), message


def test_cli_bad_suite_is_one_line_exit_2_before_any_engine_work(tmp_path):
    path = write(tmp_path, "name: x\ntests:\n  - name: a\n    comand: ls\n")
    junit = tmp_path / "j.xml"
    # No such image either: the suite is checked first, and nothing is written.
    proc = run_ndgen("test", "ndgen-no-such-image:1", "--suite", str(path), "--junit", str(junit))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"ndgen: error: {path}:3: tests[0]") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and not junit.exists()


def test_cli_missing_suite_file(tmp_path):
    proc = run_ndgen("test", "debian:bookworm", "--suite", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and proc.stderr == f"ndgen: error: test suite not found: {tmp_path / 'nope.yaml'}\n"


def test_junit_report(tmp_path):
    results = (
        CaseResult("ok", "test", PASS, "exit 0", 1.5, 0, "out\x01put", ""),
        CaseResult("bad", "test", FAIL, "expected exit 0, got 3", 0.5, 3, "", "boom"),
        CaseResult("later", "test", SKIP, "depends on failed test(s): bad"),
        CaseResult("cleanup", "cleanup", WARN, "exit 1"),
        CaseResult("bin tool", "deploy", PASS, "/usr/bin/tool"),
    )
    run = SuiteRun("img:1", "demo", tmp_path, tmp_path / "log", results)
    path = tmp_path / "junit.xml"
    write_junit(run, path)
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["bad"].find("failure").get("message") == "expected exit 0, got 3"
    assert cases["bad"].find("system-err").text == "boom"
    assert cases["later"].find("skipped") is not None and cases["ok"].find("failure") is None
    assert cases["ok"].find("system-out").text == "out\ufffdput"  # control bytes cannot go into XML
    assert cases["bin tool"].get("classname") == "demo.deploy"
    assert not run.passed and run.failures == (results[1],)


def _neurocontainers_suites(tmp_path_factory) -> list[Path]:
    if not (NEUROCONTAINERS / "HEAD").exists() and not (NEUROCONTAINERS / ".git").exists():
        pytest.skip(f"no neurocontainers checkout at {NEUROCONTAINERS} (set NDGEN_NEUROCONTAINERS)")
    names = subprocess.run(
        ["git", "-C", str(NEUROCONTAINERS), "ls-tree", "-r", "--name-only", "HEAD", "recipes/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    wanted = [n for n in names if n.endswith("/fulltest.yaml")]
    out = tmp_path_factory.mktemp("nc")
    archive = subprocess.run(
        ["git", "-C", str(NEUROCONTAINERS), "archive", "HEAD", *wanted], capture_output=True, check=True
    )
    tar = out / "suites.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as handle:
        handle.extractall(out, filter="data")
    return sorted(out.glob("recipes/*/fulltest.yaml"))


def test_neurocontainers_suites_load_and_plan(tmp_path_factory):
    """Their real suites (read from a fetched checkout, never copied here): nearly all load.

    Known rejects are real defects, each one line: a depends_on naming no test.
    """
    paths = _neurocontainers_suites(tmp_path_factory)
    assert len(paths) > 200
    failures = {}
    for path in paths:
        try:
            plan = plan_suite(load_suite(path), Path("/var/tmp/ndgen-work"))
        except NdgenError as exc:
            failures[path.parent.name] = str(exc)
            continue
        assert all(t.script.startswith("#!/usr/bin/env bash\n") for t in plan.tests)
    assert len(failures) <= len(paths) // 100, failures
    assert all("depends_on" in message and "\n" not in message for message in failures.values()), failures


def test_staging_never_writes_through_a_symlink_out_of_the_work_dir(tmp_path):
    from neurodocker_nd.build.testrun import stage_work

    suite = load_suite(write(tmp_path, FULL))
    work, data, outside = tmp_path / "work", tmp_path / "data", tmp_path / "outside"
    (data / "ds000001/sub-01/anat").mkdir(parents=True)
    (data / "ds000001/sub-01/anat/T1w.nii.gz").write_bytes(b"nifti")
    outside.mkdir()
    plan = plan_suite(suite, work)
    stage_work(plan, data)
    assert (work / "demo/ds000001/sub-01/anat/T1w.nii.gz").read_bytes() == b"nifti"
    # An earlier run's commands planted symlinks in a reused work directory.
    (outside / "keep.txt").write_text("mine")
    (work / "test_output").rmdir()
    (work / "test_output").symlink_to(outside)
    stage_work(plan, data)
    assert (work / "test_output").is_dir() and not (work / "test_output").is_symlink()  # unlinked, not emptied
    shutil.rmtree(work / "demo/ds000001")
    (work / "demo/ds000001").symlink_to(outside)
    with pytest.raises(NdgenError, match="leads out of the work directory"):
        stage_work(plan, data)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


def test_same_dimensions_refuses_a_fifo_the_image_left_instead_of_blocking(tmp_path):
    """The compared files are written by the image under test: a FIFO named out.nii must not
    hang the host's nibabel read (run in a child with a timeout, so a regression fails)."""
    fifo = tmp_path / "out.nii"
    os.mkfifo(fifo)
    code = ("import sys; from pathlib import Path; from neurodocker_nd.build.testrun import _dimension_problem;"
            "print(_dimension_problem(sys.argv[1], sys.argv[1], Path(sys.argv[2])))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(fifo), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.stdout.strip() == f"same_dimensions: {fifo} is not a regular file", proc.stderr
