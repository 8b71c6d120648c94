"""The check-urls GitHub workflow: valid against the published workflow schema, runs the real command."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support import REPO

WORKFLOW = REPO / ".github" / "workflows" / "check-urls.yml"


def _check(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.fail("check-jsonschema is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [exe, "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True, text=True, timeout=120
    )


def test_workflow_validates_and_a_broken_copy_does_not(tmp_path):
    proc = _check(WORKFLOW)
    assert proc.returncode == 0 and "ok -- validation done" in proc.stdout, proc.stdout + proc.stderr
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True)  # YAML 1.1 reads the key `on` as True
    del data["jobs"]["check-urls"]["runs-on"]
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(data))
    bad = _check(broken)
    assert bad.returncode != 0 and "runs-on" in bad.stdout


def test_runs_check_urls_with_fetch_and_records_only_on_request():
    data = yaml.safe_load(WORKFLOW.read_text())
    steps = data["jobs"]["check-urls"]["steps"]
    runs = [s.get("run", "") for s in steps]
    assert any(r.startswith("ndgen check-urls --fetch") for r in runs)
    record = next(s for s in steps if "--write" in s.get("run", ""))
    assert record["if"] == "${{ inputs.record }}" and "ndgen validate" in record["run"]
    # Only --write needs an extra (tests/maintain/test_check_urls_extras.py); the check runs on the core install.
    assert record["run"].index("pip install '.[upstream]'") < record["run"].index("ndgen check-urls --write")
    assert data["permissions"] == {"contents": "read"}  # it never pushes
    assert "schedule" in data[True] and data[True]["push"]["paths"] == ["registry/**"]
