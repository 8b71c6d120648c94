"""Fakes for the upstream tests: a GitHub REST server and git repositories.

GitHub cannot be reached here, so a local HTTP server (127.0.0.1 only, started
and stopped by the test) speaks the documented shapes of the endpoints the bot
uses, rejects what GitHub's REST docs say GitHub rejects (422: invalid `state`,
a second open PR for one head/base, a PR whose head has no commits over the
base, a head branch that does not exist; a merged PR cannot be reopened), models
merged PRs (`merged_at`) and deleted forks (`head.repo: null`), and records every
request. Git is real: bare repositories over file://.
(No tests in this module; it is imported by test_upstream_*.py.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from support import REPO

UPSTREAM, FORK = "up/neurodocker", "me/neurodocker"  # the bot tests' repositories (OWNER/NAME)


def bare_git(git_root: Path, repo: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`git ARGS` on the bare repository `git_root/<repo>.git`, output captured as text."""
    return subprocess.run(
        ["git", "--git-dir", str(git_root / f"{repo}.git"), *args], capture_output=True, text=True, check=check
    )


def pr_args(patches: Path, api_url: str, git_url_template: str, *extra: str) -> list[str]:
    """`ndgen upstream pr` from UPSTREAM's fork FORK, against the fakes."""
    return [
        "upstream",
        "pr",
        "--upstream-repo",
        UPSTREAM,
        "--fork",
        FORK,
        "--patches",
        str(patches),
        "--api-url",
        api_url,
        "--git-url-template",
        git_url_template,
        *extra,
    ]


@attrs.define
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: Any


@attrs.define
class FakeRepo:
    default_branch: str = "master"
    pulls: dict[int, dict] = attrs.Factory(dict)
    files: dict[str, str] = attrs.Factory(dict)  # path on the default branch -> text
    comments: dict[int, list[str]] = attrs.Factory(dict)


