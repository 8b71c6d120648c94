"""What an aarch64 build adds to a native one (issue 20), without the engine: the base's
per-arch tag in FROM, BuildKit's --platform, and the bad inputs refused before any work.
The builds themselves run in test_arch_engine.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurodocker_nd.build import docker_build
from neurodocker_nd.core import emulation
from neurodocker_nd.errors import NdgenError

DOCKERFILE = """FROM scratch AS neurocontainer-cache
COPY a /a
FROM debian:bookworm
RUN echo FROM debian:bookworm
FROM --platform=linux/arm64 debian:bookworm AS two
FROM debian:bookworm-slim
"""


def test_arm64_build_is_retargeted_to_the_per_arch_base():
    # The host's real handler (scripts/test.sh runs `ndgen setup-emulation`).
    base, text = docker_build.retarget(DOCKERFILE, "debian:bookworm", "docker", "aarch64", "ndgen build x")
    assert base == "arm64v8/debian:bookworm"
    assert text.splitlines() == [
        "FROM scratch AS neurocontainer-cache",
        "COPY a /a",
        "FROM arm64v8/debian:bookworm",
        "RUN echo FROM debian:bookworm",  # not an instruction: unchanged
        "FROM --platform=linux/arm64 arm64v8/debian:bookworm AS two",
        "FROM debian:bookworm-slim",  # another image
    ]
    assert docker_build.retarget(DOCKERFILE, "debian:bookworm", "docker", "x86_64", "w") == (
        "debian:bookworm",
        DOCKERFILE,
    )


def test_arm64_build_asks_buildkit_for_the_platform(tmp_path):
    job = docker_build._Job("t:1", None, False, "host", None, "aarch64")  # type: ignore[arg-type]
    argv = docker_build._buildkit_argv(job, tmp_path, tmp_path / "Dockerfile", {}, "host", Path("/iid"))
    assert argv[argv.index("--platform") + 1] == "linux/arm64"
    native = docker_build._Job("t:1", None, False, "host", None)  # type: ignore[arg-type]
    assert "--platform" not in docker_build._buildkit_argv(native, tmp_path, tmp_path / "D", {}, "host", Path("/i"))


def test_without_the_f_handler_an_arm64_build_stops_before_any_work(monkeypatch):
    monkeypatch.setattr(emulation, "problem", lambda arch, binfmt=emulation.BINFMT_DIR: "binfmt_misc is not mounted")
    with pytest.raises(emulation.EmulationMissing) as raised:
        docker_build.retarget(DOCKERFILE, "debian:bookworm", "docker", "aarch64", "ndgen build x:1")
    assert str(raised.value) == (
        "ndgen build x:1 for aarch64 needs qemu-user emulation: binfmt_misc is not mounted; "
        "as root run: apt-get install qemu-user-static && ndgen setup-emulation"
    )
    with pytest.raises(NdgenError, match="builds Docker images only"):
        docker_build.retarget("Bootstrap: docker\n", "debian:bookworm", "singularity", "aarch64", "ndgen build x:1")
