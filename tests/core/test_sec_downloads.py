"""Issue 17, findings 15 and 16: a download server is hostile (real HTTP servers on 127.0.0.1).

15: fetch.stage has a size cap and a whole-download deadline; nothing partial reaches the cache.
16: only http(s) is fetched, at the first URL and at every redirect hop, and no hop may lead to a
    loopback, link-local, private or otherwise non-global address — except a loopback port listed
    in NDGEN_ALLOW_LOOPBACK_PORTS, the deliberate opt-in a trusted LocalHTTP sets for itself.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from neurodocker_nd.core import fetch
from neurodocker_nd.errors import NdgenError
from support import confirmed_versions, download_entry, run_ndgen
from support.localhttp import LocalHTTP

PAYLOAD = b"hostile download server test\n" * 50
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def site(tmp_path) -> Path:
    d = tmp_path / "site"
    d.mkdir()
    (d / "tool.bin").write_bytes(PAYLOAD)
    return d


@pytest.fixture
def server(site):
    with LocalHTTP(site, drip_seconds=0.5) as srv:
        yield srv


@pytest.fixture
def loopback_service(site):
    """A service on 127.0.0.1 that no download may reach (its port is not opted in)."""
    with LocalHTTP(site, trusted=False) as srv:
        yield srv


def _nothing_cached(cache: Path) -> None:
    files = cache / "files"
    assert not any((files / "sha256").iterdir()) if (files / "sha256").is_dir() else True
    assert list((files / "tmp").iterdir()) == [] if (files / "tmp").is_dir() else True


# ---------------------------------------------------------------- finding 15


def test_endless_body_stops_at_the_cap_and_caches_nothing(server, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("NDGEN_MAX_DOWNLOAD", "1M")
    dest = tmp_path / "out.bin"
    with pytest.raises(NdgenError) as exc:
        fetch.stage(server.url("endless"), None, dest)
    msg = exc.value.message
    assert msg.startswith("endless: download from ") and "1 MiB" in msg and "NDGEN_MAX_DOWNLOAD" in msg, msg
    assert "\n" not in msg and not dest.exists()
    _nothing_cached(cache)
    # check-urls --fetch hashes through the same cap.
    p = fetch.probe(server.url("endless"), fetch=True)
    assert not p.ok and "NDGEN_MAX_DOWNLOAD" in (p.error or "")


def test_declared_size_over_the_callers_cap_is_refused_before_reading(server, cache, tmp_path):
    """A caller that knows the size (recorded in a registry or recipe) caps by it."""
    with pytest.raises(
        NdgenError, match=rf"tool.bin: download from .* failed: larger than the {len(PAYLOAD) - 1}-byte cap"
    ):
        fetch.stage(server.url("tool.bin"), None, tmp_path / "x", max_bytes=len(PAYLOAD) - 1)
    _nothing_cached(cache)
    assert fetch.stage(server.url("tool.bin"), DIGEST, tmp_path / "y", max_bytes=len(PAYLOAD)).read_bytes() == PAYLOAD


def test_a_bad_limit_setting_is_one_line(server, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("NDGEN_MAX_DOWNLOAD", "lots")
    with pytest.raises(NdgenError, match=r"^NDGEN_MAX_DOWNLOAD='lots' is not a size"):
        fetch.stage(server.url("tool.bin"), None, tmp_path / "x")
    monkeypatch.delenv("NDGEN_MAX_DOWNLOAD")
    monkeypatch.setenv("NDGEN_DOWNLOAD_DEADLINE", "-3")
    with pytest.raises(NdgenError, match=r"^NDGEN_DOWNLOAD_DEADLINE='-3' is not a number of seconds"):
        fetch.stage(server.url("tool.bin"), None, tmp_path / "x")


def test_drip_server_hits_the_whole_download_deadline(server, cache, tmp_path, monkeypatch):
    """One byte every 0.5 s never trips the per-read timeout (5 s); the 2 s deadline ends it."""
    monkeypatch.setenv("NDGEN_DOWNLOAD_DEADLINE", "2")
    dest = tmp_path / "drip.bin"
    outcome: list[BaseException | Path] = []

    def run() -> None:
        try:
            outcome.append(fetch.stage(server.url("drip/1000"), None, dest, timeout=5))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    t0 = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the drip download ran past its deadline"
    assert time.monotonic() - t0 < 10
    assert isinstance(outcome[0], NdgenError), outcome
    msg = outcome[0].message
    assert (
        msg.startswith("1000: download from ") and "not finished within 2 s" in msg and "NDGEN_DOWNLOAD_DEADLINE" in msg
    ), msg
    assert not dest.exists()
    _nothing_cached(cache)


# ---------------------------------------------------------------- finding 16


def test_only_http_and_https_are_fetched(cache, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(PAYLOAD)
    for url in (secret.as_uri(), "ftp://127.0.0.1:1/x", "file:///dev/zero"):
        p = fetch.probe(url, fetch=True, timeout=2)
        assert not p.ok and p.sha256 is None and p.size is None
        assert p.error == f"{url.split(':', 1)[0]}: only http and https URLs are fetched", p.error
    with pytest.raises(NdgenError, match="secret: .*only http and https URLs are fetched"):
        fetch.stage(secret.as_uri(), None, tmp_path / "x")
    # A recipe's `url:` field holding a host path (a str): never read from the host.
    for stager in (fetch.stage, fetch.stage_url):
        with pytest.raises(NdgenError, match=f"^{secret}: only http and https URLs are fetched$"):
            stager(str(secret), None, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_redirect_to_loopback_is_refused_by_default(server, loopback_service, cache, tmp_path):
    target = loopback_service.url("tool.bin")
    p = fetch.probe(server.url(f"goto/{target}"), fetch=True)
    assert not p.ok and p.sha256 is None
    assert p.error == (
        f"refused {target}: 127.0.0.1 is a loopback address "
        f"(NDGEN_ALLOW_LOOPBACK_PORTS does not list port {loopback_service.port})"
    ), p.error
    named = f"http://localhost:{loopback_service.port}/tool.bin"  # a name resolving to loopback
    p = fetch.probe(server.url(f"goto/{named}"))
    assert not p.ok and "is a loopback address" in (p.error or ""), p.error
    assert not fetch.probe(target).ok  # the first URL too
    with pytest.raises(
        NdgenError,
        match=r"tool.bin: download from .* failed: refused http://127.0.0.1:\d+/tool.bin: 127.0.0.1 is a loopback",
    ):
        fetch.stage(server.url(f"goto/{target}"), None, tmp_path / "x")
    _nothing_cached(cache)


def test_loopback_opt_in_names_the_port(loopback_service, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("NDGEN_ALLOW_LOOPBACK_PORTS", f"1,{loopback_service.port}")
    assert fetch.stage(loopback_service.url("tool.bin"), DIGEST, tmp_path / "x").read_bytes() == PAYLOAD
    monkeypatch.setenv("NDGEN_ALLOW_LOOPBACK_PORTS", "yes")
    with pytest.raises(NdgenError, match=r"^NDGEN_ALLOW_LOOPBACK_PORTS='yes' is not a comma-separated list of ports"):
        fetch.probe(loopback_service.url("tool.bin"))


def test_redirect_to_file_or_ftp_is_refused(server, cache, tmp_path):
    for location in ("file:///etc/hostname", "ftp://127.0.0.1:1/x"):
        p = fetch.probe(server.url(f"goto/{location}"), fetch=True)
        assert not p.ok and p.sha256 is None
        assert p.error == f"refused redirect to {location}: only http and https URLs are fetched", p.error
    with pytest.raises(NdgenError, match="refused redirect to file:///etc/hostname: only http and https"):
        fetch.stage(server.url("goto/file:///etc/hostname"), None, tmp_path / "x")
    _nothing_cached(cache)


@pytest.mark.parametrize(
    "addr, verdict",
    [
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("::1", "::1 is a loopback address"),
        ("::ffff:127.0.0.1", "127.0.0.1 is a loopback address"),
        ("169.254.169.254", "169.254.169.254 is a link-local address"),
        ("fe80::1", "fe80::1 is a link-local address"),
        ("10.1.2.3", "10.1.2.3 is a private address"),
        ("172.16.0.1", "172.16.0.1 is a private address"),
        ("192.168.1.1", "192.168.1.1 is a private address"),
        ("fd00::1", "fd00::1 is a private address"),
        ("0.0.0.0", "0.0.0.0 is a private address"),
        ("100.64.0.1", "100.64.0.1 is a non-global address"),
        ("224.0.1.1", "224.0.1.1 is a multicast address"),
    ],
)
def test_address_policy(addr, verdict):
    """Classification only: nothing connects to these addresses."""
    assert fetch.address_refusal(addr, 80, frozenset()) == verdict
    if addr in ("127.0.0.1", "::1"):
        assert fetch.address_refusal(addr, 8080, frozenset({8080})) is None


# ---------------------------------------------------------------- check-urls


def _registry(tmp: Path, urls: dict[str, str]) -> Path:
    return download_entry(tmp / "reg", urls, confirmed_versions(urls)).parent


def test_check_urls_refuses_file_urls_and_write_records_nothing(tmp_path, server):
    secret = tmp_path / "secret"
    secret.write_bytes(PAYLOAD)
    reg = _registry(tmp_path, {"1.0": server.url("tool.bin"), "2.0": secret.as_uri()})
    meta = reg / "dltest" / "meta.yaml"
    before = meta.read_bytes()
    env = {"NDGEN_REGISTRY": str(reg)}
    proc = run_ndgen("check-urls", "dltest", "--fetch", "--json", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    rows = {r["key"]: r for r in json.loads(proc.stdout)}
    assert rows["1.0"]["ok"] and rows["1.0"]["sha256"] == DIGEST
    assert rows["2.0"]["problem"] == "file: only http and https URLs are fetched"
    assert rows["2.0"]["sha256"] is None and rows["2.0"]["size"] is None
    assert proc.stderr.splitlines() == [
        "ndgen: error: 1 of 2 URLs failed; first: dltest 2.0: file: only http and https URLs are fetched"
        f" ({secret.as_uri()})"
    ]
    wrote = run_ndgen("check-urls", "dltest", "--write", env=env, timeout=120)
    assert wrote.returncode == 2 and "nothing recorded" in wrote.stderr and DIGEST not in wrote.stderr
    assert meta.read_bytes() == before


def test_check_urls_refuses_a_redirect_to_loopback(tmp_path, server, loopback_service):
    target = loopback_service.url("tool.bin")
    reg = _registry(tmp_path, {"1.0": server.url(f"goto/{target}")})
    proc = run_ndgen("check-urls", "dltest", "--write", env={"NDGEN_REGISTRY": str(reg)}, timeout=120)
    assert proc.returncode == 2
    assert f"refused {target}: 127.0.0.1 is a loopback address" in proc.stderr, proc.stderr
    assert "sha256" not in yaml.safe_load((reg / "dltest" / "meta.yaml").read_text())["versions"]["1.0"]


def test_a_local_source_is_a_regular_file_read_without_following_a_link(cache, tmp_path):
    """A recipe file swapped for a FIFO or a link after the loader's checks neither hangs nor leaks."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NdgenError, match=r"fifo: not a regular file$"):
        fetch.stage(fifo, None, tmp_path / "x")
    link = tmp_path / "link"
    link.symlink_to("/etc/hostname")
    with pytest.raises(NdgenError, match=r"link: cannot be read: Too many levels of symbolic links$"):
        fetch.stage(link, None, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
