"""Issue 23: `ndgen build --apt-proxy URL` (default $NDGEN_APT_PROXY) — an apt cache for RUN steps.

The proxy is a real apt-cacher-ng (Debian's; scripts/test.sh installs it), started
here on a free 127.0.0.1 port with its own cache and log, so the test can prove it
served the build's packages.  Builds use --network host (this engine has no bridge).
The images must carry no trace of the proxy: not in the config (Env, labels), not in
`docker history`, not in apt's configuration or /etc/environment; the rendered recipe
is byte-identical, and the recipe-hash label ignores the proxy (the image is reused
by a build without it).  A proxy that does not answer, or a malformed URL, is one
line and exit 2, in seconds, before anything is built.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import attrs
import pytest

from neurodocker_nd.build.docker_build import APT_PROXY_ENV, AptProxy, apt_proxy_for, parse_apt_proxy
from neurodocker_nd.errors import NdgenError
from support import run_ndgen, unique_tag

ACNG = Path("/usr/sbin/apt-cacher-ng")
OS = "debian:bookworm"
PKG = "jq,method=system"
NEVER_BUILT = "ndgen-test-never-built:1"  # the proxy is refused before any build


@attrs.frozen
class CachingProxy:
    url: str
    cache: Path
    log: Path  # apt-cacher-ng's transfer log: one line per file it served

    def served(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _free_port() -> int:
    """A free 127.0.0.1 port below 32768: apt-cacher-ng 3.7 fails to bind a higher one
    ("Error resolving address for binding"), and the kernel's ephemeral ports are all higher."""
    for port in random.sample(range(20000, 32768), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port in 20000-32767 on 127.0.0.1", pytrace=False)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def apt_cache(tmp_path_factory):
    """A private apt-cacher-ng on 127.0.0.1 (loopback only), stopped at the end of the session."""
    if not ACNG.is_file():
        message = f"{ACNG} is missing: scripts/test.sh installs apt-cacher-ng"
        if os.environ.get("NDGEN_REQUIRE_DOCKER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("acng")
    for sub in ("cache", "log", "run"):
        (root / sub).mkdir()
    port = _free_port()
    argv = [str(ACNG), "-c", "/etc/apt-cacher-ng", "ForeGround=1", "BindAddress=127.0.0.1", f"Port={port}"]
    argv += [f"CacheDir={root / 'cache'}", f"LogDir={root / 'log'}", f"PidFile={root / 'run/pid'}"]
    argv += [f"SocketPath={root / 'run/socket'}", "Debug=0"]
    # As scripts/test.sh does: fetch Debian's archive from the mirror the base names, not
    # the package's default backend (ftp.debian.org), which need not resolve here.
    argv.append("Remap-debrep=file:deb_mirror*.gz /debian ; http://deb.debian.org/debian/")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if _answers(port):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"apt-cacher-ng did not answer on 127.0.0.1:{port}", pytrace=False)
        yield CachingProxy(f"http://127.0.0.1:{port}", root / "cache", root / "log" / "apt-cacher.log")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _build_pkg(tag: str, *options: str, **run) -> subprocess.CompletedProcess:
    """`ndgen build --pkg PKG --os OS -t TAG OPTIONS…` (run: run_ndgen's keywords)."""
    return run_ndgen("build", "--pkg", PKG, "--os", OS, "-t", tag, *options, **run)


def _wait_for(predicate, seconds: float = 10) -> bool:
    """apt-cacher-ng writes its transfer log after the transfer: give it a moment."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _assert_no_proxy_in_image(docker_client, tag: str, proxy_url: str) -> None:
    port = proxy_url.rsplit(":", 1)[1]
    image = docker_client.images.get(tag)
    config = json.dumps(image.attrs)  # Config and ContainerConfig: Env, Labels, Cmd of the last step
    assert "proxy" not in config.lower() and proxy_url not in config, config
    history = json.dumps(docker_client.api.history(image.id))  # every step's created_by
    assert "proxy" not in history.lower() and f":{port}" not in history, history
    # Files: apt's configuration and the login environment carry no proxy either.
    probe = "grep -rilE 'proxy|127\\.0\\.0\\.1' /etc/apt/apt.conf.d /etc/environment /etc/profile.d || true; env"
    out = docker_client.containers.run(
        image.id, ["/bin/sh", "-c", probe], entrypoint=[], network_mode="none", remove=True
    ).decode()
    assert "proxy" not in out.lower() and port not in out, out


@pytest.mark.docker
def test_pkg_build_through_the_proxy_leaves_no_trace(docker_client, base_image, apt_cache, tags, tmp_path):
    """The legacy SDK builder (`--pkg`): apt fetched through the proxy, the image knows nothing of it."""
    tag = unique_tag("ndgen-test-acng-pkg", "1")
    tags.append(tag)
    log = tmp_path / "build.log"
    proc = _build_pkg(tag, "--network", "host", "--apt-proxy", apt_cache.url, "--log", str(log), "--no-cache")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "PASS" in proc.stdout and proc.stderr == ""
    # The proxy served the build's apt downloads: jq's .deb is in its cache and its log.
    assert _wait_for(lambda: "/jq_" in apt_cache.served()), apt_cache.served()
    assert list(apt_cache.cache.rglob("jq_*.deb"))
    assert f"# apt proxy: {apt_cache.url}" in log.read_text()
    _assert_no_proxy_in_image(docker_client, tag, apt_cache.url)
    # The rendered recipe is byte-identical to the one without a proxy.
    rendered = run_ndgen("--pkg", PKG, "--os", OS)
    assert rendered.returncode == 0, rendered.stderr
    saved = Path(re.search(r"^recipe: (.+)$", proc.stdout, re.M)[1]).read_text()
    assert saved == rendered.stdout
    # The recipe-hash ignores the proxy: a build without it (and with the environment's
    # default switched off) reuses the image.
    again_tag = unique_tag("ndgen-test-acng-pkg", "again")
    tags.append(again_tag)
    again = _build_pkg(again_tag, "--network", "host", "--no-test", env={APT_PROXY_ENV: ""})
    assert again.returncode == 0, again.stderr
    assert f"image {again_tag} (" in again.stdout and ") reused [docker]" in again.stdout, again.stdout
    assert docker_client.images.get(again_tag).id == docker_client.images.get(tag).id


@pytest.mark.docker
def test_recipe_dir_build_through_the_proxy_leaves_no_trace(docker_client, base_image, apt_cache, tags, tmp_path):
    """BuildKit (`ndgen build RECIPE_DIR`), with the proxy from $NDGEN_APT_PROXY."""
    recipe = tmp_path / "jqproxy"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(
        "name: jqproxy\nversion: '1.0'\narchitectures: [x86_64]\nreadme: jq through an apt proxy\n"
        "build:\n  kind: neurodocker\n"
        f"  base-image: {base_image}\n  pkg-manager: apt\n  add-default-template: false\n"
        "  directives:\n    - run:\n"
        "        - apt-get update -qq && apt-get install -y -q --no-install-recommends jq"
        " && rm -rf /var/lib/apt/lists/*\n"
    )
    tag = unique_tag("ndgen-test-acng-bk", "1")
    tags.append(tag)
    log = tmp_path / "build.log"
    before = apt_cache.served().count("/jq_")
    proc = run_ndgen(
        "build",
        str(recipe),
        "-t",
        tag,
        "--network",
        "host",
        "--no-test",
        "--no-cache",
        "--log",
        str(log),
        env={APT_PROXY_ENV: apt_cache.url},
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert _wait_for(lambda: apt_cache.served().count("/jq_") > before), apt_cache.served()
    text = log.read_text()
    assert f"# apt proxy: {apt_cache.url}" in text and f"--build-arg=http_proxy={apt_cache.url}" in text
    _assert_no_proxy_in_image(docker_client, tag, apt_cache.url)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_dead_proxy_is_one_line_in_seconds(tmp_path):
    """A closed port on 127.0.0.1: refused before anything is rendered or built."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused, and no one else takes it
    url = f"http://127.0.0.1:{holder.getsockname()[1]}"
    log = tmp_path / "build.log"
    try:
        started = time.monotonic()
        proc = _build_pkg(NEVER_BUILT, "--network", "host", "--apt-proxy", url, "--log", str(log), timeout=60)
        seconds = time.monotonic() - started
        line = _one_error_line(proc)
        assert line.startswith(f"ndgen: error: --apt-proxy {url}: no answer (") and "refused" in line, line
        assert seconds < 20 and not log.exists()
        # The environment's default is checked the same way, and named as such.
        proc = run_ndgen(
            "build", str(tmp_path), "-t", NEVER_BUILT, "--network", "host", env={APT_PROXY_ENV: url}, timeout=60
        )
        assert _one_error_line(proc).startswith(f"ndgen: error: {APT_PROXY_ENV} {url}: no answer (")
    finally:
        holder.close()


def test_silent_proxy_times_out_in_seconds():
    """A proxy that never completes the handshake (a full listen queue drops SYNs): no hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        while True:  # fill the accept queue until a connect is left waiting
            sock = socket.socket()
            sock.settimeout(0.5)
            fillers.append(sock)
            try:
                sock.connect(("127.0.0.1", port))
            except TimeoutError:
                break
            assert len(fillers) < 64, "the listen queue never filled"
        started = time.monotonic()
        proc = _build_pkg(NEVER_BUILT, "--network", "host", "--apt-proxy", f"http://127.0.0.1:{port}", timeout=60)
        line = _one_error_line(proc)
        assert line == f"ndgen: error: --apt-proxy http://127.0.0.1:{port}: no answer (no connection within 3 s)", line
        assert time.monotonic() - started < 20
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:3142",  # apt-cacher-ng is no https proxy
        "ftp://127.0.0.1:3142",
        "http://127.0.0.1",  # the port is not guessed
        "http://user:secret@127.0.0.1:3142",
        "http://127.0.0.1:3142/debian",
        "http://127.0.0.1:3142?x=1",
        "http://127.0.0.1:0",
        "http://127.0.0.1:65536",
        "http://[not-v6]:3142",
        "http://127.0.0.1:3142\n",
        "http://127.0.0.1:3142 --network=host",
        "127.0.0.1:3142",
    ],
)
def test_malformed_proxy_is_one_line(url):
    proc = _build_pkg(NEVER_BUILT, "--apt-proxy", url, timeout=60)
    line = _one_error_line(proc)
    assert line.startswith(f"ndgen: error: --apt-proxy {url!r}: expected http://HOST:PORT"), line


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://127.0.0.1:3142", "127.0.0.1", 3142),
        ("http://127.0.0.1:3142/", "127.0.0.1", 3142),
        ("http://apt-cache.example:3142", "apt-cache.example", 3142),
        ("http://[::1]:3142", "::1", 3142),
    ],
)
def test_wellformed_proxy_urls(url, host, port):
    proxy = parse_apt_proxy(url)
    assert (proxy.host, proxy.port, proxy.url) == (host, port, url.rstrip("/"))
    assert proxy.build_args() == {
        "http_proxy": url.rstrip("/"),
        "HTTP_PROXY": url.rstrip("/"),
        "no_proxy": "localhost,127.0.0.1,::1",
        "NO_PROXY": "localhost,127.0.0.1,::1",
    }


@pytest.mark.parametrize("network", ["default", "none"])
def test_proxy_out_of_reach_of_the_build_network(network):
    """Loopback is reached only on --network host, nothing on none: asked for, an error; a default, left out."""
    asked = AptProxy("http://127.0.0.1:9", "127.0.0.1", 9)
    with pytest.raises(NdgenError, match=rf"^--apt-proxy http://127\.0\.0\.1:9: .*--network {network}"):
        apt_proxy_for(asked, network)
    default = attrs.evolve(asked, origin=APT_PROXY_ENV)
    proxy, note = apt_proxy_for(default, network)  # no connection attempted: port 9 answers nothing
    assert proxy is None and note.startswith(f"# apt proxy: {APT_PROXY_ENV}=http://127.0.0.1:9 not used: ")
