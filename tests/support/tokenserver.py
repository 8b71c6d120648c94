"""A token server for the test registry: distribution's token auth, the protocol of ghcr.io and Docker Hub.

docker-registry is started with `auth: token` naming this server as its realm (tests/support/ociregistry.py).
It trusts a token signed by the leaf certificate carried in the JWT's `x5c` header when that certificate
chains to the CA in its `rootcertbundle`; what it then allows is the token's `access` claim, checked by the
registry itself. Grants are a public registry's: pulls to anyone, pushes only to a known user and password
(basic auth on the token request); a wrong password is a 401, as ghcr.io answers it.
Each request is recorded (user or None, scopes asked) for the tests to read.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import time
import urllib.parse
import uuid
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from support import httpstub

SERVICE = "ndgen-test-registry"
ISSUER = "ndgen-test-token-server"


def _certificate(
    subject: str, key: rsa.RSAPrivateKey, issuer: tuple[str, rsa.RSAPrivateKey] | None
) -> x509.Certificate:
    """A CA's self-signed certificate (no issuer) or a leaf signed by (issuer name, issuer key)."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signer = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256())


class TokenServer:
    def __init__(self, root: Path, users: dict[str, str]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = _certificate("ndgen test CA", ca_key, None)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        leaf = _certificate("ndgen test token signer", self.key, ("ndgen test CA", ca_key))
        self.x5c = [base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()]
        self.ca_bundle = root / "ca.pem"
        self.ca_bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.users = users
        self.requests: list[tuple[str | None, list[str]]] = []
        server = self

        class Handler(httpstub.Handler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                status, body = server.answer(url.path, query, self.headers.get("Authorization", ""))
                self.send(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

        self._stack = contextlib.ExitStack()
        self.realm = f"http://127.0.0.1:{self._stack.enter_context(httpstub.serving(Handler))}/token"

    def answer(self, path: str, query: dict[str, list[str]], authorization: str) -> tuple[int, dict]:
        if path != "/token" or query.get("service") != [SERVICE]:
            return 400, {"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]}
        user = None
        if authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(name) != password:
                self.requests.append((name, query.get("scope", [])))
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
            user = name
        scopes = query.get("scope", [])
        self.requests.append((user, scopes))
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = {"pull", "push"} if user else {"pull"}
            access.append({"type": kind, "name": name, "actions": sorted(set(actions.split(",")) & allowed)})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": self.x5c})
        return 200, {"token": token, "access_token": token, "expires_in": 300}

    def config(self) -> str:
        """The `auth:` section of docker-registry's config that trusts this server."""
        return (
            f"auth:\n  token:\n    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.ca_bundle}\n"
        )

    def stop(self) -> None:
        self._stack.close()
