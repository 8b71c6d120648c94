"""`ndgen upstream pr`: one pull request per exported series, kept in sync via the API.

State comes from GitHub, never from a local file:

* our PRs come from the fork's branch ``ndgen/<name>`` — one stable branch per
  template (older runs named it ``ndgen/<name>-<hash>``; those are still ours).
  The series a PR shows is the ``ndgen-series`` marker in its body, the title
  ndgen last set the ``ndgen-title`` marker;
* a template has *landed* when upstream's default branch holds a file
  ``neurodocker/templates/<name>.yaml`` with the same content as ours.

Per series: landed → close our PR with a comment; no open PR → if a closed PR of
that branch (found with the ``head=OWNER:BRANCH`` filter, not by paging every
closed PR) showed this very series, it was declined or merged: nothing; else push
and open one; an open PR showing another series → force-push *with a lease* on the
sha GitHub reports for its head, PATCH the body (the title only if nobody edited
it), comment once; the same series → nothing. A PR whose branch holds commits
ndgen did not make (a maintainer's) is left alone, with one comment saying so.
Our open PRs for templates no longer exported are closed with a comment.

Each series is handled on its own: one that no longer applies (``git am -3``
onto upstream's current default branch, fetched over git) is reported and the
run goes on; the caller exits non-zero at the end. Dry run (the default) sends
only GET requests and pushes nothing.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import yaml

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.upstream.gitcmd import SCRATCH, Identity, git, init_repo
from neurodocker_nd.upstream.github import GitHub, PullRequest, split_repo
from neurodocker_nd.upstream.series import HASH_MARKER, TEMPLATES, ExportedSeries, read_series_dir

BRANCH_PREFIX = "ndgen/"
TITLE_MARKER = "ndgen-title"
FOREIGN_MARKER = "ndgen-foreign-commits"
_LEGACY_BRANCH = re.compile(r"^(.+)-[0-9a-f]{12}$")  # ndgen/<name>-<hash>, before branches were stable
# Files every new-template series appends a line to: applied with git's union merge, so
# series that each add a line at the same spot apply in any order (see docs/upstream.md).
UNION_FILES = ("docs/user_guide/examples.rst", ".github/workflows/create_workflows.py")


@attrs.frozen
class BotConfig:
    upstream_repo: str
    fork: str
    api_url: str = "https://api.github.com"
    git_url_template: str = "https://github.com/{repo}.git"
    apply: bool = False
    identity: Identity = SCRATCH  # commits the bot makes (required with --apply)
    max_wait: float = 120.0  # longest rate-limit wait, seconds
    target: str = "neurodocker"  # what the series are for: neurodocker templates or neurocontainers recipes

    def git_url(self, repo: str) -> str:
        return self.git_url_template.format(repo=repo)

    @property
    def fork_owner(self) -> str:
        return self.fork.split("/")[0]


@attrs.define
class Outcome:
    """Per-series status of one run (the caller turns failures into exit status 1)."""

    status: dict[str, str] = attrs.Factory(dict)

    @property
    def failed(self) -> list[str]:
        return sorted(n for n, st in self.status.items() if st.startswith("failed"))


def series_name(branch: str) -> str | None:
    """`ndgen/<name>` (or a legacy `ndgen/<name>-<hash>`) → name; None for other branches."""
    if not branch.startswith(BRANCH_PREFIX) or branch == BRANCH_PREFIX:
        return None
    rest = branch[len(BRANCH_PREFIX) :]
    m = _LEGACY_BRANCH.match(rest)
    return m.group(1) if m else rest


def _marker(pr: PullRequest, marker: str) -> str | None:
    for line in pr.body.splitlines():
        line = line.strip()
        if line.startswith(f"<!-- {marker}:") and line.endswith("-->"):
            return line[len(f"<!-- {marker}:") : -3].strip()
    return None


def shown_hash(pr: PullRequest) -> str | None:
    """The series hash recorded in the PR body (what the PR currently shows)."""
    parts = (_marker(pr, HASH_MARKER) or "").split()
    return parts[1] if len(parts) == 2 else None


def _body(s: ExportedSeries) -> str:
    # The title ndgen set, so a later run can tell a maintainer's retitle from its own.
    return f"{s.body.rstrip()}\n<!-- {TITLE_MARKER}: {s.title} -->\n"


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
        git(
            "fetch",
            "-q",
            config.git_url(config.upstream_repo),
            f"+refs/heads/{base_branch}:{self.base}",
            cwd=self.repo,
            what=f"fetching {config.upstream_repo} {base_branch}",
        )

    def apply(self, s: ExportedSeries) -> str:
        """Commit the series on top of upstream's branch; return the commit."""
        return apply_series(
            self.repo,
            self.base,
            s.patches,
            s.name,
            self.config.identity,
            f"applying the series to {self.config.upstream_repo}",
        )

    def foreign_commits(self, pr: PullRequest) -> list[str]:
        """Commits on the PR's branch (not upstream's) that the bot did not commit: `sha committer`."""
        ref = f"refs/ndgen/pr-{pr.number}"
        git(
            "fetch",
            "-q",
            self.config.git_url(self.config.fork),
            f"+refs/heads/{pr.head_ref}:{ref}",
            cwd=self.repo,
            what=f"fetching {self.config.fork} {pr.head_ref}",
        )
        log = git("log", "--format=%H %ce", ref, "--not", self.base, cwd=self.repo)
        return [line for line in log.splitlines() if line.split()[-1] != self.config.identity.email]

    def remote_sha(self, branch: str) -> str:
        out = git(
            "ls-remote",
            self.config.git_url(self.config.fork),
            f"refs/heads/{branch}",
            cwd=self.repo,
            what=f"reading {self.config.fork}",
        )
        return out.split()[0] if out.strip() else ""

    def push(self, commit: str, branch: str, expected: str) -> None:
        """Force-push with a lease: refused if the branch is no longer at `expected` ("" = absent)."""
        git(
            "push",
            "-q",
            f"--force-with-lease=refs/heads/{branch}:{expected}",
            self.config.git_url(self.config.fork),
            f"{commit}:refs/heads/{branch}",
            cwd=self.repo,
            token=self.token,
            what=f"pushing to {self.config.fork}",
        )


