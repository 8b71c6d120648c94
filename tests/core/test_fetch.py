"""fetch.stage: verified downloads into a content-addressed cache (real HTTP server)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from neurodocker_nd.core import fetch
from neurodocker_nd.errors import NdgenError
from support.localhttp import LocalHTTP

PAYLOAD = b"ndgen fetch test payload\n" * 100
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
WRONG = "0" * 64


@pytest.fixture
def server(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "tool.zip").write_bytes(PAYLOAD)
    with LocalHTTP(site, slow_seconds=3) as srv:
        yield srv


def _cached(cache: Path) -> list[Path]:
    d = cache / "files" / "sha256"
    return sorted(p for p in d.iterdir()) if d.is_dir() else []


def test_stage_url_verifies_and_caches_by_content(server, cache, tmp_path):
    out = fetch.stage(server.url("tool.zip"), DIGEST, tmp_path / "out" / "tool.zip")
    assert out.read_bytes() == PAYLOAD
    assert [p.name for p in _cached(cache)] == [DIGEST]
    assert (cache / "files" / "sha256" / DIGEST).read_bytes() == PAYLOAD


def test_cached_file_is_used_without_network(server, cache, tmp_path):
    fetch.stage(server.url("tool.zip"), DIGEST, tmp_path / "a")
    # The URL now answers 404: a cache hit must not even ask.
    out = fetch.stage(server.url("gone"), DIGEST, tmp_path / "b")
    assert out.read_bytes() == PAYLOAD


def test_wrong_digest_names_file_and_both_digests_and_caches_nothing(server, cache, tmp_path):
    dest = tmp_path / "out.zip"
    with pytest.raises(NdgenError) as exc:
        fetch.stage(server.url("tool.zip"), WRONG, dest)
    msg = exc.value.message
    assert "tool.zip" in msg and WRONG in msg and DIGEST in msg and "\n" not in msg
    assert _cached(cache) == [] and not dest.exists()
    assert list((cache / "files" / "tmp").iterdir()) == []


def test_without_digest_the_download_is_cached_under_its_own(server, cache, tmp_path):
    out = fetch.stage(server.url("redirect/tool.zip"), None, tmp_path)
    assert out == tmp_path / "tool.zip" and out.read_bytes() == PAYLOAD
    assert [p.name for p in _cached(cache)] == [DIGEST]


def test_local_path_source_is_verified(cache, tmp_path):
    src = tmp_path / "local.bin"
    src.write_bytes(PAYLOAD)
    assert fetch.stage(src, DIGEST, tmp_path / "copy.bin").read_bytes() == PAYLOAD
    with pytest.raises(NdgenError, match=f"local.bin: sha256 mismatch: expected {WRONG}, got {DIGEST}"):
        fetch.stage(src, WRONG, tmp_path / "copy2.bin")
    assert not (tmp_path / "copy2.bin").exists()


def test_http_errors_and_timeouts_are_one_line(server, cache, tmp_path):
    with pytest.raises(NdgenError, match=r"gone: download from .* failed: HTTP 404"):
        fetch.stage(server.url("gone"), DIGEST, tmp_path / "x")
    with pytest.raises(NdgenError, match="tool.zip: download from .* failed: timed out"):
        fetch.stage(server.url("slow/tool.zip"), DIGEST, tmp_path / "y", timeout=0.5)
    assert _cached(cache) == []


def test_malformed_digest_is_rejected(cache, tmp_path):
    with pytest.raises(NdgenError, match="is not 64 hex digits"):
        fetch.stage(tmp_path / "whatever", "abc", tmp_path / "z")


def test_probe_reports_status_redirects_size_and_digest(server):
    ok = fetch.probe(server.url("redirect/tool.zip"))
    assert ok.ok and ok.status == 200 and ok.size == len(PAYLOAD)
    assert ok.redirects == ((302, server.url("tool.zip")),) and ok.final_url == server.url("tool.zip")
    assert fetch.probe(server.url("gone")).status == 404
    slow = fetch.probe(server.url("slow/tool.zip"), timeout=0.5)
    assert not slow.ok and slow.status is None and slow.error == "timed out"
    got = fetch.probe(server.url("nohead/tool.zip"), fetch=True)
    assert got.ok and got.sha256 == DIGEST and got.size == len(PAYLOAD)
    assert fetch.probe(server.url("nohead/tool.zip")).ok  # HEAD refused: GET instead
