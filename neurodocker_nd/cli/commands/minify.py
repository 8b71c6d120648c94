"""`ndgen minify`: trace commands in an image from the host and write a verified minimal image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from neurodocker_nd.errors import NdgenError

if TYPE_CHECKING:
    from rich.console import Console

    from neurodocker_nd.minify.pipeline import MinifyOptions
    from neurodocker_nd.minify.report import Report


@click.command("minify", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image")
@click.option("-t", "--tag", required=True, metavar="NEW_TAG", help="Tag of the new, minified image.")
@click.option(
    "-c", "--command", "commands", multiple=True, metavar="CMD", help="Workload command (/bin/sh -c); repeat."
)
@click.option("-v", "--volume", "volumes", multiple=True, metavar="HOST:CTR[:ro]", help="Bind mount; repeat.")
@click.option(
    "--profile", metavar="NAME|FILE", help="A minify profile (minify/NAME.yaml): input setup, commands, keep rules."
)
@click.option(
    "--keep", "keep", multiple=True, metavar="PATH_OR_GLOB", help="Keep this in-image path (directories whole)."
)
@click.option(
    "--keep-packages",
    is_flag=True,
    help="Keep whole every OS package (dpkg) that owns a traced file; docs and translations excluded.",
)
@click.option(
    "--keep-package",
    "package_names",
    multiple=True,
    metavar="NAME",
    help="Keep this installed OS package whole; repeat.",
)
@click.option(
    "--tests",
    "tests_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="SUITE.yaml",
    help="A neurocontainers fulltest.yaml: traced as workload (setup included); "
    "verify = the whole suite and the deploy check pass on the result.",
)
@click.option(
    "--tests-data",
    "tests_data",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Data cache with the suite's required_files as DATASET/FILE.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["docker", "singularity", "both"]), default="docker", show_default=True
)
@click.option(
    "--squashfs",
    "squashfs_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SquashFS output file (singularity format); default TAG.sqfs.",
)
@click.option("--tracer", type=click.Choice(["fanotify", "ptrace"]), help="Default: fanotify, else ptrace.")
@click.option("--no-verify", is_flag=True, help="Do not rerun the commands in the new image.")
@click.option("--no-repair", is_flag=True, help="On a verify mismatch, do not add the paths a re-trace finds missing.")
@click.option("--keep-failed", is_flag=True, help="Keep the new tag when verification fails.")
@click.option("--allow-fail", is_flag=True, help="Accept commands that exit non-zero during the trace.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600,
    show_default=True,
    metavar="SECONDS",
    help="Per command, in the trace, the untraced run, profile setup and verify: then it is killed.",
)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON."
)
def minify_cmd(**given: Any) -> None:
    """Trace CMDs in IMAGE from the host and write a minimal, verified image as TAG.

    The source image is never modified; nothing is installed in it.
    """
    flags = _Flags(**given)
    result = _run(_options(flags))
    _finish(result, flags.report_path)


@attrs.frozen
class _Flags:
    """minify's command line as click parsed it (one typed value per option)."""

    image: str
    tag: str
    commands: tuple[str, ...]
    volumes: tuple[str, ...]
    profile: str | None
    keep: tuple[str, ...]
    keep_packages: bool
    package_names: tuple[str, ...]
    tests_path: Path | None
    tests_data: Path | None
    fmt: str
    squashfs_out: Path | None
    tracer: str | None
    no_verify: bool
    no_repair: bool
    keep_failed: bool
    allow_fail: bool
    timeout: float
    report_path: Path | None


def _options(flags: _Flags) -> MinifyOptions:
    """Every input read and checked, in this order, before any engine work."""
    from neurodocker_nd.build.suite import load_suite
    from neurodocker_nd.core.engine import is_image_name
    from neurodocker_nd.minify.model import Mount
    from neurodocker_nd.minify.pipeline import MinifyOptions
    from neurodocker_nd.minify.profile import load_profile

    mounts = tuple(Mount.parse(spec) for spec in flags.volumes)
    loaded = load_profile(flags.profile) if flags.profile else None
    suite = load_suite(flags.tests_path) if flags.tests_path else None  # a bad suite fails before any engine work
    if not is_image_name(flags.tag, host=True):
        raise NdgenError(f"-t {flags.tag!r} is not a valid image name (lowercase repo[:tag])")
    if flags.squashfs_out is not None and flags.fmt == "docker":
        raise NdgenError("--squashfs needs --format singularity or both")
    report_path = flags.report_path
    if report_path is not None and not report_path.parent.is_dir():
        raise NdgenError(f"--report {report_path}: directory {report_path.parent} does not exist")
    return MinifyOptions(
        image=flags.image,
        tag=flags.tag,
        commands=(loaded.commands if loaded else ()) + flags.commands,
        mounts=mounts,
        profile=loaded,
        keep=flags.keep,
        profile_keep=loaded.keep if loaded else (),
        formats=frozenset({"docker", "singularity"} if flags.fmt == "both" else {flags.fmt}),
        tracer=flags.tracer,
        verify=not flags.no_verify,
        repair=not flags.no_repair,
        keep_failed=flags.keep_failed,
        allow_fail=flags.allow_fail,
        squashfs_out=flags.squashfs_out,
        timeout=flags.timeout,
        keep_packages=flags.keep_packages,
        package_names=flags.package_names,
        suite=suite,
        suite_data=flags.tests_data,
    )


def _run(options: MinifyOptions) -> Report:
    """The pipeline, with live progress on a terminal (stderr)."""
    from neurodocker_nd.minify import pipeline

    console = _console()
    with console.status("minify: open", spinner="dots") as status:

        def progress(step: str, seconds: float | None) -> None:
            # Live progress only on a terminal; logs and pipes get the summary (and errors) alone.
            if not console.is_terminal:
                return
            if seconds is None:
                status.update(f"minify: {step} …  (open → trace → closure → write → verify)")
            else:
                console.print(f"[green]✓[/] {step} {seconds:.1f} s")

        return pipeline.minify(options, progress)


def _finish(result: Report, report_path: Path | None) -> None:
    """The JSON report (written even when verification failed), then the verdict and the summary."""
    from neurodocker_nd.minify import report
    from neurodocker_nd.minify.pipeline import VerifyError

    if report_path is not None:
        report.write_json(result, report_path)
    if result.verified is False:  # one line, naming the command and the likely missing path
        raise VerifyError(result.verify_message)
    console = _console()
    if result.tracer_note:
        console.print("[yellow]note:[/] ", end="")
        console.print(result.tracer_note, markup=False, soft_wrap=True)
    # Lines as they are: rich would fold them at 80 columns off a terminal (inside a path, which a
    # reader or a script then cannot use), and read `[...]` in a path or tag as markup.
    for line in report.summary_lines(result):
        console.print(line, markup=False, soft_wrap=True)


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)
