"""`ndgen test IMAGE --suite fulltest.yaml`: neurocontainers' test suites + deploy check on an image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from neurodocker_nd.build.suite import Suite


@click.command("test")
@click.argument("image")
@click.option(
    "--suite",
    "suite_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A neurocontainers fulltest.yaml; without it only the deploy check runs.",
)
@click.option(
    "--work",
    "work_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Work directory, mounted at the same path in every test (default: a fresh one, removed when all pass).",
)
@click.option(
    "--data",
    "data_cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Data cache holding required_files as DATASET/FILE (default: WORK/.data_cache).",
)
@click.option(
    "--tagged",
    "tags",
    multiple=True,
    metavar="TAG",
    help="Run only tests tagged TAG (and what they depend on); repeat for more.",
)
@click.option(
    "--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a JUnit XML report here."
)
@click.option("--no-deploy-check", is_flag=True, help="Skip the DEPLOY_BINS/DEPLOY_PATH check.")
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Log of every command's output (default: ~/.cache/ndgen/logs/test-IMAGE-TIME.log).",
)
def test_cmd(
    image: str,
    suite_path: Path | None,
    work_dir: Path | None,
    data_cache: Path | None,
    tags: tuple[str, ...],
    junit_path: Path | None,
    no_deploy_check: bool,
    log_path: Path | None,
) -> None:
    """Run a fulltest.yaml suite and the deploy check in IMAGE (each command: --network none).

    Exit 0 when everything passed, 1 when a test failed, 2 for bad input (a
    malformed suite, a missing image or required data).
    """
    run = test_image(
        image,
        suite_path,
        work_dir=work_dir,
        data_cache=data_cache,
        tags=tags,
        junit_path=junit_path,
        deploy=not no_deploy_check,
        log_path=log_path,
    )
    fail_if_failed(run)


def test_image(
    image: str,
    suite_source: Suite | Path | None,
    *,
    work_dir: Path | None = None,
    data_cache: Path | None = None,
    tags: tuple[str, ...] = (),
    junit_path: Path | None = None,
    deploy: bool = True,
    log_path: Path | None = None,
) -> Any:
    """Load, plan, run and report (shared by `ndgen test` and `ndgen build RECIPE_DIR`).

    `suite_source`: a suite path the user named, a Suite already loaded (a
    recipe directory's, read by its contained reader), or None (deploy check only).
    """
    from neurodocker_nd.build import suite, testrun
    from neurodocker_nd.core import scratchdir

    if isinstance(suite_source, suite.Suite) or suite_source is None:
        loaded = suite_source
    else:
        loaded = suite.load_suite(suite_source)  # bad suites fail before any engine work
    scratch = None
    if loaded is not None and work_dir is None:
        scratch = scratchdir.make("ndgen-test-", "/var/tmp")  # private: /var/tmp/ndgen-UID (0700)
    plan = suite.plan_suite(loaded, (work_dir or scratch).absolute(), tags=tags) if loaded else None
    try:
        run = testrun.run_suite(image, plan, data_cache=data_cache, deploy=deploy, log_path=log_path)
    except BaseException:
        if scratch is not None:
            scratchdir.remove(scratch)
        raise
    report(run)
    if junit_path:
        testrun.write_junit(run, junit_path)
        click.echo(f"junit: {junit_path}")
    if scratch is not None:
        if run.passed:
            scratchdir.remove(scratch)
        else:
            click.echo(f"work: {scratch} (kept: a test failed)")
    return run


def fail_if_failed(run: Any) -> None:
    from neurodocker_nd.errors import ChecksFailed

    if run.failures:
        names = ", ".join(f"{r.name} ({r.message[:80]})" for r in run.failures[:5])
        more = f" and {len(run.failures) - 5} more" if len(run.failures) > 5 else ""
        raise ChecksFailed(
            f"{len(run.failures)} of {len(run.results)} checks failed in {run.image}: {names}{more}; log: {run.log_path}"
        )


def report(run: Any) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    colours = {"PASS": "green", "FAIL": "red", "SKIP": "yellow", "WARN": "yellow"}
    table = Table(title=f"{run.suite_name} in {run.image} (--network none)")
    # Names and verdicts never wrap (scripts grep them); the detail folds instead.
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("detail", overflow="fold")
    for result in run.results:
        name = result.name if result.group == "test" else f"{result.group}: {result.name}"
        table.add_row(
            Text(name), Text(result.status, colours[result.status]), f"{result.seconds:.1f} s", Text(result.message)
        )
    Console(highlight=False).print(table)
    counts = {s: sum(r.status == s for r in run.results) for s in ("PASS", "FAIL", "SKIP", "WARN")}
    click.echo(", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "no checks")
    click.echo(f"log: {run.log_path}")
