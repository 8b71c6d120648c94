"""The `ndgen` command line: the edge where errors become one stderr line.

`ndgen --pkg … --os …` (no subcommand) renders a recipe. Subcommands are
loaded lazily so that rendering never imports the Docker SDK or the tracer.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from neurodocker_nd import __version__
from neurodocker_nd.commands.options import recipe_options
from neurodocker_nd.errors import NdgenError

# subcommand name -> "module:attribute"; imported only when invoked (or listed by --help).
_SUBCOMMANDS: dict[str, str] = {
    "list": "neurodocker_nd.commands.browse:list_cmd",
    "show": "neurodocker_nd.commands.browse:show_cmd",
    "validate": "neurodocker_nd.commands.browse:validate_cmd",
    "matrix": "neurodocker_nd.commands.matrix:matrix_cmd",
    "base": "neurodocker_nd.commands.base:base_cmd",
    "build": "neurodocker_nd.commands.build:build_cmd",
    "minify": "neurodocker_nd.commands.minify:minify_cmd",
    "upstream": "neurodocker_nd.commands.upstream:upstream_group",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

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


@click.group(
    cls=LazyGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@recipe_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the recipe here instead of stdout.")
@click.version_option(__version__, prog_name="ndgen")
@click.pass_context
def cli(ctx: click.Context, **options: Any) -> None:
    """ndgen: render, build, test, minify and upstream neuroimaging containers.

    Without a subcommand, renders a Dockerfile (or Singularity definition)
    for the given --pkg and --os, e.g. `ndgen --pkg ants --os ubuntu`.
    """
    if ctx.invoked_subcommand is not None:
        if options.get("pkgs"):
            raise NdgenError(
                f"put --pkg after the subcommand: ndgen {ctx.invoked_subcommand} --pkg …"
            )
        return
    if not options.get("pkgs"):
        click.echo(ctx.get_help())
        ctx.exit(0)
    from neurodocker_nd.commands.render import render_default

    render_default(**options)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line on stderr and a non-zero exit for any error."""
    try:
        cli.main(args=argv, prog_name="ndgen", standalone_mode=False)
    except NdgenError as exc:
        click.echo(f"ndgen: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("ndgen: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"ndgen: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("ndgen: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # `ndgen … | head` must not print a traceback.
        sys.stderr.close()
        sys.exit(141)
    except Exception as exc:  # noqa: BLE001 - the edge: no traceback for users
        if os.environ.get("NDGEN_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(
            f"ndgen: internal error: {type(exc).__name__}: {first} (set NDGEN_DEBUG=1 for a traceback)",
            err=True,
        )
        sys.exit(70)


if __name__ == "__main__":  # pragma: no cover
    main()
