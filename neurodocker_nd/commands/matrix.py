"""`ndgen matrix --out DIR`: every template × OS preset × format, one file each."""

from __future__ import annotations

from pathlib import Path

import click

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.oses import PRESETS, preset_names, resolve_target


@click.command("matrix")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@click.option(
    "--os",
    "os_names",
    multiple=True,
    type=click.Choice(preset_names()),
    help="OS presets (repeat); default: every preset.",
)
@click.option(
    "--format",
    "fmts",
    multiple=True,
    type=click.Choice(["docker", "singularity"]),
    help="Formats (repeat); default: both.",
)
@click.option("--pkg", "names", multiple=True, metavar="NAME", help="Only these entries (repeat); default: all.")
def matrix_cmd(out: str, os_names: tuple[str, ...], fmts: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Render every entry (default version and method, plus method=system where
    offered) for every OS preset in both formats into --out, and print the count.

    Everything is rendered before the first file is written: on error nothing is.
    """
    from neurodocker_nd.registry import Registry
    from neurodocker_nd.render import render_matrix

    registry = Registry()
    for name in names:
        registry.get(name)  # unknown names fail with suggestions before any work
    # Aliases name the same preset (`ubuntu` = `ubuntu:24.04`): one file each.
    oses = tuple(dict.fromkeys(resolve_target(o).os_name for o in os_names or PRESETS))
    items, skipped = render_matrix(
        registry,
        oses,
        tuple(dict.fromkeys(fmts)) or ("docker", "singularity"),  # type: ignore[arg-type]
        tuple(dict.fromkeys(names)) or None,
    )
    outdir = Path(out)
    write_all(outdir, {item.filename: item.recipe.text for item in items})
    # One note per (entry, method, reason), naming the OSes it applies to.
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for s in skipped:
        grouped.setdefault((s.name, s.method, s.reason), []).append(s.os_name)
    for (name, method, reason), skipped_on in grouped.items():
        where = "every OS" if len(skipped_on) == len(oses) else ", ".join(skipped_on)
        click.echo(f"ndgen: note: skipped {name} (method={method}) on {where}: {reason}", err=True)
    click.echo(f"{len(items)} recipes written to {outdir}")


def write_all(outdir: Path, files: dict[str, str]) -> None:
    """Write every file, or none: a full disk must not leave half a matrix.

    All files are written into a staging directory first — beside a new
    --out, which is then renamed into place; inside an existing --out, whose
    files are then renamed over one by one (a rename allocates no data, so
    ENOSPC cannot strike after the first file is replaced).
    """
    import os
    import shutil
    import tempfile

    from neurodocker_nd import outfile

    fresh = not outdir.exists()
    try:
        if fresh:
            outdir.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".partial", dir=outdir.parent if fresh else outdir))
    except OSError as exc:
        raise NdgenError(f"cannot write {outdir}: {exc.strerror or exc}") from None
    try:
        for name, text in files.items():
            _write_one(stage / name, text)
        if fresh:
            stage.chmod(0o777 & ~outfile.umask())  # mkdtemp made it 0700; a new directory honours the umask
            os.rename(stage, outdir)
        else:
            for name in files:
                os.replace(stage / name, outdir / name)
            stage.rmdir()
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise NdgenError(f"cannot write {outdir}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _write_one(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
