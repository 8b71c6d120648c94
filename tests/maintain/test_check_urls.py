"""`ndgen check-urls` against a real local HTTP server: 200, 404, redirect, slow, wrong digest, --write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from support import confirmed_versions, download_entry, run_ndgen
from support.localhttp import LocalHTTP

PAYLOAD = b"check-urls payload\n" * 64
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "tool.bin").write_bytes(PAYLOAD)
    with LocalHTTP(site, slow_seconds=4) as srv:
        yield srv


def _registry(tmp: Path, server, paths: dict[str, str], meta_extra: str = "") -> Path:
    urls = {version: server.url(path) for version, path in paths.items()}
    return download_entry(tmp / "reg", urls, meta_extra).parent


def _run(reg: Path, *args: str):
    return run_ndgen("check-urls", *args, env={"NDGEN_REGISTRY": str(reg)}, timeout=120)


def test_status_redirect_size_404_and_timeout(tmp_path, server):
    reg = _registry(
        tmp_path,
        server,
        {"1.0": "tool.bin", "2.0": "redirect/tool.bin", "3.0": "gone", "4.0": "slow/tool.bin"},
        confirmed_versions(["1.0", "2.0", "3.0", "4.0"]),
    )
    proc = _run(reg, "dltest", "--json", "--timeout", "1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"ndgen: error: 2 of 4 URLs failed; first: dltest 3.0: HTTP 404 File not found ({server.url('gone')})"
    ]
    rows = {r["key"]: r for r in json.loads(proc.stdout)}
    assert rows["1.0"]["ok"] and rows["1.0"]["status"] == 200 and rows["1.0"]["size"] == len(PAYLOAD)
    assert rows["2.0"]["ok"] and rows["2.0"]["redirects"] == [{"status": 302, "url": server.url("tool.bin")}]
    assert rows["3.0"]["status"] == 404 and not rows["3.0"]["ok"]
    assert rows["4.0"]["status"] is None and rows["4.0"]["problem"] == "timed out"
    assert all(r["sha256"] is None for r in rows.values())  # no --fetch: nothing downloaded


def test_fetch_verifies_recorded_digests(tmp_path, server):
    wrong = "f" * 64
    reg = _registry(
        tmp_path,
        server,
        {"1.0": "tool.bin", "5.0": "redirect/tool.bin"},
        confirmed_versions(["1.0", "5.0"], {"1.0": DIGEST, "5.0": wrong}),
    )
    proc = _run(reg, "dltest", "--fetch")
    assert proc.returncode == 2
    assert f"wrong digest: recorded {wrong}, got {DIGEST}" in proc.stderr
    ok_line = next(line for line in proc.stdout.splitlines() if " 1.0 " in line)
    assert ok_line.startswith("ok") and f"sha256:{DIGEST}" in ok_line


def test_write_records_digests_prunes_the_waiver_and_validates(tmp_path, server):
    waiver = (
        "waivers:\n  - rule: missing-checksum  # until check-urls --write\n"
        '    reason: "no digest yet, recorded by the test"\n'
    )
    reg = _registry(
        tmp_path, server, {"1.0": "tool.bin", "2.0": "redirect/tool.bin"}, confirmed_versions(["1.0", "2.0"]) + waiver
    )
    before = run_ndgen("validate", str(reg / "dltest"), env={"NDGEN_REGISTRY": str(reg)})
    assert before.returncode == 0, before.stderr
    proc = _run(reg, "dltest", "--write")
    assert proc.returncode == 0, proc.stderr
    assert "recorded digests in" in proc.stderr
    meta = yaml.safe_load((reg / "dltest" / "meta.yaml").read_text())
    assert meta["versions"]["1.0"]["sha256"] == DIGEST == meta["versions"]["2.0"]["sha256"]
    assert "waivers" not in meta  # the missing-checksum waiver would now match nothing
    after = run_ndgen("validate", str(reg / "dltest"), env={"NDGEN_REGISTRY": str(reg)})
    assert after.returncode == 0, after.stderr


def test_write_with_a_failure_records_nothing(tmp_path, server):
    reg = _registry(tmp_path, server, {"1.0": "tool.bin", "3.0": "gone"}, confirmed_versions(["1.0", "3.0"]))
    meta = reg / "dltest" / "meta.yaml"
    before = meta.read_bytes()
    proc = _run(reg, "dltest", "--write")
    assert proc.returncode == 2 and "nothing recorded" in proc.stderr
    assert meta.read_bytes() == before
    assert [p.name for p in meta.parent.iterdir() if p.name.startswith(".")] == []


def test_unknown_name_is_one_line(tmp_path, server):
    reg = _registry(tmp_path, server, {"1.0": "tool.bin"}, confirmed_versions(["1.0"]))
    proc = _run(reg, "nosuch")
    assert proc.returncode == 2 and proc.stderr.startswith("ndgen: error: unknown package 'nosuch'")


def test_recipe_files_are_checked_and_written(tmp_path, server):
    recipe = tmp_path / "rec"
    recipe.mkdir()
    (recipe / "build.yaml").write_text(f"""\
name: rectest
version: "1.0"
readme: "check-urls test recipe"
files:
  - name: tool.bin
    url: {server.url("redirect/tool.bin")}
build:
  kind: neurodocker
  base-image: debian:bookworm
  pkg-manager: apt
  directives:
    - run:
        - cp {{{{ get_file("tool.bin") }}}} /opt/tool.bin
""")
    proc = run_ndgen("check-urls", "--recipe", str(recipe), "--write")
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load((recipe / "build.yaml").read_text())
    assert data["files"][0]["sha256"] == DIGEST
    again = run_ndgen("check-urls", "--recipe", str(recipe), "--fetch", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)[0]["recorded_sha256"] == DIGEST


def test_a_url_waived_as_dropbox_is_reported_dead_but_fails_nothing(tmp_path, server):
    waiver = (
        'waivers:\n  - rule: dropbox\n    versions: ["6.0"]\n'
        '    reason: "stands in for a Dropbox URL that answers 403"\n'
    )
    versions = confirmed_versions(["1.0", "6.0"]) + waiver
    reg = _registry(tmp_path, server, {"1.0": "tool.bin", "6.0": "gone"}, versions)
    proc = _run(reg, "dltest")
    assert proc.returncode == 0, proc.stderr
    assert next(line for line in proc.stdout.splitlines() if " 6.0 " in line).startswith("dead dltest 6.0  404")
