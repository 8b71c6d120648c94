"""A real OCI registry for the tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

Started with a config file in a temp directory (its storage beside it, a free port), ready when
/v2/ answers, stopped at the end.  Docker pushes to a loopback registry over plain HTTP without
configuration; no bridge network is involved.  `readonly=True` starts one in distribution's
read-only maintenance mode: it serves what it has and refuses every push.  With `token=` (a
tests/support/tokenserver.TokenServer) it asks for that server's bearer tokens, as ghcr.io does.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from support.tokenserver import TokenServer

DOCKER_REGISTRY = "/usr/bin/docker-registry"  # Debian's package (scripts/test.sh installs it)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    def __init__(self, root: Path, readonly: bool = False, token: TokenServer | None = None) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        maintenance = "\n  maintenance:\n    readonly:\n      enabled: true" if readonly else ""
        (root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true{maintenance}\n"
            f"http:\n  addr: {self.address}\n" + (token.config() if token else "")
        )
        self.log = (root / "registry.log").open("w")
        self.proc = subprocess.Popen(
            [DOCKER_REGISTRY, "serve", str(root / "config.yml")], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2).close()
                return
            except urllib.error.HTTPError as exc:  # 401 with token auth: it answers
                exc.close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}")
                time.sleep(0.1)

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://{self.address}{path}", timeout=10) as response:
            return json.load(response)

    def tags(self, repo: str) -> list[str]:
        try:
            return sorted(self.get_json(f"/v2/{repo}/tags/list").get("tags") or [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise

    def digest(self, repo: str, tag: str) -> str | None:
        """The manifest digest under `repo:tag` (HEAD, both manifest types accepted); None: no such tag."""
        request = urllib.request.Request(
            f"http://{self.address}/v2/{repo}/manifests/{tag}",
            method="HEAD",
            headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json, "
                "application/vnd.docker.distribution.manifest.v2+json"
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers["Docker-Content-Digest"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start(root: Path, readonly: bool = False, token: TokenServer | None = None) -> LocalRegistry:
    if not shutil.which(DOCKER_REGISTRY):
        pytest.fail(f"{DOCKER_REGISTRY} is missing: apt-get install docker-registry (scripts/test.sh does)")
    return LocalRegistry(root, readonly, token)
