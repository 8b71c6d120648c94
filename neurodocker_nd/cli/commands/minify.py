"""`ndgen minify`: trace commands in an image from the host and write a verified minimal image."""

from __future__ import annotations

from pathlib import Path

import click

from neurodocker_nd.errors import NdgenError


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
    help="A neurocontainers fulltest.yaml: traced as workload (setup included); verify = the whole suite and the deploy check pass on the result.",
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
def minify_cmd(
    image: str,
    tag: str,
    commands: tuple[str, ...],
    volumes: tuple[str, ...],
    profile: str | None,
    keep: tuple[str, ...],
    keep_packages: bool,
    package_names: tuple[str, ...],
    tests_path: Path | None,
    tests_data: Path | None,
    fmt: str,
    squashfs_out: Path | None,
    tracer: str | None,
    no_verify: bool,
    no_repair: bool,
    keep_failed: bool,
    allow_fail: bool,
    timeout: float,
    report_path: Path | None,
) -> None:
    """Trace CMDs in IMAGE from the host and write a minimal, verified image as TAG.

    The source image is never modified; nothing is installed in it.
    """
    from rich.console import Console

    from neurodocker_nd.build.suite import load_suite
    from neurodocker_nd.core.engine import is_image_name
    from neurodocker_nd.minify import pipeline, report
    from neurodocker_nd.minify.model import Mount
    from neurodocker_nd.minify.profile import load_profile

    mounts = tuple(Mount.parse(spec) for spec in volumes)
    loaded = load_profile(profile) if profile else None
    suite = load_suite(tests_path) if tests_path else None  # a bad suite fails before any engine work
    if not is_image_name(tag, host=True):
        raise NdgenError(f"-t {tag!r} is not a valid image name (lowercase repo[:tag])")
    if squashfs_out is not None and fmt == "docker":
        raise NdgenError("--squashfs needs --format singularity or both")
    if report_path is not None and not report_path.parent.is_dir():
        raise NdgenError(f"--report {report_path}: directory {report_path.parent} does not exist")
    options = pipeline.MinifyOptions(
        image=image,
        tag=tag,
        commands=(loaded.commands if loaded else ()) + commands,
        mounts=mounts,
        profile=loaded,
        keep=keep,
        profile_keep=loaded.keep if loaded else (),
        formats=frozenset({"docker", "singularity"} if fmt == "both" else {fmt}),
        tracer=tracer,
        verify=not no_verify,
        repair=not no_repair,
        keep_failed=keep_failed,
        allow_fail=allow_fail,
        squashfs_out=squashfs_out,
        timeout=timeout,
        keep_packages=keep_packages,
        package_names=package_names,
        suite=suite,
        suite_data=tests_data,
    )
    console = Console(stderr=True, highlight=False)
    with console.status("minify: open", spinner="dots") as status:

        def progress(step: str, seconds: float | None) -> None:
            # Live progress only on a terminal; logs and pipes get the summary (and errors) alone.
            if not console.is_terminal:
                return
            if seconds is None:
                status.update(f"minify: {step} …  (open → trace → closure → write → verify)")
            else:
                console.print(f"[green]✓[/] {step} {seconds:.1f} s")

        result = pipeline.minify(options, progress)
    if report_path is not None:
        report.write_json(result, report_path)
    if result.verified is False:  # one line, naming the command and the likely missing path
        raise pipeline.VerifyError(result.verify_message)
    if result.tracer_note:
        console.print(f"[yellow]note:[/] {result.tracer_note}")
    for line in report.summary_lines(result):
        console.print(line)
