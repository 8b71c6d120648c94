"""`ndgen build`: render, build on the Docker engine, test each package in the image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from neurodocker_nd.cli.options import recipe_options
from neurodocker_nd.errors import ChecksFailed, NdgenError

if TYPE_CHECKING:
    from neurodocker_nd.build.docker_build import AptProxy


@click.command("build")
@click.argument("recipe_dir", required=False, type=click.Path(path_type=Path))
@recipe_options
@click.option("-t", "--tag", required=True, metavar="NAME[:TAG]", help="Tag of the image to build.")
@click.option("--no-test", is_flag=True, help="Build only; do not run the packages' test commands.")
@click.option("--no-cache", is_flag=True, help="Rebuild even when an identical build exists.")
@click.option(
    "--network",
    type=click.Choice(["default", "none", "host"]),
    default="default",
    show_default=True,
    help="Network of the RUN steps: the engine's default (a bridge, cut off from the host's loopback; "
    "no network at all on an engine started with --bridge=none), none, or host — host lets recipe code "
    "reach every service on this host's loopback (127.0.0.1) and link-local addresses.",
)
@click.option(
    "--apt-proxy",
    metavar="http://HOST:PORT",
    envvar="NDGEN_APT_PROXY",
    show_envvar=True,
    help="An apt caching proxy (apt-cacher-ng) for the RUN steps' plain-http downloads; default: "
    "$NDGEN_APT_PROXY when set ('' for none). Passed as Docker's predefined http_proxy build args: "
    "the recipe is unchanged and the image keeps no proxy setting. RUN steps must reach it: 127.0.0.1 "
    "only with --network host; checked before the build (no answer: exit 2).",
)
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
@click.option(
    "--arch",
    type=click.Choice(["x86_64", "aarch64"]),
    default="x86_64",
    show_default=True,
    help="RECIPE_DIR: architecture.",
)
@click.option(
    "--option", "options", multiple=True, metavar="KEY=VALUE", help="RECIPE_DIR: set a recipe option (repeat)."
)
@click.option(
    "--templates",
    multiple=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="RECIPE_DIR: template directory (repeat).",
)
def build_cmd(
    recipe_dir: Path | None,
    pkgs: tuple[str, ...],
    os_name: str | None,
    base_image: str | None,
    pkg_manager: str | None,
    fmt: str,
    tag: str,
    no_test: bool,
    no_cache: bool,
    network: str,
    apt_proxy: str | None,
    test_timeout: float,
    log_path: Path | None,
    arch: str,
    options: tuple[str, ...],
    templates: tuple[str, ...],
) -> None:
    """Build an image from a recipe directory (build.yaml) or from --pkg/--os, then test it (--network none).

    RECIPE_DIR: a neurocontainers recipe; its fulltest.yaml (when present) and
    the deploy check run in the image afterwards (exit 1 when one fails).
    --pkg: each package's test runs in the image. RUN steps use --network
    (default: the engine's; host only when asked for, noted in the log and in
    the report). --format singularity runs the definition file on
    the Docker engine with ndgen's Apptainer stand-in and prints the
    equivalent `apptainer build` command.
    """
    proxy = _apt_proxy(apt_proxy, network)
    if recipe_dir is not None:
        if pkgs or os_name or base_image or pkg_manager:
            raise NdgenError("give a RECIPE_DIR or --pkg/--os/--base-image, not both")
        _build_recipe_dir(recipe_dir, fmt, tag, arch, options, templates, no_test, no_cache, log_path, network, proxy)
        return
    if not pkgs:
        raise NdgenError("ndgen build needs a RECIPE_DIR or at least one --pkg")
    from neurodocker_nd.build.docker_build import build_recipe, check_tag
    from neurodocker_nd.render.renderer import render_recipe

    check_tag(tag)
    recipe = render_recipe(pkgs, os_name=os_name, base_image=base_image, pkg_manager=pkg_manager, fmt=fmt)
    from neurodocker_nd.maintain.lint import dead_download_notes

    for note in dead_download_notes(recipe.packages):
        click.echo(note, err=True)
    outcome = build_recipe(
        recipe,
        tag,
        run_tests=not no_test,
        no_cache=no_cache,
        log_path=log_path,
        test_timeout=test_timeout,
        network=network,
        apt_proxy=proxy,
    )
    _report(outcome)
    if outcome.failures:
        names = ", ".join(f"{t.name} ({t.reason})" for t in outcome.failures)
        # exit 1 like `ndgen test` and a recipe build's suite: the image was built and tested
        raise ChecksFailed(
            f"{len(outcome.failures)} of {len(outcome.tests)} tests failed in {tag}: {names}; log: {outcome.log_path}"
        )


def _build_recipe_dir(
    recipe_dir: Path,
    fmt: str,
    tag: str,
    arch: str,
    options: tuple[str, ...],
    templates: tuple[str, ...],
    no_test: bool,
    no_cache: bool,
    log_path: Path | None,
    network: str,
    proxy: AptProxy | None,
) -> None:
    """Render the recipe into a staged build context, build it, then run its suite and the deploy check."""
    from neurodocker_nd.build.docker_build import build_context_dir, check_tag
    from neurodocker_nd.build.suite import load_recipe_suite
    from neurodocker_nd.cli.commands.recipe import parse_options
    from neurodocker_nd.cli.commands.test import fail_if_failed, test_image
    from neurodocker_nd.core import scratchdir
    from neurodocker_nd.render.context import write_context
    from neurodocker_nd.render.recipe import find_recipe, load_recipe
    from neurodocker_nd.render.renderer import render

    check_tag(tag)
    # Read once, through the recipe tree's contained reader (no link out of it,
    # regular files only, capped), and tested as read: a bad suite fails before
    # any build time is spent, and the file is not read again after the build.
    suite = None if no_test else load_recipe_suite(find_recipe(recipe_dir).parent)
    plan = load_recipe(recipe_dir, arch=arch, options=parse_options(options), templates=templates)
    text = render(plan, fmt, cache_stage=True)  # the Dockerfile's first stage holds the staged files
    with scratchdir.directory("ndgen-build-", "/var/tmp") as scratch:
        context = write_context(plan, scratch / "context", fmt, text)
        outcome = build_context_dir(
            context,
            fmt,
            tag,
            plan.target.base_image,
            no_cache=no_cache,
            log_path=log_path,
            network=network,
            apt_proxy=proxy,
        )
    _report(outcome)
    if not no_test:
        fail_if_failed(test_image(tag, suite))


def _apt_proxy(value: str | None, network: str) -> AptProxy | None:
    """--apt-proxy (or its $NDGEN_APT_PROXY default), parsed and checked before any work; None: no proxy.

    Parsed here, not in a click callback: a bad value is one `ndgen: error:` line, not click's usage
    block.  Checked here too (the build checks again), so a dead proxy fails before rendering.
    """
    if not value:
        return None
    from neurodocker_nd.build.docker_build import APT_PROXY_ENV, apt_proxy_for, check_network, parse_apt_proxy

    source = click.get_current_context().get_parameter_source("apt_proxy")
    origin = APT_PROXY_ENV if source == click.core.ParameterSource.ENVIRONMENT else "--apt-proxy"
    proxy = parse_apt_proxy(value, origin)
    check_network(network)
    apt_proxy_for(proxy, network)
    return proxy


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
    if outcome.network == "host":  # an opt-in with a cost: said in the report as in the log
        from neurodocker_nd.build.docker_build import HOST_NETWORK_NOTE

        click.echo(f"note: {HOST_NETWORK_NOTE}")
    click.echo(f"log: {outcome.log_path}")
    click.echo(f"recipe: {outcome.recipe_path}")
    if outcome.apptainer_command:
        click.echo("built by ndgen's Apptainer stand-in on Docker; with Apptainer, build it with:")
        click.echo(f"  {outcome.apptainer_command}")
