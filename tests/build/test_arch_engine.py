"""aarch64 on this x86_64 host under qemu-user (issue 20): the arm64 base, a recipe with both
architectures built as arm64, its suite, `uname -m`, and minify of the arm64 image.

The arm64 base comes from the session fixture `arm64_base_image` (built once, ≈5 min, by one
worker). The recipe tests/recipes/ndarch installs one small Debian package (jq): every step
under emulation is slow, so the work here is kept to what the acceptance needs. Marked slow:
the file starts first, so the other worker runs the rest of the suite meanwhile. An arm64
`--pkg` build is not here: neurodocker's default step (locales, curl) alone takes 8 minutes
under qemu (measured: 482 s); tests/build/test_arch_build.py checks what that path adds.
"""

from __future__ import annotations

import json

import pytest

from support import TESTS, container_output, remove_images, run_ndgen, unique_tag

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RECIPE = TESTS / "recipes" / "ndarch"
SUITE = RECIPE / "fulltest.yaml"


@pytest.fixture(scope="module")
def arm64_recipe(docker_client, arm64_base_image):
    """`ndgen build tests/recipes/ndarch --arch arm64`: built, then its fulltest.yaml run in it."""
    tag = unique_tag("ndgen-test-arch-ndarch", "arm64")
    proc = run_ndgen("build", str(RECIPE), "--arch", "arm64", "-t", tag, "--network", "host")  # apt: host network
    yield tag, proc
    remove_images(docker_client, [tag])


def test_arm64_base_is_arm64_and_apart_from_the_amd64_one(docker_client, arm64_base_image, base_image):
    assert arm64_base_image == f"arm64v8/{base_image}"
    assert docker_client.images.get(arm64_base_image).attrs["Architecture"] == "arm64"
    assert docker_client.images.get(base_image).attrs["Architecture"] == "amd64"  # never replaced
    assert container_output(docker_client, arm64_base_image, ["uname", "-m"])[:2] == (0, "aarch64\n")
    assert container_output(docker_client, arm64_base_image, ["dpkg", "--print-architecture"])[1] == "arm64\n"


def test_recipe_builds_as_arm64_and_its_suite_passes(docker_client, arm64_recipe):
    tag, proc = arm64_recipe
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "sums the array" in proc.stdout  # the suite ran (and passed: exit 0)
    image = docker_client.images.get(tag)
    assert image.attrs["Architecture"] == "arm64"
    code, out, err = container_output(docker_client, tag, ["uname", "-m"])
    assert (code, out) == (0, "aarch64\n"), err
    code, out, err = container_output(docker_client, tag, ["ndarch", "/README.md"])
    assert code != 0  # README.md is no JSON: the arm64 jq ran and refused it


def test_minify_of_the_arm64_image_passes_the_suite_again(docker_client, arm64_recipe, new_tag, tmp_path):
    tag, built = arm64_recipe
    assert built.returncode == 0, built.stderr
    report = tmp_path / "min.json"
    proc = run_ndgen("minify", tag, "-t", new_tag, "--tests", str(SUITE), "--keep-packages", "--report", str(report))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    image = docker_client.images.get(new_tag)
    assert image.attrs["Architecture"] == "arm64"  # the source's architecture, kept
    assert image.attrs["Size"] < docker_client.images.get(tag).attrs["Size"]
    # --keep-packages read the arm64 dpkg database (Multi-Arch: same packages are NAME:arm64)...
    kept = {p["name"] for p in json.loads(report.read_text())["packages"]}
    assert {"libc6:arm64", "libjq1:arm64", "jq"} <= kept
    # ...and kept them whole: libanl is libc6's, and nothing traced opens it.  The loader
    # is the aarch64 PT_INTERP, through merged /usr's link.
    probe = "test -e /lib/ld-linux-aarch64.so.1 && test -e /usr/lib/aarch64-linux-gnu/libanl.so.1"
    code, _, err = container_output(docker_client, new_tag, ["/bin/sh", "-c", probe])
    assert code == 0, err
    again = run_ndgen("test", new_tag, "--suite", str(SUITE))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr


def test_ptrace_minify_of_the_arm64_image(docker_client, arm64_recipe, new_tag):
    """strace (x86_64, in the sandbox) traces qemu running the aarch64 workload: its file calls are the guest's."""
    tag, built = arm64_recipe
    assert built.returncode == 0, built.stderr
    proc = run_ndgen("minify", tag, "-t", new_tag, "--tracer", "ptrace", "--tests", str(SUITE))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert docker_client.images.get(new_tag).attrs["Architecture"] == "arm64"
