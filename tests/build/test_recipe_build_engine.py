"""`ndgen build RECIPE_DIR` on the real engine, both formats, with ndgen's own recipe tests/recipes/ndtool.

The recipe uses install, environment, workdir, file + get_file (a RUN --mount of
the neurocontainer-cache stage, which needs BuildKit), run, user, deploy and
readme; its fulltest.yaml and the deploy check run after each build. One image
per format, built once per module, removed at the end unless
NDGEN_TEST_KEEP_IMAGES=1 (a re-run then reuses them through the recipe-hash label).
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from xml.etree import ElementTree as ET

import pytest

from support import TESTS, remove_images, table_rows, unique_tag
from support import run_ndgen as _run_ndgen

pytestmark = pytest.mark.docker

RECIPE = TESTS / "recipes" / "ndtool"
FORMATS = ("docker", "singularity")


def run_ndgen(*args: str):
    return _run_ndgen(*args, env={"COLUMNS": "500"})  # rich never folds a cell the tests read


@pytest.fixture(scope="module")
def built(docker_client, base_image):
    runs = {}
    for fmt in FORMATS:
        tag = unique_tag("ndgen-test-recipe-ndtool", fmt)
        runs[fmt] = (tag, run_ndgen("build", str(RECIPE), "-t", tag, "--format", fmt, "--network", "host"))  # apt
    yield runs
    remove_images(docker_client, [tag for tag, _ in runs.values()])


@pytest.mark.parametrize("fmt", FORMATS)
def test_recipe_builds_and_its_suite_passes(built, fmt):
    tag, proc = built[fmt]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(rf"^image {re.escape(tag)} \(sha256:\w+\) (built in \d+ s|reused) \[{fmt}\]$", proc.stdout, re.M)
    rows = table_rows(proc.stdout)
    suite_tests = [n for n in rows if not n.startswith(("setup:", "cleanup:", "deploy:"))]
    assert len(suite_tests) == 6 and all(rows[n][0] == "PASS" for n in suite_tests), rows
    assert rows["deploy: bin ndtool"] == ("PASS", "/opt/ndtool/bin/ndtool")
    assert rows["deploy: bin jq"] == ("PASS", "/usr/bin/jq")
    assert rows["deploy: path /opt/ndtool/bin"] == ("PASS", "2 executables")
    assert proc.stdout.count("\n11 pass\n") == 1


def test_docker_image_keeps_the_recipe_config(built, docker_client):
    tag, proc = built["docker"]
    assert proc.returncode == 0
    config = docker_client.images.get(tag).attrs["Config"]
    assert config["User"] == "ndtool" and config["WorkingDir"] == "/opt/ndtool"
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["DEPLOY_BINS"] == "ndtool:jq" and env["PATH"].startswith("/opt/ndtool/bin:")
    assert docker_client.images.get(tag).labels["org.ndgen.format"] == "docker"


def test_singularity_image_is_the_standin(built, docker_client):
    tag, proc = built["singularity"]
    assert proc.returncode == 0 and "apptainer build " in proc.stdout
    # The suite passed through actions/exec, which sources %environment (DEPLOY_*, PATH).
    out = docker_client.containers.run(
        tag,
        ["cat", "/.singularity.d/env/90-environment.sh"],
        entrypoint=["/.singularity.d/actions/exec"],
        network_mode="none",
        remove=True,
    ).decode()
    assert 'DEPLOY_BINS="ndtool:jq"' in out


def test_junit_and_a_failing_suite_on_the_built_image(built, tmp_path):
    tag, proc = built["singularity"]
    assert proc.returncode == 0
    junit = tmp_path / "junit.xml"
    passing = run_ndgen("test", tag, "--suite", str(RECIPE / "fulltest.yaml"), "--junit", str(junit))
    assert passing.returncode == 0, passing.stdout + passing.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("ndtool", "11", "0")
    failing = tmp_path / "fulltest.yaml"
    failing.write_text(
        (RECIPE / "fulltest.yaml")
        .read_text()
        .replace("expected_output_contains: home=/opt/ndtool", "expected_output_contains: home=/elsewhere")
    )
    proc = run_ndgen("test", tag, "--suite", str(failing), "--work", str(tmp_path / "w"))
    assert proc.returncode == 1
    assert table_rows(proc.stdout)["environment"][0] == "FAIL"
    assert proc.stderr.startswith(
        f"ndgen: error: 1 of 11 checks failed in {tag}: environment (output lacks 'home=/elsewhere'"
    )


def test_unchanged_recipe_is_reused(built):
    tag, first = built["docker"]
    assert first.returncode == 0
    again = run_ndgen("build", str(RECIPE), "-t", tag, "--no-test", "--network", "host")
    assert again.returncode == 0 and f"image {tag} " in again.stdout and " reused [docker]" in again.stdout
    assert "│" not in again.stdout  # --no-test: no table


def test_a_failing_run_step_is_one_line_naming_it(tmp_path, base_image, docker_client):
    recipe = tmp_path / "broken"
    shutil.copytree(RECIPE, recipe)
    text = (recipe / "build.yaml").read_text()
    # Fails before apt runs (cheap): the first directive. Both lines go to stderr: on two pipes
    # BuildKit may log the echo after ls's error (seen once in CI), and the message quotes the last line.
    text = text.replace(
        "    - install: jq\n",
        "    - run:\n        - echo about to fail >&2\n        - ls /ndgen-no-such-dir\n    - install: jq\n",
    )
    (recipe / "build.yaml").write_text(
        text.replace("pkg-manager: apt\n", "pkg-manager: apt\n  add-default-template: false\n")
    )
    tag = unique_tag("ndgen-test-recipe-broken", "1")
    proc = run_ndgen("build", str(recipe), "-t", tag)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.match(
        rf"ndgen: error: build of {tag} failed at `\[.*\] RUN echo about to fail .*` \(exit 2\): "
        r".*No such file or directory; log: ",
        lines[0],
    ), lines[0]
    assert not docker_client.images.list(name=tag.split(":")[0])


def test_bad_suite_in_a_recipe_fails_before_building(tmp_path):
    recipe = tmp_path / "badsuite"
    shutil.copytree(RECIPE, recipe)
    (recipe / "fulltest.yaml").write_text(
        textwrap.dedent("""\
        name: ndtool
        tests:
          - name: no command
        """)
    )
    proc = run_ndgen("build", str(recipe), "-t", f"ndgen-test-never-built:{os.getpid()}")
    assert proc.returncode == 2 and proc.stderr.startswith(f"ndgen: error: {recipe}/fulltest.yaml:3: tests[0]")
    assert proc.stdout == ""


def test_recipe_dir_and_pkg_are_exclusive(tmp_path):
    proc = run_ndgen("build", str(RECIPE), "--pkg", "jq", "-t", "x:y")
    assert (
        proc.returncode == 2 and proc.stderr == "ndgen: error: give a RECIPE_DIR or --pkg/--os/--base-image, not both\n"
    )
