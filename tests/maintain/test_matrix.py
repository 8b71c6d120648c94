"""`ndgen matrix`: the whole project registry × OS presets × formats, linted and parsed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurodocker_nd.cli import cli
from neurodocker_nd.maintain.matrix import render_matrix
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render.renderer import HADOLINT_IGNORE
from neurodocker_nd.render.target import PRESETS
from support import TESTS, run_ndgen, tool

GOLDEN = TESTS / "golden"
FIXTURES = GOLDEN / "registry"


def hadolint(files: list[Path], ignore: tuple[str, ...] = HADOLINT_IGNORE) -> subprocess.CompletedProcess:
    args = [a for rule in ignore for a in ("--ignore", rule)]
    cmd = [tool("hadolint"), "--no-color", *args, *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True)


def spython_parse(path: Path):
    from spython.main.parse.parsers import SingularityParser

    (recipe,) = SingularityParser(str(path)).recipe.values()
    return recipe


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory) -> tuple[Path, str]:
    """The real matrix (project registry), rendered once by a real `ndgen matrix` process."""
    out = tmp_path_factory.mktemp("matrix")
    proc = run_ndgen("matrix", "--out", str(out), env={"NDGEN_REGISTRY": None})
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_count_matches_files_and_covers_every_entry(matrix_dir):
    out, stdout = matrix_dir
    files = sorted(out.iterdir())
    assert stdout == f"{len(files)} recipes written to {out}\n"
    names = {f.name.split(".")[0] for f in files}
    registry = Registry()
    for entry in registry.entries():
        if entry.name in ("vnc", "ndfreeze", "niftyreg"):  # need arguments without defaults
            continue
        assert entry.name in names, entry.name
        if entry.source != "upstream" and "system" in entry.methods and entry.default_method != "system":
            assert f"{entry.name}-system" in names
    # every OS preset in both formats for an entry supporting apt and yum
    ants = {f.name for f in files if f.name.startswith("ants.")}
    assert len(ants) == 2 * len(PRESETS)


def test_every_dockerfile_passes_hadolint(matrix_dir):
    out, _ = matrix_dir
    files = sorted(out.glob("*.Dockerfile"))
    assert len(files) > 100
    proc = hadolint(files)
    assert proc.returncode == 0, proc.stdout[:3000]


def test_every_def_parses_with_spython(matrix_dir):
    out, _ = matrix_dir
    defs = sorted(out.glob("*.def"))
    assert len(defs) == len(list(out.glob("*.Dockerfile")))
    for path in defs:
        recipe = spython_parse(path)
        text = path.read_text()
        assert recipe.fromHeader and f"\nFrom: {recipe.fromHeader}\n" in text, path.name
        assert recipe.install, path.name
        assert any(label.startswith("org.ndgen.packages ") for label in recipe.labels), path.name
        assert "\n%help\n" in text and "\n%runscript\n" in text, path.name


def test_matrix_is_byte_identical_across_runs(matrix_dir):
    out, _ = matrix_dir
    items, _ = render_matrix(Registry(), PRESETS, ("docker", "singularity"))
    assert len(items) == len(list(out.iterdir()))
    for item in items:
        assert (out / item.filename).read_text() == item.recipe.text, item.filename


def test_fixture_matrix_lints_system_repositories(tmp_path, monkeypatch):
    """NeuroDebian + EPEL system installs (fixture entries) also pass hadolint."""
    monkeypatch.setenv("NDGEN_REGISTRY", str(FIXTURES))
    out = tmp_path / "m"
    result = CliRunner().invoke(
        cli, ["matrix", "--out", str(out), "--pkg", "tinytool", "--pkg", "jq", "--pkg", "hello"]
    )
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.Dockerfile"))
    assert result.stdout == f"{2 * len(files)} recipes written to {out}\n"
    assert any("neuro.debian.net" in f.read_text() for f in files)
    assert any("epel-release" in f.read_text() for f in files)
    proc = hadolint(files)
    assert proc.returncode == 0, proc.stdout


def test_matrix_subset_and_skip_notes(tmp_path, monkeypatch):
    monkeypatch.setenv("NDGEN_REGISTRY", str(FIXTURES))
    result = CliRunner().invoke(
        cli,
        [
            "matrix",
            "--out",
            str(tmp_path),
            "--os",
            "ubuntu",
            "--os",
            "rockylinux:8",
            "--os",
            "ubuntu:24.04",
            "--format",
            "docker",
            "--pkg",
            "vnc",
            "--pkg",
            "neurodebian",
            "--pkg",
            "ants",
            "--pkg",
            "ants",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ants.rockylinux-8.Dockerfile",
        "ants.ubuntu-24.04.Dockerfile",
        "neurodebian.ubuntu-24.04.Dockerfile",
    ]
    assert result.stdout.startswith("3 recipes written to ")  # aliases and repeats render once
    assert "skipped vnc (method=source) on every OS: vnc: missing required argument 'passwd'" in result.stderr
    assert "skipped neurodebian (method=binaries) on rockylinux:8" in result.stderr


def test_matrix_error_writes_nothing(tmp_path):
    reg = tmp_path / "reg"
    shutil.copytree(FIXTURES, reg)
    (reg / "hello" / "template.yaml").write_text(
        (reg / "hello" / "template.yaml").read_text().replace("{{ self.install_path }}/bin", "{{ self.nope }}/bin")
    )
    out = tmp_path / "out"
    proc = run_ndgen("matrix", "--out", str(out), env={"NDGEN_REGISTRY": str(reg)})
    assert proc.returncode == 2
    assert proc.stderr.startswith("ndgen: error: ") and proc.stderr.count("\n") == 1
    assert "hello/template.yaml: template error" in proc.stderr
    assert not out.exists()


def test_golden_dockerfiles_pass_hadolint():
    files = sorted(GOLDEN.glob("*.Dockerfile"))
    assert files
    proc = hadolint(files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SC2016" not in HADOLINT_IGNORE


def test_upstream_default_would_fail_hadolint_sc2016(tmp_path):
    """The check above can fail: neurodocker's own output trips SC2016."""
    # neurodocker as its users import it: its __init__ registers its templates (_default), which an
    # in-process ndgen render before this test does not do (docs/render.md, "Why a cold render is faster").
    import neurodocker  # noqa: F401
    from neurodocker.reproenv import DockerRenderer

    d = {
        "pkg_manager": "apt",
        "instructions": [
            {"name": "from_", "kwds": {"base_image": "debian:bookworm"}},
            {"name": "_default", "kwds": {}},
        ],
    }
    f = tmp_path / "Dockerfile"
    f.write_text(str(DockerRenderer.from_dict(d)) + "\n")
    proc = hadolint([f], ignore=())
    assert "SC2016" in proc.stdout
