"""Shared fixtures: the real Docker engine and the debootstrapped base image.

Integration tests are marked `docker`. Where no engine can be had they skip
with the reason, except when NDGEN_REQUIRE_DOCKER=1 (set by scripts/test.sh in
CI), where a missing engine fails the run instead of silently skipping.

The engine is shared (other runs, other checkouts): images a test makes carry
RUN_ID in their tag and only those are removed, unless NDGEN_TEST_KEEP_IMAGES=1.

scripts/test.sh runs the suite on pytest-xdist workers. The expensive images
(the base, the minify profiles' reference images) are built once per run: the
first worker to ask builds under a file lock, the others wait and reuse it, and
the controller removes the run's shared images when every worker is done.

Tests that need a host other than Debian's mirror and PyPI are marked
`network("host")`: when that host does not answer they fail naming it under
CI=true, and skip naming it elsewhere.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
import warnings
from functools import cache

import pytest

from support import BASE_IMAGE, SESSION_ENV, apt_proxy, remove_images, run_ndgen, session_tag, unique_tag


def pytest_configure(config):
    # Set in the controller before pytest-xdist starts its workers: they inherit it.  Always a
    # new one there: a child pytest (test_suite_rules) must not clean up its parent's images.
    if not hasattr(config, "workerinput"):
        os.environ[SESSION_ENV] = uuid.uuid4().hex[:8]


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: others may still use the shared images
    _remove_shared_images()


def _remove_shared_images() -> None:
    """The images `session_tag` named in this run; no engine, nothing to remove."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        suffix = "-" + os.environ[SESSION_ENV]
        tags = [t for image in client.images.list() for t in image.tags if t.rsplit(":", 1)[0].endswith(suffix)]
    except Exception as exc:  # noqa: BLE001 - cleanup never hides the run's result
        warnings.warn(f"could not list this run's shared images: {exc}", stacklevel=1)
        return
    remove_images(client, tags)


def _shared_lock(tmp_path_factory, name: str):
    """A lock all workers of this run see: their base temp directories share a parent."""
    from filelock import FileLock

    return FileLock(tmp_path_factory.getbasetemp().parent / f"{name}.lock")


@pytest.fixture(scope="session")
def ndgen_cli():
    """The `run_ndgen` helper, for tests that drive the CLI as a subprocess."""
    return run_ndgen


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """minify tests: point ndgen's scratch at a directory the test can inspect afterwards."""
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setenv("NDGEN_SCRATCH", str(path))
    return path


def _no_engine(reason: str) -> None:
    if os.environ.get("NDGEN_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker engine required (NDGEN_REQUIRE_DOCKER=1) but: {reason}")
    pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def docker_client():
    """A connected Docker SDK client for the local engine."""
    try:
        import docker

        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # any failure means: no usable engine here
        _no_engine(f"{type(exc).__name__}: {exc}")
    return client


def _ensure_base(docker_client, tmp_path_factory, ref: str, args: tuple[str, ...], env=None) -> str:
    """`ref`, made by `ndgen base ARGS` when missing, by the first worker that asks (the others wait)."""
    import docker.errors

    with _shared_lock(tmp_path_factory, f"base-{ref.replace('/', '_')}"):
        try:
            docker_client.images.get(ref)
            return ref
        except docker.errors.ImageNotFound:
            pass
        proc = run_ndgen("base", *args, env=env)
        if proc.returncode != 0:
            # The engine answered (docker_client): this is `ndgen base` failing, say how.
            lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}, no message"]
            error = next((line for line in lines if line.startswith("ndgen: ")), lines[-1])
            pytest.fail(f"`ndgen base {' '.join(args)}` failed: {error}", pytrace=False)
    return ref


@pytest.fixture(scope="session")
def base_image(docker_client, tmp_path_factory) -> str:
    """The Debian bookworm base image (built with debootstrap when missing, by one worker)."""
    return _ensure_base(docker_client, tmp_path_factory, BASE_IMAGE, (BASE_IMAGE,))


