"""Downloads verified by sha256 and kept in a content-addressed cache.

`stage(source, sha256, dest)` puts the bytes of a URL or a local file at
`dest`, after checking them against `sha256` when one is given.  Downloads go
to `~/.cache/ndgen/files/sha256/<digest>` (or `$NDGEN_CACHE/files/…`) first,
named by the digest of what actually arrived, so a second build with the same
checksum never touches the network, and a file in the cache can never be
anything but the bytes its name says.  A mismatch raises NdgenError naming
the file and both digests; the bad bytes are deleted and nothing is cached.

A download server is hostile (docs/security.md), so every request here:

* speaks http or https only, at the first URL and at every redirect hop
  (at most 10): never file://, ftp://, a host path;
* resolves the host itself, refuses it when *any* address is loopback,
  link-local, private, multicast or otherwise not global, and connects to an
  address it checked (a second DNS answer cannot swap one in).  A loopback
  port listed in `NDGEN_ALLOW_LOOPBACK_PORTS` (comma-separated, e.g. `8080`)
  is allowed: the deliberate opt-in for a local mirror, and for the tests'
  server on 127.0.0.1;
* reads at most `NDGEN_MAX_DOWNLOAD` bytes (default 16G; suffix K, M, G or T,
  powers of 1024), or the size a caller knows (`max_bytes`), and refuses a
  declared Content-Length above it before reading;
* ends after `NDGEN_DOWNLOAD_DEADLINE` seconds in all (default 7200), however
  slowly the bytes drip: `timeout` bounds each wait, the deadline the whole.

Proxies from the environment (`http_proxy`, `https_proxy`, `no_proxy`) are
used as urllib would; the target's addresses are still checked here, but the
proxy resolves names itself.  TLS uses the system's CA store.  `probe` is the
read-only half used by `ndgen check-urls` (status, redirect chain, size).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import os
import re
import shutil
import socket
import ssl
import stat
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from neurodocker_nd import __version__
from neurodocker_nd.errors import NdgenError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
USER_AGENT = f"ndgen/{__version__} (+http.client)"
DEFAULT_TIMEOUT = 60.0
_CHUNK = 1 << 20

SCHEMES = ("http", "https")
MAX_REDIRECTS = 10  # urllib's own limit
ALLOW_LOOPBACK_ENV = "NDGEN_ALLOW_LOOPBACK_PORTS"
MAX_DOWNLOAD_ENV = "NDGEN_MAX_DOWNLOAD"
DEADLINE_ENV = "NDGEN_DOWNLOAD_DEADLINE"
# Large enough for the biggest neuroimaging archives, small enough that an endless body
# stops long before a build host's disk is full; a caller that knows the size passes it.
DEFAULT_MAX_DOWNLOAD = 16 << 30
DEFAULT_DEADLINE = 7200.0
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(NdgenError):
    """A download failed or its bytes did not match the expected sha256."""


class _Refused(Exception):
    """A URL, redirect or address the policy refuses; str() is the reason."""


class _TooLarge(Exception):
    """More bytes than the cap; str() is the reason."""


class _Status(Exception):
    """A final non-2xx answer."""

    def __init__(self, code: int, reason: str, url: str) -> None:
        super().__init__(f"HTTP {code} {reason}")
        self.code, self.url = code, url


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
    return isinstance(source, str) and urllib.parse.urlsplit(source).scheme in SCHEMES


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
    if isinstance(source, str) and urllib.parse.urlsplit(source).scheme:
        path = urllib.parse.urlsplit(str(source)).path
        return urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1]) or str(source)
    return str(source)


# ---------------------------------------------------------------- limits


def _human(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n}-byte"


@attrs.frozen
class Limits:
    """How much one download may read and for how long (the environment's knobs)."""

    max_bytes: int
    deadline: float  # seconds for the whole request: connect, redirects, headers and body
    max_source: str = MAX_DOWNLOAD_ENV  # what set max_bytes, for the error message

    @classmethod
    def from_env(cls, max_bytes: int | None = None) -> Limits:
        """`NDGEN_MAX_DOWNLOAD` / `NDGEN_DOWNLOAD_DEADLINE`; a known size wins over the former."""
        raw = os.environ.get(MAX_DOWNLOAD_ENV, "").strip()
        cap = DEFAULT_MAX_DOWNLOAD
        if raw:
            m = _SIZE_RE.match(raw)
            if not m or int(m.group(1)) <= 0:
                raise NdgenError(f"{MAX_DOWNLOAD_ENV}={raw!r} is not a size (bytes, or a number with K, M, G or T)")
            cap = int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))
        deadline = DEFAULT_DEADLINE
        raw_d = os.environ.get(DEADLINE_ENV, "").strip()
        if raw_d:
            try:
                deadline = float(raw_d)
            except ValueError:
                deadline = -1.0
            if not 0 < deadline < float("inf"):
                raise NdgenError(f"{DEADLINE_ENV}={raw_d!r} is not a number of seconds above 0")
        if max_bytes is not None:
            return cls(max_bytes, deadline, "the size the caller expects")
        return cls(cap, deadline)

    def too_large(self) -> str:
        return f"larger than the {_human(self.max_bytes)} cap ({self.max_source})"


