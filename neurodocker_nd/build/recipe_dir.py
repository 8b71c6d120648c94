"""`ndgen build RECIPE_DIR`: a neurocontainers recipe → staged build context → image.

The suite is read before the build and handed back for the caller to run
(`imagetest.run_image_tests`) once it has reported the build.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs

from neurodocker_nd.build.docker_build import AptProxy, BuildOutcome, build_context_dir, check_tag
from neurodocker_nd.build.suite import Suite, load_recipe_suite
from neurodocker_nd.core import scratchdir
from neurodocker_nd.core.arch import Arch
from neurodocker_nd.render.context import write_context
from neurodocker_nd.render.flags import key_values
from neurodocker_nd.render.recipe import find_recipe, load_recipe
from neurodocker_nd.render.renderer import Format, render


@attrs.frozen
class RecipeDirBuild:
    outcome: BuildOutcome
    suite: Suite | None  # None when the tests are not wanted or the recipe has no fulltest.yaml


def build_recipe_dir(
    recipe_dir: Path,
    fmt: Format,
    tag: str | None,
    *,
    arch: Arch,
    options: Sequence[str],
    templates: Sequence[str],
    test: bool,
    no_cache: bool,
    log_path: Path | None,
    network: str,
    apt_proxy: AptProxy | None,
) -> RecipeDirBuild:
    """Render the recipe into a staged build context and build it.

    `options`: the `--option KEY=VALUE` strings as given (parsed here, after the
    tag and the suite are checked, so the first bad input is the one reported).
    `tag` None: neurocontainers' image name, `NAME:VERSION`, with NAME_arm64 for aarch64.
    `arch` (core.arch's name) selects the render variant and the image's platform.
    """
    if tag is not None:
        check_tag(tag)
    # Read once, through the recipe tree's contained reader (no link out of it,
    # regular files only, capped), and tested as read: a bad suite fails before
    # any build time is spent, and the file is not read again after the build.
    suite = load_recipe_suite(find_recipe(recipe_dir).parent) if test else None
    plan = load_recipe(recipe_dir, arch=arch, options=key_values("--option", options), templates=templates)
    tag = tag or default_tag(plan.name, plan.version)
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
            apt_proxy=apt_proxy,
            arch=arch,
        )
    return RecipeDirBuild(outcome, suite)


def default_tag(name: str | None, version: str | None) -> str:
    """`NAME:VERSION` as neurocontainers tags its builds (the loader already named the
    aarch64 variant NAME_arm64); checked like a tag the user gave."""
    tag = f"{name}:{version}" if version else str(name)
    check_tag(tag)
    return tag