ARM64_BASE_IMAGE = "arm64v8/" + BASE_IMAGE  # core.arch.arch_ref's name for the aarch64 base


@pytest.fixture(scope="session")
def arm64_base_image(docker_client, tmp_path_factory) -> str:
    """The aarch64 Debian base (`ndgen base … --arch arm64`, ≈4 min under qemu), built by one
    worker when missing while the other keeps going; kept by tag across runs like base_image.

    debootstrap fetches through scripts/test.sh's apt cache when there is one (http_proxy).
    """
    proxy = apt_proxy()
    env = {"http_proxy": proxy.url if proxy else None}
    return _ensure_base(docker_client, tmp_path_factory, ARM64_BASE_IMAGE, (BASE_IMAGE, "--arch", "arm64"), env)


@pytest.fixture(scope="session")
def profile_image(docker_client, base_image, tmp_path_factory):
    """`profile_image(NAME)` → (profile, tag): a minify profile's reference image, once per run.

    test_minify_reference and test_profiles_run both need mrtrix3's (72 s to build on a
    fresh machine): ensure_reference_image finds the tag with the same package label
    and builds nothing.  Built through $NDGEN_APT_PROXY, it must keep no trace of it.
    """
    from neurodocker_nd.minify.profile import ensure_reference_image, load_profile

    @cache
    def get(name: str):
        profile = load_profile(name)
        tag = session_tag(f"ndgen-test-profile-{profile.name.replace('_', '-')}")
        proxy = apt_proxy()
        with _shared_lock(tmp_path_factory, tag):
            ensure_reference_image(docker_client, tag, profile.apt, base=base_image, apt_proxy=proxy)
        if proxy is not None:  # the apt cache served the build and left no trace in the image
            image = docker_client.images.get(tag)
            kept = json.dumps([image.attrs["Config"], image.history()])
            assert proxy.url not in kept and "http_proxy" not in kept.lower(), kept[:500]
        return profile, tag

    return get


@pytest.fixture
def new_tag(docker_client):
    """A fresh tag for the one image a test makes (minify's output), removed afterwards."""
    tag = unique_tag("ndgen-test-out", uuid.uuid4().hex[:8])
    yield tag
    remove_images(docker_client, [tag])


@pytest.fixture
def tags(docker_client):
    """The test appends the tag of each image it makes; all are removed afterwards."""
    made: list[str] = []
    yield made
    remove_images(docker_client, made)


@cache
def _unreachable(host: str, port: int = 80) -> str | None:
    """Why `host` does not answer (None when it does); asked once per session."""
    try:
        socket.create_connection((host, port), timeout=15).close()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def pytest_runtest_setup(item):
    for marker in item.iter_markers("network"):
        for host in marker.args:
            why = _unreachable(host)
            if why is None:
                continue
            message = f"needs {host}, which does not answer ({why})"
            if os.environ.get("CI", "").lower() in ("true", "1"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    # Every docker-marked test gets the engine fixture, so it skips/fails uniformly.
    for item in items:
        if item.get_closest_marker("docker") and "docker_client" not in item.fixturenames:
            item.fixturenames.append("docker_client")
        # scripts/test.sh runs `--dist loadgroup`: a file stays on one worker, so its module
        # fixtures (images) are built once, unless it says its tests stand alone.
        if not getattr(item.module, "SPREAD_OVER_WORKERS", False):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    # The longest work first (files marked slow, then the engine's): workers take files in this
    # order, so the last one to start is short and neither worker idles at the end.
    # A file's rank is its heaviest test's: its tests stay together.
    rank: dict[object, tuple[bool, bool]] = {}
    for item in items:
        mine = (not item.get_closest_marker("slow"), not item.get_closest_marker("docker"))
        rank[item.path] = min(rank.get(item.path, mine), mine)
    items.sort(key=lambda item: rank[item.path])