class _LocalServer:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port), started/stopped as a context."""

    def _start_server(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError


class FakeGitHub(_LocalServer):
    """State + request log; `git_root/<owner>/<name>.git` are the bare repositories."""

    def __init__(self, git_root: Path) -> None:
        self.git_root = git_root
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Request] = []
        self.next_number = 1
        self.fail_with: tuple[int, dict[str, str], dict] | None = None  # (status, headers, body)
        self.fail_times: int | None = None  # fail only the next N requests (None: every request)
        self.lock = threading.Lock()
        self._start_server()

    @property
    def url(self) -> str:
        return self.base_url

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]

    def branch_exists(self, repo: str, branch: str) -> bool:
        return self._sha(repo, f"refs/heads/{branch}") is not None

    # ---- HTTP
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with fake.lock:
                    fake.requests.append(
                        Request(
                            self.command, parts.path, parse_qs(parts.query), self.headers.get("Authorization"), body
                        )
                    )
                    if fake.fail_with is not None and fake.fail_times != 0:
                        status, headers, payload = fake.fail_with
                        if fake.fail_times is not None:
                            fake.fail_times -= 1
                        return self._reply(status, payload, headers)
                    status, payload = fake.route(self.command, parts.path, parse_qs(parts.query), body)
                self._reply(status, payload)

            def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        return Handler

    def _sha(self, repo: str, ref: str) -> str | None:
        proc = bare_git(self.git_root, repo, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def _ahead(self, base_repo: str, base: str, head_repo: str, branch: str) -> int:
        """Commits on head_repo's branch that base_repo's base branch lacks (GitHub's compare)."""
        head = str(self.git_root / f"{head_repo}.git")
        bare_git(self.git_root, base_repo, "fetch", "-q", head, f"+refs/heads/{branch}:refs/fake/compare")
        out = bare_git(
            self.git_root, base_repo, "rev-list", "--count", "refs/fake/compare", "--not", f"refs/heads/{base}"
        )
        return int(out.stdout.strip())

    def _view(self, pr: dict) -> dict:
        """A PR as GitHub returns it: head.sha is the branch's current commit."""
        view = json.loads(json.dumps(pr))
        if view["head"]["repo"] is not None:
            view["head"]["sha"] = (
                self._sha(view["head"]["repo"]["full_name"], f"refs/heads/{view['head']['ref']}") or ""
            )
        return view

    @staticmethod
    def _invalid(field: str, code: str = "invalid", message: str | None = None) -> tuple[int, dict]:
        err = {"resource": "PullRequest", "field": field, "code": code}
        if message:
            err = {"resource": "PullRequest", "code": "custom", "message": message}
        return 422, {
            "message": "Validation Failed",
            "errors": [err],
            "documentation_url": "https://docs.github.com/rest/pulls/pulls",
        }

    def route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        seg = path.strip("/").split("/")
        if len(seg) < 3 or seg[0] != "repos":
            return 404, {"message": "Not Found"}
        full = f"{seg[1]}/{seg[2]}"
        repo = self.repos.get(full)
        if repo is None:
            return 404, {"message": "Not Found"}
        rest = seg[3:]
        if not rest and method == "GET":
            return 200, {"full_name": full, "default_branch": repo.default_branch}
        if rest == ["pulls"] and method == "GET":
            state = query.get("state", ["open"])[0]
            if state not in ("open", "closed", "all"):
                return self._invalid("state")
            per_page, page = int(query.get("per_page", ["30"])[0]), int(query.get("page", ["1"])[0])
            pulls = [p for _, p in sorted(repo.pulls.items()) if state == "all" or p["state"] == state]
            if "head" in query:  # documented: exact `user:ref-name`
                pulls = [p for p in pulls if p["head"]["label"] == query["head"][0]]
            return 200, [self._view(p) for p in pulls[(page - 1) * per_page : page * per_page]]
        if rest == ["pulls"] and method == "POST":
            owner, _, branch = body["head"].partition(":")
            head_repo = f"{owner}/{seg[2]}"
            if not self.branch_exists(head_repo, branch):
                return self._invalid("head")
            if any(
                p["state"] == "open" and p["head"]["label"] == body["head"] and p["base"]["ref"] == body["base"]
                for p in repo.pulls.values()
            ):
                return self._invalid("", message=f"A pull request already exists for {body['head']}.")
            if self._ahead(full, body["base"], head_repo, branch) == 0:
                return self._invalid("", message=f"No commits between {body['base']} and {body['head']}")
            number = self.next_number
            self.next_number += 1
            repo.pulls[number] = {
                "number": number,
                "state": "open",
                "title": body["title"],
                "body": body.get("body", ""),
                "html_url": f"https://github.com/{full}/pull/{number}",
                "merged_at": None,
                "maintainer_can_modify": bool(body.get("maintainer_can_modify", False)),
                "head": {"ref": branch, "label": body["head"], "repo": {"full_name": head_repo}},
                "base": {"ref": body["base"]},
            }
            return 201, self._view(repo.pulls[number])
        if len(rest) == 2 and rest[0] == "pulls" and method == "PATCH":
            pr = repo.pulls.get(int(rest[1]))
            if pr is None:
                return 404, {"message": "Not Found"}
            if "state" in body and body["state"] not in ("open", "closed"):
                return self._invalid("state")
            if body.get("state") == "open" and pr.get("merged_at"):
                return self._invalid("state", message="state cannot be changed. The pull request has been merged.")
            for key in ("title", "body", "state"):
                if key in body:
                    pr[key] = body[key]
            return 200, self._view(pr)
        if len(rest) == 3 and rest[0] == "issues" and rest[2] == "comments" and method == "POST":
            repo.comments.setdefault(int(rest[1]), []).append(body["body"])
            return 201, {"id": 1, "body": body["body"]}
        if len(rest) == 3 and rest[0] == "issues" and rest[2] == "comments" and method == "GET":
            per_page, page = int(query.get("per_page", ["30"])[0]), int(query.get("page", ["1"])[0])
            bodies = repo.comments.get(int(rest[1]), [])[(page - 1) * per_page : page * per_page]
            return 200, [{"id": i, "body": b} for i, b in enumerate(bodies, 1)]
        if rest and rest[0] == "contents" and method == "GET":
            fpath = "/".join(rest[1:])
            ref = query.get("ref", [repo.default_branch])[0]
            text = repo.files.get(fpath) if ref == repo.default_branch else None
            if text is None:
                return 404, {"message": "Not Found"}
            return 200, {
                "type": "file",
                "encoding": "base64",
                "path": fpath,
                "content": base64.b64encode(text.encode()).decode(),
            }
        return 404, {"message": "Not Found"}


def merge_pull(fake: FakeGitHub, repo: str, number: int) -> None:
    """What the merge button does: the head lands on the base branch, the PR is closed and merged."""
    pr = fake.repos[repo].pulls[number]
    head = str(fake.git_root / f"{pr['head']['repo']['full_name']}.git")
    bare_git(
        fake.git_root, repo, "fetch", "-q", head, f"+refs/heads/{pr['head']['ref']}:refs/heads/{pr['base']['ref']}"
    )
    pr.update(state="closed", merged_at="2026-01-01T00:00:00Z")


def commit_to(
    git_root: Path,
    repo: str,
    branch: str,
    edits: dict[str, tuple[str, str]],
    who: str = "A Maintainer",
    email: str = "maintainer@example.org",
) -> str:
    """Commit `edits` (path: (old, new)) on `branch` of the bare repo as someone else; return the sha."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "wt"
        subprocess.run(["git", "clone", "-q", "-b", branch, str(git_root / f"{repo}.git"), str(wt)], check=True)
        for rel, (old, new) in edits.items():
            text = (wt / rel).read_text()
            assert old in text, (rel, old)
            (wt / rel).write_text(text.replace(old, new, 1))
        ident = ["-c", f"user.name={who}", "-c", f"user.email={email}"]
        subprocess.run(["git", *ident, "commit", "-qam", "maintainer edit"], cwd=wt, check=True)
        subprocess.run(["git", "push", "-q", "origin", f"HEAD:refs/heads/{branch}"], cwd=wt, check=True)
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=wt, check=True, capture_output=True, text=True
        ).stdout.strip()


@contextlib.contextmanager
def bot_world(tmp_path: Path) -> Iterator[tuple[Path, FakeGitHub, Path]]:
    """(tmp_path, a FakeGitHub serving UPSTREAM, the series write_registry exports): UPSTREAM and
    FORK are bare repositories under tmp_path/git seeded with the installed neurodocker tree."""
    from neurodocker_nd.upstream.neurodocker import export

    git_root = tmp_path / "git"
    make_upstream_and_fork(git_root, UPSTREAM, FORK)
    patches = tmp_path / "patches"
    export(write_registry(tmp_path), None, patches, author())
    with FakeGitHub(git_root) as gh:
        gh.repos[UPSTREAM] = FakeRepo()
        yield tmp_path, gh, patches


def make_upstream_and_fork(root: Path, upstream: str, fork: str) -> None:
    """Bare repos: `upstream` seeded with the installed neurodocker tree, `fork` a clone of it."""
    from neurodocker_nd.upstream.tree import prepare

    work = root / "_seed"
    base = prepare(None, work)
    up, fk = root / f"{upstream}.git", root / f"{fork}.git"
    up.parent.mkdir(parents=True, exist_ok=True)
    fk.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(base.path), str(up)], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(up), str(fk)], check=True)
    shutil.rmtree(work)


# ---------------------------------------------------------------- registry fixtures

# Strings that exist only in ndgen's meta.yaml: none may reach an exported file.
META_SENTINELS = ("ndgen-sentinel-test-cmd", "ndgen-sentinel-apt-pkg", "ndgen-sentinel-command")

TINYTOOL = """\
---
# A tiny tool for tests.
name: tinytool
url: https://example.org/tinytool
binaries:
    arguments:
        required:
        -   version
        optional:
            install_path: /opt/tinytool-{{ self.version }}
    urls:
        {versions}
    dependencies:
        apt:
        -   ca-certificates
        -   curl
        yum:
        -   curl
    env:
        PATH: '{{ self.install_path }}:$PATH'
    instructions: |
        {{ self.install_dependencies() }}
        mkdir -p {{ self.install_path }}
        curl -fsSL -o {{ self.install_path }}/tinytool {{ self.urls[self.version] }}
        chmod +x {{ self.install_path }}/tinytool
"""


# Commit identity for exports in tests (.invalid: no GitHub account can own it).
AUTHOR_TEXT = "ndgen tests <tests@ndgen.invalid>"
JQ_NOTES = "ndgen-notes for the upstream tests: why jq 1.8.0 is proposed."


def author():
    from neurodocker_nd.upstream.gitcmd import parse_identity

    return parse_identity(AUTHOR_TEXT)


def _meta(name: str, status: str, system: bool = False, notes: str | None = None) -> str:
    lines = [
        f"name: {name}",
        f'description: "{name} for the upstream tests"',
        f"homepage: https://example.org/{name}",
        "commands: [ndgen-sentinel-command]",
        'test: "ndgen-sentinel-test-cmd --help"',
    ]
    if system:
        lines += ["system:", "  apt: [ndgen-sentinel-apt-pkg]"]
    lines += ["upstream:", f"  status: {status}"]
    if notes:
        lines.append(f"  notes: {notes!r}")
    return "\n".join(lines) + "\n"


def tinytool_template(versions: Sequence[str]) -> str:
    urls = "\n        ".join(f"'{v}': https://example.org/tinytool/{v}/tinytool" for v in versions)
    return TINYTOOL.replace("{versions}", urls)


def write_registry(root: Path, tiny_versions: Sequence[str] = ("1.0", "1.1"), real: tuple[str, ...] = ()) -> Path:
    """A registry: jq (update: one more version), tinytool (new), two ndgen-only entries."""
    from neurodocker_nd.upstream.tree import installed_package_dir

    reg = root / "registry"
    shutil.rmtree(reg, ignore_errors=True)
    jq = (installed_package_dir() / "templates" / "jq.yaml").read_text()
    jq = jq.replace(
        "    urls:\n",
        "    urls:\n        1.8.0: https://github.com/jqlang/jq/releases/download/jq-1.8.0/jq-linux-amd64\n",
        1,
    )
    entries = {
        "jq": (jq, _meta("jq", "update", notes=JQ_NOTES)),
        "tinytool": (tinytool_template(tiny_versions), _meta("tinytool", "new")),
        "privatetool": (
            tinytool_template(["9.9"]).replace("tinytool", "privatetool"),
            _meta("privatetool", "ndgen-only"),
        ),
        "sysonly": (None, _meta("sysonly", "ndgen-only", system=True)),
    }
    repo_registry = REPO / "registry"
    for name in real:  # copies of ndgen's own entries (template + meta)
        entries[name] = (
            (repo_registry / name / "template.yaml").read_text(),
            (repo_registry / name / "meta.yaml").read_text(),
        )
    for name, (template, meta) in entries.items():
        (reg / name).mkdir(parents=True)
        if template is not None:
            (reg / name / "template.yaml").write_text(template)
        (reg / name / "meta.yaml").write_text(meta)
    return reg


# ---------------------------------------------------------------- git smart HTTP


class GitHttpServer(_LocalServer):
    """`git http-backend` behind a local HTTP server that demands the token for pushes.

    Like GitHub over HTTPS: fetches are anonymous, pushes need
    `Authorization: Basic base64(x-access-token:TOKEN)`; anything else gets 401.
    Records every Authorization header it sees.
    """

    def __init__(self, git_root: Path, token: str) -> None:
        self.git_root = git_root
        self.expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
        self.auth_seen: list[str | None] = []
        self.pushes = 0
        self._start_server()

    @property
    def url_template(self) -> str:
        return self.base_url + "/{repo}.git"

    def _handler(self):
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                auth = self.headers.get("Authorization")
                srv.auth_seen.append(auth)
                push = "git-receive-pack" in parts.path or "service=git-receive-pack" in parts.query
                if push and auth != srv.expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                env = {
                    "PATH": "/usr/bin:/bin",
                    "GIT_PROJECT_ROOT": str(srv.git_root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": parts.path,
                    "QUERY_STRING": parts.query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "HOME": str(srv.git_root),
                }
                if push:
                    env["REMOTE_USER"] = "x-access-token"  # http-backend allows receive-pack then
                    if self.command == "POST":
                        srv.pushes += 1
                proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode().split("\r\n"):
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.split()[0])
                    elif key:
                        headers.append((key, value.strip()))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

        return Handler


# A stand-in for a full upstream checkout: the two files upstream's template PRs touch
# besides the template, with the structure upstream uses (written here, not copied).
EXAMPLES_RST = """Examples
========

.. INSERT LIST START (will be updated automatically in ci)

- `afni <https://afni.nimh.nih.gov>`_
- `jq <https://jqlang.github.io/jq/>`_
- `vnc <https://www.realvnc.com/>`_

.. INSERT LIST END
"""

CREATE_WORKFLOWS = """from pathlib import Path

import yaml

template_folder = Path(__file__).parents[2].joinpath("neurodocker", "templates")


def software():
    return {
        "afni": {"methods": ["binaries", "source"]},
        "jq": {
            "methods": ["binaries", "source"],
        },
        "vnc": {"methods": []},
        "miniconda": {},
    }


def get_versions_from_neurodocker_template(software):
    with open(template_folder.joinpath(software).with_suffix(".yaml")) as f:
        return list(yaml.safe_load(f)["binaries"]["urls"].keys())
"""


def full_checkout(tmp_path: Path) -> Path:
    """The installed neurodocker tree plus upstream's docs list and CI matrix, as a git checkout."""
    from neurodocker_nd.upstream.tree import prepare

    checkout = tmp_path / "neurodocker"
    base = prepare(None, tmp_path / "seed")
    subprocess.run(["git", "clone", "-q", str(base.path), str(checkout)], check=True)
    (checkout / "docs" / "user_guide").mkdir(parents=True)
    (checkout / "docs" / "user_guide" / "examples.rst").write_text(EXAMPLES_RST)
    (checkout / ".github" / "workflows").mkdir(parents=True)
    (checkout / ".github" / "workflows" / "create_workflows.py").write_text(CREATE_WORKFLOWS)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=checkout, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "docs"], cwd=checkout, check=True)
    return checkout
