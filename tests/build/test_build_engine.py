"""`ndgen build` end to end on the real engine, both formats, through the CLI users run.

Each image is built once per session (the `built` fixture caches the CLI run);
tests read its report, its log and the image. Builds use the host network,
tests `--network none`. Images are named ndgen-test-build-NAME-RUN_ID (unique
per run: runs sharing the engine never touch each other's) and this run's are
removed at the end of the session unless NDGEN_TEST_KEEP_IMAGES=1 (then a re-run
reuses them through the recipe-hash label and finishes in seconds).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

from support import META, remove_images, unique_tag

pytestmark = [pytest.mark.docker, pytest.mark.slow]  # ~8 minutes of builds: scheduled first

FORMATS = ("docker", "singularity")
SINGLES = ("dcm2niix", "mrtrix3", "dcmtk", "minc-tools")
MULTI = ("mrtrix3", "dcm2niix", "nibabel")
OS = "debian:bookworm"

# A private registry for the failure paths: a package whose test fails, one whose install fails.
FAILING_REGISTRY = {
    "h3-failing-test": {
        "test": "gzip --definitely-not-an-option",
        "apt": "gzip",
    },
    "h3-missing-deb": {
        "test": "true",
        "apt": "ndgen-no-such-package",
    },
}


@attrs.frozen
class Built:
    tag: str
    proc: subprocess.CompletedProcess
    seconds: float

    @property
    def log_path(self) -> Path:
        return Path(re.search(r"^log: (.+)$", self.proc.stdout, re.M).group(1))

    def row(self, package: str) -> str:
        """The report table's row for `package` (rich draws it with │ separators)."""
        return next(line for line in self.proc.stdout.splitlines() if line.startswith(f"│ {package} "))


@pytest.fixture(scope="session")
def failing_registry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("h3-registry")
    for name, fields in FAILING_REGISTRY.items():
        (root / name).mkdir()
        (root / name / "meta.yaml").write_text(META.format(name=name, **fields))
    return root


@pytest.fixture(scope="session")
def networks_before(docker_client) -> set[str]:
    """The engine's networks before this session's first build (`built` asks for it first)."""
    return {n.id for n in docker_client.networks.list()}


@pytest.fixture(scope="session")
def built(networks_before, docker_client, base_image, tmp_path_factory, ndgen_cli):
    """build(pkgs, fmt, tag, env) → Built, running `ndgen build` once per distinct request."""
    cache: dict[tuple, Built] = {}
    logs = tmp_path_factory.mktemp("h3-build-logs")

    def build(
        pkgs: tuple[str, ...], fmt: str, tag: str, env: dict[str, str] | None = None, again: bool = False
    ) -> Built:
        key = (pkgs, fmt, tag, tuple(sorted((env or {}).items())))
        if key in cache and not again:
            return cache[key]
        args = [arg for pkg in pkgs for arg in ("--pkg", pkg)]
        started = time.monotonic()
        log = logs / f"{tag.replace(':', '_')}-{len(cache)}.log"
        # --network host: the packages come from the mirror (the engine here has no bridge).
        proc = ndgen_cli(
            "build", *args, "--os", OS, "--format", fmt, "-t", tag, "--log", str(log), "--network", "host", env=env
        )
        result = Built(tag, proc, time.monotonic() - started)
        print(f"\n[ndgen build {tag}: {result.seconds:.0f} s, exit {proc.returncode}]", file=sys.stderr)
        cache[key] = result
        return result

    yield build
    remove_images(docker_client, {result.tag for result in cache.values()})  # only this run's


def _tag(name: str, fmt: str) -> str:
    return unique_tag(f"ndgen-test-build-{name}", fmt)


def _assert_passed(result: Built, packages: tuple[str, ...]) -> None:
    assert result.proc.returncode == 0, result.proc.stderr + result.proc.stdout
    assert result.proc.stderr.strip() == ""  # no live display and no warnings off a terminal
    for package in packages:
        assert "PASS" in result.row(package), result.proc.stdout
    assert result.log_path.is_file()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("package", SINGLES)
def test_system_package_builds_and_its_test_passes(built, docker_client, package, fmt):
    result = built((f"{package},method=system",), fmt, _tag(package, fmt))
    _assert_passed(result, (package,))
    assert f"image {result.tag} (sha256:" in result.proc.stdout
    log = result.log_path.read_text()
    assert f"# test {package}: " in log and "→ 0" in log
    image = docker_client.images.get(result.tag)
    assert image.labels["org.ndgen.format"] == fmt
    assert re.fullmatch(r"[0-9a-f]{64}", image.labels["org.ndgen.recipe-hash"])
    recipe = Path(re.search(r"^recipe: (.+)$", result.proc.stdout, re.M).group(1))
    if fmt == "docker":
        assert recipe.suffix == ".Dockerfile" and re.search(r"^Step \d+/\d+ : RUN apt-get update", log, re.M)
    else:
        assert recipe.suffix == ".def" and recipe.read_text().startswith("# Generated by ndgen")
        assert f"apptainer build {result.tag.replace(':', '_')}.sif {recipe}" in result.proc.stdout
        assert image.attrs["Config"]["Entrypoint"] == ["/.singularity.d/actions/run"]
        assert re.search(rf"^\+ apt-get install .*{package}", log, re.M)  # %post ran under sh -x


