"""The few GitHub REST calls the bot makes, through ghapi, with one-line errors.

Endpoints (documented at docs.github.com/rest):

    GET   /repos/{owner}/{repo}                         default branch
    GET   /repos/{owner}/{repo}/pulls?state=open        our open PRs (paginated)
    GET   /repos/{owner}/{repo}/pulls?state=closed&head=OWNER:BRANCH  one branch's past PRs
    GET   /repos/{owner}/{repo}/issues/{number}/comments  did we comment already?
    POST  /repos/{owner}/{repo}/pulls                   open a PR
    PATCH /repos/{owner}/{repo}/pulls/{number}          update / close a PR
    POST  /repos/{owner}/{repo}/issues/{number}/comments
    GET   /repos/{owner}/{repo}/contents/{path}?ref=    has the template landed?

Rate limits are waited out, bounded: a primary limit (403/429 with
``X-RateLimit-Remaining: 0``) until ``X-RateLimit-Reset``, a secondary one
(``Retry-After``) that many seconds, as GitHub's REST docs ask — at most
MAX_ATTEMPTS tries and never a wait longer than ``max_wait``; then one line
saying when to retry. Other errors become one line naming the request. The token
is redacted from every message and never logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import attrs

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.upstream.gitcmd import redact

PER_PAGE = 100
MAX_ATTEMPTS = 3
STATES = ("open", "closed", "all")


class GitHubError(NdgenError):
    """A GitHub API request failed."""


@attrs.frozen
class PullRequest:
    number: int
    title: str
    body: str
    head_ref: str
    head_repo: str | None  # owner/name of the head branch's repository; None: it was deleted
    url: str
    head_label: str = ""  # OWNER:BRANCH
    head_sha: str = ""
    state: str = "open"
    merged: bool = False


def split_repo(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise NdgenError(f"repository {repo!r}: expected OWNER/NAME")
    return owner, name


class GitHub:
    """A thin typed facade over ghapi's generated endpoints."""

    def __init__(self, api_url: str, token: str | None, max_wait: float = 120.0) -> None:
        from ghapi.core import GhApi  # imported only by `ndgen upstream pr`

        self._token = token
        self._max_wait = max_wait
        self._api = GhApi(
            token=token,
            authenticate=bool(token),
            gh_host=api_url.rstrip("/"),
            sync=True,
            timeout=30.0,
        )

    # ---- reads
    def default_branch(self, repo: str) -> str:
        data = self._request(f"GET /repos/{repo}", repo, self._api.repos.get)
        return str(data["default_branch"])

    def pulls(self, repo: str, state: str = "open", head: str | None = None) -> list[PullRequest]:
        """PRs in `state`; `head` (OWNER:BRANCH) filters server-side to one branch's PRs."""
        what = f"GET /repos/{repo}/pulls?state={state}" + (f"&head={head}" if head else "")
        extra = {"head": head} if head else {}
        return [_pull(p) for p in self._pages(what, repo, self._api.pulls.list, state=state, **extra)]

    def file_text(self, repo: str, path: str, ref: str) -> str | None:
        """The file's text at `ref`, or None when it does not exist there."""
        data = self._request(
            f"GET /repos/{repo}/contents/{path}", repo, self._api.repos.get_content, path=path, ref=ref, missing_ok=True
        )
        if data is None or isinstance(data, list) or data.get("type", "file") != "file":
            return None
        return base64.b64decode(data.get("content", "")).decode("utf-8", errors="replace")

    def comments(self, repo: str, number: int) -> list[str]:
        what = f"GET /repos/{repo}/issues/{number}/comments"
        return [
            str(c.get("body") or "")
            for c in self._pages(what, repo, self._api.issues.list_comments, issue_number=number)
        ]

    # ---- writes
    def create_pull(self, repo: str, title: str, body: str, head: str, base: str) -> PullRequest:
        data = self._request(
            f"POST /repos/{repo}/pulls",
            repo,
            self._api.pulls.create,
            title=title,
            body=body,
            head=head,
            base=base,
            maintainer_can_modify=True,
        )
        return _pull(data)

    def update_pull(self, repo: str, number: int, **fields: str) -> None:
        what = f"PATCH /repos/{repo}/pulls/{number}"
        self._request(what, repo, self._api.pulls.update, pull_number=number, **fields)

    def comment(self, repo: str, number: int, body: str) -> None:
        what = f"POST /repos/{repo}/issues/{number}/comments"
        self._request(what, repo, self._api.issues.create_comment, issue_number=number, body=body)

    # ---- one endpoint of one repository
    def _request(self, what: str, repo: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """`fn` on `repo` (OWNER/NAME, checked before any request); `what` names it in errors."""
        owner, name = split_repo(repo)
        return self._call(what, fn, owner=owner, repo=name, **kwargs)

    def _pages(self, what: str, repo: str, fn: Callable[..., Any], **kwargs: Any) -> list[Any]:
        """Every item of a paginated list: PER_PAGE a request, until a page comes back short."""
        found: list[Any] = []
        page = 1
        while True:
            batch = self._request(what, repo, fn, per_page=PER_PAGE, page=page, **kwargs)
            found.extend(batch)
            if len(batch) < PER_PAGE:
                return found
            page += 1

    # ---- error translation
    def _call(self, what: str, fn: Callable[..., Any], *, missing_ok: bool = False, **kwargs: Any) -> Any:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self._call_once(what, fn, missing_ok=missing_ok, **kwargs)
            except _RateLimited as limited:
                wait = limited.wait
                if attempt == MAX_ATTEMPTS or wait is None or wait > self._max_wait:
                    raise GitHubError(limited.message) from None
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _call_once(self, what: str, fn: Callable[..., Any], *, missing_ok: bool = False, **kwargs: Any) -> Any:
        import httpx2  # ghapi's transport
        from fasttransport.errors import APIError  # type: ignore[import-untyped]

        try:
            return fn(**kwargs)
        except httpx2.HTTPStatusError as exc:
            resp = exc.response
            if missing_ok and resp.status_code == 404:
                return None
            self._raise(what, resp.status_code, resp.headers, _message(resp))
        except httpx2.HTTPError as exc:
            raise GitHubError(redact(f"GitHub API {what}: cannot connect: {exc}", self._token)) from None
        except APIError as exc:  # fasttransport's error type (ghapi >= 2)
            status = exc.status_code
            if status is None:  # no HTTP response at all
                cause = exc.raw if exc.raw is not None else exc.message
                raise GitHubError(redact(f"GitHub API {what}: cannot connect: {cause}", self._token)) from None
            if missing_ok and status == 404:
                return None
            headers = getattr(exc.response, "headers", None) or {}
            message = _payload_message(exc.raw) if isinstance(exc.raw, dict) else exc.message
            self._raise(what, status, headers, message)

    def _raise(self, what: str, status: int, headers: Any, message: str) -> None:
        text = redact(_describe(what, status, headers, message), self._token)
        wait = rate_limit_wait(status, headers)
        if wait is not None or _is_rate_limit(status, headers):
            raise _RateLimited(text, wait)
        raise GitHubError(text)


class _RateLimited(Exception):
    def __init__(self, message: str, wait: float | None) -> None:
        super().__init__(message)
        self.message, self.wait = message, wait


def _is_rate_limit(status: int, headers: Any) -> bool:
    if status not in (403, 429) or not headers:
        return False
    return headers.get("X-RateLimit-Remaining") == "0" or headers.get("Retry-After") is not None


def rate_limit_wait(status: int, headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait before retrying a rate-limited request (None: not rate limited).

    GitHub's docs: with `retry-after`, wait that many seconds; with
    `x-ratelimit-remaining: 0`, wait until `x-ratelimit-reset` (epoch seconds);
    a secondary limit without either header: wait at least a minute.
    """
    if not _is_rate_limit(status, headers):
        return None
    if headers.get("Retry-After") is not None:
        try:
            return max(0.0, float(headers["Retry-After"]))
        except ValueError:
            return 60.0
    try:
        reset = int(headers.get("X-RateLimit-Reset", ""))
    except ValueError:
        return 60.0
    return max(1.0, reset - (time.time() if now is None else now))


def _message(resp: Any) -> str:
    try:
        data = resp.json()
    except Exception:  # noqa: BLE001 - not JSON: use the text
        return resp.text.strip()[:200]
    return _payload_message(data)


def _payload_message(data: Any) -> str:
    """GitHub's error body: `message` plus each `errors[]` entry's message or code (422s)."""
    if isinstance(data, dict):
        msg = str(data.get("message", ""))
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            details = "; ".join(
                str(e.get("message") or e.get("code") or e) if isinstance(e, dict) else str(e) for e in errors
            )
            msg = f"{msg} ({details})"
        return msg
    return str(data)[:200]


def _describe(what: str, status: int, headers: Any, message: str) -> str:
    """One line for an HTTP error; rate limits say when to retry."""
    remaining = headers.get("X-RateLimit-Remaining") if headers else None
    retry_after = headers.get("Retry-After") if headers else None
    if status in (403, 429) and (remaining == "0" or retry_after is not None):
        when = ""
        if retry_after is not None:
            when = f"retry after {retry_after} s"
        elif headers.get("X-RateLimit-Reset"):
            try:
                reset = dt.datetime.fromtimestamp(int(headers["X-RateLimit-Reset"]), tz=dt.UTC)
                when = f"limit resets at {reset:%Y-%m-%d %H:%M:%S} UTC"
            except ValueError:
                pass
        return f"GitHub API rate limit exceeded on {what} (HTTP {status}){': ' + when if when else ''}"
    text = " ".join(message.split())[:300]
    return f"GitHub API {what} failed: HTTP {status}{': ' + text if text else ''}"


def _pull(p: Any) -> PullRequest:
    head = p.get("head") or {}
    repo = head.get("repo")  # null once the head repository (a fork) is deleted
    return PullRequest(
        number=int(p["number"]),
        title=str(p.get("title") or ""),
        body=str(p.get("body") or ""),
        head_ref=str(head.get("ref") or ""),
        head_repo=str(repo["full_name"]) if repo else None,
        url=str(p.get("html_url") or ""),
        head_label=str(head.get("label") or ""),
        head_sha=str(head.get("sha") or ""),
        state=str(p.get("state") or "open"),
        merged=bool(p.get("merged_at")),
    )
