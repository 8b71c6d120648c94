"""Downloads verified by sha256 on real builds, files served by a local HTTP server.

Builds run with `--network host` (the explicit opt-in), so the build container
reaches the server on 127.0.0.1. Two paths:

* a registry template whose meta records a sha256: the rendered RUN line runs
  `sha256sum -c` right after the download; a wrong digest fails the build and
  no image is tagged;
* a recipe `files:` entry with `url:` and `sha256:`: staged on the host by
  fetch.stage into the build context (`ndgen build RECIPE_DIR`); a wrong digest
  fails before anything is built, naming the file and both digests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from support import run_ndgen, unique_tag
from support.localhttp import LocalHTTP

pytestmark = pytest.mark.docker

PAYLOAD = b"ndgen checksum engine test\n" * 512
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
WRONG = "ab" * 32

TEMPLATE = """\
name: sumtest
url: https://example.org/sumtest
binaries:
  arguments:
    required: [version]
  urls:
    "1.0": {good}
    "2.0": {bad}
  dependencies:
    apt: [ca-certificates, curl]
  instructions: |
    {{{{ self.install_dependencies() }}}}
    curl -fsSL -o /opt/sumtest.bin {{{{ self.urls[self.version] }}}}
    chmod 0644 /opt/sumtest.bin
"""

META = f"""\
name: sumtest
description: "checksum engine test entry"
homepage: https://example.org/sumtest
commands: [sha256sum]
test: "echo '{DIGEST}  /opt/sumtest.bin' | sha256sum -c -"
upstream:
  status: new
versions:
  "1.0":
    status: confirmed
    sha256: {DIGEST}
    sources:
      - url: https://example.org/sumtest/releases
        confirms: "test payload served by the test"
  "2.0":
    status: confirmed
    sha256: {WRONG}
    sources:
      - url: https://example.org/sumtest/releases
        confirms: "the same payload, recorded with a wrong digest"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "sumtest.bin").write_bytes(PAYLOAD)
    with LocalHTTP(site) as srv:
        yield srv


@pytest.fixture(scope="module")
def registry(tmp_path_factory, server) -> Path:
    root = tmp_path_factory.mktemp("sumreg")
    (root / "sumtest").mkdir()
    (root / "sumtest" / "template.yaml").write_text(
        TEMPLATE.format(good=server.url("sumtest.bin"), bad=server.url("redirect/sumtest.bin"))
    )
    (root / "sumtest" / "meta.yaml").write_text(META)
    return root


def _image_exists(docker_client, tag: str) -> bool:
    try:
        docker_client.images.get(tag)
        return True
    except Exception:
        return False


def _run(docker_client, tag: str, *cmd: str) -> str:
    out = docker_client.containers.run(tag, list(cmd), network_mode="none", remove=True, entrypoint=[])
    return out.decode()


def _build_sumtest(version: str, tag: str, log: Path, registry: Path):
    """`ndgen build --pkg sumtest==VERSION` from the fixture registry, on the host network."""
    return run_ndgen(
        "build", "--pkg", f"sumtest=={version}", "--os", "debian:bookworm", "-t", tag, "--network", "host",
        "--log", str(log), env={"NDGEN_REGISTRY": str(registry)},
    )  # fmt: skip


def test_template_download_is_verified_in_the_build(docker_client, base_image, registry, tags, tmp_path):
    tag = unique_tag("ndgen-test-sum", "ok")
    tags.append(tag)
    env = {"NDGEN_REGISTRY": str(registry)}
    rendered = run_ndgen("--pkg", "sumtest==1.0", "--os", "debian:bookworm", env=env)
    assert f'echo "{DIGEST}  /opt/sumtest.bin" | sha256sum -c --quiet -' in rendered.stdout, rendered.stderr
    proc = _build_sumtest("1.0", tag, tmp_path / "ok.log", registry)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _run(docker_client, tag, "sha256sum", "/opt/sumtest.bin").split()[0] == DIGEST


def test_wrong_template_digest_fails_the_build_and_tags_nothing(docker_client, base_image, registry, tags, tmp_path):
    tag = unique_tag("ndgen-test-sum", "wrong")
    tags.append(tag)
    proc = _build_sumtest("2.0", tag, tmp_path / "bad.log", registry)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr
    assert f"ndgen: /opt/sumtest.bin: sha256 mismatch: expected {WRONG}, got {DIGEST}" in lines[0]
    assert not _image_exists(docker_client, tag)


RECIPE = """\
name: sumrecipe
version: "1.0"
readme: "checksum engine test recipe"
files:
  - name: payload.bin
    url: {url}
    sha256: {sha}
build:
  kind: neurodocker
  base-image: debian:bookworm
  pkg-manager: apt
  add-default-template: false
  directives:
    - run:
        - cp {{{{ get_file("payload.bin") }}}} /opt/payload.bin
"""


@pytest.mark.parametrize("good", [True, False], ids=["right-sha256", "wrong-sha256"])
def test_recipe_file_with_url_and_sha256_builds_with_ndgen_build(
    docker_client, base_image, server, tags, tmp_path, good
):
    """Acceptance: `ndgen build RECIPE_DIR` stages the url file through fetch.stage (verified on the
    host, cached by content); the right digest builds and the file is in the image, a wrong one
    fails with one line naming the file and both digests, and no image is tagged."""
    cache = tmp_path / "cache"
    recipe = tmp_path / "sumrecipe"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(
        RECIPE.format(url=server.url("redirect/payload.bin"), sha=DIGEST if good else WRONG)
    )
    (server.root / "payload.bin").write_bytes(PAYLOAD)
    tag = unique_tag("ndgen-test-sumrecipe", "ok" if good else "wrong")
    tags.append(tag)
    proc = run_ndgen("build", str(recipe), "-t", tag, "--network", "host", env={"NDGEN_CACHE": str(cache)})
    cached = cache / "files" / "sha256"
    if not good:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"ndgen: error: payload.bin: sha256 mismatch: expected {WRONG}, got {DIGEST}"
        ]
        assert not cached.exists() or not any(cached.iterdir())  # nothing cached
        assert not _image_exists(docker_client, tag)
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (cached / DIGEST).read_bytes() == PAYLOAD
    assert _run(docker_client, tag, "sha256sum", "/opt/payload.bin").split()[0] == DIGEST
