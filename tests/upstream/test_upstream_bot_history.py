"""`ndgen upstream pr` against real history: failing series, maintainers' commits, merged PRs,
deleted forks, rate limits, and a fake GitHub that rejects what GitHub rejects (issue 11)."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from pathlib import Path

import pytest

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.upstream.github import GitHub, GitHubError
from neurodocker_nd.upstream.neurodocker import export
from neurodocker_nd.upstream.series import read_series_dir
from support import run_ndgen
from support.upstream_fakes import (
    FORK,
    UPSTREAM,
    FakeGitHub,
    author,
    bare_git,
    bot_world,
    commit_to,
    full_checkout,
    merge_pull,
    pr_args,
    write_registry,
)

TOKEN = "ghp_ndgenHISTORYtoken0123456789abcdef"
BOT = "ndgen bot tests <bot@ndgen.invalid>"


@pytest.fixture()
def world(tmp_path):
    with bot_world(tmp_path) as made:
        yield made


def _pr(
    tmp: Path, gh: FakeGitHub, patches: Path, *extra: str, env_extra: dict | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "NDGEN_UPSTREAM_AUTHOR")}
    env.update(GITHUB_TOKEN=TOKEN, NDGEN_UPSTREAM_AUTHOR=BOT)
    env.update(env_extra or {})
    args = pr_args(patches, gh.url, f"file://{tmp / 'git'}/{{repo}}.git", *extra)
    return run_ndgen(*args, environ=env, cwd=tmp, timeout=300)


def _sha(gh: FakeGitHub, repo: str, branch: str) -> str:
    return bare_git(gh.git_root, repo, "rev-parse", f"refs/heads/{branch}").stdout.strip()


def _pull_for(gh: FakeGitHub, name: str) -> tuple[int, dict]:
    return next((n, p) for n, p in gh.repos[UPSTREAM].pulls.items() if p["head"]["ref"] == f"ndgen/{name}")


def _stale_pr(gh: FakeGitHub, number: int, name: str, repo: dict | None) -> None:
    gh.repos[UPSTREAM].pulls[number] = {
        "number": number,
        "state": "open",
        "title": f"Add {name} template",
        "merged_at": None,
        "body": f"<!-- ndgen-series: {name} 0123456789ab -->",
        "html_url": "",
        "head": {"ref": f"ndgen/{name}-0123456789ab", "label": f"me:ndgen/{name}-0123456789ab", "repo": repo},
        "base": {"ref": "master"},
    }


# ---------------------------------------------------------------- 11.2: one failing series


def test_a_series_that_no_longer_applies_does_not_stop_the_run(world):
    tmp, gh, patches = world
    _stale_pr(gh, 90, "oldtool", {"full_name": FORK})
    # Upstream edits jq exactly where the series inserts 1.8.0: the series no longer applies.
    commit_to(
        gh.git_root,
        UPSTREAM,
        "master",
        {
            "neurodocker/templates/jq.yaml": (
                "    urls:\n",
                "    urls:\n        9.9.9: https://example.invalid/jq-9.9.9\n",
            )
        },
    )
    summary = tmp / "summary.md"
    proc = _pr(tmp, gh, patches, "--apply", "--summary", str(summary))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert any(line.startswith("jq: FAILED: jq: applying the series to up/neurodocker failed") for line in out)
    assert any(line.startswith("tinytool: opened #") for line in out)  # the next series still ran
    assert "oldtool: close #90 (no longer exported)" in out  # stale PRs still closed
    assert gh.repos[UPSTREAM].pulls[90]["state"] == "closed"
    assert out[-1] == "2 series, applied; 1 failed: jq"
    report = summary.read_text()
    assert "| `jq` | failed: " in report and "| `tinytool` | ok |" in report and "| `oldtool` | ok |" in report


# ---------------------------------------------------------------- 11.5: maintainers


def test_stable_branches_configured_identity_and_maintainers_commits_are_left_alone(world):
    tmp, gh, patches = world
    assert _pr(tmp, gh, patches, "--apply").returncode == 0
    # One stable branch per template, no hash in the name; the bot commits as configured.
    number, pull = _pull_for(gh, "tinytool")
    log = bare_git(gh.git_root, FORK, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "refs/heads/ndgen/tinytool")
    log = log.stdout.strip()
    assert log == f"ndgen tests <tests@ndgen.invalid>|{BOT}"
    assert "users.noreply.github.com" not in log

    # A maintainer pushes a fix to our branch (maintainer_can_modify), then the registry changes.
    theirs = commit_to(
        gh.git_root, FORK, "ndgen/tinytool", {"neurodocker/templates/tinytool.yaml": ("chmod +x", "chmod 0755")}
    )
    export(write_registry(tmp, tiny_versions=["1.0", "1.1", "1.2"]), None, patches, author())
    gh.requests.clear()
    first = _pr(tmp, gh, patches, "--apply")
    assert first.returncode == 0, first.stderr
    assert f"tinytool: #{number} has 1 commit(s) ndgen did not make; leaving it to its maintainers" in first.stdout
    assert _sha(gh, FORK, "ndgen/tinytool") == theirs  # not pushed over
    assert [(r.method, r.path) for r in gh.writes()] == [("POST", f"/repos/{UPSTREAM}/issues/{number}/comments")]
    # Said once: the next run neither pushes nor comments again.
    gh.requests.clear()
    again = _pr(tmp, gh, patches, "--apply")
    assert again.returncode == 0 and not gh.writes()
    assert len(gh.repos[UPSTREAM].comments[number]) == 1


def test_a_retitled_pr_keeps_its_title_and_each_change_is_commented_once(world):
    tmp, gh, patches = world
    assert _pr(tmp, gh, patches, "--apply").returncode == 0
    number, pull = _pull_for(gh, "tinytool")
    pull["title"] = "tinytool: a maintainer's title"
    gh.requests.clear()
    assert _pr(tmp, gh, patches, "--apply").returncode == 0
    assert not gh.writes()  # a retitle alone is not reset
    before = _sha(gh, FORK, "ndgen/tinytool")
    export(write_registry(tmp, tiny_versions=["1.0", "1.1", "1.2"]), None, patches, author())
    gh.requests.clear()
    proc = _pr(tmp, gh, patches, "--apply")
    assert proc.returncode == 0, proc.stderr
    patch = [r for r in gh.writes() if r.method == "PATCH"]
    assert len(patch) == 1 and "title" not in patch[0].body and "ndgen-series: tinytool" in patch[0].body["body"]
    assert pull["title"] == "tinytool: a maintainer's title"
    assert _sha(gh, FORK, "ndgen/tinytool") != before and len(gh.repos[UPSTREAM].comments[number]) == 1
    # No new branch: the PR's own stable branch moved.
    branches = bare_git(
        gh.git_root, FORK, "for-each-ref", "--format=%(refname:short)", "refs/heads/ndgen/"
    ).stdout.split()
    assert sorted(branches) == ["ndgen/jq", "ndgen/tinytool"]
    gh.requests.clear()
    assert _pr(tmp, gh, patches, "--apply").returncode == 0 and not gh.writes()


def test_push_is_leased_on_the_sha_it_expects(world, tmp_path):
    from neurodocker_nd.upstream.bot import BotConfig, _Git

    tmp, gh, patches = world
    config = BotConfig(UPSTREAM, FORK, gh.url, f"file://{tmp / 'git'}/{{repo}}.git", True)
    repo = _Git(tmp_path / "scratch", config, None, "master")
    jq, tiny = read_series_dir(patches)
    commit = repo.apply(jq)
    repo.push(commit, "ndgen/jq", "")  # absent, as expected
    other_commit = repo.apply(tiny)
    with pytest.raises(NdgenError, match="pushing to me/neurodocker failed: .*stale info"):
        repo.push(other_commit, "ndgen/jq", "")  # it exists now: the lease refuses
    other = commit_to(gh.git_root, FORK, "ndgen/jq", {"neurodocker/templates/jq.yaml": ("chmod +x", "chmod 0755")})
    with pytest.raises(NdgenError, match="stale info"):
        repo.push(other_commit, "ndgen/jq", commit)  # someone pushed since: refused
    assert _sha(gh, FORK, "ndgen/jq") == other


def test_apply_needs_an_identity(world):
    tmp, gh, patches = world
    env = {
        "NDGEN_UPSTREAM_AUTHOR": "",
        "HOME": str(tmp),
        "GIT_CONFIG_GLOBAL": str(tmp / "none"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    proc = _pr(tmp, gh, patches, "--apply", env_extra=env)
    assert proc.returncode == 2 and proc.stderr.startswith("ndgen: error: no commit identity: pass --author")
    assert not gh.writes()


# ---------------------------------------------------------------- 11.6: strict fake, merged, deleted fork, rate limits


def test_fake_answers_422_where_github_does(world):
    tmp, gh, patches = world
    client = GitHub(gh.url, TOKEN)
    with pytest.raises(GitHubError, match=r"HTTP 422: Validation Failed"):
        client.pulls(UPSTREAM, "bogus")
    # A head branch with no commits over the base: 422 "No commits between".
    bare_git(gh.git_root, FORK, "branch", "same", "master")
    with pytest.raises(GitHubError, match="No commits between master and me:same"):
        client.create_pull(UPSTREAM, "t", "b", "me:same", "master")
    with pytest.raises(GitHubError, match=r"HTTP 422"):
        client.create_pull(UPSTREAM, "t", "b", "me:no-such-branch", "master")
    # A second open PR for one head: 422 "A pull request already exists".
    assert _pr(tmp, gh, patches, "--apply").returncode == 0
    with pytest.raises(GitHubError, match="A pull request already exists for me:ndgen/jq"):
        client.create_pull(UPSTREAM, "t", "b", "me:ndgen/jq", "master")
    number, _ = _pull_for(gh, "jq")
    with pytest.raises(GitHubError, match=r"HTTP 422"):
        client.update_pull(UPSTREAM, number, state="merged")
    merge_pull(gh, UPSTREAM, number)
    with pytest.raises(GitHubError, match="has been merged"):
        client.update_pull(UPSTREAM, number, state="open")


def test_a_merged_series_is_not_proposed_again_and_past_prs_are_found_by_head(world):
    tmp, gh, patches = world
    assert _pr(tmp, gh, patches, "--apply").returncode == 0
    number, _ = _pull_for(gh, "tinytool")
    merge_pull(gh, UPSTREAM, number)
    # Upstream's contents API still shows the old file here (the fake serves `files`), so the
    # bot must recognise the merged PR itself.
    gh.requests.clear()
    proc = _pr(tmp, gh, patches, "--apply")
    assert proc.returncode == 0, proc.stderr
    assert f"tinytool: #{number} with this series was merged; not reopening" in proc.stdout
    assert not gh.writes()
    closed = [r for r in gh.requests if r.query.get("state") == ["closed"]]
    assert closed and all(r.query.get("head") == ["me:ndgen/tinytool"] for r in closed)


def test_a_pr_whose_fork_was_deleted_is_replaced(world):
    tmp, gh, patches = world
    _stale_pr(gh, 50, "tinytool", None)  # head.repo null: GitHub's shape once the fork is gone
    proc = _pr(tmp, gh, patches, "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tinytool: close #50 (its head repository was deleted) and open a new one" in proc.stdout
    assert gh.repos[UPSTREAM].pulls[50]["state"] == "closed"
    assert any(p["head"]["ref"] == "ndgen/tinytool" and p["state"] == "open" for p in gh.repos[UPSTREAM].pulls.values())


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "1"},  # secondary limit
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "{soon}"},  # primary limit
    ],
)
def test_rate_limits_are_waited_out_and_retried(world, headers):
    tmp, gh, patches = world
    headers = {k: v.format(soon=int(time.time()) + 1) for k, v in headers.items()}
    gh.fail_with, gh.fail_times = (403, headers, {"message": "rate limited"}), 2
    proc = _pr(tmp, gh, patches)
    assert proc.returncode == 0, proc.stderr
    assert [r.path for r in gh.requests[:3]] == [f"/repos/{UPSTREAM}"] * 3  # 2 refused + 1 answered


def test_rate_limit_retries_are_bounded(world):
    tmp, gh, patches = world
    gh.fail_with = (429, {"Retry-After": "1"}, {"message": "secondary rate limit"})  # for ever
    proc = _pr(tmp, gh, patches)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"ndgen: error: GitHub API rate limit exceeded on GET /repos/{UPSTREAM} (HTTP 429): retry after 1 s"
    )
    assert len(gh.requests) == 3


# ---------------------------------------------------------------- 11.8: series never conflict with each other


def test_new_template_series_apply_alone_and_in_every_order(tmp_path):
    """Each new template appends to upstream's docs list and CI matrix at the same spot:
    every pair applies in both orders (the second after the first landed)."""
    from neurodocker_nd.upstream.bot import apply_series
    from neurodocker_nd.upstream.gitcmd import git

    checkout = full_checkout(tmp_path)
    out = tmp_path / "out"
    export(write_registry(tmp_path, real=("niimath", "robex")), checkout, out, author())
    new = [s for s in read_series_dir(out) if len(s.patches) == 2]  # template + docs/CI registration
    assert sorted(s.name for s in new) == ["niimath", "robex", "tinytool"]
    ident = author()
    for first, second in itertools.permutations(new, 2):
        repo = tmp_path / f"apply-{first.name}-{second.name}"
        subprocess.run(["git", "clone", "-q", str(checkout), str(repo)], check=True)
        landed = apply_series(repo, "origin/master", first.patches, first.name, ident, "first")
        apply_series(repo, landed, second.patches, second.name, ident, "second")  # raises if it conflicts
        docs = (repo / "docs" / "user_guide" / "examples.rst").read_text()
        matrix = (repo / ".github" / "workflows" / "create_workflows.py").read_text()
        for s in (first, second):
            assert f"- `{s.name} <" in docs and f'        "{s.name}": ' in matrix
        assert git("status", "--porcelain", cwd=repo) == ""