def allowed_loopback_ports() -> frozenset[int]:
    """The ports `NDGEN_ALLOW_LOOPBACK_PORTS` opts in (nothing by default)."""
    raw = os.environ.get(ALLOW_LOOPBACK_ENV, "").strip()
    if not raw:
        return frozenset()
    parts = [p.strip() for p in raw.split(",")]
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in parts):
        raise NdgenError(f"{ALLOW_LOOPBACK_ENV}={raw!r} is not a comma-separated list of ports")
    return frozenset(int(p) for p in parts)


# ---------------------------------------------------------------- address policy


def address_refusal(address: str, port: int, loopback_ports: frozenset[int]) -> str | None:
    """Why a download must not connect to `address`, or None when it may.

    Only global unicast addresses are download sites: a redirect (or a DNS
    answer) naming loopback, link-local (cloud metadata at 169.254.169.254),
    private or reserved space would turn ndgen into a proxy into the host's
    own network.  Loopback is allowed on the opted-in ports only.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    if ip.is_loopback:
        return None if port in loopback_ports else f"{ip} is a loopback address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_global:
        return None
    kind = "link-local" if ip.is_link_local else "private" if ip.is_private else "non-global"
    return f"{ip} is a {kind} address"


def _resolve(host: str, port: int) -> list[tuple]:
    """Every TCP address of `host`, all of them allowed, else _Refused."""
    ports = allowed_loopback_ports()
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    for info in infos:
        why = address_refusal(str(info[4][0]), port, ports)  # sockaddr[0] is the address text for INET/INET6
        if why is not None:
            note = f" ({ALLOW_LOOPBACK_ENV} does not list port {port})" if "loopback" in why else ""
            raise _Refused(f"{why}{note}")
    return infos


# ---------------------------------------------------------------- HTTP


class _Deadline:
    """Ends a whole request after `seconds`: shuts down its sockets, wherever it waits.

    A per-read timeout never fires on a server that sends one byte just before
    it would; the shutdown wakes any recv/connect/handshake at once.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("deadline")
            self._socks.append(sock)

    def message(self) -> str:
        return f"not finished within {self.seconds:g} s ({DEADLINE_ENV})"


def _connector(deadline: _Deadline, infos: list[tuple] | None):
    """http.client's `_create_connection`, connecting only to checked addresses.

    `infos` None: connect to the (user-configured, trusted) proxy by name.
    """

    def create(address, timeout=None, source_address=None, **_kw):
        if infos is None:
            sock = socket.create_connection(address, timeout)
            deadline.track(sock)
            return sock
        last: OSError | None = None
        for family, kind, proto, _canon, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                deadline.track(sock)
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last or OSError("no address to connect to")

    return create


