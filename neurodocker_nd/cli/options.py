"""Recipe options shared by the default render command, `build` and `matrix`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from neurodocker_nd.build.docker_build import AptProxy
    from neurodocker_nd.render.steps import Step

F = TypeVar("F", bound=Callable[..., Any])


# The output format of every command that renders (the default command, build, recipe).
format_option = click.option(
    "--format", "fmt", type=click.Choice(["docker", "singularity"]), default="docker", show_default=True
)


def nonempty_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An empty path is an error: `-o ""` (an unset shell variable) must not mean stdout."""
    if value == "":
        raise click.BadParameter("empty path; give a path, or leave the option out", ctx, param)
    return value


# Where a rendering command writes its recipe (the default command, recipe).
output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    callback=nonempty_path,
    help="Write the recipe here instead of stdout.",
)


# ---- --pkg and --os: completion and help from the registry and the presets themselves.
# Imported when asked, not with the CLI: `ndgen --version` and subcommand
# completion stay free of attrs and YAML, and completion never imports neurodocker.


def complete_pkg_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Registry entry names starting with `incomplete` (case-insensitive, as --pkg is)."""
    from click.shell_completion import CompletionItem

    from neurodocker_nd.errors import NdgenError
    from neurodocker_nd.registry.entries import Registry

    if "," in incomplete or "=" in incomplete:  # past the name: versions and arguments are not completed
        return []
    try:
        names = Registry().names()  # directory listings only: no template is read
    except NdgenError:  # a bad $NDGEN_REGISTRY: nothing to offer, and completion must not print errors
        return []
    return [CompletionItem(name) for name in names if name.lower().startswith(incomplete.lower())]


def complete_os_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """OS presets and their short names starting with `incomplete`."""
    from click.shell_completion import CompletionItem

    from neurodocker_nd.render.target import preset_names

    return [CompletionItem(name) for name in preset_names() if name.startswith(incomplete.lower())]


def os_help() -> str:
    """Every value --os accepts: each preset, its short names in brackets, one line per OS or more."""
    from neurodocker_nd.render.target import ALIASES, PRESETS

    short: dict[str, list[str]] = {}
    for alias, name in ALIASES.items():
        short.setdefault(name, []).append(alias)
    families: dict[str, list[str]] = {}
    for name in PRESETS:
        item = name + (f" [{', '.join(short[name])}]" if name in short else "")
        families.setdefault(name.split(":")[0], []).append(item)
    lines = ["OS preset (short names in brackets):"]
    for items in families.values():
        line = ""
        for item in items:  # packed into lines that fit beside the option names
            if line and len(line) + len(item) + 3 > _HELP_WIDTH:
                lines.append(line + ",")
                line = ""
            line = f"{line}, {item}" if line else item
        lines.append(line + ",")
    lines[-1] = lines[-1][:-1] + "."
    # \b: click must not rewrap these lines (it would split debian:bookworm-slim at its hyphen).
    return "\b\n" + "\n".join(lines)


# Characters of help beside the option names in click's 78-column help: the
# help column starts at 34 when an option's names are longer than 30 characters.
_HELP_WIDTH = 44


class _OsOption(click.Option):
    """--os: its help is made when help is shown, from the presets (a new preset is never missing)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = os_help()
        return super().get_help_record(ctx)


# `ndgen build` also delivers a SIF file: the Docker recipe is built, then converted (ndgen sif).
build_format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["docker", "singularity", "sif"]),
    default="docker",
    show_default=True,
    help="sif: build the Dockerfile, test the image, then write it as a SIF file (-o).",
)


def recipe_options(func: F) -> F:
    """Add --pkg/--os/--base-image/--pkg-manager/--format to a click command."""
    return _recipe_options(func, format_option)


def build_recipe_options(func: F) -> F:
    """recipe_options with `ndgen build`'s --format (docker|singularity|sif)."""
    return _recipe_options(func, build_format_option)


def _recipe_options(func: F, fmt_option: Any) -> F:
    decorators = [
        click.option(
            "--pkg",
            "pkgs",
            multiple=True,
            metavar="NAME[==VERSION][,KEY=VALUE…]",
            help="Software to install; repeat for more, order is kept.",
            shell_complete=complete_pkg_names,
        ),
        click.option(
            "--os",
            "os_name",
            cls=_OsOption,
            metavar="OS[:VERSION]",
            help="OS preset.",  # os_help() when help is shown
            shell_complete=complete_os_names,
        ),
        click.option("--base-image", metavar="IMAGE", help="Any base image (with --pkg-manager)."),
        click.option(
            "--pkg-manager",
            type=click.Choice(["apt", "yum"]),
            help="Package manager of --base-image.",
        ),
        fmt_option,
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _normalise_arch(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Either spelling (aarch64/arm64, x86_64/amd64) → core.arch's; anything else: one error line."""
    from neurodocker_nd.core.arch import normalise

    return normalise(value)


def arch_option(help_text: str) -> Callable[[F], F]:
    """`--arch`, normalised in core.arch (`mips`: one `ndgen: error:` line naming the supported ones)."""
    return click.option(
        "--arch",
        default="x86_64",
        show_default=True,
        metavar="ARCH",
        callback=_normalise_arch,
        shell_complete=_complete_arch,
        help=help_text,
    )


def _complete_arch(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """What a Choice would complete: every spelling `--arch` takes."""
    from neurodocker_nd.core.arch import SPELLINGS

    return [name for name in SPELLINGS if name.startswith(incomplete)]


def recipe_dir_options(scope: str = "") -> Callable[[F], F]:
    """Add --arch/--option/--templates (a build.yaml's inputs); `scope` prefixes each help text."""

    def helped(text: str) -> str:
        return f"{scope}: {text[0].lower()}{text[1:]}" if scope else text

    decorators = [
        # Not scoped: `ndgen build --pkg` takes it too.
        arch_option(
            "Architecture: x86_64 (amd64) or aarch64 (arm64): a recipe's variant, and the image's platform "
            "when built (under qemu on an x86_64 host, docs/arch.md)."
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
        ctx.meta["ndgen.args"] = list(args)  # how each option was spelled (cli.strict's messages)
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


def build_network_options(func: F) -> F:
    """--network and --apt-proxy: what RUN steps of a build reach (`build`, `fleet run`)."""
    decorators = [
        click.option(
            "--network",
            type=click.Choice(["default", "none", "host"]),
            default="default",
            show_default=True,
            help="Network of the RUN steps: the engine's default (a bridge, cut off from the host's loopback; "
            "no network at all on an engine started with --bridge=none), none, or host — host lets recipe code "
            "reach every service on this host's loopback (127.0.0.1) and link-local addresses.",
        ),
        click.option(
            "--apt-proxy",
            metavar="http://HOST:PORT",
            envvar="NDGEN_APT_PROXY",
            show_envvar=True,
            help="An apt caching proxy (apt-cacher-ng) for the RUN steps' plain-http downloads; default: "
            "$NDGEN_APT_PROXY when set ('' for none). Passed as Docker's predefined http_proxy build args: "
            "the recipe is unchanged and the image keeps no proxy setting. RUN steps must reach it: 127.0.0.1 "
            "only with --network host; checked before the build (no answer: exit 2).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def apt_proxy_option(value: str | None, network: str) -> AptProxy | None:
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
