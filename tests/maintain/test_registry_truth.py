"""Registry truth (issue 10): provenance, download lint with waivers, checksums, `requires:`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from support import REPO, run_ndgen

JQ_181 = "020468de7539ce70ef1bceaf7cde2e8c4f2ca6c3afb84642aabc5c97d9fc2a0d"


@pytest.fixture
def reg(tmp_path) -> Path:
    """A private registry holding a copy of the jq entry (sources, checksums)."""
    root = tmp_path / "registry"
    shutil.copytree(REPO / "registry" / "jq", root / "jq")
    return root


def _edit(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _validate(reg: Path, *args: str):
    return run_ndgen("validate", *args, env={"NDGEN_REGISTRY": str(reg)}, timeout=120)


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr
    return lines[0]


def test_bundled_registry_validates_with_documented_waivers():
    proc = run_ndgen("validate", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "waived lint findings" in proc.stdout


def test_copy_of_jq_validates(reg):
    proc = _validate(reg, str(reg / "jq"))
    assert proc.returncode == 0, proc.stderr


def test_added_version_without_sources_is_refused(reg):
    url = "https://github.com/jqlang/jq/releases/download/jq-9.9/jq-linux64"
    _edit(reg / "jq" / "template.yaml", lambda d: d["binaries"]["urls"].update({"9.9": url}))
    line = _one_error_line(_validate(reg))
    assert "jq/template.yaml:" in line and "jq 9.9" in line and "versions.'9.9'" in line

    # With a source and a status (and its missing checksum waived) it passes.
    def add_meta(d):
        d["versions"]["9.9"] = {
            "status": "confirmed",
            "sources": [{"url": "https://example.org/r", "confirms": "the asset"}],
        }
        d["waivers"] = [{"rule": "missing-checksum", "versions": ["9.9"], "reason": "not downloadable here yet"}]

    _edit(reg / "jq" / "meta.yaml", add_meta)
    assert _validate(reg).returncode == 0


def test_changed_upstream_url_needs_sources_and_meta_cannot_describe_absent_versions(reg):
    _edit(reg / "jq" / "meta.yaml", lambda d: d["versions"].pop("1.7"))
    assert "changes upstream's URL" in _one_error_line(_validate(reg))
    _edit(
        reg / "jq" / "meta.yaml",
        lambda d: d["versions"].update(
            {
                "1.7": {"status": "verified", "sources": [{"url": "https://x.org/a", "confirms": "x x x"}]},
                "0.1": {"status": "confirmed", "sources": [{"url": "https://x.org/a", "confirms": "x x x"}]},
            }
        ),
    )
    assert "describes version '0.1'" in _one_error_line(_validate(reg))


@pytest.mark.parametrize(
    "rule, url, instructions",
    [
        ("dropbox", "https://dl.dropbox.com/s/abc/jq.tar.gz", None),
        ("unpinned", "https://github.com/jqlang/jq/releases/latest/download/jq-linux64", None),
        ("pipe-to-shell", None, "curl -fsSL https://example.org/install.sh | bash\n"),
        ("apt-key", None, "apt-key adv --keyserver hkp://pool.sks-keyservers.net --recv-keys 0xA5D32F012649A5A9\n"),
    ],
)
def test_lint_rules_fire_and_a_waiver_with_reason_silences_them(reg, rule, url, instructions):
    def template(d):
        if url:
            d["binaries"]["urls"]["9.9"] = url
        if instructions:
            d["source"]["instructions"] += instructions

    _edit(reg / "jq" / "template.yaml", template)

    def meta(d):
        if url:
            d["versions"]["9.9"] = {"status": "confirmed", "sources": [{"url": "https://x.org/a", "confirms": "x x x"}]}
            d["waivers"] = [{"rule": "missing-checksum", "versions": ["9.9"], "reason": "test entry, no digest"}]

    _edit(reg / "jq" / "meta.yaml", meta)
    line = _one_error_line(_validate(reg))
    assert {"dropbox": "Dropbox", "unpinned": "unpinned", "pipe-to-shell": "pipes a download", "apt-key": "apt-key"}[
        rule
    ] in line
    _edit(
        reg / "jq" / "meta.yaml",
        lambda d: d.setdefault("waivers", []).append({"rule": rule, "reason": "because of the test"}),
    )
    assert _validate(reg).returncode == 0


def test_missing_checksum_and_stale_waiver(reg):
    _edit(reg / "jq" / "meta.yaml", lambda d: d["versions"]["1.8.1"].pop("sha256"))
    assert "jq 1.8.1: no sha256" in _one_error_line(_validate(reg))
    _edit(
        reg / "jq" / "meta.yaml",
        lambda d: d.update(
            waivers=[
                {"rule": "missing-checksum", "versions": ["1.8.1"], "reason": "testing a waiver"},
                {"rule": "dropbox", "reason": "nothing here is on Dropbox"},
            ]
        ),
    )
    assert "waiver of 'dropbox' matches nothing" in _one_error_line(_validate(reg))


def test_rendered_run_verifies_the_download_before_use():
    proc = run_ndgen("--pkg", "jq==1.8.1", "--os", "debian:bookworm")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    dl = text.index(
        "curl -fsSL --output /usr/local/bin/jq https://github.com/jqlang/jq/releases/download/jq-1.8.1/jq-linux64"
    )
    check = text.index(f'&& {{ echo "{JQ_181}  /usr/local/bin/jq" | sha256sum -c --quiet - || ')
    assert dl < check < text.index("chmod +x /usr/local/bin/jq")
    sing = run_ndgen("--pkg", "jq==1.8.1", "--os", "rockylinux:9", "--format", "singularity")
    assert f'echo "{JQ_181}  /usr/local/bin/jq" | sha256sum -c --quiet -' in sing.stdout
    assert "sha256 mismatch: expected" in text  # the message a failed build reports


def test_a_checksum_on_a_streamed_download_is_an_error(reg):
    _edit(
        reg / "jq" / "template.yaml",
        lambda d: d["binaries"].update(
            instructions="{{ self.install_dependencies() }}\ncurl -fsSL {{ self.urls[self.version] }} | tar -x\n"
        ),
    )
    line = _one_error_line(_validate(reg))
    assert "cannot verify sha256" in line and "jq-linux64" in line


def test_elastix_531_on_rocky9_is_refused_with_the_reason():
    line = _one_error_line(run_ndgen("--pkg", "elastix", "--os", "rockylinux:9"))
    assert "elastix 5.3.1" in line and "glibc >= 2.35" in line and "rockylinux:9 has 2.34" in line
    assert "Ubuntu 22.04" in line
    assert run_ndgen("--pkg", "elastix==5.2.0", "--os", "rockylinux:9").returncode == 0
    assert run_ndgen("--pkg", "elastix", "--os", "ubuntu:22.04").returncode == 0


def test_matrix_skips_incompatible_combinations_with_the_reason(tmp_path):
    proc = run_ndgen(
        "matrix",
        "--out",
        str(tmp_path),
        "--pkg",
        "elastix",
        "--os",
        "rockylinux:9",
        "--os",
        "debian:bookworm",
        "--format",
        "docker",
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped elastix (method=binaries) on rockylinux:9: elastix 5.3.1" in proc.stderr
    assert "glibc >= 2.35" in proc.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "elastix.debian-bookworm.Dockerfile" in names
    assert not any("elastix.rockylinux" in n for n in names)


def test_show_reports_provenance_checksums_and_requirements():
    import json

    d = json.loads(run_ndgen("show", "jq", "--json").stdout)
    assert d["provenance"]["1.8.1"]["sha256"] == JQ_181 and d["provenance"]["1.8.1"]["status"] == "verified"
    assert d["provenance"]["1.8.1"]["sources"][0]["url"].endswith("/sig/v1.8.1/sha256sum.txt")
    assert "sha256:   1.8.2, 1.8.1, 1.8.0, 1.7.1, 1.7, 1.6" in run_ndgen("show", "jq").stdout
    assert "requires: glibc >= 2.35 for 5.3.1" in run_ndgen("show", "elastix").stdout


def test_a_known_dead_download_is_named_at_render_time():
    dead = run_ndgen("--pkg", "ants==2.3.4", "--os", "debian:bookworm")
    assert dead.returncode == 0 and dead.stderr.strip() == (
        "ndgen: note: ants 2.3.4 downloads from Dropbox, which answers 403 (neurodocker#635): "
        "the build will fail; choose another version"
    )
    assert run_ndgen("--pkg", "ants", "--os", "debian:bookworm").stderr == ""


def test_checksums_travel_upstream_in_the_pr_body_not_the_template():
    """Upstream's template schema has no place for checksums: the exported template stays
    schema-clean and the PR body lists each version's sources and sha256 for reviewers
    (test_upstream_export keeps upstream-patches/ equal to a fresh export)."""
    body = (REPO / "upstream-patches" / "jq" / "PR.md").read_text()
    assert "## Sources" in body and f"`1.8.1` (verified; sha256 `{JQ_181}`)" in body
    assert "sig/v1.8.1/sha256sum.txt" in body
    exported = yaml.safe_load((REPO / "upstream-patches" / "jq" / "jq.yaml").read_text())
    assert "sha256" not in str(exported) and set(exported["binaries"]) <= {
        "arguments",
        "dependencies",
        "env",
        "instructions",
        "urls",
    }
