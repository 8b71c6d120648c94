"""The fleet's registry client on a registry with token auth (ghcr.io's and Docker Hub's protocol): the real
docker-registry, started with `auth: token`, checks every token itself; tests/support/tokenserver.py issues
them as a public registry does (pulls to anyone, pushes to a known user).  Then the hostile side: a challenge
whose token server would get credentials in the clear, and a registry's redirects for blobs."""

from __future__ import annotations

import hashlib
import json
import urllib.error

import pytest

from neurodocker_nd.fleet import oci
from support import httpstub, ociregistry
from support.tokenserver import TokenServer

USER, PASSWORD = "alice", "s3cret"
LABELS = {"org.neurodesk.ndgen.fingerprint": "f" * 64}


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("token-registry")
    server = TokenServer(root / "auth", {USER: PASSWORD})
    registry = ociregistry.start(root / "registry", token=server)
    yield registry, server
    registry.stop()
    server.stop()


def _as(monkeypatch, user: str | None, password: str | None = None) -> None:
    for var, value in ((oci.USER_ENV, user), (oci.PASSWORD_ENV, password)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)


def _push_image(client: oci.Registry, name: str, tag: str) -> str:
    """A one-layer image with LABELS, uploaded blob by blob; its manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": LABELS}}).encode()
    layer = b"not really a tar, the registry does not look"
    descriptors = []
    for data, media_type in ((config, "application/vnd.oci.image.config.v1+json"),
                             (layer, "application/vnd.oci.image.layer.v1.tar")):  # fmt: skip
        descriptors.append({"mediaType": media_type, "digest": client.put_blob(name, data), "size": len(data)})
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": oci.MANIFEST_TYPES[0], "config": descriptors[0], "layers": descriptors[1:]}
    ).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return client.put_manifest(name, tag, oci.Manifest(body, oci.MANIFEST_TYPES[0], digest))


def test_a_user_pushes_and_anyone_reads_labels(token_registry, monkeypatch):
    registry, server = token_registry
    _as(monkeypatch, USER, PASSWORD)
    pushed = _push_image(oci.Registry.parse(f"{registry.address}/lab"), "tool", "1.0")
    with pytest.raises(urllib.error.HTTPError) as refused:  # the registry itself refuses a tokenless read ...
        registry.digest("lab/tool", "1.0")
    assert refused.value.code == 401
    assert any(user == USER and scopes == ["repository:lab/tool:pull,push"] for user, scopes in server.requests)

    _as(monkeypatch, None)
    reader = oci.Registry.parse(f"{registry.address}/lab")
    assert reader.labelled("tool", "1.0") == (pushed, LABELS)  # ... and answers ndgen's, with a pull token
    assert reader.labels("tool", "9.9") is None
    assert server.requests[-1] == (None, ["repository:lab/tool:pull"])


def test_a_token_is_asked_once_per_scope(token_registry, monkeypatch):
    registry, server = token_registry
    _as(monkeypatch, USER, PASSWORD)
    writer = oci.Registry.parse(f"{registry.address}/lab")
    _push_image(writer, "again", "1.0")
    _as(monkeypatch, None)
    reader = oci.Registry.parse(f"{registry.address}/lab")
    before = len(server.requests)
    for _ in range(3):
        assert reader.labels("again", "1.0") == LABELS  # manifest + config blob, three times
    assert server.requests[before:] == [(None, ["repository:lab/again:pull"])]


def test_without_credentials_a_push_is_refused_in_one_line(token_registry, monkeypatch):
    registry, _ = token_registry
    _as(monkeypatch, None)
    with pytest.raises(oci.RegistryError) as caught:
        _push_image(oci.Registry.parse(f"{registry.address}/lab"), "nobody", "1.0")
    message = str(caught.value)
    assert "HTTP 401" in message and oci.USER_ENV in message and "\n" not in message


def test_a_wrong_password_is_refused_by_the_token_server(token_registry, monkeypatch):
    registry, _ = token_registry
    _as(monkeypatch, USER, "wrong")
    with pytest.raises(oci.RegistryError, match=r"its token server 127\.0\.0\.1 refused: HTTP 401"):
        _push_image(oci.Registry.parse(f"{registry.address}/lab"), "tool", "2.0")


# ------------------------------------------------------------------ hostile registries

CONFIG = json.dumps({"config": {"Labels": LABELS}}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_TYPES[0],
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": CONFIG_DIGEST, "size": 2},
        "layers": [],
    }
).encode()


class _Server(httpstub.Handler):
    """Both ends of the hostile cases: a registry (`/v2/…`) and the storage it redirects to (`/storage/…`)."""

    seen: list[tuple[str, str | None]] = []  # (path, Authorization) of each request
    realm = ""
    redirect_to = ""
    token: object = None  # what /token answers

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        repo = self.path.split("/")[2] if self.path.startswith("/v2/") else ""
        if self.path.startswith("/storage/"):
            return self.send(200, CONFIG)
        if self.path.startswith("/token"):
            return self.send(200, json.dumps({"token": self.token}).encode())
        if repo == "challenged":
            return self.send(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{self.realm}",service="x"'})
        if "/manifests/" in self.path:
            return self.send(200, MANIFEST, {"Content-Type": oci.MANIFEST_TYPES[0]})
        if repo == "loop":
            return self.send(307, b"", {"Location": self.path})
        return self.send(307, b"", {"Location": self.redirect_to})


@pytest.fixture
def hostile():
    _Server.seen = []
    with httpstub.serving(_Server) as port:
        yield port


def test_credentials_go_to_a_token_server_over_https_only(hostile, monkeypatch):
    _as(monkeypatch, USER, PASSWORD)
    client = oci.Registry.parse(f"127.0.0.1:{hostile}")
    for realm in ("http://203.0.113.7/token", "ftp://127.0.0.1/token", "/token", "https:///token"):
        monkeypatch.setattr(_Server, "realm", realm)
        with pytest.raises(oci.RegistryError, match="expected an https:// URL"):
            client.manifest("challenged", "1.0")
    assert [path for path, _ in _Server.seen if "token" in path] == []


@pytest.mark.parametrize("token", ["a\r\nX-Injected: 1", "two words", "", 7, None, "x" * 70000])
def test_a_token_that_is_not_one_is_refused_before_it_reaches_a_header(hostile, monkeypatch, token):
    monkeypatch.setattr(_Server, "realm", f"http://127.0.0.1:{hostile}/token")
    monkeypatch.setattr(_Server, "token", token)
    with pytest.raises(oci.RegistryError, match="token server's answer holds no token|answered more than"):
        oci.Registry.parse(f"127.0.0.1:{hostile}").manifest("challenged", "1.0")
    assert all(auth is None or "Injected" not in auth for _, auth in _Server.seen)


def test_a_blob_redirect_is_followed_without_the_registrys_credentials(hostile, monkeypatch):
    _as(monkeypatch, USER, PASSWORD)
    with httpstub.serving(_Server) as storage:  # another host:port
        monkeypatch.setattr(_Server, "redirect_to", f"http://127.0.0.1:{storage}/storage/c")
        assert oci.Registry.parse(f"127.0.0.1:{hostile}").labels("tool", "1.0") == LABELS
    auth = dict(_Server.seen)
    assert auth["/v2/tool/manifests/1.0"] is not None  # the registry got them ...
    assert auth["/storage/c"] is None  # ... its storage did not


@pytest.mark.parametrize(
    ("repo", "location", "error"),
    [
        ("loop", "", "redirected more than 3 times"),
        ("tool", "http://198.51.100.1/storage/c", "only HTTPS URLs are followed"),
        ("tool", "file:///etc/passwd", "only HTTPS URLs are followed"),
        ("tool", "https://127.0.0.1:99999/x", "only HTTPS URLs are followed"),
    ],
)
def test_bad_redirects_end_in_one_line(hostile, monkeypatch, repo, location, error):
    monkeypatch.setattr(_Server, "redirect_to", location)
    with pytest.raises(oci.RegistryError, match=error):
        oci.Registry.parse(f"127.0.0.1:{hostile}").labels(repo, "1.0")
