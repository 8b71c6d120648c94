"""The few GitHub REST calls the bot makes, through ghapi, with one-line errors.

Endpoints (documented at docs.github.com/rest):

    GET   /repos/{owner}/{repo}                         default branch
    GET   /repos/{owner}/{repo}/pulls?state=open|closed our PRs (paginated)
    POST  /repos/{owner}/{repo}/pulls                   open a PR
    PATCH /repos/{owner}/{repo}/pulls/{number}          update / close a PR
    POST  /repos/{owner}/{repo}/issues/{number}/comments
    GET   /repos/{owner}/{repo}/contents/{path}?ref=    has the template landed?

Errors become one line naming the request: rate limits (403/429 with
``X-RateLimit-Remaining: 0`` or ``Retry-After``) say when to retry. The token is
redacted from every message and never logged.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any, Callable

import attrs

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.upstream.gitcmd import redact

PER_PAGE = 100


class GitHubError(NdgenError):
    """A GitHub API request failed."""


@attrs.frozen
class PullRequest:
    number: int
    title: str
    body: str
    head_ref: str
    head_repo: str  # owner/name of the head branch's repository
    url: str


def split_repo(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise NdgenError(f"repository {repo!r}: expected OWNER/NAME")
    return owner, name


class GitHub:
    """A thin typed facade over ghapi's generated endpoints."""

    def __init__(self, api_url: str, token: str | None) -> None:
        from ghapi.core import GhApi  # imported only by `ndgen upstream pr`

        self._token = token
        self._api = GhApi(
            token=token,
            authenticate=bool(token),
            gh_host=api_url.rstrip("/"),
            sync=True,
            timeout=30.0,
        )

    # ---- reads
    def default_branch(self, repo: str) -> str:
        owner, name = split_repo(repo)
        data = self._call(f"GET /repos/{repo}", self._api.repos.get, owner=owner, repo=name)
        return str(data["default_branch"])

    def pulls(self, repo: str, state: str = "open") -> list[PullRequest]:
        owner, name = split_repo(repo)
        found: list[PullRequest] = []
        page = 1
        while True:
            batch = self._call(
                f"GET /repos/{repo}/pulls?state={state}",
                self._api.pulls.list,
                owner=owner, repo=name, state=state, per_page=PER_PAGE, page=page,
            )
            found.extend(_pull(p) for p in batch)
            if len(batch) < PER_PAGE:
                return found
            page += 1

    def file_text(self, repo: str, path: str, ref: str) -> str | None:
        """The file's text at `ref`, or None when it does not exist there."""
        owner, name = split_repo(repo)
        data = self._call(
            f"GET /repos/{repo}/contents/{path}",
            self._api.repos.get_content,
            owner=owner, repo=name, path=path, ref=ref,
            missing_ok=True,
        )
        if data is None or isinstance(data, list) or data.get("type", "file") != "file":
            return None
        return base64.b64decode(data.get("content", "")).decode("utf-8", errors="replace")

    # ---- writes
    def create_pull(self, repo: str, title: str, body: str, head: str, base: str) -> PullRequest:
        owner, name = split_repo(repo)
        data = self._call(
            f"POST /repos/{repo}/pulls",
            self._api.pulls.create,
            owner=owner, repo=name, title=title, body=body, head=head, base=base,
            maintainer_can_modify=True,
        )
        return _pull(data)

    def update_pull(self, repo: str, number: int, **fields: str) -> None:
        owner, name = split_repo(repo)
        self._call(f"PATCH /repos/{repo}/pulls/{number}", self._api.pulls.update,
                   owner=owner, repo=name, pull_number=number, **fields)

    def comment(self, repo: str, number: int, body: str) -> None:
        owner, name = split_repo(repo)
        self._call(f"POST /repos/{repo}/issues/{number}/comments", self._api.issues.create_comment,
                   owner=owner, repo=name, issue_number=number, body=body)

    # ---- error translation
    def _call(self, what: str, fn: Callable[..., Any], *, missing_ok: bool = False, **kwargs: Any) -> Any:
        import httpx2  # ghapi's transport
        from fasttransport.errors import APIError

        try:
            return fn(**kwargs)
        except httpx2.HTTPStatusError as exc:
            resp = exc.response
            if missing_ok and resp.status_code == 404:
                return None
            raise GitHubError(redact(_describe(what, resp.status_code, resp.headers, _message(resp)), self._token)) from None
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
            raise GitHubError(redact(_describe(what, status, headers, exc.message), self._token)) from None


def _message(resp: Any) -> str:
    try:
        data = resp.json()
    except Exception:  # noqa: BLE001 - not JSON: use the text
        return resp.text.strip()[:200]
    if isinstance(data, dict):
        msg = str(data.get("message", ""))
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            details = "; ".join(str(e.get("message") or e.get("code") or e) if isinstance(e, dict) else str(e) for e in errors)
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
                reset = dt.datetime.fromtimestamp(int(headers["X-RateLimit-Reset"]), tz=dt.timezone.utc)
                when = f"limit resets at {reset:%Y-%m-%d %H:%M:%S} UTC"
            except ValueError:
                pass
        return f"GitHub API rate limit exceeded on {what} (HTTP {status}){': ' + when if when else ''}"
    text = " ".join(message.split())[:300]
    return f"GitHub API {what} failed: HTTP {status}{': ' + text if text else ''}"


def _pull(p: Any) -> PullRequest:
    head = p.get("head") or {}
    head_repo = (head.get("repo") or {}).get("full_name") or ""
    return PullRequest(
        number=int(p["number"]),
        title=str(p.get("title") or ""),
        body=str(p.get("body") or ""),
        head_ref=str(head.get("ref") or ""),
        head_repo=str(head_repo),
        url=str(p.get("html_url") or ""),
    )
