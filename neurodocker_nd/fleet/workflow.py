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
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.fleet.plan import MAX_JOBS
from neurodocker_nd.fleet.targets import Target, find_targets

WORKFLOW_FILE = "ndgen-fleet.yml"
# Pinned to commits (a tag can be moved): the v4.4.0 and v4.6.2 tags of actions/checkout and
# actions/upload-artifact, read from those repositories' tags.
CHECKOUT = "actions/checkout@11d5960a326750d5838078e36cf38b85af677262"
UPLOAD = "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02"
_PINS = f"#   {CHECKOUT}  (v4.4.0)\n#   {UPLOAD}  (v4.6.2)\n"

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
    environment: str = "ndgen-fleet",
    minify: bool = False,
) -> dict[str, Any]:
    """The workflow as data; `recipes_path` is DIR as the repository's checkout names it.

    The registry's secrets are read in jobs that name a GitHub `environment`: its secrets
    reach only those jobs, and its protection rules (which branches may deploy) apply.
    """
    targets = find_targets(directory)
    chunks = max(1, math.ceil(len(targets) / MAX_JOBS))
    creds = {
        "NDGEN_REGISTRY_USER": "${{ secrets.NDGEN_REGISTRY_USER }}",
        "NDGEN_REGISTRY_PASSWORD": "${{ secrets.NDGEN_REGISTRY_PASSWORD }}",
    }
    bases = {f"BASE_{i}": ref for i, ref in enumerate(base_images(targets))}
    setup = [
        {"uses": CHECKOUT, "with": {"persist-credentials": False}},
        {"name": "install ndgen", "run": install},
        {"name": "registry login", "env": creds, "run": _LOGIN},
    ]
    if bases:  # the fingerprint's `base` part is a pulled image's registry digest, the same on every runner
        pulls = "".join(f'docker pull "${name}"\n' for name in bases)
        setup.append({"name": "base images", "env": bases, "run": pulls})
    variant = " --minify" if minify else ""
    flags = " ".join(f'--runner "{arch}=$RUNNER_{arch.upper()}"' for arch in sorted(runners)) + variant
    plan_job = {
        "name": "plan",
        "runs-on": runners["x86_64"],
        "environment": environment,
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
                "run": f'ndgen fleet plan "$RECIPES" --registry "$REGISTRY" {flags} --json > plan.json\n' + _OUTPUTS,
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
            "environment": environment,
            "permissions": {"contents": "read"},
            "strategy": {"fail-fast": False, "matrix": {"include": f"${{{{ fromJSON({output}) }}}}"}},
            "name": "${{ matrix.name }} ${{ matrix.arch }}",
            "steps": [
                *setup,
                {
                    "name": "build, test, push, promote",
                    "env": {**creds, "NAME": "${{ matrix.name }}", "ARCH": "${{ matrix.arch }}", "PROMOTE": promote},
                    "run": _RUN.replace(" $promote", f"{variant} $promote"),
                },
                {
                    "name": "reports",
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


def base_images(targets: list[Target]) -> list[str]:
    """The base images the recipes build on (a recipe that does not load has none here)."""
    from neurodocker_nd.render.recipe import load_recipe

    found = set()
    for target in targets:
        if target.problem is None:
            try:
                found.add(load_recipe(target.recipe_dir, arch=target.arch).target.base_image)
            except NdgenError:
                continue  # it fails at render in its own job
    return sorted(found)


class _Dumper(yaml.SafeDumper):
    """No anchors (each job's steps written out: zizmor and people read them whole), and a
    script of several lines as a `|` block."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def write_workflow(data: dict[str, Any], out_dir: Path) -> Path:
    """`OUTDIR/ndgen-fleet.yml`, whole or not at all."""
    text = "# Written by `ndgen fleet workflow`; regenerate it rather than editing it.\n# Actions:\n" + _PINS
    text += yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=200, default_flow_style=False)
    path = out_dir / WORKFLOW_FILE
    outfile.write_text(path, text, mkdir=True)
    return path
