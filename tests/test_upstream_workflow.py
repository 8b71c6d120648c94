"""The bot's GitHub Actions workflow: valid against the published workflow schema.

GitHub Actions cannot run here; check-jsonschema's bundled (offline) copy of
SchemaStore's github-workflow schema validates the file instead.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import tool

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "upstream-pr.yml"


def _check(path: Path) -> subprocess.CompletedProcess:
    exe = tool("check-jsonschema")
    return subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_workflow_validates_against_github_workflow_schema():
    proc = _check(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok -- validation done" in proc.stdout


def _dump(data: dict, path: Path) -> Path:
    data = dict(data)
    data["on"] = data.pop(True)  # YAML 1.1 reads the key `on` as True
    path.write_text(yaml.safe_dump(data))
    return path


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    data = yaml.safe_load(WORKFLOW.read_text())
    # Control: the round-tripped workflow still validates ...
    assert _check(_dump(data, tmp_path / "same.yml")).returncode == 0
    # ... so these edits are what the schema rejects (the check can fail).
    del data["jobs"]["upstream-pr"]["runs-on"]
    proc = _check(_dump(data, tmp_path / "broken.yml"))
    assert proc.returncode != 0 and "runs-on" in proc.stdout


def test_runs_the_bot_on_pushes_to_main_touching_the_registry():
    data = yaml.safe_load(WORKFLOW.read_text())
    push = data[True]["push"]  # YAML 1.1 reads the key `on` as True
    assert push["branches"] == ["main"] and push["paths"] == ["registry/**"]
    runs = "\n".join(step.get("run", "") for step in data["jobs"]["upstream-pr"]["steps"])
    assert "ndgen upstream export" in runs and "ndgen upstream pr" in runs
    assert "--apply" in WORKFLOW.read_text()
    env = next(s["env"] for s in data["jobs"]["upstream-pr"]["steps"] if "env" in s)
    assert env["GITHUB_TOKEN"].startswith("${{ secrets.")