@pytest.mark.parametrize("fmt", FORMATS)
def test_multi_package_image_passes_every_test(built, fmt):
    result = built(tuple(f"{p},method=system" for p in MULTI), fmt, _tag("multi", fmt))
    _assert_passed(result, MULTI)
    assert result.proc.stdout.count("PASS") == len(MULTI)


def test_singularity_environment_applies_at_run_time(built, docker_client):
    result = built(("dcm2niix,method=system",), "singularity", _tag("dcm2niix", "singularity"))
    _assert_passed(result, ("dcm2niix",))
    run = lambda argv, entrypoint=None: docker_client.containers.run(  # noqa: E731
        result.tag, argv, entrypoint=entrypoint, network_mode="none", remove=True
    ).decode()
    # `apptainer run IMG cmd` → %runscript (neurodocker's startup.sh "$@") with %environment applied.
    assert run(["sh", "-c", 'echo "$LANG $ND_ENTRYPOINT"']) == "en_US.UTF-8 /neurodocker/startup.sh\n"
    # The image config itself does not carry %environment: it is sourced from /.singularity.d/env.
    assert run(["-c", 'echo "[$LANG]"'], entrypoint=["/bin/sh"]) == "[]\n"


def test_unchanged_recipe_is_not_rebuilt(built):
    first = built(("dcm2niix,method=system",), "docker", _tag("dcm2niix", "docker"))
    _assert_passed(first, ("dcm2niix",))
    again = built(("dcm2niix,method=system",), "docker", _tag("dcm2niix", "docker"), again=True)
    _assert_passed(again, ("dcm2niix",))
    assert "reused" in again.proc.stdout and again.seconds < 30


@pytest.mark.parametrize("fmt", FORMATS)
def test_failing_package_test_exits_nonzero_and_names_it(built, failing_registry, fmt):
    result = built(("h3-failing-test",), fmt, _tag("failing-test", fmt), env={"NDGEN_REGISTRY": str(failing_registry)})
    assert result.proc.returncode == 1  # tests ran and failed: 1, as `ndgen test`; bad input is 2
    assert "FAIL" in result.row("h3-failing-test")
    error = result.proc.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("ndgen: error: 1 of 1 tests failed"), result.proc.stderr
    assert "h3-failing-test (exit 1: " in error[0] and "log: " in error[0]


@pytest.mark.parametrize(
    ("fmt", "where"),
    [
        ("docker", r"failed at step \d+/\d+ `RUN apt-get update -qq && apt-get install"),
        (
            "singularity",
            r"failed at %post command `apt-get install -y -q --no-install-recommends ndgen-no-such-package`",
        ),
    ],
)
def test_failing_build_step_is_one_line_naming_it(built, failing_registry, docker_client, fmt, where):
    result = built(("h3-missing-deb",), fmt, _tag("missing-deb", fmt), env={"NDGEN_REGISTRY": str(failing_registry)})
    assert result.proc.returncode == 2
    error = result.proc.stderr.strip().splitlines()
    assert len(error) == 1 and "Traceback" not in result.proc.stderr, result.proc.stderr
    assert re.search(where, error[0]), error[0]
    assert "(exit 100): E: Unable to locate package ndgen-no-such-package; log: " in error[0]
    assert not docker_client.images.list(name=_tag("missing-deb", fmt))  # nothing half-built is tagged


def test_a_missing_base_image_is_named_and_never_pulled(ndgen_cli, failing_registry):
    proc = ndgen_cli(
        "build",
        "--pkg",
        "h3-failing-test",
        "--base-image",
        "ndgen-test-build-absent:1",
        "--pkg-manager",
        "apt",
        "-t",
        "ndgen-test-build-never:1",
        env={"NDGEN_REGISTRY": str(failing_registry)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "ndgen: error: base image ndgen-test-build-absent:1 is not on this engine (ndgen never pulls): "
        "create it with: docker load -i ndgen-test-build-absent_1.tar"
    )


def test_no_docker_network_was_created(built, docker_client, networks_before):
    # Builds use the host network and tests none: the engine's network list is unchanged.
    # `networks_before` was taken before the session's first build; this build (reused
    # when an earlier test made it) makes sure one ran even when this test runs alone.
    _assert_passed(built(("dcm2niix,method=system",), "docker", _tag("dcm2niix", "docker")), ("dcm2niix",))
    assert {n.id for n in docker_client.networks.list()} == networks_before
