"""The `ndgen` command line: the edge where errors become one stderr line.

`ndgen --pkg … --os …` (no subcommand) renders a recipe. Subcommands are
loaded lazily so that rendering never imports the Docker SDK or the tracer.
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import sys
from typing import Any

import click

from neurodocker_nd import __version__
from neurodocker_nd.cli.options import OrderedGroup, directive_options, ordered_items, output_option, recipe_options
from neurodocker_nd.errors import NdgenError, bounded, clip, internal_error_line

# subcommand name -> "module:attribute"; imported only when invoked (or listed by --help).
_SUBCOMMANDS: dict[str, str] = {
    "list": "neurodocker_nd.cli.commands.browse:list_cmd",
    "show": "neurodocker_nd.cli.commands.browse:show_cmd",
    "validate": "neurodocker_nd.cli.commands.browse:validate_cmd",
    "matrix": "neurodocker_nd.cli.commands.matrix:matrix_cmd",
    "base": "neurodocker_nd.cli.commands.base:base_cmd",
    "build": "neurodocker_nd.cli.commands.build:build_cmd",
    "check-urls": "neurodocker_nd.cli.commands.checkurls:check_urls_cmd",
    "recipe": "neurodocker_nd.cli.commands.recipe:recipe_cmd",
    "test": "neurodocker_nd.cli.commands.test:test_cmd",
    "minify": "neurodocker_nd.cli.commands.minify:minify_cmd",
    "modules": "neurodocker_nd.cli.commands.modules:modules_cmd",
    "sif": "neurodocker_nd.cli.commands.sif:sif_cmd",
    "setup-emulation": "neurodocker_nd.cli.commands.setup_emulation:setup_emulation_cmd",
    "upstream": "neurodocker_nd.cli.commands.upstream:upstream_group",
    "fleet": "neurodocker_nd.cli.commands.fleet:fleet_group",
    "generate": "neurodocker_nd.cli.commands.generate:generate_group",
}


def _stdout_reader_gone() -> bool:
    """True when stdout is a pipe whose reading end is closed.

    Linux's poll() reports POLLERR on such a pipe: this tells `head` closing
    early apart from a BrokenPipeError on some other pipe (a real error).
    """
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):  # no fd (stdout replaced or closed)
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the flush at interpreter exit cannot raise again.

    This is what Python's documentation recommends for SIGPIPE (library/signal,
    "Note on SIGPIPE").
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class LazyGroup(OrderedGroup):
    """A click group whose subcommands are imported on first use (options kept in order)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        # Subcommand modules are thin click wrappers: importing them is cheap, and
        # the heavy step modules (Docker SDK, tracers) are imported inside them.
        module = importlib.import_module(module_name)
        return getattr(module, attr)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            hint = neurodocker_syntax_hint(exc.option_name, args)
            if hint is None:
                raise
            raise NdgenError(hint) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            name, cmd, rest = super().resolve_command(ctx, args)
        except click.UsageError:
            # `--pkg ants version=2.4.3`: the group stops at the first word that is not an
            # option and takes it for a subcommand; say what ndgen's form is instead.
            if args and "=" in args[0] and not args[0].startswith("-"):
                raise NdgenError(stray_key_value_hint(ctx, args)) from None
            raise
        # Only when a subcommand runs (`--help` and the command list work without extras).
        ctx.meta["ndgen.subargs"] = list(rest)  # the subcommand's words (cli.strict's messages)
        if name is not None and not set(rest) & set(ctx.help_option_names):
            from neurodocker_nd.cli.extras import require_for

            require_for(name)
        return name, cmd, rest


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stray_key_value_hint(ctx: click.Context, args: list[str]) -> str:
    """`--pkg ants version=2.4.3` → "write --pkg ants,version=2.4.3" (neurodocker's space-separated form)."""
    words = []
    for w in args:
        if "=" not in w or w.startswith("-"):
            break
        words.append(w)
    pkgs = ctx.params.get("pkgs") or ()
    if pkgs and ctx.meta.get("ndgen.order", [None])[-1] == "pkgs":
        return (
            f"{_cut(' '.join(words))!r} after --pkg {_cut(pkgs[-1])}: write --pkg {_cut(','.join([pkgs[-1], *words]))}"
        )
    return f"{_cut(args[0])!r}: a template argument belongs to its --pkg: write --pkg NAME,{_cut(args[0])}"


# neurodocker's `generate` options that ndgen's own syntax does not have (its template flags aside).
_NEURODOCKER_ONLY = frozenset({"-p", "-b", "--yes", "--json", "--template-path"})


def neurodocker_syntax_hint(option: str, args: list[str]) -> str | None:
    """`ndgen -p apt -b … --ants version=…` (neurodocker's flags without `generate`): the command that takes them.

    Suggested rather than accepted: ndgen's own syntax has its own defaults (`--os`, `--format`,
    `-o`), and one command line mixing both grammars would have two meanings for some flags.
    """
    if option not in _NEURODOCKER_ONLY:
        from neurodocker_nd.registry.entries import Registry

        if not option.startswith("--") or option[2:] not in {n.lower() for n in Registry().names()}:
            return None
    import shlex

    line = _cut(shlex.join(args))
    return f"{option} is neurodocker's syntax; neurodocker's command line runs as: ndgen generate docker {line}"