def apply_series(repo: Path, base: str, patches: tuple[Path, ...], name: str, identity: Identity, what: str) -> str:
    """`git am -3` the series onto `base` in `repo`, committed by `identity`; return the commit."""
    attributes = repo / ".git" / "info" / "attributes"
    attributes.parent.mkdir(parents=True, exist_ok=True)
    attributes.write_text("".join(f"{f} merge=union\n" for f in UNION_FILES), encoding="utf-8")
    git("checkout", "-q", "--detach", base, cwd=repo)
    try:
        git("am", "-q", "-3", *[str(p) for p in patches], cwd=repo, identity=identity, what=f"{name}: {what}")
    except NdgenError:
        git("am", "--abort", cwd=repo)
        raise
    return git("rev-parse", "HEAD", cwd=repo).strip()


def run(config: BotConfig, patches_dir: Path, token: str | None, outcome: Outcome | None = None) -> Iterator[str]:
    """Bring the PRs in line with the exported series; yield one line per action.

    Lines are yielded as actions happen. A series that fails is reported in `outcome`
    (and a line) and the run goes on with the next.
    """
    outcome = outcome if outcome is not None else Outcome()
    for repo_name in (config.upstream_repo, config.fork):
        split_repo(repo_name)  # fail on a malformed name before any request
    if "{repo}" not in config.git_url_template:
        raise NdgenError(f"--git-url-template {config.git_url_template!r} must contain {{repo}}")
    series = read_series_dir(patches_dir)
    wrong = [s.name for s in series if s.target != config.target]
    if wrong:
        target = series[0].target if len(wrong) == len(series) else "another target"
        raise NdgenError(f"{patches_dir}: {', '.join(wrong)} exported for {target}, not --target {config.target}")
    gh = GitHub(config.api_url, token, config.max_wait)
    base_branch = gh.default_branch(config.upstream_repo)
    ours = _ours(gh.pulls(config.upstream_repo, "open"), config)
    prefix = "" if config.apply else "[dry-run] would "
    with tempfile.TemporaryDirectory(prefix="ndgen-pr-") as tmp:
        repo = _Git(Path(tmp), config, token, base_branch)
        for s in series:
            prs = ours.pop(s.name, [])
            try:
                yield from _sync(gh, repo, config, s, prs, base_branch, prefix)
                outcome.status[s.name] = "ok"
            except NdgenError as exc:
                outcome.status[s.name] = f"failed: {exc}"
                yield f"{s.name}: FAILED: {exc}"
    for name, prs in sorted(ours.items()):
        for pr in prs:
            try:
                if config.apply:
                    _close(
                        gh, config, pr, "ndgen no longer exports this (it landed upstream or left ndgen's registry)."
                    )
                yield f"{name}: {prefix}close #{pr.number} (no longer exported)"
                outcome.status.setdefault(name, "ok")
            except NdgenError as exc:
                outcome.status[name] = f"failed: {exc}"
                yield f"{name}: FAILED: {exc}"
    mode = "applied" if config.apply else "dry run: no request other than GET was sent, nothing pushed"
    failed = outcome.failed
    yield f"{len(series)} series, {mode}" + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else "")


def _ours(pulls: list[PullRequest], config: BotConfig) -> dict[str, list[PullRequest]]:
    """Pull requests from the fork's `ndgen/…` branches, by template name."""
    found: dict[str, list[PullRequest]] = {}
    for pr in pulls:
        name = series_name(pr.head_ref)
        if pr.head_repo is not None:
            mine = pr.head_repo.lower() == config.fork.lower()
        else:  # the head repository was deleted: GitHub keeps the OWNER:BRANCH label
            mine = pr.head_label.split(":")[0].lower() == config.fork_owner.lower()
        if name and mine:
            found.setdefault(name, []).append(pr)
    return found


