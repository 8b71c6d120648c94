"""`ndgen upstream pr`: one pull request per exported series, kept in sync via the API.

State comes from GitHub, never from a local file:

* our PRs are the upstream repository's open PRs whose head is a branch
  ``ndgen/<name>-<hash>`` of the fork (the name is parsed from the branch; the
  hash currently shown is the ``ndgen-series`` marker in the PR body);
* a template has *landed* when upstream's default branch holds a file
  ``neurodocker/templates/<name>.yaml`` with the same content as ours.

Per series: landed → close our PR with a comment; no PR → push the branch
``ndgen/<name>-<hash>`` to the fork and open one; a PR showing another hash →
push the new branch, force-update the PR's head branch to the same commit and
PATCH its title/body (one PR per template, never a second); same hash → nothing;
a closed PR of ours that showed this hash (maintainers declined it) → nothing either.
Our open PRs for templates no longer exported are closed with a comment.

The series is always applied (``git am -3``) onto upstream's current default
branch, fetched over git, so a dry run also proves the patches still apply.
Dry run (the default) sends only GET requests and pushes nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import attrs
import yaml

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.upstream.export import HASH_MARKER, TEMPLATES, ExportedSeries, read_series_dir
from neurodocker_nd.upstream.github import GitHub, PullRequest, split_repo
from neurodocker_nd.upstream.gitcmd import git, init_repo

BRANCH_PREFIX = "ndgen/"


@attrs.frozen
class BotConfig:
    upstream_repo: str
    fork: str
    api_url: str = "https://api.github.com"
    git_url_template: str = "https://github.com/{repo}.git"
    apply: bool = False

    def git_url(self, repo: str) -> str:
        return self.git_url_template.format(repo=repo)


def series_name(branch: str) -> str | None:
    """`ndgen/<name>-<hash>` → name (None for other branches)."""
    if not branch.startswith(BRANCH_PREFIX):
        return None
    name, sep, digest = branch[len(BRANCH_PREFIX):].rpartition("-")
    return name if sep and name and digest else None


def shown_hash(pr: PullRequest) -> str | None:
    """The series hash recorded in the PR body (what the PR currently shows)."""
    for line in pr.body.splitlines():
        line = line.strip()
        if line.startswith(f"<!-- {HASH_MARKER}:") and line.endswith("-->"):
            parts = line[len(f"<!-- {HASH_MARKER}:"):-3].split()
            if len(parts) == 2:
                return parts[1]
    return None


def _same_template(a: str | None, b: str) -> bool:
    if a is None:
        return False
    try:
        return yaml.safe_load(a) == yaml.safe_load(b)
    except yaml.YAMLError:
        return False


class _Git:
    """A scratch repository holding upstream's default branch; pushes to the fork."""

    def __init__(self, workdir: Path, config: BotConfig, token: str | None, base_branch: str) -> None:
        self.repo = workdir / "repo"
        self.config = config
        self.token = token
        self.base = f"refs/remotes/upstream/{base_branch}"
        init_repo(self.repo)
        # Reading a public repository needs no credentials: the token only goes to pushes.
        git("fetch", "-q", config.git_url(config.upstream_repo), f"+refs/heads/{base_branch}:{self.base}",
            cwd=self.repo, what=f"fetching {config.upstream_repo} {base_branch}")

    def apply(self, s: ExportedSeries) -> str:
        """Commit the series on top of upstream's branch; return the commit."""
        git("checkout", "-q", "--detach", self.base, cwd=self.repo)
        try:
            git("am", "-q", "-3", *[str(p) for p in s.patches], cwd=self.repo,
                what=f"{s.name}: applying the series to {self.config.upstream_repo}")
        except NdgenError:
            git("am", "--abort", cwd=self.repo)
            raise
        return git("rev-parse", "HEAD", cwd=self.repo).strip()

    def push(self, commit: str, branches: list[str]) -> None:
        refspecs = [f"{commit}:refs/heads/{b}" for b in branches]
        git("push", "-q", "--force", self.config.git_url(self.config.fork), *refspecs,
            cwd=self.repo, token=self.token, what=f"pushing to {self.config.fork}")


