"""`ndgen generate docker|singularity`: neurodocker 2.1.2's `generate` command line, unchanged.

Parses neurodocker's options (`-p/--pkg-manager`, `-b/--base-image`, one
flag per template with space-separated KEY=VALUE words, the directive flags in
command-line order, `--yes`, `--json`) and hands them to
render.neurodocker_cli, which makes ndgen's plan.  The template flags are
the registry's names (a directory listing: `--help` stays fast).
"""

from __future__ import annotations

import os
from typing import Any

import click

from neurodocker_nd.cli.options import EatAllOption
from neurodocker_nd.errors import NdgenError

FORMATS = ("docker", "singularity")


class TemplateOption(EatAllOption):
    """`--NAME KEY=VALUE…`: one registry entry, as neurodocker's template flags."""

    def __init__(self, template_name: str) -> None:
        super().__init__(
            [f"--{template_name.lower()}", f"tpl_{template_name.replace('-', '_')}"],
            metavar="KEY=VALUE…",
            help=f"Add {template_name} (version=…, method=…, arguments: `ndgen show {template_name}`).",
        )
        self.template_name = template_name


class OrderedCommand(click.Command):
    """Records one parameter per occurrence, in command-line order (`ctx.meta`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        parser = self.make_parser(ctx)
        _, _, order = parser.parse_args(args=list(args))
        ctx.meta["ndgen.generate.order"] = list(order)
        return super().parse_args(ctx, args)


def _common_params() -> list[click.Parameter]:
    """neurodocker 2.1.2's options of `generate docker|singularity`, with its names and forms."""
    return [
        click.Option(
            ["-p", "--pkg-manager"],
            type=click.Choice(["apt", "yum"], case_sensitive=False),
            help="System package manager.  [required]",
        ),
        click.Option(["-b", "--base-image", "base_images"], multiple=True, help="Base image.  [required]"),
        click.Option(["--arg"], multiple=True, metavar="KEY=VALUE", help="Build-time variable."),
        EatAllOption(["--copy"], metavar="SRC… DST", help="Copy files into the container."),
        EatAllOption(["--add"], metavar="SRC DST", help="Extract a tar archive as a layer (Docker only)."),
        EatAllOption(["--env"], metavar="KEY=VALUE…", help="Set persistent environment variables."),
        EatAllOption(["--entrypoint"], metavar="ARG…", help="Set the entrypoint."),
        EatAllOption(["--install"], metavar="PKG… [opts=…]", help="Install packages with the package manager."),
        EatAllOption(["--label"], metavar="KEY=VALUE…", help="Set labels."),
        click.Option(["--run"], multiple=True, metavar="CMD", help="Run a command in /bin/sh."),
        click.Option(["--run-bash"], multiple=True, metavar="CMD", help="Run a command in bash."),
        click.Option(["--user"], multiple=True, metavar="USER", help="Switch user (created if missing)."),
        click.Option(["--workdir"], multiple=True, metavar="DIR", help="Set the working directory."),
        click.Option(
            ["--yes"],
            is_flag=True,
            help="Accepted as in neurodocker: ndgen never prompts; a template's alert is printed as a note.",
        ),
        click.Option(["--json", "as_json"], is_flag=True, help="Print reproenv's JSON instructions instead."),
    ]


def _template_params(taken: set[str]) -> list[click.Parameter]:
    from neurodocker_nd.registry.entries import Registry

    return [TemplateOption(name) for name in Registry().names() if f"--{name.lower()}" not in taken]


def _format_command(fmt: str) -> click.Command:
    common = _common_params()
    taken = {opt for p in common for opt in getattr(p, "opts", ())}
    what = "a Dockerfile" if fmt == "docker" else "a Singularity recipe"

    @click.pass_context
    def callback(ctx: click.Context, **_: Any) -> None:
        _generate(ctx, fmt)

    return OrderedCommand(
        fmt,
        callback=callback,
        params=[*common, *_template_params(taken)],
        help=f"Generate {what} from neurodocker's command line (templates from ndgen's registry).",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def _generate(ctx: click.Context, fmt: str) -> None:
    from neurodocker_nd.cli.output import package_notes, write_or_print
    from neurodocker_nd.registry.entries import Registry
    from neurodocker_nd.render.neurodocker_cli import (
        TEMPLATE_PATH_ENV,
        Occurrence,
        generate_plan,
        render_generate,
    )

    if os.environ.get(TEMPLATE_PATH_ENV):
        # neurodocker registers that directory's templates; ndgen would render without them.
        raise NdgenError(f"{TEMPLATE_PATH_ENV} is set: ndgen generate uses ndgen's registry only; unset it")
    # Checked here, not by click: its message for a missing choice option spans three lines.
    if not ctx.params["pkg_manager"]:
        raise NdgenError("missing -p/--pkg-manager apt|yum (the base image's package manager)")
    if not ctx.params["base_images"]:
        raise NdgenError("missing -b/--base-image IMAGE")
    seen: dict[str, int] = {}
    occurrences = []
    for param in ctx.meta.get("ndgen.generate.order", ()):
        name = param.name
        if name in ("pkg_manager", "base_images", "yes", "as_json"):
            continue
        i = seen.get(name, 0)
        seen[name] = i + 1
        value = ctx.params[name][i]
        if isinstance(param, TemplateOption):
            occurrences.append(Occurrence(param.template_name, value, template=True))
        else:
            occurrences.append(Occurrence(name, value))
    registry = Registry()
    plan = generate_plan(
        occurrences,
        base_images=ctx.params["base_images"],
        pkg_manager=ctx.params["pkg_manager"],
        registry=registry,
    )
    text = render_generate(plan, fmt, as_json=ctx.params["as_json"], registry=registry)  # type: ignore[arg-type]
    write_or_print(text if text.endswith("\n") else text + "\n", None)
    package_notes(plan.packages, registry)


class GenerateGroup(click.Group):
    """`docker` and `singularity`, their options built only when one is invoked or asked for help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(FORMATS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _format_command(cmd_name) if cmd_name in FORMATS else None

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from neurodocker_nd.registry.entries import Registry

        names = " ".join(f"--{n.lower()}" for n in Registry().names())
        with formatter.section("Template flags (ndgen's registry; KEY=VALUE… each)"):
            formatter.write_text(names)
        super().format_epilog(ctx, formatter)


def _refuse_template_path(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    if value:
        raise NdgenError(
            f"--template-path {value[0]!r}: ndgen generate takes templates from ndgen's registry only "
            "(add one under registry/ or NDGEN_REGISTRY=DIR)"
        )
    return value


@click.group(
    "generate",
    cls=GenerateGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: ndgen generate docker -p apt -b ubuntu:22.04 --ants version=2.4.3",
)
@click.option(
    "--template-path",
    multiple=True,
    expose_value=False,
    callback=_refuse_template_path,
    help="neurodocker's template directories: refused (ndgen uses its registry).",
)
def generate_group() -> None:
    """Generate a container recipe from neurodocker 2.1.2's `generate` command line."""