def _sync(
    gh: GitHub, repo: _Git, config: BotConfig, s: ExportedSeries, prs: list[PullRequest], base_branch: str, prefix: str
) -> Iterator[str]:
    upstream_file = gh.file_text(config.upstream_repo, s.landed_path or f"{TEMPLATES}/{s.name}.yaml", base_branch)
    if _same_template(upstream_file, s.template_text):
        if not prs:
            yield f"{s.name}: landed upstream, no open PR"
        for pr in prs:
            yield f"{s.name}: {prefix}close #{pr.number} (landed upstream on {base_branch})"
            if config.apply:
                _close(gh, config, pr, f"The template has landed on `{base_branch}`: closing. Thank you!")
        return
    commit = repo.apply(s)  # proves the series still applies, in dry runs too
    ordered = sorted(prs, key=lambda p: p.number)  # the oldest PR stays; later duplicates close
    keep = ordered[0] if ordered else None
    for dup in ordered[1:]:
        yield f"{s.name}: {prefix}close duplicate #{dup.number}"
        if config.apply:
            _close(gh, config, dup, f"Superseded by #{ordered[0].number}.")
    if keep is not None and keep.head_repo is None:
        yield f"{s.name}: {prefix}close #{keep.number} (its head repository was deleted) and open a new one"
        if config.apply:
            _close(gh, config, keep, "The head repository of this PR was deleted; ndgen opens a new one.")
        keep = None
    if keep is None:
        yield from _open(gh, repo, config, s, commit, base_branch, prefix)
        return
    if shown_hash(keep) == s.content_hash:
        yield f"{s.name}: #{keep.number} up to date ({s.content_hash})"
        return
    foreign = repo.foreign_commits(keep)
    if foreign:
        yield from _leave_to_maintainers(gh, config, s, keep, foreign, prefix)
        return
    retitle = keep.title == _marker(keep, TITLE_MARKER) and keep.title != s.title
    yield (
        f"{s.name}: {prefix}update #{keep.number} to {s.content_hash} (push {keep.head_ref}"
        f"{', retitle' if retitle else ''})"
    )
    if config.apply:
        repo.push(commit, keep.head_ref, keep.head_sha)
        fields = {"body": _body(s), **({"title": s.title} if retitle else {})}
        gh.update_pull(config.upstream_repo, keep.number, **fields)
        gh.comment(config.upstream_repo, keep.number, f"Updated by ndgen to series `{s.content_hash}`.")


def _open(
    gh: GitHub, repo: _Git, config: BotConfig, s: ExportedSeries, commit: str, base_branch: str, prefix: str
) -> Iterator[str]:
    head = f"{config.fork_owner}:{s.branch}"
    past = gh.pulls(config.upstream_repo, "closed", head=head)
    same = next((pr for pr in past if shown_hash(pr) == s.content_hash), None)
    if same is not None:
        # Maintainers merged or declined this exact series: proposing it again would be spam.
        how = "was merged" if same.merged else "was closed upstream"
        yield f"{s.name}: #{same.number} with this series {how}; not reopening (a changed template gets a new PR)"
        return
    if not config.apply:
        yield f"{s.name}: {prefix}push {s.branch} and open a PR"
        return
    repo.push(commit, s.branch, repo.remote_sha(s.branch))
    pr = gh.create_pull(config.upstream_repo, s.title, _body(s), head, base_branch)
    yield f"{s.name}: opened #{pr.number} from {s.branch}"


def _leave_to_maintainers(
    gh: GitHub, config: BotConfig, s: ExportedSeries, pr: PullRequest, foreign: list[str], prefix: str
) -> Iterator[str]:
    tag = f"<!-- {FOREIGN_MARKER}: {pr.head_sha or foreign[0].split()[0]} -->"
    yield (
        f"{s.name}: #{pr.number} has {len(foreign)} commit(s) ndgen did not make; leaving it to its"
        f" maintainers (series {s.content_hash} not pushed)"
    )
    if any(tag in c for c in gh.comments(config.upstream_repo, pr.number)):
        return  # said so already for this head
    yield f"{s.name}: {prefix}comment once on #{pr.number}"
    if config.apply:
        gh.comment(
            config.upstream_repo,
            pr.number,
            f"This branch has commits ndgen did not make, so ndgen no longer pushes to it. Its"
            f" registry now proposes series `{s.content_hash}`; `ndgen upstream export` regenerates it.\n{tag}",
        )


def _close(gh: GitHub, config: BotConfig, pr: PullRequest, why: str) -> None:
    gh.comment(config.upstream_repo, pr.number, why)
    gh.update_pull(config.upstream_repo, pr.number, state="closed")
