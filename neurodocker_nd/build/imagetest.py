"""Test an image: a fulltest.yaml suite (or none) and the deploy check, run and judged.

Shared by `ndgen test IMAGE` and `ndgen build RECIPE_DIR`.  Nothing here prints:
the caller reports the run (`on_run`, called as soon as the results exist, before
the JUnit file is written) and says where the JUnit file and a kept work directory are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs

from neurodocker_nd.build import suite, testrun
from neurodocker_nd.core import scratchdir
from neurodocker_nd.errors import ChecksFailed


@attrs.frozen
class ImageTest:
    """A finished test run and what it left behind."""

    run: testrun.SuiteRun
    junit_path: Path | None  # written
    kept_work: Path | None  # ndgen's fresh work directory, kept because a test failed


def run_image_tests(
    image: str,
    suite_source: suite.Suite | Path | None,
    on_run: Callable[[testrun.SuiteRun], None],
    *,
    work_dir: Path | None = None,
    data_cache: Path | None = None,
    tags: tuple[str, ...] = (),
    junit_path: Path | None = None,
    deploy: bool = True,
    log_path: Path | None = None,
) -> ImageTest:
    """Load, plan, run, report (`on_run`) and write the JUnit file.

    `suite_source`: a suite path the user named, a Suite already loaded (a
    recipe directory's, read by its contained reader), or None (deploy check only).
    """
    if isinstance(suite_source, suite.Suite) or suite_source is None:
        loaded = suite_source
    else:
        loaded = suite.load_suite(suite_source)  # bad suites fail before any engine work
    scratch: Path | None = None
    plan: suite.SuitePlan | None = None
    if loaded is not None:
        if work_dir is None:
            scratch = work_dir = scratchdir.make("ndgen-test-", "/var/tmp")  # private: /var/tmp/ndgen-UID (0700)
        plan = suite.plan_suite(loaded, work_dir.absolute(), tags=tags)
    try:
        run = testrun.run_suite(image, plan, data_cache=data_cache, deploy=deploy, log_path=log_path)
    except BaseException:
        if scratch is not None:
            scratchdir.remove(scratch)
        raise
    on_run(run)
    if junit_path:
        testrun.write_junit(run, junit_path)
    kept = None
    if scratch is not None and run.passed:
        scratchdir.remove(scratch)
    elif scratch is not None:
        kept = scratch  # the failing test's files, for the user to look at
    return ImageTest(run, junit_path, kept)


def check_passed(run: testrun.SuiteRun) -> None:
    """Raise ChecksFailed (exit 1) naming the first five failures when any check failed."""
    if run.failures:
        names = ", ".join(f"{r.name} ({r.message[:80]})" for r in run.failures[:5])
        more = f" and {len(run.failures) - 5} more" if len(run.failures) > 5 else ""
        failed = f"{len(run.failures)} of {len(run.results)} checks failed in {run.image}"
        raise ChecksFailed(f"{failed}: {names}{more}; log: {run.log_path}")
