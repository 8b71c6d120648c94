"""`ndgen upstream export|pr`: thin click wrappers over neurodocker_nd.upstream."""

from __future__ import annotations

import os
from pathlib import Path

import click

from neurodocker_nd.errors import NdgenError

DEFAULT_OUT = "upstream-patches"


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
@click.option("--author", metavar="'NAME <EMAIL>'",
              help="Commit identity of the patches (default: $NDGEN_UPSTREAM_AUTHOR, else git config user.name/email).")
def export_cmd(upstream: Path | None, out: Path, registry: Path | None, author: str | None) -> None:
    """Write a proven git format-patch series + PR.md per template to upstream."""
    from neurodocker_nd import paths
    from neurodocker_nd.upstream.export import export
    from neurodocker_nd.upstream.gitcmd import resolve_identity

    series = export(registry or paths.registry_dir(), upstream, out, resolve_identity(author))
    for s in series:
        click.echo(f"{s.name}: {s.kind}, {len(s.patches)} patch(es), {s.content_hash}: {s.title}")
    click.echo(f"exported {len(series)} series to {out}")


@upstream_group.command("pr")
@click.option("--dry-run/--apply", "dry_run", default=True, show_default=True,
              help="--dry-run (default) only reads; --apply pushes branches and writes PRs.")
@click.option("--upstream-repo", required=True, metavar="OWNER/NAME")
@click.option("--fork", required=True, metavar="OWNER/NAME")
@click.option("--patches", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the GitHub token (default: $GITHUB_TOKEN).")
@click.option("--api-url", default="https://api.github.com", show_default=True)
@click.option("--git-url-template", default="https://github.com/{repo}.git", show_default=True,
              help="Git URL of a repository; {repo} is OWNER/NAME.")
def pr_cmd(dry_run: bool, upstream_repo: str, fork: str, patches: Path, token_file: Path | None,
           api_url: str, git_url_template: str) -> None:
    """Push each series to the fork and open, update or close its pull request."""
    from neurodocker_nd.upstream.bot import BotConfig, run

    token = _read_token(token_file)
    if not dry_run and not token:
        raise NdgenError("--apply needs a token: set GITHUB_TOKEN or pass --token-file")
    config = BotConfig(
        upstream_repo=upstream_repo,
        fork=fork,
        api_url=api_url,
        git_url_template=git_url_template,
        apply=not dry_run,
    )
    for line in run(config, patches, token):
        click.echo(line)


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