@click.group(
    cls=LazyGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@recipe_options
@directive_options
@output_option
@click.version_option(__version__, prog_name="ndgen")
@click.pass_context
def cli(ctx: click.Context, **options: Any) -> None:
    """ndgen: render, build, test, minify and upstream neuroimaging containers.

    Without a subcommand, renders a Dockerfile (or Singularity definition)
    for the given --pkg and --os, e.g. `ndgen --pkg ants --os ubuntu`;
    neurodocker's directive flags (--run, --env, --copy, …) mix with --pkg
    in the order given.
    """
    if ctx.invoked_subcommand is not None:
        # Every option of this group renders; before a subcommand it would be ignored.
        from neurodocker_nd.cli.strict import refuse_group_options

        refuse_group_options(ctx)
        return
    # One render: the objects it makes (modules, classes, the plan) live until it ends, so the
    # collector's ~40 passes over them find nothing (~10 ms of a cold render). Forked
    # template workers collect their own (render.template_sandbox._child).
    collecting = gc.isenabled()
    gc.disable()
    try:
        _render(ctx, options)
    finally:
        if collecting:
            # Everything made meanwhile is still young: the first allocation after enable()
            # would scan it all (as long as the passes saved). freeze + unfreeze moves it to
            # the oldest generation unscanned, where it stays collectable.
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _render(ctx: click.Context, options: dict[str, Any]) -> None:
    from neurodocker_nd.render.flags import NAMES

    directives = {name: options.pop(name) for name in NAMES}
    given = [name for name, values in directives.items() if values]
    if not given and all(ctx.get_parameter_source(name) == click.core.ParameterSource.DEFAULT for name in options):
        # Bare `ndgen`: help. `ndgen --os ubuntu` without --pkg is an error below,
        # never help text on stdout (`ndgen --os ubuntu > Dockerfile` would write it).
        click.echo(ctx.get_help())
        ctx.exit(0)
    from neurodocker_nd.cli.commands.render import render_default

    if given:
        options["pkgs"] = ordered_items(ctx, options["pkgs"], directives)
    render_default(**options)


COMPLETE_VAR = "_NDGEN_COMPLETE"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line on stderr and a non-zero exit for any error.

    As the program (`ndgen`, `python -m neurodocker_nd.cli`: no `argv`), a success ends
    the process without the interpreter's teardown (`_end_process`); called from Python
    with `argv`, it returns.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    _maybe_complete()
    try:
        # Not `cli.main()`: its own EPIPE handler exits 1 without a word, whichever
        # pipe broke, and it returns (not raises) a `ctx.exit(code)`.
        with cli.make_context("ndgen", args) as ctx:
            cli.invoke(ctx)
        # Flush inside the handlers: buffered output to a closed pipe would
        # otherwise raise at interpreter shutdown, past every handler.
        sys.stdout.flush()
    except BrokenPipeError as exc:
        if not _stdout_reader_gone():
            _internal_error(exc)  # some other pipe: a real error
        # `ndgen … | head` stopped reading: end quietly, as a SIGPIPE'd tool does.
        _silence_stdout()
        sys.exit(141)
    except NdgenError as exc:
        click.echo(f"ndgen: error: {bounded(exc.message)}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, EOFError):
        click.echo("ndgen: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"ndgen: error: {bounded(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("ndgen: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the edge: no traceback for users
        _internal_error(exc)
    if argv is None:
        _end_process()


def _end_process() -> None:
    """Exit 0 now, skipping the interpreter's teardown.

    Tearing down after a cold render (freeing ~250 modules and everything they hold, and a
    last full collection over it) is ~30 ms of CPU, a sixth of the whole run; nothing in it
    matters once the output is written. mypy ends its runs the same way (`mypy.util.hard_exit`).
    What an exit owes others still happens: the atexit handlers run (a coverage tool's,
    logging's, `weakref.finalize`'s temp-dir cleanups, certifi's) and both streams are
    flushed. With another thread alive it is an ordinary exit, which waits for it.
    """
    import atexit

    run_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's, what a normal exit calls
    threading = sys.modules.get("threading")
    if run_handlers is None or (threading is not None and threading.active_count() > 1):
        return
    run_handlers()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        os._exit(120)  # what Python's own exit returns when it cannot flush stdout
    os._exit(0)


def _maybe_complete() -> None:
    """Shell completion (`eval "$(_NDGEN_COMPLETE=bash_source ndgen)"`): click does this in
    `cli.main()`, which `main` bypasses, so the completion variable is honoured here."""
    instruction = os.environ.get(COMPLETE_VAR)
    if instruction:
        from click.shell_completion import shell_complete

        code = shell_complete(cli, {}, "ndgen", COMPLETE_VAR, instruction)
        if code:  # click says nothing about a shell or instruction it does not know
            click.echo(f"ndgen: error: {COMPLETE_VAR}={clip(instruction)}: expected SHELL_source or SHELL_complete "
                       "with SHELL one of bash, zsh, fish", err=True)  # fmt: skip
        sys.exit(code)


def _internal_error(exc: Exception) -> None:
    if os.environ.get("NDGEN_DEBUG"):
        raise exc
    click.echo(f"ndgen: {internal_error_line(exc)}", err=True)
    sys.exit(70)


if __name__ == "__main__":  # pragma: no cover
    main()
