"""Issue 17, finding 13: `ndgen build` RUN steps no longer share the host's network unless asked.

A real TCP service listens on the host's 127.0.0.1 (as a database, a metadata proxy
or the Docker socket proxy of a CI host would).  A recipe's RUN step tries to
connect to it and records what it got in the image:

* by default (and with --network none) the step cannot reach it, with both
  builders: the legacy SDK builder (`--pkg` recipes, the Apptainer stand-in) and
  BuildKit (`ndgen build RECIPE_DIR`);
* `--network host` is the explicit opt-in: the step reaches it, and ndgen says so
  in its report and in the build log;
* a RUN step that needs a package mirror and finds no network fails with one
  line that names the way out (`--network host`).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import attrs
import pytest

from neurodocker_nd.build.docker_build import HOST_NETWORK_NOTE, build_recipe
from neurodocker_nd.errors import NdgenError
from support import run_ndgen, unique_tag

pytestmark = pytest.mark.docker

SECRET = b"ndgen-host-loopback-secret"
# bash's /dev/tcp: no tool beyond the debootstrapped base; the result lands in the image.
PROBE = "(bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && head -c 64 <&3' || echo UNREACHABLE) > /probe.txt 2>&1"


@attrs.frozen
class _Recipe:
    """What `build_recipe` reads (render.render_recipe's fields)."""

    text: str
    fmt: str
    base_image: str
    packages: tuple = ()


@attrs.define
class LoopbackService:
    port: int
    connections: int = 0


@pytest.fixture
def service():
    """A TCP service on the host's 127.0.0.1 that counts connections and hands each the secret."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    state = LoopbackService(listener.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            state.connections += 1
            with conn:
                conn.sendall(SECRET + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield state
    stop.set()
    thread.join(5)
    listener.close()


def _probe_result(docker_client, image: str) -> bytes:
    return docker_client.containers.run(image, ["cat", "/probe.txt"], entrypoint=[], network_mode="none", remove=True)


@pytest.mark.parametrize("network", ["default", "none", "host"])
def test_legacy_builder_reaches_host_loopback_only_with_host(
    docker_client, base_image, service, tags, tmp_path, network
):
    tag = unique_tag(f"ndgen-test-sec-net-{network}", "1")
    tags.append(tag)
    recipe = _Recipe(f"FROM {base_image}\nRUN {PROBE.format(port=service.port)}\n", "docker", base_image)
    outcome = build_recipe(recipe, tag, log_path=tmp_path / "build.log", network=network, no_cache=True)
    seen = _probe_result(docker_client, outcome.image_id)
    log = (tmp_path / "build.log").read_text()
    if network == "host":
        assert SECRET in seen and service.connections == 1
        assert f"# network: host — {HOST_NETWORK_NOTE}" in log
    else:
        assert seen.strip().endswith(b"UNREACHABLE") and service.connections == 0, seen
        assert f"# network: {network}\n" in log


def test_build_recipe_defaults_to_the_engines_network(docker_client, base_image, service, tags, tmp_path):
    """The API default is not the host network (the old code built every recipe with it)."""
    tag = unique_tag("ndgen-test-sec-net-apidefault", "1")
    tags.append(tag)
    recipe = _Recipe(f"FROM {base_image}\nRUN {PROBE.format(port=service.port)}\n", "docker", base_image)
    outcome = build_recipe(recipe, tag, log_path=tmp_path / "build.log", no_cache=True)
    assert service.connections == 0
    assert _probe_result(docker_client, outcome.image_id).strip().endswith(b"UNREACHABLE")


def _recipe_dir(root: Path, base_image: str, port: int) -> Path:
    """A neurocontainers recipe whose one RUN step probes the host service (built by BuildKit)."""
    recipe = root / "probe"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(
        "name: probe\nversion: '1.0'\narchitectures: [x86_64]\nreadme: probe\n"
        "build:\n  kind: neurodocker\n"
        f"  base-image: {base_image}\n  pkg-manager: apt\n  add-default-template: false\n"
        "  directives:\n    - run:\n"
        f'        - "{PROBE.format(port=port)}"\n'
    )
    return recipe


@pytest.mark.parametrize("network", ["default", "host"])
def test_buildkit_reaches_host_loopback_only_with_host(docker_client, base_image, service, tags, tmp_path, network):
    tag = unique_tag(f"ndgen-test-sec-bknet-{network}", "1")
    tags.append(tag)
    recipe = _recipe_dir(tmp_path, base_image, service.port)
    log = tmp_path / "build.log"
    proc = run_ndgen(
        "build", str(recipe), "-t", tag, "--network", network, "--no-test", "--no-cache", "--log", str(log)
    )
    assert proc.returncode == 0, proc.stderr
    seen = _probe_result(docker_client, tag)
    if network == "host":
        assert SECRET in seen and service.connections == 1
        assert f"\nnote: {HOST_NETWORK_NOTE}\n" in proc.stdout and proc.stderr == ""
        assert HOST_NETWORK_NOTE in log.read_text()
    else:
        assert seen.strip().endswith(b"UNREACHABLE") and service.connections == 0, seen
        assert "note:" not in proc.stdout and proc.stderr == ""


def test_no_mirror_without_network_is_one_line_naming_network_host(base_image, tags, tmp_path):
    """apt with no network (the default on an engine without a bridge, or --network none)."""
    tag = unique_tag("ndgen-test-sec-net-nomirror", "1")
    tags.append(tag)
    recipe = _Recipe(
        f"FROM {base_image}\nRUN apt-get update && apt-get install -y --no-install-recommends jq\n",
        "docker",
        base_image,
    )
    with pytest.raises(NdgenError) as caught:
        build_recipe(recipe, tag, log_path=tmp_path / "build.log", network="none", no_cache=True)
    message = str(caught.value)
    assert "\n" not in message and "RUN steps found no network" in message and "--network host" in message, message


def test_bad_network_is_refused(base_image, tmp_path):
    recipe = _Recipe(f"FROM {base_image}\n", "docker", base_image)
    with pytest.raises(NdgenError, match=r"bad build network 'bridge': choose one of default, none, host"):
        build_recipe(recipe, "ndgen-test-never-built:1", log_path=tmp_path / "build.log", network="bridge")
    proc = run_ndgen("build", "--pkg", "jq", "--os", "debian", "-t", "x:1", "--network", "bridge")
    assert proc.returncode == 2 and "Invalid value for '--network'" in proc.stderr
