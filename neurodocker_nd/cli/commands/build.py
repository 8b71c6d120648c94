"""`ndgen build`: render, build on the Docker engine, test each package in the image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from neurodocker_nd.cli import output
from neurodocker_nd.cli.options import apt_proxy_option, build_network_options, build_recipe_options, recipe_dir_options
from neurodocker_nd.errors import ChecksFailed, NdgenError

if TYPE_CHECKING:
    from neurodocker_nd.build.docker_build import AptProxy
    from neurodocker_nd.core.arch import Arch
    from neurodocker_nd.render.renderer import Format


@click.command("build")
@click.argument("recipe_dir", required=False, type=click.Path(path_type=Path))
@build_recipe_options
@click.option(
    "-t",
    "--tag",
    metavar="NAME[:TAG]",
    help="Tag of the image to build (RECIPE_DIR: default NAME:VERSION, NAME_arm64:VERSION for aarch64, "
    "as neurocontainers names them).",
)
@click.option(
    "-o",
    "--output",
    "sif_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --format sif: the SIF file (default: NAME_TAG.sif here, as `apptainer pull` names it).",
)
@click.option("--no-test", is_flag=True, help="Build only; do not run the packages' test commands.")
@click.option("--no-cache", is_flag=True, help="Rebuild even when an identical build exists.")
@build_network_options
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
@recipe_dir_options("RECIPE_DIR")
def build_cmd(
    recipe_dir: Path | None,
    pkgs: tuple[str, ...],
    os_name: str | None,
    base_image: str | None,
    pkg_manager: str | None,
    fmt: str,
    tag: str | None,
    sif_path: Path | None,
    no_test: bool,
    no_cache: bool,
    network: str,
    apt_proxy: str | None,
    test_timeout: float,
    log_path: Path | None,
    arch: Arch,
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
    equivalent `apptainer build` command. --format sif builds the Dockerfile
    and, once the tests pass, writes the image as a SIF file (`ndgen sif`).
    """
    if sif_path is not None and fmt != "sif":
        raise NdgenError("-o/--output names the SIF file: it needs --format sif")
    recipe_fmt: Format = "singularity" if fmt == "singularity" else "docker"
    proxy = apt_proxy_option(apt_proxy, network)
    if recipe_dir is not None:
        if pkgs or any(v is not None for v in (os_name, base_image, pkg_manager)):  # `--os ""` too
            raise NdgenError("give a RECIPE_DIR or --pkg/--os/--base-image, not both")
        built_tag = _build_recipe_dir(
            recipe_dir, recipe_fmt, tag, arch, options, templates, not no_test, no_cache, log_path, network, proxy
        )
        _deliver_sif(fmt, built_tag, sif_path)
        return
    if not pkgs:
        raise NdgenError("ndgen build needs a RECIPE_DIR or at least one --pkg")
    if tag is None:
        raise NdgenError("ndgen build --pkg needs -t NAME[:TAG], the tag of the image to build")
    from neurodocker_nd.build.docker_build import build_recipe, check_tag
    from neurodocker_nd.registry.entries import Registry
    from neurodocker_nd.render.renderer import render_recipe

    check_tag(tag)
    registry = Registry()
    recipe = render_recipe(pkgs, os_name, base_image, pkg_manager, recipe_fmt, registry)
    output.package_notes(recipe.packages, registry, alerts=False)
    outcome = build_recipe(
        recipe,
        tag,
        run_tests=not no_test,
        no_cache=no_cache,
        log_path=log_path,
        test_timeout=test_timeout,
        network=network,
        apt_proxy=proxy,
        arch=arch,
    )
    output.build_report(outcome)
    if outcome.failures:
        names = ", ".join(f"{t.name} ({t.reason})" for t in outcome.failures)
        # exit 1 like `ndgen test` and a recipe build's suite: the image was built and tested
        raise ChecksFailed(
            f"{len(outcome.failures)} of {len(outcome.tests)} tests failed in {tag}: {names}; log: {outcome.log_path}"
        )
    _deliver_sif(fmt, tag, sif_path)


def _deliver_sif(fmt: str, tag: str, sif_path: Path | None) -> None:
    """--format sif: the built (and tested) image as a SIF file, named as `apptainer pull` would."""
    if fmt != "sif":
        return
    from neurodocker_nd.deliver.sif import write_sif

    if sif_path is None:
        name, _, version = tag.rpartition("/")[2].partition(":")
        sif_path = Path(f"{name}_{version or 'latest'}.sif")
    click.echo(write_sif(tag, sif_path).summary())


def _build_recipe_dir(
    recipe_dir: Path,
    fmt: Format,
    tag: str | None,
    arch: Arch,
    options: tuple[str, ...],
    templates: tuple[str, ...],
    test: bool,
    no_cache: bool,
    log_path: Path | None,
    network: str,
    proxy: AptProxy | None,
) -> str:
    """Build and test RECIPE_DIR; the tag of the image it built."""
    from neurodocker_nd.build.imagetest import check_passed, run_image_tests
    from neurodocker_nd.build.recipe_dir import build_recipe_dir

    built = build_recipe_dir(
        recipe_dir,
        fmt,
        tag,
        arch=arch,
        options=options,
        templates=templates,
        test=test,
        no_cache=no_cache,
        log_path=log_path,
        network=network,
        apt_proxy=proxy,
    )
    output.build_report(built.outcome)
    if test:
        tested = run_image_tests(built.outcome.tag, built.suite, output.suite_report)
        output.image_test_files(tested)
        check_passed(tested.run)
    return built.outcome.tag
