"""`ndgen fleet plan|run|workflow`: thin click wrappers over neurodocker_nd.fleet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from neurodocker_nd.cli.options import apt_proxy_option, build_network_options
from neurodocker_nd.errors import ChecksFailed, NdgenError

if TYPE_CHECKING:
    from neurodocker_nd.fleet.plan import Options

_dir_argument = click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
_arch_option = click.option(
    "--arch",
    "arches",
    multiple=True,
    metavar="x86_64|aarch64",
    help="Only targets of this architecture (repeat); one that no recipe declares is an error.",
)
_only_option = click.option("--only", multiple=True, metavar="NAME", help="Only this recipe (repeat).")
_templates_option = click.option(
    "--templates",
    multiple=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Template directory searched before ndgen's registry (repeat), as for `ndgen build`.",
)
_runner_option = click.option(
    "--runner",
    "runners",
    multiple=True,
    metavar="ARCH=LABEL",
    help="GitHub runner label of an architecture (default: x86_64=ubuntu-latest, aarch64=ubuntu-24.04-arm).",
)


@click.group("fleet")
def fleet_group() -> None:
    """Plan, build, test and promote every recipe of a directory into a registry."""


def _options(
    directory: Path,
    registry: str | None,
    arches: tuple[str, ...],
    only: tuple[str, ...],
    templates: tuple[str, ...] = (),
    runners: tuple[str, ...] = (),
    minify: bool = False,
) -> Options:
    from neurodocker_nd.fleet.oci import Registry
    from neurodocker_nd.fleet.plan import RUNNERS, Options

    labels = dict(RUNNERS)
    for item in runners:
        arch, sep, label = item.partition("=")
        if not sep or arch not in RUNNERS or not label.strip():
            raise NdgenError(f"--runner {item!r}: expected ARCH=LABEL with ARCH one of {', '.join(RUNNERS)}")
        labels[arch] = label.strip()
    reg = Registry.parse(registry) if registry is not None else None
    return Options(directory, reg, arches, only, templates, labels, minify)


@fleet_group.command("plan")
@_dir_argument
@click.option("--registry", metavar="HOST[:PORT][/NAMESPACE]", help="Where promoted images live (their labels).")
@_arch_option
@_only_option
@click.option("--max-jobs", type=int, default=256, show_default=True, help="Targets per matrix chunk.")
@click.option("--json", "as_json", is_flag=True, help="Print {targets, matrices} as JSON.")
@click.option("--minify", is_flag=True, help="Plan the minified images (`fleet run --minify`): their own fingerprints.")
@_templates_option
@_runner_option
def plan_cmd(
    directory: Path,
    registry: str | None,
    arches: tuple[str, ...],
    only: tuple[str, ...],
    max_jobs: int,
    as_json: bool,
    minify: bool,
    templates: tuple[str, ...],
    runners: tuple[str, ...],
) -> None:
    """Each target (recipe × architecture), its fingerprint and why it is planned."""
    from neurodocker_nd.cli import output
    from neurodocker_nd.fleet.plan import plan

    planned = plan(_options(directory, registry, arches, only, templates, runners, minify), max_jobs)
    if as_json:
        click.echo(planned.as_json())
        return
    rows = [
        (p.target.name, p.target.version, p.target.arch, (p.fingerprint or "-")[:12], p.reason) for p in planned.targets
    ]
    output.table(f"fleet plan of {directory}", ("target", "version", "arch", "fingerprint", "reason"), rows)
    work = sum(p.work for p in planned.targets)
    click.echo(f"{work} of {len(planned.targets)} targets need work, in {len(planned.matrices)} matrix chunk(s)")


@fleet_group.command("run")
@_dir_argument
@click.option(
    "--registry", required=True, metavar="HOST[:PORT][/NAMESPACE]", help="Where candidates go and are promoted."
)
@_arch_option
@_only_option
@click.option("--jobs", type=click.IntRange(min=1, max=64), default=2, show_default=True, help="Targets at once.")
@click.option(
    "--minify",
    is_flag=True,
    help="Minify each tested image with its fulltest.yaml as the workload, test the result, push that.",
)
@click.option("--no-promote", is_flag=True, help="Push tested candidates only (a pull request); never tag VERSION.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="JSON report of every target.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="JUnit XML, one case per target.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), help="Append a Markdown summary here.")
@click.option(
    "--local-prefix",
    default="ndgen-fleet",
    show_default=True,
    metavar="NAME",
    help="Local image names on the engine: NAME-RECIPE:VERSION-ARCH (the registry's names are REG/RECIPE:VERSION).",
)
@_templates_option
@build_network_options
def run_cmd(
    directory: Path,
    registry: str,
    arches: tuple[str, ...],
    only: tuple[str, ...],
    jobs: int,
    minify: bool,
    no_promote: bool,
    report_path: Path | None,
    junit_path: Path | None,
    markdown_path: Path | None,
    local_prefix: str,
    templates: tuple[str, ...],
    network: str,
    apt_proxy: str | None,
) -> None:
    """Render → build → test → push a candidate → promote, per target; exit 1 when any target failed."""
    from neurodocker_nd.cli import output
    from neurodocker_nd.fleet import report
    from neurodocker_nd.fleet.run import RunOptions, run

    for path, option in ((report_path, "--report"), (junit_path, "--junit"), (markdown_path, "--markdown")):
        if path is not None:
            report.check_writable(path, option)
    proxy = apt_proxy_option(apt_proxy, network)
    plan_options = _options(directory, registry, arches, only, templates, minify=minify)
    if minify:
        from neurodocker_nd.cli.extras import require

        require("minify", "fleet run --minify")
    options = RunOptions(plan_options, jobs, not no_promote, network, proxy, local_prefix)
    results = run(options, lambda line: click.echo(line, err=True))
    output.table("fleet run", report.COLUMNS, report.rows(results))
    if report_path:
        report.write_json(results, report_path)
    if junit_path:
        report.write_junit(results, junit_path)
    if markdown_path:
        report.write_markdown(results, markdown_path)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        names = ", ".join(f"{r.target.name}/{r.target.arch} ({r.stage})" for r in failed[:5])
        raise ChecksFailed(f"{len(failed)} of {len(results)} targets failed: {names}")


@fleet_group.command("workflow")
@_dir_argument
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--registry", required=True, metavar="HOST[:PORT][/NAMESPACE]", help="The registry the jobs use.")
@click.option("--recipes-path", metavar="PATH", help="DIR as the repository's checkout names it (default: DIR).")
@click.option("--branch", metavar="NAME", help="Only pushes to this branch run the workflow (default: any push).")
@click.option(
    "--install",
    help="The shell command that installs ndgen on a runner "
    "(default: pip install 'neurodocker-nd[build]', with --minify 'neurodocker-nd[build,minify]').",
)
@click.option(
    "--environment",
    default="ndgen-fleet",
    show_default=True,
    help="The GitHub environment whose secrets NDGEN_REGISTRY_USER/NDGEN_REGISTRY_PASSWORD the jobs read.",
)
@click.option("--minify", is_flag=True, help="The jobs plan and run with --minify.")
@_runner_option
def workflow_cmd(
    directory: Path,
    out_dir: Path,
    registry: str,
    recipes_path: str | None,
    branch: str | None,
    install: str | None,
    environment: str,
    minify: bool,
    runners: tuple[str, ...],
) -> None:
    """Write OUTDIR/ndgen-fleet.yml: a plan job feeding one matrix job per chunk of 256 targets."""
    from neurodocker_nd.fleet.workflow import workflow, write_workflow

    options = _options(directory, registry, (), (), (), runners)
    where = recipes_path or str(directory)
    if install is None:  # `fleet run --minify` needs the minify extra (cli/extras.py) on the runner too
        install = f"pip install 'neurodocker-nd[{'build,minify' if minify else 'build'}]'"
    data = workflow(directory, where, str(options.registry), options.runners, install, branch, environment, minify)
    click.echo(f"workflow: {write_workflow(data, out_dir)}")
