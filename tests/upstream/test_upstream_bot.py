"""`ndgen upstream pr` against a local GitHub API server and real git repositories.

Upstream and fork are bare repositories (file://) seeded with the installed
neurodocker package's tree; the API is support/upstream_fakes.FakeGitHub.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from neurodocker_nd.upstream.bot import series_name, shown_hash
from neurodocker_nd.upstream.neurodocker import export
from neurodocker_nd.upstream.series import read_series_dir
from support import run_ndgen
from support.upstream_fakes import FORK, UPSTREAM, FakeGitHub, author, bare_git, bot_world, pr_args, write_registry

TOKEN = "ghp_ndgenTESTtoken0123456789abcdefSECRET"
BOT = "ndgen bot tests <bot@ndgen.invalid>"  # the token owner's identity, as configured
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


@pytest.fixture()
def world(tmp_path):
    with bot_world(tmp_path) as made:
        yield made


def _pr(
    tmp: Path, gh: FakeGitHub, patches: Path, *extra: str, token: str | None = TOKEN, token_file: bool = False
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_TOKEN"}
    env["NDGEN_UPSTREAM_AUTHOR"] = BOT
    args = pr_args(patches, gh.url, f"file://{tmp / 'git'}/{{repo}}.git", *extra)
    if token and token_file:
        (tmp / "token").write_text(token + "\n")
        args += ["--token-file", str(tmp / "token")]
    elif token:
        env["GITHUB_TOKEN"] = token
    return run_ndgen(*args, environ=env, cwd=tmp, timeout=300)


def _branches(gh: FakeGitHub, repo: str) -> dict[str, str]:
    out = bare_git(gh.git_root, repo, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/").stdout
    return dict(line.split() for line in out.splitlines())


def _assert_token_nowhere(tmp: Path, *outputs: subprocess.CompletedProcess) -> None:
    for proc in outputs:
        assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    for path in tmp.rglob("*"):
        if path.is_file() and path.name != "token":  # the user's own --token-file
            assert TOKEN.encode() not in path.read_bytes(), f"token written to {path}"


def test_dry_run_sends_no_writing_request_and_pushes_nothing(world):
    tmp, gh, patches = world
    before = _branches(gh, FORK)
    proc = _pr(tmp, gh, patches)  # --dry-run is the default
    assert proc.returncode == 0, proc.stderr
    assert "jq: [dry-run] would push ndgen/jq and open a PR" in proc.stdout
    assert "tinytool: [dry-run] would push ndgen/tinytool and open a PR" in proc.stdout
    assert gh.requests and not [r for r in gh.requests if r.method in WRITES]
    assert _branches(gh, FORK) == before
    _assert_token_nowhere(tmp, proc)


def test_open_then_idempotent_then_update_then_close_when_landed(world):
    tmp, gh, patches = world
    # 1st run: one PR per series, each from its deterministic branch on the fork.
    first = _pr(tmp, gh, patches, "--apply")
    assert first.returncode == 0, first.stderr
    series = {s.name: s for s in read_series_dir(patches)}
    assert len(series) == 2
    posts = [r for r in gh.requests if r.method == "POST" and r.path.endswith("/pulls")]
    assert len(posts) == 2
    pulls = gh.repos[UPSTREAM].pulls
    assert sorted(p["head"]["ref"] for p in pulls.values()) == sorted(s.branch for s in series.values())
    assert all(p["head"]["repo"]["full_name"] == FORK and p["base"]["ref"] == "master" for p in pulls.values())
    assert {s.branch for s in series.values()} <= set(_branches(gh, FORK))
    # The token reached the API (so it was used) ...
    assert all(r.authorization == f"token {TOKEN}" for r in gh.requests)

    # 2nd run, nothing changed: no PR opened, nothing updated, nothing pushed.
    gh.requests.clear()
    refs = _branches(gh, FORK)
    second = _pr(tmp, gh, patches, "--apply", token_file=True)
    assert second.returncode == 0, second.stderr
    assert not gh.writes(), [(r.method, r.path) for r in gh.writes()]
    assert _branches(gh, FORK) == refs
    assert second.stdout.count("up to date") == 2

    # 3rd run: tinytool gains a version -> its PR (only) is updated in place.
    export(write_registry(tmp, tiny_versions=["1.0", "1.1", "1.2"]), None, patches, author())
    new = {s.name: s for s in read_series_dir(patches)}
    assert new["jq"].content_hash == series["jq"].content_hash
    assert new["tinytool"].content_hash != series["tinytool"].content_hash
    gh.requests.clear()
    third = _pr(tmp, gh, patches, "--apply")
    assert third.returncode == 0, third.stderr
    writes = [(r.method, r.path) for r in gh.writes()]
    tiny_pr = next(n for n, p in pulls.items() if series_name(p["head"]["ref"]) == "tinytool")
    assert writes == [
        ("PATCH", f"/repos/{UPSTREAM}/pulls/{tiny_pr}"),
        ("POST", f"/repos/{UPSTREAM}/issues/{tiny_pr}/comments"),
    ]
    assert len(pulls) == 2  # no second PR for tinytool
    assert shown_hash_of(pulls[tiny_pr]) == new["tinytool"].content_hash
    fork_refs = _branches(gh, FORK)
    # The PR's own head branch now carries the new series, as does the new hash branch.
    assert fork_refs[pulls[tiny_pr]["head"]["ref"]] == fork_refs[new["tinytool"].branch]

    # 4th run: jq's template landed upstream -> our jq PR is closed with a comment.
    gh.repos[UPSTREAM].files["neurodocker/templates/jq.yaml"] = new["jq"].template_text
    gh.requests.clear()
    fourth = _pr(tmp, gh, patches, "--apply")
    assert fourth.returncode == 0, fourth.stderr
    jq_pr = next(n for n, p in pulls.items() if series_name(p["head"]["ref"]) == "jq")
    assert pulls[jq_pr]["state"] == "closed" and pulls[tiny_pr]["state"] == "open"
    assert "landed" in gh.repos[UPSTREAM].comments[jq_pr][-1]
    assert [(r.method, r.body) for r in gh.writes() if r.method == "PATCH"] == [("PATCH", {"state": "closed"})]
    assert not [r for r in gh.writes() if r.path.endswith("/pulls") and r.method == "POST"]

    # 5th run: maintainers close the tinytool PR unmerged -> the same series is not proposed again.
    pulls[tiny_pr]["state"] = "closed"
    gh.requests.clear()
    fifth = _pr(tmp, gh, patches, "--apply")
    assert fifth.returncode == 0, fifth.stderr
    assert not gh.writes() and len(pulls) == 2
    assert f"#{tiny_pr} with this series was closed upstream; not reopening" in fifth.stdout
    assert any(r.query.get("state") == ["closed"] for r in gh.requests)

    _assert_token_nowhere(tmp, first, second, third, fourth, fifth)
    for repo in (UPSTREAM, FORK):
        config = (gh.git_root / f"{repo}.git" / "config").read_text()
        assert TOKEN not in config and "extraheader" not in config.lower()


def shown_hash_of(pull: dict) -> str | None:
    from neurodocker_nd.upstream.github import _pull

    return shown_hash(_pull(pull))


def test_rate_limit_is_one_clear_line_without_token(world):
    tmp, gh, patches = world
    gh.fail_with = (
        403,
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5000", "X-RateLimit-Reset": "1700000000"},
        {"message": f"API rate limit exceeded (token {TOKEN})"},
    )
    proc = _pr(tmp, gh, patches, "--apply")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"ndgen: error: GitHub API rate limit exceeded on GET /repos/{UPSTREAM} (HTTP 403): "
        "limit resets at 2023-11-14 22:13:20 UTC"
    ]
    gh.fail_with = (429, {"Retry-After": "60"}, {"message": "secondary rate limit"})
    proc = _pr(tmp, gh, patches, "--max-wait", "5")  # longer than allowed: no wait, one line
    assert proc.stderr.strip().endswith("(HTTP 429): retry after 60 s")


def test_http_error_is_one_line_and_redacted(world):
    tmp, gh, patches = world
    gh.fail_with = (500, {}, {"message": f"boom {TOKEN}"})
    proc = _pr(tmp, gh, patches)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"ndgen: error: GitHub API GET /repos/{UPSTREAM} failed: HTTP 500: boom ***"]
    _assert_token_nowhere(tmp, proc)


def test_apply_without_token_is_refused(world):
    tmp, gh, patches = world
    proc = _pr(tmp, gh, patches, "--apply", token=None)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ndgen: error: --apply needs a token: set GITHUB_TOKEN or pass --token-file"
    assert not gh.requests


def test_branch_names_parse():
    assert series_name("ndgen/connectome_workbench") == "connectome_workbench"
    assert series_name("ndgen/a-b") == "a-b"
    # Branches of older runs carried the content hash: still recognised as ours.
    assert series_name("ndgen/connectome_workbench-0123456789ab") == "connectome_workbench"
    assert series_name("feature/x") is None and series_name("ndgen/") is None


def test_push_over_http_carries_the_token_only_in_a_header(world):
    """Smart-HTTP git server (git http-backend) that, like GitHub, refuses pushes without it."""
    from support.upstream_fakes import GitHttpServer

    tmp, gh, patches = world
    with GitHttpServer(tmp / "git", TOKEN) as git_http:
        env = {**{k: v for k, v in os.environ.items() if k != "GITHUB_TOKEN"}, "NDGEN_UPSTREAM_AUTHOR": BOT}
        base = pr_args(patches, gh.url, git_http.url_template, "--apply")
        # A wrong token: the push is refused, and the error shows neither token.
        (tmp / "wrong").write_text("ghp_wrongTOKEN999\n")
        bad = run_ndgen(*base, "--token-file", str(tmp / "wrong"), environ=env, cwd=tmp, timeout=300)
        # Each series fails on its own (one line each), the run goes on, exit status 1 at the end.
        assert bad.returncode == 1, bad.stderr
        assert "jq: FAILED: pushing to me/neurodocker failed" in bad.stdout
        assert "tinytool: FAILED: pushing to me/neurodocker failed" in bad.stdout
        assert "ghp_wrongTOKEN999" not in bad.stderr + bad.stdout and not bad.stderr
        assert not gh.repos[UPSTREAM].pulls
        # The right token: pushed over HTTP, then the PRs are opened.
        proc = _pr_http(tmp, base, env)
        assert proc.returncode == 0, proc.stderr
        assert git_http.pushes == 2 and len(gh.repos[UPSTREAM].pulls) == 2
        assert git_http.expected in git_http.auth_seen
    _assert_token_nowhere(tmp, bad, proc)
    for series in read_series_dir(patches):
        assert series.branch in _branches(gh, FORK)


def _pr_http(tmp: Path, base: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_ndgen(*base, environ={**env, "GITHUB_TOKEN": TOKEN}, cwd=tmp, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fork", "justaname"], "ndgen: error: repository 'justaname': expected OWNER/NAME"),
        (["--patches", "nowhere"], "ndgen: error: nowhere: no exported patches (run `ndgen upstream export` first)"),
        (["--token-file", "missing.txt"], "ndgen: error: --token-file missing.txt: No such file or directory"),
        (["--api-url", "http://127.0.0.1:9"], "ndgen: error: GitHub API GET /repos/up/neurodocker: cannot connect: "),
    ],
)
def test_bad_pr_input_is_one_line(world, args, message):
    tmp, gh, patches = world
    base = {"--upstream-repo": UPSTREAM, "--fork": FORK, "--patches": str(patches), "--api-url": gh.url}
    flags = dict(zip(args[::2], args[1::2], strict=True))
    argv = [x for k, v in {**base, **flags}.items() for x in (k, v)]
    env = {
        **{k: v for k, v in os.environ.items() if k != "GITHUB_TOKEN"},
        "GITHUB_TOKEN": TOKEN,
        "NDGEN_UPSTREAM_AUTHOR": BOT,
    }
    proc = run_ndgen("upstream", "pr", *argv, environ=env, cwd=tmp, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert TOKEN not in proc.stderr


def test_git_sees_the_token_only_as_environment_config(tmp_path):
    """The push credential is an env-only config entry: no file, no argv, no remote URL."""
    from neurodocker_nd.upstream.gitcmd import base_env

    env = base_env(TOKEN)
    assert TOKEN not in " ".join(f"{k}={v}" for k, v in env.items() if not k.startswith("GIT_CONFIG_VALUE"))
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True, env=env)
    proc = subprocess.run(
        ["git", "config", "--show-origin", "--get-all", "http.extraheader"],
        cwd=tmp_path / "r",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    origin, _, value = proc.stdout.strip().partition("\t")
    assert origin == "command line:" and value.startswith("Authorization: Basic ")
    assert TOKEN.encode() not in (tmp_path / "r" / ".git" / "config").read_bytes()
    assert "extraheader" not in (tmp_path / "r" / ".git" / "config").read_text().lower()


def test_upstream_group_lists_export_and_pr():
    from click.testing import CliRunner

    from neurodocker_nd.cli import cli

    result = CliRunner().invoke(cli, ["upstream", "--help"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()]
    assert {"export", "pr"} <= set(listed), listed


def test_pr_for_a_template_no_longer_exported_is_closed(world):
    import shutil

    tmp, gh, patches = world
    assert _pr(tmp, gh, patches, "--apply").returncode == 0
    pulls = gh.repos[UPSTREAM].pulls
    tiny_pr = next(n for n, p in pulls.items() if series_name(p["head"]["ref"]) == "tinytool")
    shutil.rmtree(patches / "tinytool")
    gh.requests.clear()
    proc = _pr(tmp, gh, patches, "--apply")
    assert proc.returncode == 0, proc.stderr
    assert f"tinytool: close #{tiny_pr} (no longer exported)" in proc.stdout
    assert pulls[tiny_pr]["state"] == "closed" and "no longer exports" in gh.repos[UPSTREAM].comments[tiny_pr][-1]
    assert [p["state"] for n, p in pulls.items() if n != tiny_pr] == ["open"]
