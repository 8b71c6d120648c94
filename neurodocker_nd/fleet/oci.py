"""A small client of the OCI distribution API: the fleet's state lives in a registry.

The registry is the user's own, named explicitly on the command line (`--registry
127.0.0.1:5000/lab`), so loopback and private addresses are allowed here, unlike
`core/fetch.py`'s downloads, whose servers come from recipes.  What it answers is
still untrusted: every response is read with a size cap and a timeout, JSON is
parsed only from capped bodies, and a manifest's digest is checked against its bytes.

Plain HTTP is used for loopback hosts (Docker pushes to them over HTTP without
configuration, `insecure-registries` defaults to 127.0.0.0/8), HTTPS for every
other host.  Credentials: `$NDGEN_REGISTRY_USER` / `$NDGEN_REGISTRY_PASSWORD` (the
workflow passes them from secrets), sent as basic auth, or to the registry's token server
when it answers 401 with a `Bearer` challenge (distribution's token auth: ghcr.io, Docker
Hub, and their anonymous pulls too).  The challenge comes from the registry, so its realm
is checked first: HTTPS, or plain HTTP to a loopback host only, so credentials never
cross a network in the clear.  Blob reads follow a registry's redirect to its storage
(ghcr.io and Docker Hub send blobs from a CDN) at most MAX_REDIRECTS times, HTTPS only
(loopback excepted), and never carry the registry's Authorization to another host.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import json
import os
import re
import time
import urllib.parse
from typing import Any

import attrs

from neurodocker_nd import __version__
from neurodocker_nd.errors import NdgenError

TIMEOUT_S = 30.0  # each wait for the server
DEADLINE_S = 120.0  # one whole request: a server dripping a byte at a time ends here
MAX_MANIFEST = 4 << 20  # the distribution spec's own recommended manifest limit
MAX_CONFIG = 8 << 20  # an image config: labels, history, env
MAX_ERROR = 4096
MAX_TOKEN = 64 << 10  # a token server's JSON answer (a JWT is a few kB)
MAX_CHALLENGE = 4096  # a WWW-Authenticate header worth parsing
MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_CHALLENGE_PARAM = re.compile(r'([A-Za-z]+)="([^"]{0,2048})"')
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/-]{1,65536}=*$")  # RFC 6750's b64token
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
USER_ENV, PASSWORD_ENV = "NDGEN_REGISTRY_USER", "NDGEN_REGISTRY_PASSWORD"
_CREDENTIALS_HINT = f" (set {USER_ENV} and {PASSWORD_ENV})"
# host[:port][/path]: a registry plus an optional namespace the fleet's repositories go under.
_REGISTRY = re.compile(
    r"^(?P<host>[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|\[[0-9a-f:]{2,45}\])(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*){0,8})$"
)
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(NdgenError):
    """The registry does not answer, refuses a request, or answers something malformed."""


@attrs.frozen
class Manifest:
    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        data = _json(self.body, "manifest")
        if not isinstance(data.get("config"), dict) or not isinstance(data.get("layers"), list):
            raise RegistryError(f"manifest {self.digest} has no config or layers")
        return data


@attrs.frozen
class Registry:
    """`host[:port][/namespace]`; `repository(name)` is where a recipe's images go."""

    host: str
    port: int | None
    namespace: str
    # Bearer tokens from the registry's token server, by the scope its challenge named.
    tokens: dict[str, str] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Registry:
        m = _REGISTRY.match(text.strip().lower())
        if not m:
            raise RegistryError(f"--registry {text!r}: expected HOST[:PORT][/NAMESPACE], e.g. 127.0.0.1:5000/lab")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise RegistryError(f"--registry {text!r}: port {port} is out of range")
        return cls(m["host"], port, m["path"].lstrip("/"))

    @property
    def address(self) -> str:
        return self.host + (f":{self.port}" if self.port else "")

    def __str__(self) -> str:
        return self.address + (f"/{self.namespace}" if self.namespace else "")

    def repository(self, name: str) -> str:
        repo = f"{self.namespace}/{name}" if self.namespace else name
        if len(repo) > 255 or not _REPO.match(repo):  # the distribution spec's limit on a name
            raise RegistryError(f"{name!r} is not a valid repository name in {self}")
        return repo

    def image(self, name: str, tag: str) -> str:
        """The reference Docker pushes to: `host:port/namespace/name:tag`."""
        return f"{self.address}/{self.repository(name)}:{tag}"

    @property
    def plain_http(self) -> bool:
        return _loopback(self.host)

    # ------------------------------------------------------------------ requests

    def ping(self) -> None:
        """GET /v2/: the registry answers the distribution API (401 counts: it answered)."""
        status, _, _ = self._request("GET", "/v2/", limit=MAX_ERROR, ok=(200, 401))
        del status

    def manifest(self, name: str, reference: str) -> Manifest | None:
        """The manifest under a tag or digest; None when there is none (404)."""
        path = f"/v2/{self.repository(name)}/manifests/{_reference(reference)}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        status, body, reply = self._request("GET", path, headers=headers, limit=MAX_MANIFEST, ok=(200, 404))
        if status == 404:
            return None
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        claimed = reply.get("docker-content-digest")
        if claimed and claimed != digest or reference.startswith("sha256:") and reference != digest:
            raise RegistryError(f"{self}: manifest {name}:{reference} does not match its digest")
        media_type = reply.get("content-type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(f"{self}: {name}:{reference} is a {media_type or 'untyped'} manifest, not an image")
        return Manifest(body, media_type, digest)

    def config(self, name: str, manifest: Manifest) -> dict[str, Any]:
        """The image config blob a manifest names (a few kB: never a layer)."""
        ref = manifest.json()["config"]
        digest = str(ref.get("digest", ""))
        if not _DIGEST.match(digest):
            raise RegistryError(f"{self}: {name}'s manifest names a bad config digest {digest[:80]!r}")
        _, body, _ = self._request("GET", f"/v2/{self.repository(name)}/blobs/{digest}", limit=MAX_CONFIG)
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryError(f"{self}: {name}'s config blob does not match its digest {digest}")
        return _json(body, "image config")

    def labels(self, name: str, tag: str) -> dict[str, str] | None:
        """The labels of the image under `name:tag` (manifest + config, no layer pull); None: no such tag."""
        found = self.labelled(name, tag)
        return found[1] if found is not None else None

    def labelled(self, name: str, tag: str) -> tuple[str, dict[str, str]] | None:
        """(manifest digest, labels) of the image under `name:tag`; None: no such tag."""
        manifest = self.manifest(name, tag)
        if manifest is None:
            return None
        labels = (self.config(name, manifest).get("config") or {}).get("Labels") or {}
        return manifest.digest, {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    def put_manifest(self, name: str, tag: str, manifest: Manifest) -> str:
        """PUT the manifest's bytes under `tag` — one request: the tag moves whole or not at all."""
        path = f"/v2/{self.repository(name)}/manifests/{_reference(tag)}"
        _, _, reply = self._request(
            "PUT", path, body=manifest.body, headers={"Content-Type": manifest.media_type}, ok=(201,)
        )
        stored = reply.get("docker-content-digest", manifest.digest)
        if stored != manifest.digest:
            raise RegistryError(f"{self}: {name}:{tag} stored as {stored}, not {manifest.digest}")
        return stored

    def put_blob(self, name: str, data: bytes) -> str:
        """A monolithic upload (POST, then PUT with the digest); the blob's digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _, _, reply = self._request("POST", f"/v2/{self.repository(name)}/blobs/uploads/", ok=(202,))
        location = reply.get("location", "")
        url = urllib.parse.urlsplit(location)
        if url.netloc and url.netloc != self.address or not url.path.startswith("/v2/"):
            raise RegistryError(f"{self}: upload location {location[:120]!r} is not on this registry")
        query = (url.query + "&" if url.query else "") + urllib.parse.urlencode({"digest": digest})
        self._request("PUT", f"{url.path}?{query}", body=data, ok=(201,))
        return digest

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        limit: int = MAX_ERROR,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request to the registry: authenticated as it asks (once), redirects followed for reads."""
        url = _Url(not self.plain_http, self.host.strip("[]"), self.port, path)
        sent = {"User-Agent": f"ndgen/{__version__}", **(headers or {})}
        scope = _scope(path, method)
        auth = {"Authorization": f"Bearer {self.tokens[scope]}"} if scope in self.tokens else _basic()
        status, data, reply = self._exchange(url, method, body, {**sent, **auth}, limit)
        # A caller that takes a 401 as an answer (ping) gets it; others authenticate as the registry asks.
        challenge = _bearer_challenge(reply.get("www-authenticate", "")) if status == 401 and 401 not in ok else None
        if challenge is not None:
            auth = {"Authorization": f"Bearer {self._token(challenge)}"}
            status, data, reply = self._exchange(url, method, body, {**sent, **auth}, limit)
        for _ in range(MAX_REDIRECTS):
            if status not in _REDIRECTS or method not in ("GET", "HEAD"):
                break
            url = self._redirected(url, reply.get("location", ""))
            same_host = (url.host, url.port) == (self.host.strip("[]"), self.port)
            status, data, reply = self._exchange(url, method, None, {**sent, **(auth if same_host else {})}, limit)
        if status in _REDIRECTS and method in ("GET", "HEAD"):
            raise RegistryError(f"registry {self}: {method} {path[:80]} redirected more than {MAX_REDIRECTS} times")
        if status not in ok:
            hint = _CREDENTIALS_HINT if status == 401 and not _basic() else ""
            raise RegistryError(f"registry {self} refused {method} {path[:80]}: HTTP {status} {_detail(data)}{hint}")
        if len(data) > limit:
            raise RegistryError(f"registry {self}: {method} {path[:80]} answered more than {limit} bytes")
        return status, data, reply

    def _exchange(
        self, url: _Url, method: str, body: bytes | None, headers: dict[str, str], limit: int
    ) -> tuple[int, bytes, dict[str, str]]:
        conn_type = http.client.HTTPSConnection if url.https else http.client.HTTPConnection
        conn = conn_type(url.host, url.port, timeout=TIMEOUT_S)
        what = f"{method} {url.path[:80]}"
        try:
            conn.request(method, url.path, body=body, headers=headers)
            response = conn.getresponse()
            data = _read(response, limit + 1, time.monotonic() + DEADLINE_S, what)
            reply = {k.lower(): v for k, v in response.getheaders()}
        except (OSError, http.client.HTTPException) as exc:
            where = f"registry {self}" if url.host == self.host.strip("[]") else f"{url.host} (from registry {self})"
            raise RegistryError(f"{where} does not answer ({what}): {exc}") from None
        finally:
            conn.close()
        return response.status, data, reply

    def _token(self, challenge: dict[str, str]) -> str:
        """A bearer token for the challenge's scope from its realm (with the credentials, if set)."""
        realm = _realm(challenge.get("realm", ""), str(self))
        query = urllib.parse.urlencode({k: challenge[k] for k in ("service", "scope") if challenge.get(k)})
        path = realm.path + ("&" if "?" in realm.path else "?") + query if query else realm.path
        headers = {"User-Agent": f"ndgen/{__version__}", **_basic()}
        status, data, _ = self._exchange(attrs.evolve(realm, path=path), "GET", None, headers, MAX_TOKEN)
        if status != 200:
            hint = "" if _basic() else _CREDENTIALS_HINT
            raise RegistryError(
                f"registry {self}: its token server {realm.host} refused: HTTP {status} {_detail(data)}{hint}"
            )
        if len(data) > MAX_TOKEN:
            raise RegistryError(f"registry {self}: its token server answered more than {MAX_TOKEN} bytes")
        answer = _json(data, "token answer")
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not _TOKEN.match(token):  # it goes into a header line as is
            raise RegistryError(f"registry {self}: its token server's answer holds no token")
        self.tokens[challenge.get("scope", "")] = token
        return token

    def _redirected(self, url: _Url, location: str) -> _Url:
        """Where a redirect points: an HTTPS URL (plain HTTP only from and to loopback)."""
        target = _url(urllib.parse.urljoin(url.text, location))
        if target is None or not (target.https or _loopback(target.host) and not url.https):
            raise RegistryError(f"registry {self} redirected to {location[:120]!r}: only HTTPS URLs are followed")
        return target


@attrs.frozen
class _Url:
    https: bool
    host: str
    port: int | None
    path: str  # with its query

    @property
    def text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.https else 'http'}://{host}{f':{self.port}' if self.port else ''}{self.path}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _scope(path: str, method: str) -> str:
    """The scope a token for this request has (the one distribution's challenge names)."""
    m = re.match(r"^/v2/(.+?)/(?:manifests|blobs|tags)/", path)
    if not m:
        return ""
    return f"repository:{m[1]}:" + ("pull" if method in ("GET", "HEAD") else "pull,push")


def _bearer_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a `Bearer` WWW-Authenticate challenge; None for any other scheme."""
    header = header[:MAX_CHALLENGE]
    if header[:7].lower() != "bearer ":
        return None
    return {k.lower(): v for k, v in _CHALLENGE_PARAM.findall(header[7:])}


def _realm(text: str, registry: str) -> _Url:
    """The token server a challenge names: an absolute HTTPS URL (HTTP to loopback only)."""
    url = _url(text)
    if url is None or not (url.https or _loopback(url.host)):
        raise RegistryError(
            f"registry {registry} names token server {text[:120]!r}: expected an https:// URL "
            "(credentials are never sent in the clear)"
        )
    return url


def _url(text: str) -> _Url | None:
    """An absolute http(s) URL with a host and a valid port, as parts; None for anything else."""
    parts = urllib.parse.urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return _Url(
        parts.scheme == "https", parts.hostname, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    )


def _read(response: http.client.HTTPResponse, limit: int, deadline: float, what: str) -> bytes:
    """At most `limit` bytes, in chunks, within the deadline (the timeout bounds each chunk only)."""
    chunks, total = [], 0
    while total < limit:
        if time.monotonic() > deadline:
            raise RegistryError(f"registry answer to {what} took longer than {DEADLINE_S:.0f} s")
        chunk = response.read1(min(1 << 16, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _reference(ref: str) -> str:
    if not (TAG.match(ref) or _DIGEST.match(ref)):
        raise RegistryError(f"{ref[:80]!r} is not a valid tag or digest")
    return ref


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise RegistryError(f"the registry's {what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"the registry's {what} is not a JSON object")
    return data


def _detail(body: bytes) -> str:
    """The start of an error answer, on one line."""
    return " ".join(body[:200].decode("utf-8", "replace").split())


def _basic() -> dict[str, str]:
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if not user or password is None:
        return {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
