"""Options of the `ndgen` group given before a subcommand: never silently ignored.

`ndgen --format singularity recipe DIR` parses `--format` as the group's
option, which only the default render uses; the subcommand would run without
it. Every such option is an error that names the right place: when the
subcommand has them all, the command line with them after the subcommand;
otherwise the first one the subcommand lacks.
"""

from __future__ import annotations

import shlex

import click

from neurodocker_nd.errors import NdgenError, clip

_SHOWN = 60  # how much of each word the suggested command line repeats


def refuse_group_options(ctx: click.Context) -> None:
    """NdgenError when a group option was given on the command line (there is a subcommand)."""
    name = ctx.invoked_subcommand
    group = ctx.command
    assert name is not None and isinstance(group, click.Group)
    order = list(ctx.meta.get("ndgen.order", ()))
    given = sorted(
        (p for p in group.params if isinstance(p, click.Option) and _given(ctx, p)),
        key=lambda p: order.index(p.name) if p.name in order else len(order),
    )
    if not given:
        return
    sub = group.get_command(ctx, name)
    theirs = {opt for p in (sub.params if sub is not None else ()) for opt in p.opts}
    lacking = [p for p in given if not set(p.opts) & theirs]
    if lacking:
        flag = _spelling(ctx, lacking[0])
        raise NdgenError(
            f"ndgen {name} has no {flag} option; before a subcommand it would be ignored "
            f"(`ndgen {flag} …` without a subcommand renders a recipe)"
        )
    flags = ", ".join(dict.fromkeys(_spelling(ctx, p) for p in given))
    verb = "belongs" if len(given) == 1 else "belong"
    raise NdgenError(f"{flags} {verb} after the subcommand: {_moved(ctx, name)}")


def _given(ctx: click.Context, param: click.Parameter) -> bool:
    source = ctx.get_parameter_source(param.name or "")
    return source is not None and source != click.core.ParameterSource.DEFAULT


def _spelling(ctx: click.Context, param: click.Parameter) -> str:
    """The option as the user wrote it (`-o` or `--output`), else its longest name."""
    for arg in ctx.meta.get("ndgen.args", ()):
        if arg == "--":
            break
        word = arg.split("=", 1)[0]
        if word in param.opts:
            return word
    return max(param.opts, key=len)


def _moved(ctx: click.Context, name: str) -> str:
    """The command line with the group's words after the subcommand's (the group takes no arguments,
    so every word before the subcommand's name is one of its options or their values)."""
    args: list[str] = ctx.meta.get("ndgen.args", [])
    rest: list[str] = ctx.meta.get("ndgen.subargs", [])
    before = args[: len(args) - len(rest) - 1]
    # Before a `--` of the subcommand's: after it, options are read as arguments.
    cut = rest.index("--") if "--" in rest else len(rest)
    words = (*rest[:cut], *before, *rest[cut:])
    return " ".join(["ndgen", name, *(shlex.quote(clip(w, _SHOWN)) for w in words)])
