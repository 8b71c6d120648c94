"""Downloads verified by sha256 and kept in a content-addressed cache.

`stage(source, sha256, dest)` puts the bytes of a URL or a local file at
`dest`, after checking them against `sha256` when one is given.  Downloads go
to `~/.cache/ndgen/files/sha256/<digest>` (or `$NDGEN_CACHE/files/…`) first,
named by the digest of what actually arrived, so a second build with the same
checksum never touches the network, and a file in the cache can never be
anything but the bytes its name says.  A mismatch raises NdgenError naming
the file and both digests; the bad bytes are deleted and nothing is cached.

The HTTP client is the standard library's urllib: it follows redirects, talks
TLS with the system's CA store, and needs nothing installed.  `probe` is the
read-only half used by `ndgen check-urls` (status, redirect chain, size).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import attrs

from neurodocker_nd import __version__
from neurodocker_nd.errors import NdgenError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
USER_AGENT = f"ndgen/{__version__} (+urllib)"
DEFAULT_TIMEOUT = 60.0
_CHUNK = 1 << 20


class FetchError(NdgenError):
    """A download failed or its bytes did not match the expected sha256."""


def cache_root() -> Path:
    """`$NDGEN_CACHE` or `$XDG_CACHE_HOME/ndgen` (default `~/.cache/ndgen`)."""
    env = os.environ.get("NDGEN_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ndgen"


def cache_path(digest: str) -> Path:
    return cache_root() / "files" / "sha256" / digest


def is_url(source: str | os.PathLike) -> bool:
    return isinstance(source, str) and urllib.parse.urlsplit(source).scheme in ("http", "https")


def check_sha256(value: str, what: str) -> str:
    """A sha256 written as 64 lower-case hex digits (what `sha256sum` prints)."""
    v = value.strip().lower()
    if not SHA256_RE.match(v):
        raise NdgenError(f"{what}: sha256 {value!r} is not 64 hex digits")
    return v


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def display_name(source: str | os.PathLike) -> str:
    """The file name a user recognises: the URL's last path segment, or the path."""
    if is_url(source):
        path = urllib.parse.urlsplit(str(source)).path
        return urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1]) or str(source)
    return str(source)


# ---------------------------------------------------------------- HTTP


class _RecordRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib does, remembering each hop."""

    def __init__(self) -> None:
        self.chain: list[tuple[int, str]] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib hook
        self.chain.append((code, newurl))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> tuple[urllib.request.OpenerDirector, _RecordRedirects]:
    redirects = _RecordRedirects()
    return urllib.request.build_opener(redirects), redirects


def _request(url: str, method: str = "GET") -> urllib.request.Request:
    return urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT})


def _reason(exc: BaseException) -> str:
    """One short phrase for a network failure."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        if isinstance(inner, (socket.timeout, TimeoutError)):
            return "timed out"
        return str(getattr(inner, "strerror", None) or inner)
    return str(exc) or type(exc).__name__


@attrs.frozen
class Probe:
    """What a URL answered (`ndgen check-urls`)."""

    url: str
    ok: bool
    status: int | None  # final HTTP status; None when no answer came
    final_url: str
    redirects: tuple[tuple[int, str], ...] = ()
    size: int | None = None  # Content-Length (or bytes read with --fetch)
    sha256: str | None = None  # only when fetched
    error: str | None = None


def probe(url: str, timeout: float = DEFAULT_TIMEOUT, fetch: bool = False) -> Probe:
    """HEAD a URL (GET when `fetch`, hashing the body); never raises for network errors.

    Servers that refuse HEAD (405/403/501) are asked again with GET, reading
    no body.
    """
    methods = ["GET"] if fetch else ["HEAD", "GET"]
    last: Probe | None = None
    for method in methods:
        opener, redirects = _opener()
        try:
            with opener.open(_request(url, method), timeout=timeout) as resp:
                size_hdr = resp.headers.get("Content-Length")
                size = int(size_hdr) if size_hdr and size_hdr.isdigit() else None
                digest = None
                if fetch:
                    h, n = hashlib.sha256(), 0
                    while chunk := resp.read(_CHUNK):
                        h.update(chunk)
                        n += len(chunk)
                    digest, size = h.hexdigest(), n
                return Probe(url, True, resp.status, resp.geturl(), tuple(redirects.chain), size, digest)
        except urllib.error.HTTPError as exc:
            last = Probe(url, False, exc.code, exc.geturl() or url, tuple(redirects.chain), error=_reason(exc))
            if method == "HEAD" and exc.code in (403, 405, 501):
                continue
            return last
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return Probe(url, False, None, url, tuple(redirects.chain), error=_reason(exc))
    assert last is not None
    return last


def _download(url: str, into: Path, timeout: float) -> str:
    """Stream `url` into the open-for-writing path `into`; return its sha256."""
    opener, _ = _opener()
    h = hashlib.sha256()
    try:
        with opener.open(_request(url), timeout=timeout) as resp, open(into, "wb") as out:
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(f"{display_name(url)}: download from {url} failed: {_reason(exc)}") from None
    return h.hexdigest()


# ---------------------------------------------------------------- staging


def _mismatch(name: str, expected: str, actual: str) -> FetchError:
    return FetchError(f"{name}: sha256 mismatch: expected {expected}, got {actual}")


def _place(src: Path, dest: Path) -> Path:
    """Copy `src` to `dest` whole or not at all (outfile's temp-file-and-rename)."""
    from neurodocker_nd import outfile

    with outfile.replacing(dest, mkdir=True) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def stage(
    source: str | os.PathLike,
    sha256: str | None,
    dest: Path,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Put the verified bytes of `source` (http(s) URL or local path) at `dest`.

    `dest` is the file to write; when it is an existing directory the file
    keeps the source's name inside it.  With `sha256`, a cached copy is used
    without any network access, and fresh bytes must match it (FetchError
    naming the file and both digests otherwise; nothing is cached and `dest`
    is not written).  Without it the download is still cached by its digest.
    Returns the path written.
    """
    name = display_name(source)
    expected = check_sha256(sha256, name) if sha256 is not None else None
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / Path(name).name
    if not is_url(source):
        path = Path(source)
        if not path.is_file():
            raise FetchError(f"{name}: no such file")
        if expected is not None:
            actual = sha256_file(path)
            if actual != expected:
                raise _mismatch(name, expected, actual)
        return _place(path, dest)

    url = str(source)
    if expected is not None and cache_path(expected).is_file():
        return _place(cache_path(expected), dest)
    tmpdir = cache_root() / "files" / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="download-", dir=tmpdir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        actual = _download(url, tmp, timeout)
        if expected is not None and actual != expected:
            raise _mismatch(name, expected, actual)
        final = cache_path(actual)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)  # cache entries are never edited in place
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return _place(final, dest)
