"""The same plan as a GitHub Actions workflow: runners are the distributed engine.

A `plan` job runs `ndgen fleet plan --json` and hands each chunk of at most 256
targets (GitHub's limit of jobs per matrix) to one matrix job (`fromJSON`,
`fail-fast: false`), each of whose jobs runs `ndgen fleet run --only NAME --arch ARCH`
on the runner label of its architecture.  The number of chunk jobs is fixed when the
workflow is written (enough for every target of DIR); a plan that needs more fails
its job, naming the fix.  Pull requests build, test and push candidates; only a push
to the default branch promotes.  No `${{ }}` expression is ever expanded inside a
`run:` script: values reach the shell as environment variables (no injection through a
recipe or branch name).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from neurodocker_nd.core import outfile
from neurodocker_nd.fleet.plan import MAX_JOBS
from neurodocker_nd.fleet.targets import find_targets

WORKFLOW_FILE = "ndgen-fleet.yml"
CHECKOUT = "actions/checkout@v4"
UPLOAD = "actions/upload-artifact@v4"

# Writes chunk0..chunkN-1 to $GITHUB_OUTPUT; more chunks than jobs fails the plan job.
_OUTPUTS = """\
python3 - "$CHUNKS" <<'PY'
import json, os, sys
chunks = int(sys.argv[1])
matrices = json.load(open("plan.json"))["matrices"]
if len(matrices) > chunks:
    sys.exit(f"the plan needs {len(matrices)} matrix jobs, the workflow has {chunks}: run ndgen fleet workflow again")
with open(os.environ["GITHUB_OUTPUT"], "a") as out:
    for i in range(chunks):
        out.write(f"chunk{i}=" + json.dumps(matrices[i] if i < len(matrices) else []) + "\\n")
PY
"""

_RUN = """\
promote=--no-promote
if [ "$PROMOTE" = true ]; then promote=; fi
ndgen fleet run "$RECIPES" --registry "$REGISTRY" --only "$NAME" --arch "$ARCH" $promote \\
  --network host --report report.json --junit junit.xml --markdown "$GITHUB_STEP_SUMMARY"
"""

_LOGIN = """\
if [ -n "$NDGEN_REGISTRY_USER" ]; then
  printf '%s' "$NDGEN_REGISTRY_PASSWORD" | docker login "${REGISTRY%%/*}" -u "$NDGEN_REGISTRY_USER" --password-stdin
fi
"""


def workflow(
    directory: Path,
    recipes_path: str,
    registry: str,
    runners: Mapping[str, str],
    install: str,
    branch: str | None = None,
) -> dict[str, Any]:
    """The workflow as data; `recipes_path` is DIR as the repository's checkout names it."""
    targets = find_targets(directory)
    chunks = max(1, math.ceil(len(targets) / MAX_JOBS))
    creds = {
        "NDGEN_REGISTRY_USER": "${{ secrets.NDGEN_REGISTRY_USER }}",
        "NDGEN_REGISTRY_PASSWORD": "${{ secrets.NDGEN_REGISTRY_PASSWORD }}",
    }
    setup = [
        {"uses": CHECKOUT, "with": {"persist-credentials": False}},
        {"name": "install ndgen", "run": install},
        {"name": "registry login", "env": creds, "run": _LOGIN},
    ]
    runner_flags = " ".join(f'--runner "{arch}=$RUNNER_{arch.upper()}"' for arch in sorted(runners))
    plan_job = {
        "runs-on": runners["x86_64"],
        "permissions": {"contents": "read"},
        "outputs": {f"chunk{i}": f"${{{{ steps.plan.outputs.chunk{i} }}}}" for i in range(chunks)},
        "steps": [
            *setup,
            {
                "name": "plan",
                "id": "plan",
                "env": {
                    **creds,
                    **{f"RUNNER_{a.upper()}": label for a, label in sorted(runners.items())},
                    "CHUNKS": str(chunks),
                },
                "run": f'ndgen fleet plan "$RECIPES" --registry "$REGISTRY" {runner_flags} --json > plan.json\n'
                + _OUTPUTS,
            },
        ],
    }
    promote = "${{ github.event_name == 'push' && github.ref_name == github.event.repository.default_branch }}"
    jobs: dict[str, Any] = {"plan": plan_job}
    for i in range(chunks):
        output = f"needs.plan.outputs.chunk{i}"
        jobs[f"build-{i}"] = {
            "needs": "plan",
            "if": f"{output} != '[]' && {output} != ''",
            "runs-on": "${{ matrix.runner }}",
            "permissions": {"contents": "read"},
            "strategy": {"fail-fast": False, "matrix": {"include": f"${{{{ fromJSON({output}) }}}}"}},
            "name": "${{ matrix.name }} ${{ matrix.arch }}",
            "steps": [
                *setup,
                {
                    "name": "build, test, push, promote",
                    "env": {**creds, "NAME": "${{ matrix.name }}", "ARCH": "${{ matrix.arch }}", "PROMOTE": promote},
                    "run": _RUN,
                },
                {
                    "if": "always()",
                    "uses": UPLOAD,
                    "with": {
                        "name": "fleet-${{ matrix.name }}-${{ matrix.arch }}",
                        "path": "report.json\njunit.xml\n",
                        "if-no-files-found": "ignore",
                    },
                },
            ],
        }
    push: dict[str, Any] = {"branches": [branch]} if branch else {}
    return {
        "name": "ndgen fleet",
        "on": {"push": push or None, "pull_request": None, "workflow_dispatch": None},
        "permissions": {},
        "concurrency": {"group": "ndgen-fleet-${{ github.ref }}", "cancel-in-progress": False},
        "env": {"RECIPES": recipes_path, "REGISTRY": registry},
        "jobs": jobs,
    }


def write_workflow(data: dict[str, Any], out_dir: Path) -> Path:
    """`OUTDIR/ndgen-fleet.yml`, whole or not at all."""
    text = "# Written by `ndgen fleet workflow`; regenerate it rather than editing it.\n"
    text += yaml.safe_dump(data, sort_keys=False, width=200, default_flow_style=False)
    path = out_dir / WORKFLOW_FILE
    outfile.write_text(path, text, mkdir=True)
    return path
