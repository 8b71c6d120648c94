"""The bot's GitHub Actions workflow: valid against the published workflow schema.

GitHub Actions cannot run here; check-jsonschema's bundled (offline) copy of
SchemaStore's github-workflow schema validates the file instead.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from support import REPO, tool

WORKFLOW = REPO / ".github" / "workflows" / "upstream-pr.yml"


def _check(path: Path) -> subprocess.CompletedProcess:
    exe = tool("check-jsonschema")
    return subprocess.run(
        [exe, "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True, text=True, timeout=120
    )


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


def test_push_is_a_dry_run_schedule_and_dispatch_apply():
    data = yaml.safe_load(WORKFLOW.read_text())
    on = data[True]  # YAML 1.1 reads the key `on` as True
    assert on["push"]["branches"] == ["main"] and "registry/**" in on["push"]["paths"]
    assert on["schedule"] and "workflow_dispatch" in on
    job = data["jobs"]["upstream-pr"]
    assert job["if"] == "github.repository == 'ndgen/ndgen'"  # forks do not run the bot
    steps = job["steps"]
    bot = next(s for s in steps if "ndgen upstream pr" in s.get("run", ""))
    assert bot["env"]["MODE"] == "${{ github.event_name == 'push' && '--dry-run' || '--apply' }}"
    assert '--summary "$GITHUB_STEP_SUMMARY"' in bot["run"]
    assert bot["env"]["GITHUB_TOKEN"].startswith("${{ secrets.")
    runs = [s.get("run", "") for s in steps]
    # The freshness check exports without --upstream; the bot's series against upstream now.
    assert any("ndgen upstream export" in r and "--upstream" not in r for r in runs)
    assert any("ndgen upstream export --upstream upstream-neurodocker" in r for r in runs)
    assert "public_repo" in WORKFLOW.read_text()
