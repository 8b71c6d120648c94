"""Recipe options shared by the default render command, `build` and `matrix`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from neurodocker_nd.render.steps import Step

F = TypeVar("F", bound=Callable[..., Any])


# The output format of every command that renders (the default command, build, recipe).
format_option = click.option(
    "--format", "fmt", type=click.Choice(["docker", "singularity"]), default="docker", show_default=True
)


def recipe_options(func: F) -> F:
    """Add --pkg/--os/--base-image/--pkg-manager/--format to a click command."""
    decorators = [
        click.option(
            "--pkg",
            "pkgs",
            multiple=True,
            metavar="NAME[==VERSION][,KEY=VALUE…]",
            help="Software to install; repeat for more, order is kept.",
        ),
        click.option(
            "--os",
            "os_name",
            metavar="OS[:VERSION]",
            help="OS preset: ubuntu[:20.04|22.04|24.04|26.04], debian[:bullseye|bookworm|trixie], rockylinux[:8|9|10].",
        ),
        click.option("--base-image", metavar="IMAGE", help="Any base image (with --pkg-manager)."),
        click.option(
            "--pkg-manager",
            type=click.Choice(["apt", "yum"]),
            help="Package manager of --base-image.",
        ),
        format_option,
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def recipe_dir_options(scope: str = "") -> Callable[[F], F]:
    """Add --arch/--option/--templates (a build.yaml's inputs); `scope` prefixes each help text."""

    def helped(text: str) -> str:
        return f"{scope}: {text[0].lower()}{text[1:]}" if scope else text

    decorators = [
        click.option(
            "--arch",
            type=click.Choice(["x86_64", "aarch64"]),
            default="x86_64",
            show_default=True,
            help=helped("Architecture."),
        ),
        click.option(
            "--option", "options", multiple=True, metavar="KEY=VALUE", help=helped("Set a recipe option (repeat).")
        ),
        click.option(
            "--templates",
            multiple=True,
            type=click.Path(file_okay=False),
            metavar="DIR",
            help=helped("Template directory searched before ndgen's registry (repeat)."),
        ),
    ]

    def add(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return add


def parse_options(values: tuple[str, ...]) -> dict[str, str]:
    """`--option KEY=VALUE` (repeatable) → {KEY: VALUE}."""
    from neurodocker_nd.render.flags import key_values

    return key_values("--option", values)


# ---------------------------------------------------------------- directive flags


class _Words(click.ParamType):
    """The words one occurrence of an eat-all flag collected (a tuple)."""

    name = "words"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        return tuple(value) if isinstance(value, (tuple, list)) else (value,)


class EatAllOption(click.Option):
    """`--copy a b /dst`: the flag takes every following word up to the next option.

    neurodocker's command-line behaviour (argparse's nargs="*"): the option's
    parser entry is wrapped so that, after its first value, it also consumes
    the remaining words that do not start with an option prefix.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("type", _Words())
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)

    # click's parser and parsing state are private classes (click.parser._OptionParser): typed Any.
    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        result = super().add_to_parser(parser, ctx)
        for name in self.opts:
            entry = parser._long_opt.get(name) or parser._short_opt.get(name)
            if entry is None:
                continue
            original = entry.process
            prefixes = entry.prefixes

            def process(value: Any, state: Any, original: Any = original, prefixes: Any = prefixes) -> None:
                words = [value]
                while state.rargs and not any(state.rargs[0].startswith(p) for p in prefixes):
                    words.append(state.rargs.pop(0))
                original(tuple(words), state)

            entry.process = process
        return result


class OrderedGroup(click.Group):
    """A group that records the order its own options were given in.

    `ctx.meta["ndgen.order"]` lists one parameter name per occurrence, so
    `--pkg a --run x --pkg b` keeps its interleaving (click itself groups
    values by option).  Parsed once more with the same parser: cheap, and no
    click internals beyond the parser's documented return value.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        parser = self.make_parser(ctx)
        _, _, order = parser.parse_args(args=list(args))
        ctx.meta["ndgen.order"] = [p.name for p in order if p.name]
        return super().parse_args(ctx, args)


def directive_options(func: F) -> F:
    """neurodocker's directive flags; each occurrence becomes one step, in order."""
    decorators = [
        click.option("--run", multiple=True, metavar="CMD", help="Run a command (/bin/sh)."),
        click.option("--run-bash", multiple=True, metavar="CMD", help="Run a command in bash."),
        click.option("--env", cls=EatAllOption, metavar="K=V…", help="Set environment variables."),
        click.option("--copy", cls=EatAllOption, metavar="SRC… DST", help="Copy files into the image."),
        click.option("--add", cls=EatAllOption, metavar="SRC DST", help="Extract a local tar archive (Docker's ADD)."),
        click.option("--install", cls=EatAllOption, metavar="PKG…", help="Install OS packages (opts=… sets options)."),
        click.option("--workdir", multiple=True, metavar="DIR", help="Set the working directory."),
        click.option("--user", multiple=True, metavar="USER", help="Switch user (created if missing)."),
        click.option("--entrypoint", cls=EatAllOption, metavar="ARG…", help="Set the entrypoint."),
        click.option("--label", cls=EatAllOption, metavar="K=V…", help="Set labels."),
        click.option("--arg", multiple=True, metavar="K[=V]", help="A build argument."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def ordered_items(
    ctx: click.Context, pkgs: tuple[str, ...], directives: dict[str, tuple[Any, ...]]
) -> list[str | Step]:
    """`--pkg` strings and directive steps interleaved in command-line order."""
    from neurodocker_nd.render.flags import NAMES, to_step

    seen: dict[str, int] = {}
    items: list[str | Step] = []
    for name in ctx.meta.get("ndgen.order", ()):
        if name != "pkgs" and name not in NAMES:
            continue
        i = seen.get(name, 0)
        seen[name] = i + 1
        items.append(pkgs[i] if name == "pkgs" else to_step(name, directives[name][i]))
    return items
