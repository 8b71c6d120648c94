"""Issue 17, finding 5 (class): a test suite file is read safely.

`ndgen build RECIPE_DIR` read the recipe's fulltest.yaml by path: through a
link out of the recipe directory (a host file), with no size cap, and a FIFO
there made the build skip its tests silently.  Now it goes through the recipe
tree's contained reader (paths.read_text_inside), once.  A suite the user names
(`ndgen test --suite F`, `ndgen minify --tests F`) may be the user's own link,
but a FIFO or device is refused on the open descriptor, never waited on, and
the size is capped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from neurodocker_nd.core import yamlfile
from neurodocker_nd.errors import NdgenError
from support import RECIPE_HEAD, run_ndgen, unique_tag

BUILD_YAML = RECIPE_HEAD + '    - run: ["true"]\n'
SUITE = "name: r\nversion: '1'\ntests:\n  - name: t\n    command: 'true'\n"
# A refusal comes at once; anything near this means ndgen waited on the file.
QUICK_S = 60


def _recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "r"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(BUILD_YAML)
    return recipe


def _one_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def _build(recipe: Path) -> subprocess.CompletedProcess:
    """`ndgen build RECIPE` that must stop at the suite, before any build; an image the old code built is removed."""
    tag = unique_tag("ndgen-test-sec5-suite", "1")
    try:
        return run_ndgen("build", str(recipe), "-t", tag, "--network", "none", timeout=QUICK_S)
    finally:
        if shutil.which("docker"):
            subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)


def test_a_recipe_suite_linked_out_of_the_recipe_is_refused(tmp_path):
    recipe = _recipe(tmp_path)
    (recipe / "fulltest.yaml").symlink_to("/etc/hostname")
    _one_line(_build(recipe), f"{recipe / 'fulltest.yaml'}: a symlink to /etc/hostname, outside the directory")


def test_a_fifo_recipe_suite_is_refused_at_once(tmp_path):
    recipe = _recipe(tmp_path)
    os.mkfifo(recipe / "fulltest.yaml")
    _one_line(_build(recipe), f"{recipe / 'fulltest.yaml'}: not a regular file (a FIFO)")


def test_a_recipe_suite_is_read_inside_the_recipe_only(tmp_path):
    from neurodocker_nd.build.suite import load_recipe_suite

    recipe = _recipe(tmp_path)
    outside = tmp_path / "host-suite.yaml"
    outside.write_text(SUITE)
    (recipe / "fulltest.yaml").symlink_to("../host-suite.yaml")  # a valid suite, but a host file
    with pytest.raises(NdgenError, match="leads outside the directory"):
        load_recipe_suite(recipe)
    (recipe / "fulltest.yaml").unlink()
    (recipe / "tests").mkdir()
    (recipe / "tests" / "suite.yaml").write_text(SUITE)
    (recipe / "fulltest.yaml").symlink_to("tests/suite.yaml")  # a link inside the recipe is fine
    assert [t.name for t in load_recipe_suite(recipe).tests] == ["t"]
    (recipe / "fulltest.yaml").unlink()
    assert load_recipe_suite(recipe) is None  # no suite: nothing to run, as before


@pytest.mark.parametrize("kind", ["fifo", "device", "too-big"])
@pytest.mark.parametrize("command", ["test", "minify"])
def test_a_named_suite_that_is_not_a_small_regular_file_is_refused(tmp_path, kind, command):
    if kind == "fifo":
        suite = tmp_path / "suite.yaml"
        os.mkfifo(suite)
        why = "not a regular file (a FIFO)"
    elif kind == "device":
        suite, why = Path("/dev/zero"), "not a regular file (a character device)"
    else:
        suite = tmp_path / "suite.yaml"
        with suite.open("w") as fh:  # a valid YAML comment, 8 MiB: over the cap
            fh.write("#" * (8 << 20) + "\n")
        why = f"{(8 << 20) + 1} bytes, larger than"
    args = (
        ["test", "debian:bookworm", "--suite", str(suite)]
        if command == "test"
        else ["minify", "debian:bookworm", "-t", "ndgen-test-sec5-min:1", "--tests", str(suite)]
    )
    _one_line(run_ndgen(*args, timeout=QUICK_S), f"{suite}: {why}")


def test_a_named_suite_may_be_the_users_own_link(tmp_path):
    from neurodocker_nd.build.suite import load_suite

    (tmp_path / "real.yaml").write_text(SUITE)
    (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    assert load_suite(tmp_path / "link.yaml").name == "r"


def test_line_numbers_come_from_the_text_that_was_parsed(tmp_path):
    # The file is gone (or was swapped): the line is that of the text read, and nothing is read again.
    gone = tmp_path / "gone.yaml"
    text = "name: x\ntest_data:\n  output_dir: /etc\n"
    assert yamlfile.line_of(gone, ["test_data", "output_dir"], text) == 3
    assert yamlfile.item_lines(gone, "tests", "tests:\n  - a\n  - b\n") == [2, 3]
    assert yamlfile.line_of(gone, ["x"], "a: [unclosed\n") == 1  # malformed on the error path: line 1, no traceback
