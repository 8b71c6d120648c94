"""`ndgen build`: render, build on the Docker engine, test each package in the image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from neurodocker_nd.commands.options import recipe_options
from neurodocker_nd.errors import NdgenError


@click.command("build")
@recipe_options
@click.option("-t", "--tag", required=True, metavar="NAME[:TAG]", help="Tag of the image to build.")
@click.option("--no-test", is_flag=True, help="Build only; do not run the packages' test commands.")
@click.option("--no-cache", is_flag=True, help="Rebuild even when an identical build exists.")
@click.option(
    "--test-timeout",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    metavar="SECONDS",
    help="A package test still running after this long fails.",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Build log file (default: ~/.cache/ndgen/logs/build-TAG-TIME.log); the recipe is saved next to it.",
)
def build_cmd(
    pkgs: tuple[str, ...],
    os_name: str | None,
    base_image: str | None,
    pkg_manager: str | None,
    fmt: str,
    tag: str,
    no_test: bool,
    no_cache: bool,
    test_timeout: float,
    log_path: Path | None,
) -> None:
    """Build an image from --pkg/--os and run each package's test in it (--network none).

    Docker builds use the host network (never a bridge). --format singularity
    runs the definition file on the Docker engine with ndgen's Apptainer
    stand-in and prints the equivalent `apptainer build` command.
    """
    if not pkgs:
        raise NdgenError("ndgen build needs at least one --pkg")
    from neurodocker_nd.build import build_recipe, check_tag
    from neurodocker_nd.render import render_recipe

    check_tag(tag)
    recipe = render_recipe(pkgs, os_name=os_name, base_image=base_image, pkg_manager=pkg_manager, fmt=fmt)
    outcome = build_recipe(
        recipe, tag, run_tests=not no_test, no_cache=no_cache, log_path=log_path, test_timeout=test_timeout
    )
    _report(outcome)
    if outcome.failures:
        names = ", ".join(f"{t.name} ({t.reason})" for t in outcome.failures)
        raise NdgenError(f"{len(outcome.failures)} of {len(outcome.tests)} tests failed in {tag}: {names}; log: {outcome.log_path}")


def _report(outcome: Any) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    verb = "reused" if outcome.reused else f"built in {outcome.build_seconds:.0f} s"
    click.echo(f"image {outcome.tag} ({outcome.image_id[:19]}) {verb} [{outcome.fmt}]")
    if outcome.tests:
        table = Table(title=f"tests in {outcome.tag} (--network none)")
        # Names and verdicts never wrap (scripts grep them); the test command folds instead.
        for column in ("package", "version", "method", "test", "result", "time"):
            table.add_column(column, no_wrap=column != "test", overflow="fold" if column == "test" else "ellipsis")
        versions = {p.name: (p.version or "-", p.method) for p in outcome.packages}
        for test in outcome.tests:
            version, method = versions.get(test.name, ("-", "-"))
            verdict = "timeout" if test.exit_code is None else f"exit {test.exit_code}"
            result = Text("PASS", "green") if test.passed else Text(f"FAIL ({verdict})", "red")
            cells = (test.name, version, method, test.command)
            table.add_row(*(Text(c) for c in cells), result, f"{test.seconds:.1f} s")
        Console(highlight=False).print(table)
    # Plain lines (never wrapped): paths must stay copy-pasteable.
    click.echo(f"log: {outcome.log_path}")
    click.echo(f"recipe: {outcome.recipe_path}")
    if outcome.apptainer_command:
        click.echo("built by ndgen's Apptainer stand-in on Docker; with Apptainer, build it with:")
        click.echo(f"  {outcome.apptainer_command}")
