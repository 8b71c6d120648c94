"""Issue 17, finding 8: a reused `ndgen test --work W` never lets the image steer a host path.

The image's commands write into W (bind-mounted): a symlink planted there by one run must not
send the next run's emptying of output_dir, its script writes or its data copies out of W.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from neurodocker_nd.build.suite import load_suite, plan_suite
from neurodocker_nd.build.testrun import stage_work, write_scripts
from neurodocker_nd.errors import NdgenError
from support import run_ndgen

PLANTS_A_LINK = """\
name: planter
test_data:
  output_dir: out/sub/res
tests:
  - name: plants out/sub -> the host directory
    command: rm -rf out/sub && ln -s {host} out/sub
"""


def _suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fulltest.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.docker
def test_second_run_never_deletes_through_a_parent_link_the_image_planted(base_image, docker_client, tmp_path):
    host = tmp_path / "host"
    (host / "res").mkdir(parents=True)
    canary = host / "res" / "canary"
    canary.write_text("host data")
    work = tmp_path / "work"
    suite = _suite(tmp_path, PLANTS_A_LINK.format(host=host))
    args = ("test", base_image, "--suite", str(suite), "--work", str(work), "--no-deploy-check")
    first = run_ndgen(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert os.readlink(work / "out/sub") == str(host)  # the image planted it (through the bind mount)
    second = run_ndgen(*args)
    assert canary.read_text() == "host data"  # before the fix: rmtree(W/out/sub/res) emptied host/res
    assert second.returncode == 2, second.stdout + second.stderr
    assert second.stderr.startswith(f"ndgen: error: {work}/out/sub is a symbolic link (not followed)")
    assert "leads out of the work directory" in second.stderr and second.stderr.count("\n") == 1
    # This suite's container (by test name): other tests run theirs from the same base meanwhile.
    planter = "plants out/sub -> the host directory"
    assert not docker_client.containers.list(all=True, filters={"label": f"org.ndgen.test={planter}"})


FULL = """\
name: demo
required_files:
  - dataset: ds1
    files: [sub-01/T1w.nii]
test_data:
  t1w: ds1/sub-01/T1w.nii
  output_dir: out
tests:
  - name: t
    command: "true"
  - name: s
    script: echo hi
"""


def test_default_data_cache_in_the_work_dir_never_copies_a_host_file_in(tmp_path):
    """The default cache (W/.data_cache) is image-writable: a link there to a host file must not
    copy that file into W, where the next test's commands could read it."""
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    work = tmp_path / "work"
    (work / ".data_cache/ds1/sub-01").mkdir(parents=True)
    (work / ".data_cache/ds1/sub-01/T1w.nii").symlink_to(secret)
    plan = plan_suite(load_suite(_suite(tmp_path, FULL)), work)
    with pytest.raises(NdgenError, match="leads out of the work directory"):
        stage_work(plan, None)
    assert not (work / "demo/ds1/sub-01/T1w.nii").exists()
    # A link that stays inside the work directory (datalad's annex objects) is still followed.
    (work / ".data_cache/ds1/.git/annex").mkdir(parents=True)
    (work / ".data_cache/ds1/.git/annex/obj").write_bytes(b"voxels")
    (work / ".data_cache/ds1/sub-01/T1w.nii").unlink()
    (work / ".data_cache/ds1/sub-01/T1w.nii").symlink_to("../.git/annex/obj")
    stage_work(plan, None)
    copied = work / "demo/ds1/sub-01/T1w.nii"
    assert copied.read_bytes() == b"voxels" and not copied.is_symlink()


def test_a_fifo_in_the_data_cache_is_refused_not_read_forever(tmp_path):
    work = tmp_path / "work"
    (work / ".data_cache/ds1/sub-01").mkdir(parents=True)
    os.mkfifo(work / ".data_cache/ds1/sub-01/T1w.nii")
    plan = plan_suite(load_suite(_suite(tmp_path, FULL)), work)
    with pytest.raises(NdgenError, match="is not in the data cache"):
        stage_work(plan, None)


def test_planted_entries_in_the_work_dir_are_replaced_never_followed(tmp_path):
    """Scripts and data targets the image replaced by links or directories; a very deep output tree."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    data, work = tmp_path / "data", tmp_path / "work"
    (data / "ds1/sub-01").mkdir(parents=True)
    (data / "ds1/sub-01/T1w.nii").write_bytes(b"voxels")
    plan = plan_suite(load_suite(_suite(tmp_path, FULL)), work)
    stage_work(plan, data)
    (work / "demo/ds1/sub-01/T1w.nii").unlink()
    (work / "demo/ds1/sub-01/T1w.nii").symlink_to(outside / "keep")  # a copy must not write the link's target
    (work / ".ndgen-test-1.sh").symlink_to(outside / "keep")
    (work / ".ndgen-test-2-script.sh").mkdir()  # a directory where a script goes (was IsADirectoryError)
    (work / "out/link").symlink_to(outside)
    _deep_tree(work / "out", 1500)  # deeper than shutil.rmtree's recursion (RecursionError) allows
    stage_work(plan, data)
    write_scripts(plan)
    assert (outside / "keep").read_text() == "mine" and sorted(p.name for p in outside.iterdir()) == ["keep"]
    assert (work / "demo/ds1/sub-01/T1w.nii").read_bytes() == b"voxels"
    assert list((work / "out").iterdir()) == []
    script = work / ".ndgen-test-1.sh"
    assert not script.is_symlink() and script.read_text().startswith("#!/usr/bin/env bash\n")
    assert (work / ".ndgen-test-2-script.sh").read_text() == "echo hi"
    assert os.stat(script).st_mode & 0o777 == 0o755


def _deep_tree(top: Path, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_output_dir_dot_is_refused_at_load(tmp_path):
    """`output_dir: .` would name the work directory itself, which emptying would wipe."""
    with pytest.raises(NdgenError, match="output_dir '.' must be a relative path inside the work directory"):
        load_suite(_suite(tmp_path, FULL.replace("output_dir: out", "output_dir: .")))


def test_a_setuid_bit_in_the_data_cache_is_not_copied(tmp_path):
    """Data copies keep permission bits only: an image-written (default) cache file marked setuid
    must not become a setuid file owned by the host user running ndgen (root, often)."""
    work = tmp_path / "work"
    (work / ".data_cache/ds1/sub-01").mkdir(parents=True)
    planted = work / ".data_cache/ds1/sub-01/T1w.nii"
    planted.write_bytes(b"#!/bin/sh\nid\n")
    planted.chmod(0o6755)
    stage_work(plan_suite(load_suite(_suite(tmp_path, FULL)), work), None)
    assert os.stat(work / "demo/ds1/sub-01/T1w.nii").st_mode & 0o7777 == 0o755
