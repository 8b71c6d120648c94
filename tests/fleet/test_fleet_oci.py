"""The fleet's registry client against a hostile registry: a real HTTP server on 127.0.0.1 that
lies about digests, answers endlessly, drips, or sends an upload elsewhere.  Each is one
RegistryError line, never a hang, never more than the cap read."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from neurodocker_nd.fleet import oci
from support import httpstub

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_TYPES[0],
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "0" * 64, "size": 2},
        "layers": [],
    }
).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


class _Hostile(httpstub.Handler):
    sent = {"endless": 0}

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if self.path == "/v2/":
            return self.send(200, b"{}")
        if name == "good":
            return self.send(200, MANIFEST, {"Content-Type": oci.MANIFEST_TYPES[0], "Docker-Content-Digest": DIGEST})
        if name == "lie":  # the bytes are not what the digest header says
            return self.send(
                200, MANIFEST, {"Content-Type": oci.MANIFEST_TYPES[0], "Docker-Content-Digest": "sha256:" + "1" * 64}
            )
        if name == "html":
            return self.send(200, b"<html>", {"Content-Type": "text/html"})
        if name == "endless":  # no length, zeros until the client hangs up (bounded here at 64 MiB)
            self.send_response(200)
            self.send_header("Content-Type", oci.MANIFEST_TYPES[0])
            self.end_headers()
            try:
                while self.sent["endless"] < 64 << 20:
                    self.wfile.write(b"\0" * 65536)
                    self.sent["endless"] += 65536
            except OSError:
                pass
            return None
        if name == "drip":  # a byte every 0.2 s: each wait is short, the whole is endless
            self.send_response(200)
            self.send_header("Content-Type", oci.MANIFEST_TYPES[0])
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            return None
        return self.send(404, b"{}")

    def do_POST(self):  # an upload whose location is another host
        self.send(202, b"", {"Location": "http://169.254.169.254/v2/x/blobs/uploads/1"})


@pytest.fixture(scope="module")
def hostile():
    with httpstub.serving(_Hostile) as port:
        yield oci.Registry.parse(f"127.0.0.1:{port}")


def test_a_good_manifest(hostile):
    manifest = hostile.manifest("x", "good")
    assert manifest is not None and manifest.digest == DIGEST and manifest.body == MANIFEST
    assert hostile.manifest("x", "missing") is None


def test_a_digest_that_lies(hostile):
    with pytest.raises(oci.RegistryError, match="does not match its digest"):
        hostile.manifest("x", "lie")


def test_not_an_image_manifest(hostile):
    with pytest.raises(oci.RegistryError, match="is a text/html manifest, not an image"):
        hostile.manifest("x", "html")


def test_an_endless_answer_is_cut_at_the_cap(hostile):
    with pytest.raises(oci.RegistryError, match=f"answered more than {oci.MAX_MANIFEST} bytes"):
        hostile.manifest("x", "endless")
    assert _Hostile.sent["endless"] < 64 << 20  # the client hung up long before the server's own bound


def test_a_dripping_answer_ends_at_the_deadline(hostile, monkeypatch):
    monkeypatch.setattr(oci, "DEADLINE_S", 1.0)
    started = time.monotonic()
    with pytest.raises(oci.RegistryError, match="took longer than 1 s"):
        hostile.manifest("x", "drip")
    assert time.monotonic() - started < 5


def test_an_upload_sent_to_another_host(hostile):
    with pytest.raises(oci.RegistryError, match="upload location 'http://169.254.169.254/.*' is not on this registry"):
        hostile.put_blob("x", b"{}")


@pytest.mark.parametrize("bad", ["x/../y", "UPPER", "a" * 300, "x:1:2"])
def test_names_and_tags_are_checked_before_any_request(hostile, bad):
    with pytest.raises(oci.RegistryError):
        hostile.manifest(bad, "good")
    with pytest.raises(oci.RegistryError):
        hostile.manifest("x", bad.replace("UPPER", "a b"))
