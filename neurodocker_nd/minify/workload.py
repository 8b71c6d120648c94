"""A neurocontainers test suite as minify's workload (``ndgen minify --tests SUITE.yaml``).

The suite is parsed once (:func:`neurodocker_nd.build.suite.load_suite`, by the CLI)
and planned twice by :func:`neurodocker_nd.build.suite.plan_suite`, each plan on its
own work directory in minify's scratch:

- the *trace* plan: its setup, every test and the cleanup run in the trace
  sandbox exactly as ``testrun`` runs them in a container — ``bash SCRIPT``
  from the work directory, mounted at the same path — followed by the deploy
  check (``testrun.DEPLOY_CHECK``), so the tools it uses (``ldd``, ``head``,
  ``awk``) and the ``DEPLOY_BINS`` programs are traced too.  Exit codes are
  not judged here: a test may expect a failure, and the verdict is the
  runner's.
- the *verify* plan: ``testrun.run_suite`` on the minified image with a fresh
  work directory — every test must pass, and the deploy check too.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import attrs

from neurodocker_nd.build import apptainer as defbuild
from neurodocker_nd.build import suite, testrun
from neurodocker_nd.minify.model import ImageConfig, Mount


@attrs.frozen
class SuiteWorkload:
    """A planned, staged suite: the commands to trace and the work directory they need."""

    plan: suite.SuitePlan
    commands: tuple[str, ...]  # each one /bin/sh -c command in the trace sandbox
    mount: Mount  # the work directory, at the same path inside


def prepare(loaded: suite.Suite, work_dir: Path, config: ImageConfig, data_cache: Path | None) -> SuiteWorkload:
    """Plan `loaded` on `work_dir`, stage its data and scripts, and list the commands to trace."""
    plan = suite.plan_suite(loaded, work_dir.absolute())
    testrun.stage_work(plan, data_cache)
    testrun.write_scripts(plan)
    # Images of ndgen's Apptainer stand-in are entered through their exec action (%environment),
    # as the runner enters them; the trace must see that action's files too.
    prefix = defbuild.EXEC_ENTRYPOINT + " " if list(config.entrypoint or ()) == [defbuild.RUN_ENTRYPOINT] else ""
    work = shlex.quote(str(plan.work_dir))
    scripts: list[Path] = []
    if plan.setup:
        scripts.append(plan.work_dir / f"{suite.SCRIPT_PREFIX}setup.sh")
    scripts += [test.script_path for test in plan.tests]
    if plan.cleanup:
        scripts.append(plan.work_dir / f"{suite.SCRIPT_PREFIX}cleanup.sh")
    commands = [f"cd {work} && {prefix}bash {shlex.quote(str(script))}" for script in scripts]
    commands.append(testrun.DEPLOY_CHECK)
    return SuiteWorkload(
        plan=plan, commands=tuple(commands), mount=Mount(host=plan.work_dir, target=str(plan.work_dir))
    )


def verify(image: str, loaded: suite.Suite, work_dir: Path, data_cache: Path | None) -> testrun.SuiteRun:
    """The whole suite and the deploy check in `image`, on a fresh work directory."""
    plan = suite.plan_suite(loaded, work_dir.absolute())
    return testrun.run_suite(image, plan, data_cache=data_cache, deploy=True)


def failure_text(run: testrun.SuiteRun) -> str:
    """The failed checks of `run`, for one error line."""
    failed: Sequence[testrun.CaseResult] = run.failures
    names = "; ".join(f"{r.name}: {r.message[:120]}" for r in failed[:3])
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return f"{len(failed)} of {len(run.results)} checks failed ({names}{more}; log: {run.log_path})"


def summary(run: testrun.SuiteRun) -> str:
    counts = {s: sum(r.status == s for r in run.results) for s in (testrun.PASS, testrun.FAIL, testrun.SKIP)}
    return f"suite {run.suite_name}: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
