"""neurodocker 2.1.2's `generate docker|singularity` command line → ndgen's Plan.

`ndgen generate` takes neurodocker's options as written in papers and CI
scripts (`-p apt -b ubuntu:22.04 --ants version=2.4.3 --run …`) and turns
them into the items ndgen's own syntax makes (`--pkg ants,version=2.4.3`,
directive steps), in command-line order, so the one plan path
(render.pkg.plan_from_items) and the one renderer apply: templates come from
ndgen's registry, with its versions and fixes.  The differences from
neurodocker's output are listed in docs/render.md ("neurodocker's command
lines").
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render import steps as st
from neurodocker_nd.render.flags import NAMES, to_step
from neurodocker_nd.render.pkg import plan_from_items
from neurodocker_nd.render.renderer import Format, RecipeRenderer

# neurodocker's group option: templates from directories (also read from this variable).
TEMPLATE_PATH_ENV = "REPROENV_TEMPLATE_PATH"


@attrs.frozen
class Occurrence:
    """One flag as given: a directive (click name: run, env, …) or a template (registry name)."""

    name: str
    value: str | tuple[str, ...]
    template: bool = False


def template_flag(name: str) -> str:
    """The flag neurodocker makes for a template (`--bids_validator`: its name, lower-cased)."""
    return f"--{name.lower()}"


def template_item(name: str, words: Sequence[str]) -> str:
    """`--ants version=2.4.3 method=binaries` → ndgen's `ants,version=2.4.3,method=binaries`."""
    flag = template_flag(name)
    for w in words:
        key, eq, _value = w.partition("=")
        if not eq or not key:
            raise NdgenError(f"{flag} {_cut(w)!r}: expected KEY=VALUE (as in {flag} version=… method=…)")
        if "," in w:
            # ndgen's --pkg separates arguments with commas, and the Reproduce line is written in it.
            raise NdgenError(
                f"{flag} {_cut(w)!r}: a comma cannot be part of a template argument in ndgen "
                "(give package specs as space-separated words, e.g. numpy>=1 numpy<2)"
            )
    return ",".join([name, *words])


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def generate_plan(
    occurrences: Sequence[Occurrence],
    *,
    base_images: Sequence[str],
    pkg_manager: str,
    registry: Registry,
) -> st.Plan:
    """neurodocker's `generate` options, in command-line order, as ndgen's plan.

    As neurodocker does: FROM, the `_default` preamble, every flag in order,
    the default entrypoint unless `--entrypoint` was given (plus ndgen's labels).
    """
    if len(base_images) != 1:
        raise NdgenError(
            f"-b/--base-image given {len(base_images)} times ({', '.join(map(repr, base_images))}): "
            "ndgen generate renders one FROM; give one base image"
        )
    items: list[str | st.Step] = []
    templates: set[str] = set()
    for occ in occurrences:
        if occ.template and occ.name.lower() in templates:
            # neurodocker renders both; ndgen's plan holds a package once (as --pkg does).
            raise NdgenError(f"{template_flag(occ.name)} given twice: give each template once")
        if occ.template:
            templates.add(occ.name.lower())
            words = (occ.value,) if isinstance(occ.value, str) else occ.value
            items.append(template_item(occ.name, words))
        elif occ.name in NAMES:
            items.append(to_step(occ.name, occ.value))
        else:
            raise AssertionError(occ.name)  # the command offers no other flag
    if not items:
        raise NdgenError("nothing to generate: give a template flag (--ants version=…) or a directive (--run …)")
    return plan_from_items(items, None, base_images[0], pkg_manager.lower(), registry)


def render_generate(plan: st.Plan, fmt: Format, *, as_json: bool, registry: Registry) -> str:
    """The recipe text, or with `as_json` reproenv's instruction list (`neurodocker generate --json`)."""
    renderer = RecipeRenderer(registry)
    return renderer.spec_json(plan, fmt) if as_json else renderer.render_plan(plan, fmt)
