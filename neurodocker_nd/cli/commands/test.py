"""`ndgen test IMAGE --suite fulltest.yaml`: neurocontainers' test suites + deploy check on an image."""

from __future__ import annotations

from pathlib import Path

import click


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
    from neurodocker_nd.build.imagetest import check_passed, run_image_tests
    from neurodocker_nd.cli import output

    tested = run_image_tests(
        image,
        suite_path,
        output.suite_report,
        work_dir=work_dir,
        data_cache=data_cache,
        tags=tags,
        junit_path=junit_path,
        deploy=not no_deploy_check,
        log_path=log_path,
    )
    output.image_test_files(tested)
    check_passed(tested.run)
