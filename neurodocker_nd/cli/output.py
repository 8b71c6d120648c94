"""What the commands print: the recipe text, `ndgen: note:` lines and the result tables.

stdout carries results (a recipe, a report); stderr carries notes, so
`ndgen … > Dockerfile` keeps only the recipe.  rich is imported only by the
functions that draw a table.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from neurodocker_nd.core import outfile

if TYPE_CHECKING:
    from neurodocker_nd.build.docker_build import BuildOutcome
    from neurodocker_nd.build.imagetest import ImageTest
    from neurodocker_nd.build.testrun import SuiteRun
    from neurodocker_nd.registry.entries import Registry
    from neurodocker_nd.render.steps import Package


def write_or_print(text: str, output: str | None) -> None:
    """The recipe to `output` (whole or nothing), or to stdout when it is None or `-`."""
    if output and output != "-":
        outfile.write_text(output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def note(message: str) -> None:
    """One `ndgen: note:` line on stderr: advice that fails nothing."""
    click.echo(f"ndgen: note: {message}", err=True)


def package_notes(packages: Iterable[Package], registry: Registry, *, alerts: bool = True) -> None:
    """The templates' alerts (FSL's licence, …), the known-dead downloads of rendered packages and
    what their instructions rely on that is gone (neurodebian's apt-key, Dropbox, SKS keyserver)."""
    from neurodocker_nd.maintain.gone import dead_download_notes, gone_instruction_notes

    packages = tuple(packages)
    # neurodocker asks to confirm a template's alert; a renderer in a
    # pipeline should not prompt, so it only tells.
    for pkg in packages if alerts else ():
        if pkg.alert:
            note(f"{pkg.name}: {' '.join(pkg.alert.split())}")
    for message in dead_download_notes(packages, registry) + gone_instruction_notes(packages, registry):
        note(message)


def build_report(outcome: BuildOutcome) -> None:
    """The image built (or reused), its per-package test table, and where the log and recipe are."""
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
    if outcome.network == "host":  # an opt-in with a cost: said in the report as in the log
        from neurodocker_nd.build.docker_build import HOST_NETWORK_NOTE

        click.echo(f"note: {HOST_NETWORK_NOTE}")
    click.echo(f"log: {outcome.log_path}")
    click.echo(f"recipe: {outcome.recipe_path}")
    if outcome.apptainer_command:
        click.echo("built by ndgen's Apptainer stand-in on Docker; with Apptainer, build it with:")
        click.echo(f"  {outcome.apptainer_command}")


def suite_report(run: SuiteRun) -> None:
    """One row per suite test, setup/cleanup step and deploy check, then the counts and the log."""
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


def image_test_files(tested: ImageTest) -> None:
    """Where the JUnit file went, and the work directory kept for a failed test."""
    if tested.junit_path:
        click.echo(f"junit: {tested.junit_path}")
    if tested.kept_work is not None:
        click.echo(f"work: {tested.kept_work} (kept: a test failed)")


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[str]]) -> None:
    """A result table as plain aligned lines, never folded: scripts grep its rows whole, and a
    terminal's width (80 columns off one) must not cut a reason or a path in half."""
    header = tuple(columns)
    body = [tuple(" ".join(str(cell).split()) for cell in row) for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    click.echo(title)
    for row in [header, *body]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