def run(config: BotConfig, patches_dir: Path, token: str | None) -> Iterator[str]:
    """Bring the PRs in line with the exported series; yield one line per action.

    Lines are yielded as actions happen, so a failure part-way still shows what was done.
    """
    for repo_name in (config.upstream_repo, config.fork):
        split_repo(repo_name)  # fail on a malformed name before any request
    if "{repo}" not in config.git_url_template:
        raise NdgenError(f"--git-url-template {config.git_url_template!r} must contain {{repo}}")
    series = read_series_dir(patches_dir)
    gh = GitHub(config.api_url, token)
    base_branch = gh.default_branch(config.upstream_repo)
    ours = _ours(gh.pulls(config.upstream_repo, "open"), config.fork)
    declined = _Declined(gh, config)
    prefix = "" if config.apply else "[dry-run] would "
    with tempfile.TemporaryDirectory(prefix="ndgen-pr-") as tmp:
        repo = _Git(Path(tmp), config, token, base_branch)
        for s in series:
            yield from _sync(gh, repo, config, s, ours.pop(s.name, []), declined, base_branch, prefix)
    for name, prs in sorted(ours.items()):
        for pr in prs:
            if config.apply:
                _close(gh, config, pr, "ndgen no longer exports this template (it landed upstream or left ndgen's registry).")
            yield f"{name}: {prefix}close #{pr.number} (no longer exported)"
    mode = "applied" if config.apply else "dry run: no request other than GET was sent, nothing pushed"
    yield f"{len(series)} series, {mode}"


def _ours(pulls: list[PullRequest], fork: str) -> dict[str, list[PullRequest]]:
    """Pull requests from the fork's `ndgen/<name>-<hash>` branches, by template name."""
    found: dict[str, list[PullRequest]] = {}
    for pr in pulls:
        name = series_name(pr.head_ref)
        if name and pr.head_repo.lower() == fork.lower():
            found.setdefault(name, []).append(pr)
    return found


class _Declined:
    """Our closed PRs, listed once and only if a series has no open PR."""

    def __init__(self, gh: GitHub, config: BotConfig) -> None:
        self._gh, self._config = gh, config
        self._closed: dict[str, list[PullRequest]] | None = None

    def find(self, s: ExportedSeries) -> PullRequest | None:
        """A closed PR of ours that showed exactly this series."""
        if self._closed is None:
            self._closed = _ours(self._gh.pulls(self._config.upstream_repo, "closed"), self._config.fork)
        return next((pr for pr in self._closed.get(s.name, []) if shown_hash(pr) == s.content_hash), None)


def _sync(gh: GitHub, repo: _Git, config: BotConfig, s: ExportedSeries, prs: list[PullRequest],
          declined: _Declined, base_branch: str, prefix: str) -> list[str]:
    upstream_file = gh.file_text(config.upstream_repo, f"{TEMPLATES}/{s.name}.yaml", base_branch)
    if _same_template(upstream_file, s.template_text):
        if not prs:
            return [f"{s.name}: landed upstream, no open PR"]
        lines = []
        for pr in prs:
            lines.append(f"{s.name}: {prefix}close #{pr.number} (landed upstream on {base_branch})")
            if config.apply:
                _close(gh, config, pr, f"The template has landed on `{base_branch}`: closing. Thank you!")
        return lines
    commit = repo.apply(s)  # proves the series still applies, in dry runs too
    head = f"{config.fork.split('/')[0]}:{s.branch}"
    if not prs:
        closed = declined.find(s)
        if closed is not None:
            # Maintainers closed this exact series: proposing it again would be spam.
            return [f"{s.name}: #{closed.number} with this series was closed upstream; not reopening"
                    " (a changed template gets a new branch and a new PR)"]
        if config.apply:
            repo.push(commit, [s.branch])
            pr = gh.create_pull(config.upstream_repo, s.title, s.body, head, base_branch)
            return [f"{s.name}: opened #{pr.number} from {s.branch}"]
        return [f"{s.name}: {prefix}push {s.branch} and open a PR"]
    keep, *duplicates = sorted(prs, key=lambda p: p.number)
    lines = []
    for dup in duplicates:
        lines.append(f"{s.name}: {prefix}close duplicate #{dup.number}")
        if config.apply:
            _close(gh, config, dup, f"Superseded by #{keep.number}.")
    if shown_hash(keep) == s.content_hash and keep.title == s.title:
        return lines + [f"{s.name}: #{keep.number} up to date ({s.content_hash})"]
    lines.append(f"{s.name}: {prefix}update #{keep.number} to {s.content_hash} (push {s.branch})")
    if config.apply:
        # A PR's head branch cannot be changed: move it to the new commit too.
        repo.push(commit, sorted({s.branch, keep.head_ref}))
        gh.update_pull(config.upstream_repo, keep.number, title=s.title, body=s.body)
        gh.comment(config.upstream_repo, keep.number,
                   f"Updated by ndgen to series `{s.content_hash}` (branch `{s.branch}`).")
    return lines


def _close(gh: GitHub, config: BotConfig, pr: PullRequest, why: str) -> None:
    gh.comment(config.upstream_repo, pr.number, why)
    gh.update_pull(config.upstream_repo, pr.number, state="closed")
