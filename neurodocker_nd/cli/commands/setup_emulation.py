"""`ndgen setup-emulation`: let this x86_64 host build and run aarch64 images (root, opt-in)."""

from __future__ import annotations

import click


@click.command("setup-emulation")
def setup_emulation_cmd() -> None:
    """Mount binfmt_misc and register qemu-user-static's aarch64 handler with the F flag.

    Containers then run aarch64 binaries through qemu (`ndgen base/build/test/minify
    --arch aarch64`). Idempotent: nothing changes when a usable handler exists.
    ndgen never does this by itself: the other commands only say it is missing.
    """
    from neurodocker_nd.core import emulation

    result = emulation.setup()
    if result.mounted:
        click.echo(f"mounted binfmt_misc at {emulation.BINFMT_DIR}")
    if result.registered is None:
        click.echo(f"{result.handler.name} already runs aarch64 binaries (flags {result.handler.flags}); nothing to do")
    else:
        click.echo(f"registered {result.handler.name} (flags {result.handler.flags}): {result.handler.interpreter}")
