"""Targets → fingerprints → compared with what the registry holds → a plan.

Why each target is planned (`reason`):
- `up to date`: REG/NAME:TAG carries the same fingerprint label (read from the
  manifest and the config blob, never a layer) — nothing to do;
- `new`: the registry has no such tag (or no registry was named);
- `changed (recipe, base, …)`: the promoted image's fingerprint parts that differ;
- `failed before (STAGE)`: this very fingerprint failed on an earlier run (a failure
  record in the registry, `failed-FP` under the recipe's repository, see run.py);
- `invalid (…)`: the recipe cannot be planned (bad build.yaml, a duplicate name):
  it fails at its stage when run, and no other target is affected.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from neurodocker_nd.core import engine
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.fleet import fingerprint as fp
from neurodocker_nd.fleet.oci import Registry
from neurodocker_nd.fleet.targets import Target, find_targets

FINGERPRINT_LABEL = "org.ndgen.fleet.fingerprint"
PARTS_LABEL = "org.ndgen.fleet.parts"
NAME_LABEL = "org.ndgen.fleet.recipe"
VERSION_LABEL = "org.ndgen.fleet.version"
NDGEN_LABEL = "org.ndgen.fleet.ndgen-version"
TESTS_LABEL = "org.ndgen.fleet.tests"
MAX_JOBS = 256  # GitHub Actions: a matrix generates at most 256 jobs per workflow run
RUNNERS = {"x86_64": "ubuntu-latest", "aarch64": "ubuntu-24.04-arm"}


@attrs.frozen
class Planned:
    target: Target
    fingerprint: str | None  # None: the recipe could not be rendered (its problem says why)
    parts: dict[str, str]
    reason: str
    runner: str
    problem: str | None = None  # a render/plan failure: the run reports it at `target.problem_stage`
    promoted: str | None = None  # the manifest digest under the target's tag in the registry now

    @property
    def work(self) -> bool:
        return self.reason != "up to date"

    def as_json(self) -> dict[str, Any]:
        return {
            **self.target.identity(),
            "fingerprint": self.fingerprint,
            "reason": self.reason,
            "runner": self.runner,
        }


@attrs.frozen
class Plan:
    targets: tuple[Planned, ...]
    max_jobs: int

    @property
    def matrices(self) -> list[list[dict[str, Any]]]:
        """The targets that need work, in chunks of at most `max_jobs` (one GitHub matrix each)."""
        todo = [p.as_json() for p in self.targets if p.work]
        return [todo[i : i + self.max_jobs] for i in range(0, len(todo), self.max_jobs)]

    def as_json(self) -> str:
        return json.dumps({"targets": [p.as_json() for p in self.targets], "matrices": self.matrices}, indent=2)


@attrs.frozen
class Options:
    """What a plan and a run share: which targets, where their state lives, how they render."""

    directory: Path
    registry: Registry | None
    arches: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    runners: dict[str, str] = attrs.field(factory=lambda: dict(RUNNERS))
    minify: bool = False  # the images are minified: another fingerprint than the full ones


def plan(options: Options, max_jobs: int = MAX_JOBS) -> Plan:
    if not 1 <= max_jobs <= MAX_JOBS:
        raise NdgenError(f"--max-jobs {max_jobs}: a GitHub matrix holds 1 to {MAX_JOBS} jobs")
    targets = find_targets(options.directory, options.arches, options.only)
    if options.registry is not None:
        options.registry.ping()  # one line when it does not answer, before any target is judged
    bases: dict[str, str] = {}
    return Plan(tuple(plan_target(t, options, bases) for t in targets), max_jobs)


def plan_target(target: Target, options: Options, bases: dict[str, str] | None = None) -> Planned:
    runner = options.runners[target.arch]
    if target.problem is not None:
        return Planned(target, None, {}, f"invalid ({target.problem})", runner, target.problem)
    try:
        parts = fingerprint_parts(target, options.templates, bases if bases is not None else {}, options.minify)
    except NdgenError as exc:
        return Planned(target, None, {}, f"invalid ({exc.message})", runner, exc.message)
    finger = fp.combine(parts)
    reason, promoted = _reason(target, finger, parts, options.registry)
    return Planned(target, finger, parts, reason, runner, promoted=promoted)


def fingerprint_parts(
    target: Target, templates: Sequence[str], bases: dict[str, str], minify: bool = False
) -> dict[str, str]:
    """The fingerprint's parts for one target (fingerprint.py says what each covers)."""
    import hashlib

    from neurodocker_nd.render.recipe import load_recipe
    from neurodocker_nd.render.renderer import render

    recipe = load_recipe(target.recipe_dir, arch=target.arch, templates=templates)
    text = render(recipe, "docker", cache_stage=True)
    # The Dockerfile names where the recipe was read (its `# Reproduce:` line): a checkout elsewhere
    # (another runner, another clone) is the same image.
    places: list[str] = [str(target.recipe_dir), *templates]
    for i, where in enumerate(places):
        for form in {where, str(Path(where).absolute())}:
            text = text.replace(form, f"<dir{i}>")
    base = recipe.target.base_image
    if base not in bases:
        image = engine.find_image(engine.connect(), base)
        digests = sorted(image.attrs.get("RepoDigests") or []) if image is not None else []
        # A pulled base: its registry digest, the same on every runner; a local one (`ndgen base`): its id.
        bases[base] = digests[0] if digests else image.id if image is not None else f"absent:{base}"
    return {
        "recipe": fp.tree_digest(target.recipe_dir),
        "render": hashlib.sha256(text.encode()).hexdigest(),
        "base": bases[base],
        "renderer": fp.renderer_version(),
        "arch": target.arch,
        "variant": "minified" if minify else "full",
    }


def failure_tag(fingerprint: str) -> str:
    return f"failed-{fingerprint[:32]}"


def _reason(target: Target, finger: str, parts: dict[str, str], registry: Registry | None) -> tuple[str, str | None]:
    """Why the target is planned, and the digest promoted under its tag now (None: none)."""
    if registry is None:
        return "new", None
    found = registry.labelled(target.name, target.tag)
    digest, labels = found if found is not None else (None, None)
    if labels is not None and labels.get(FINGERPRINT_LABEL) == finger:
        return "up to date", digest
    failed = registry.labels(target.name, failure_tag(finger))
    if failed is not None:
        return f"failed before ({failed.get('org.ndgen.fleet.stage', 'unknown stage')})", digest
    if labels is None:
        return "new", None
    what = fp.changed(fp.decode_parts(labels.get(PARTS_LABEL, "")), parts)
    return f"changed ({', '.join(what)})", digest
