"""`ndgen upstream export|pr`: thin click wrappers over neurodocker_nd.upstream."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from neurodocker_nd.cli.options import F
from neurodocker_nd.errors import NdgenError

DEFAULT_OUT = "upstream-patches"


def _author_option(text: str) -> Callable[[F], F]:
    """--author: the commit identity, read by gitcmd.resolve_identity."""
    return click.option("--author", metavar="'NAME <EMAIL>'", help=text)


def _target_option(text: str) -> Callable[[F], F]:
    """--target: which upstream, the same choice for export and pr."""
    return click.option(
        "--target",
        type=click.Choice(["neurodocker", "neurocontainers"]),
        default="neurodocker",
        show_default=True,
        help=text,
    )


@click.group("upstream")
def upstream_group() -> None:
    """Turn registry additions into pull requests for upstream neurodocker."""


@upstream_group.command("export")
@click.option(
    "--upstream",
    type=click.Path(file_okay=False, path_type=Path),
    help="A git checkout of ReproNim/neurodocker (default: the installed neurodocker package).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option(
    "--registry",
    type=click.Path(file_okay=False, path_type=Path),
    help="Registry directory (default: ndgen's registry/).",
)
@_author_option("Commit identity of the patches (default: $NDGEN_UPSTREAM_AUTHOR, else git config user.name/email).")
@_target_option("neurodocker: template patch series; neurocontainers: recipes/<name>/ build.yaml + fulltest.yaml.")
@click.option(
    "--build-evidence",
    is_flag=True,
    help="Also build each entry's Debian-packaged method=system on the Docker engine and run its test (PR.md says so).",
)
@click.option(
    "--network",
    type=click.Choice(["default", "none", "host"]),
    default=None,
    help="With --build-evidence: the build's network, as `ndgen build --network` (default: default).",
)
def export_cmd(
    upstream: Path | None,
    out: Path,
    registry: Path | None,
    author: str | None,
    target: str,
    build_evidence: bool,
    network: str | None,
) -> None:
    """Write a proven git format-patch series + PR.md per template to upstream."""
    from neurodocker_nd.upstream.targets import export_target

    done = export_target(target, registry, upstream, out, author, build_evidence, network)
    for r in done.recipes:
        click.echo(f"{r.name}: recipes/{r.name}/build.yaml + fulltest.yaml ({r.version})")
    for s in done.series:
        click.echo(f"{s.name}: {s.kind}, {len(s.patches)} patch(es), {s.content_hash}: {s.title}")
    what = "neurocontainers recipes" if done.kind == "recipes" else "series"
    click.echo(f"exported {len(done.recipes) + len(done.series)} {what} to {out}")


@upstream_group.command("pr")
@click.option(
    "--dry-run/--apply",
    "dry_run",
    default=True,
    show_default=True,
    help="--dry-run (default) only reads; --apply pushes branches and writes PRs.",
)
@click.option("--upstream-repo", required=True, metavar="OWNER/NAME")
@click.option("--fork", required=True, metavar="OWNER/NAME")
@click.option("--patches", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the GitHub token (default: $GITHUB_TOKEN).",
)
@_author_option("Who the bot's commits are by: the token's owner (default: $NDGEN_UPSTREAM_AUTHOR, else git config).")
@click.option("--api-url", default="https://api.github.com", show_default=True)
@click.option(
    "--git-url-template",
    default="https://github.com/{repo}.git",
    show_default=True,
    help="Git URL of a repository; {repo} is OWNER/NAME.",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Longest wait for a GitHub rate limit to reset, in seconds.",
)
@_target_option("What the series in --patches are for (see `export --target`).")
@click.option(
    "--summary",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append a Markdown report to this file (e.g. $GITHUB_STEP_SUMMARY).",
)
def pr_cmd(
    dry_run: bool,
    upstream_repo: str,
    fork: str,
    patches: Path,
    token_file: Path | None,
    author: str | None,
    api_url: str,
    git_url_template: str,
    max_wait: float,
    target: str,
    summary: Path | None,
) -> None:
    """Push each series to the fork and open, update or close its pull request.

    Each series is handled on its own; exit status 1 when any failed.
    """
    from neurodocker_nd.upstream.bot import BotConfig, Outcome, run
    from neurodocker_nd.upstream.gitcmd import SCRATCH, resolve_identity

    token = _read_token(token_file)
    if not dry_run and not token:
        raise NdgenError("--apply needs a token: set GITHUB_TOKEN or pass --token-file")
    if dry_run:
        try:
            identity = resolve_identity(author)
        except NdgenError:
            identity = SCRATCH  # a dry run's commits never leave this machine
    else:
        identity = resolve_identity(author)
    config = BotConfig(
        upstream_repo=upstream_repo,
        fork=fork,
        api_url=api_url,
        git_url_template=git_url_template,
        apply=not dry_run,
        identity=identity,
        max_wait=max_wait,
        target=target,
    )
    outcome = Outcome()
    lines = []
    for line in run(config, patches, token, outcome):
        lines.append(line)
        click.echo(line)
    if summary is not None:
        _append_summary(summary, config, outcome, lines)
    if outcome.failed:
        sys.exit(1)  # after every series ran: the lines above say which failed and why


def _append_summary(path: Path, config, outcome, lines: list[str]) -> None:
    mode = "applied" if config.apply else "dry run"
    md = [f"## ndgen upstream pr → {config.upstream_repo} ({mode})", "", "| series | status |", "|---|---|"]
    md += [f"| `{n}` | {st.replace('|', '/')} |" for n, st in sorted(outcome.status.items())]
    md += ["", "```", *lines, "```", ""]
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write("\n".join(md))
    except OSError as exc:
        raise NdgenError(f"--summary {path}: {exc.strerror}") from exc


def _read_token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise NdgenError(f"--token-file {token_file}: {exc.strerror}") from exc
        if not token:
            raise NdgenError(f"--token-file {token_file}: empty")
        return token
    return os.environ.get("GITHUB_TOKEN") or None