def _proxy_for(scheme: str, host: str) -> urllib.parse.SplitResult | None:
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def _connection(
    url: str, timeout: float, deadline: _Deadline
) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """A connection for `url` after the scheme and address checks; its request target and extra headers."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise _Refused(f"{scheme or url}: only http and https URLs are fetched")
    host = parts.hostname
    if not host:
        raise _Refused(f"{url}: no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise _Refused(f"{url}: bad port") from None
    try:
        infos = _resolve(host, port)
    except _Refused as exc:
        raise _Refused(f"refused {url}: {exc}") from None
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    headers: dict[str, str] = {}
    proxy = _proxy_for(scheme, host)
    if proxy is not None and proxy.hostname:
        auth = {}
        if proxy.username is not None:
            pair = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
            auth["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        pport = proxy.port or 8080
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                proxy.hostname, pport, timeout=timeout, context=ssl.create_default_context()
            )
            conn.set_tunnel(host, port, headers=auth)
        else:
            conn = http.client.HTTPConnection(proxy.hostname, pport, timeout=timeout)
            target, headers = url, auth
        conn._create_connection = _connector(deadline, None)  # type: ignore[attr-defined]
        return conn, target, headers
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn._create_connection = _connector(deadline, infos)  # type: ignore[attr-defined]
    return conn, target, headers


@attrs.define
class _Answer:
    response: http.client.HTTPResponse
    connection: http.client.HTTPConnection
    url: str  # the final URL
    chain: list[tuple[int, str]]


@contextmanager
def _open(
    url: str, method: str, timeout: float, deadline: _Deadline, chain: list[tuple[int, str]]
) -> Iterator[_Answer]:
    """Follow redirects under the policy; yield the final 2xx answer (`chain` grows per hop)."""
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        conn, target, headers = _connection(current, timeout, deadline)
        try:
            conn.request(method, target, headers={"User-Agent": USER_AGENT, **headers})
            resp = conn.getresponse()
            location = resp.getheader("Location")
            if resp.status in _REDIRECTS and location:
                newurl = urllib.parse.urljoin(current, location.strip())
                chain.append((resp.status, newurl))
                if urllib.parse.urlsplit(newurl).scheme.lower() not in SCHEMES:
                    raise _Refused(f"refused redirect to {newurl}: only http and https URLs are fetched")
                current = newurl
                continue
            if not 200 <= resp.status < 300:
                raise _Status(resp.status, resp.reason, current)
            yield _Answer(resp, conn, current, chain)
            return
        finally:
            conn.close()
    raise _Refused(f"more than {MAX_REDIRECTS} redirects")


def _read(answer: _Answer, limits: Limits, deadline: _Deadline) -> Iterator[bytes]:
    """The body in chunks, never more than the cap; raises on a cut-short transfer."""
    declared = answer.response.getheader("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > limits.max_bytes:
        raise _TooLarge(limits.too_large())
    n = 0
    while chunk := answer.response.read1(_CHUNK):
        n += len(chunk)
        if n > limits.max_bytes:
            raise _TooLarge(limits.too_large())
        yield chunk
    if deadline.expired:  # the shutdown ends a length-less body like a normal close would
        raise TimeoutError("deadline")


def _reason(exc: BaseException, deadline: _Deadline) -> str:
    """One short phrase for a failure."""
    if deadline.expired:  # whatever the shutdown made the read raise, the deadline is the cause
        return deadline.message()
    if isinstance(exc, (_Refused, _TooLarge, _Status)):
        return str(exc)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes"
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc) or type(exc).__name__


_FAILURES = (_Refused, _TooLarge, _Status, OSError, http.client.HTTPException, ValueError)


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


def probe(url: str, timeout: float = DEFAULT_TIMEOUT, fetch: bool = False, max_bytes: int | None = None) -> Probe:
    """HEAD a URL (GET when `fetch`, hashing the body); never raises for network errors.

    Servers that refuse HEAD (405/403/501) are asked again with GET, reading
    no body.  The download policy (module docstring) applies to every hop.
    """
    limits = Limits.from_env(max_bytes)
    allowed_loopback_ports()  # a malformed opt-in is an error, not a network failure
    methods = ["GET"] if fetch else ["HEAD", "GET"]
    last: Probe | None = None
    for method in methods:
        chain: list[tuple[int, str]] = []
        with _Deadline(limits.deadline) as deadline:
            try:
                with _open(url, method, timeout, deadline, chain) as answer:
                    size_hdr = answer.response.getheader("Content-Length")
                    size = int(size_hdr) if size_hdr and size_hdr.isdigit() else None
                    digest = None
                    if fetch:
                        h, n = hashlib.sha256(), 0
                        for chunk in _read(answer, limits, deadline):
                            h.update(chunk)
                            n += len(chunk)
                        digest, size = h.hexdigest(), n
                    return Probe(url, True, answer.response.status, answer.url, tuple(chain), size, digest)
            except _Status as exc:
                last = Probe(url, False, exc.code, exc.url, tuple(chain), error=_reason(exc, deadline))
                if method == "HEAD" and exc.code in (403, 405, 501):
                    continue
                return last
            except _FAILURES as exc:
                final = chain[-1][1] if chain else url
                return Probe(url, False, None, final, tuple(chain), error=_reason(exc, deadline))
    assert last is not None
    return last


def _download(url: str, into: Path, timeout: float, limits: Limits) -> str:
    """Stream `url` into the path `into` under the policy and limits; return its sha256."""
    h = hashlib.sha256()
    with _Deadline(limits.deadline) as deadline:
        try:
            with _open(url, "GET", timeout, deadline, []) as answer, open(into, "wb") as out:
                for chunk in _read(answer, limits, deadline):
                    h.update(chunk)
                    out.write(chunk)
        except _FAILURES as exc:
            raise FetchError(f"{display_name(url)}: download from {url} failed: {_reason(exc, deadline)}") from None
    return h.hexdigest()


# ---------------------------------------------------------------- staging


def _mismatch(name: str, expected: str, actual: str) -> FetchError:
    return FetchError(f"{name}: sha256 mismatch: expected {expected}, got {actual}")


def _place(src: Path, dest: Path) -> Path:
    """Copy `src` to `dest` whole or not at all (outfile's temp-file-and-rename)."""
    from neurodocker_nd.core import outfile

    with outfile.replacing(dest, mkdir=True) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def _dest(dest: os.PathLike, name: str) -> Path:
    """`dest`, or the source's name inside it when it is an existing directory."""
    d = Path(dest)
    return d / Path(name).name if d.is_dir() else d


def stage(
    source: str | os.PathLike,
    sha256: str | None,
    dest: Path,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    max_bytes: int | None = None,
) -> Path:
    """Put the verified bytes of `source` at `dest`: `stage_url` or `stage_file`.

    The type decides, never the text: a `str` is a URL field (a recipe's or
    template's `url:`) and must be http(s) — `/etc/shadow` or `file:///…`
    there is refused, not read from the host; a local file is passed as a
    `Path` (os.PathLike) by a caller that has contained it.
    """
    if isinstance(source, str):
        return stage_url(source, sha256, dest, timeout, max_bytes=max_bytes)
    return stage_file(Path(source), sha256, dest, max_bytes=max_bytes)


def stage_file(path: Path, sha256: str | None, dest: Path, *, max_bytes: int | None = None) -> Path:
    """Copy the verified bytes of the local file `path` (contained by the caller) to `dest`.

    The file is opened without following a final symlink and without
    blocking, and read only when it is a regular file within the size cap: a
    FIFO or device swapped in after the caller's checks cannot hang or fill.
    """
    name = str(path)
    expected = check_sha256(sha256, name) if sha256 is not None else None
    limits = Limits.from_env(max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FetchError(f"{name}: no such file") from None
    except OSError as exc:
        raise FetchError(f"{name}: cannot be read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FetchError(f"{name}: not a regular file")
        if st.st_size > limits.max_bytes:
            raise FetchError(f"{name}: {limits.too_large()}")
        from neurodocker_nd.core import outfile

        target = _dest(dest, name)
        with outfile.replacing(target, mkdir=True) as tmp, open(tmp, "wb") as out:
            h, n = hashlib.sha256(), 0
            while chunk := src.read(_CHUNK):
                n += len(chunk)
                if n > limits.max_bytes:  # it grew after the fstat
                    raise FetchError(f"{name}: {limits.too_large()}")
                h.update(chunk)
                out.write(chunk)
            if expected is not None and h.hexdigest() != expected:
                raise _mismatch(name, expected, h.hexdigest())
    return target


def stage_url(
    url: str,
    sha256: str | None,
    dest: Path,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    max_bytes: int | None = None,
) -> Path:
    """Put the verified bytes of the http(s) `url` at `dest`, through the cache.

    `dest` is the file to write; when it is an existing directory the file
    keeps the URL's name inside it.  With `sha256`, a cached copy is used
    without any network access, and fresh bytes must match it (FetchError
    naming the file and both digests otherwise; nothing is cached and `dest`
    is not written).  Without it the download is still cached by its digest.
    `max_bytes` is the size the caller expects (e.g. recorded beside the
    digest); otherwise NDGEN_MAX_DOWNLOAD caps it.  Any other scheme, a
    refused address, the cap or the deadline is a FetchError, and a partial
    download never reaches the cache.  Returns the path written.
    """
    name = display_name(url)
    expected = check_sha256(sha256, name) if sha256 is not None else None
    dest = _dest(dest, name)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        shown = url if name == url else f"{name}: {url}"
        raise FetchError(f"{shown}: only http and https URLs are fetched")
    if expected is not None and cache_path(expected).is_file():
        return _place(cache_path(expected), dest)
    limits = Limits.from_env(max_bytes)
    allowed_loopback_ports()  # a malformed opt-in is one error line before any transfer
    tmpdir = cache_root() / "files" / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="download-", dir=tmpdir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        actual = _download(url, tmp, timeout, limits)
        if expected is not None and actual != expected:
            raise _mismatch(name, expected, actual)
        final = cache_path(actual)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)  # cache entries are never edited in place
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return _place(final, dest)
