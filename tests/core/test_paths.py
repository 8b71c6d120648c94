"""Where data comes from (issue 12, item 7)."""

from __future__ import annotations

import json
import shutil

from support import REPO, run_ndgen


def test_ndgen_registry_typo_is_an_error(tmp_path):
    proc = run_ndgen("--pkg", "ants", "--os", "ubuntu", env={"NDGEN_REGISTRY": str(tmp_path / "regsitry")}, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"ndgen: error: NDGEN_REGISTRY={tmp_path / 'regsitry'}: no such directory\n"


def _installed_like_a_wheel(site, with_data: bool):
    """neurodocker_nd laid out as a wheel installs it: the package, its _data, no pyproject.toml."""
    shutil.copytree(REPO / "neurodocker_nd", site / "neurodocker_nd", ignore=shutil.ignore_patterns("__pycache__"))
    if with_data:
        for name in ("registry", "schemas", "minify"):
            shutil.copytree(REPO / name, site / "neurodocker_nd" / "_data" / name)
    # Some other distribution's top-level `registry` directory in the same site-packages.
    other = site / "registry" / "impostor"
    other.mkdir(parents=True)
    (other / "meta.yaml").write_text("name: impostor\n")


def _ndgen(site, *args):
    return run_ndgen(*args, env={"NDGEN_REGISTRY": None, "PYTHONPATH": str(site)}, cwd=site, timeout=120)


def test_unrelated_site_packages_registry_is_ignored(tmp_path):
    _installed_like_a_wheel(tmp_path, with_data=True)
    proc = _ndgen(tmp_path, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    names = {e["name"] for e in json.loads(proc.stdout)}
    assert "impostor" not in names and "niimath" in names  # niimath: an ndgen registry entry


def test_missing_bundled_data_is_one_line(tmp_path):
    _installed_like_a_wheel(tmp_path, with_data=False)
    proc = _ndgen(tmp_path, "--pkg", "niimath", "--os", "ubuntu")
    assert proc.returncode == 2
    assert (
        proc.stderr.startswith("ndgen: error: ndgen's registry/ data directory is missing")
        and proc.stderr.count("\n") == 1
    )
