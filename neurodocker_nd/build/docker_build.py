"""Build a rendered recipe on the Docker engine and test every package in the image.

Flow: recipe (from `render`) → build context (the Dockerfile itself, or the
Apptainer stand-in's translation of a `.def`, see `defbuild`) → streamed
build on the engine on the network `--network` names (see `NETWORKS`) → each
package's meta.yaml `test` run in the new image with `network_mode="none"`.

A build is skipped when an image with the same `org.ndgen.recipe-hash` label
exists: the hash covers the whole build context and the base image id, so an
unchanged recipe on an unchanged base is never built twice (CI relies on it).

An apt caching proxy (`AptProxy`, `--apt-proxy`) reaches RUN steps only as
Docker's predefined proxy build args: no ARG line, so the recipe is unchanged,
and the builders keep them out of the image's config and history.  It is not
part of the recipe-hash: an image built with or without it is the same image.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from neurodocker_nd.build import apptainer as defbuild
from neurodocker_nd.core import emulation, engine, outfile, scratchdir
from neurodocker_nd.core.arch import Arch, arch_ref, emulated, platform
from neurodocker_nd.core.engine import BuildContext
from neurodocker_nd.errors import EngineError, NdgenError

HASH_LABEL = "org.ndgen.recipe-hash"
TEST_TIMEOUT_S = 600
BUILDKIT_CLI = "/usr/bin/docker"  # Debian's docker.io (20.10): BuildKit offline; /usr/local/bin/docker 28 refuses it
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
# The classic builder colours stderr (ESC[91m … ESC[0m) and splits output at arbitrary bytes.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# RUN steps run recipe code: untrusted.  "default" is the engine's default network —
# a bridge on a normal Docker host, NATed out and cut off from the host's loopback;
# with dockerd --bridge=none (this project's CI) the legacy builder gives it no
# network at all and BuildKit refuses it ("network bridge not found").  "host" shares
# the host's network namespace, so RUN steps reach every service on 127.0.0.1 and
# link-local addresses: only ever an explicit opt-in, noted in the log and the report.
NETWORKS = ("default", "none", "host")
HOST_NETWORK_NOTE = (
    "--network host: RUN steps share this host's network, including services listening on "
    "its loopback (127.0.0.1, ::1) and link-local addresses"
)
# What a RUN step prints when it has no route to a mirror (apt, curl, wget, dnf, getent,
# and BuildKit asked for the default network of an engine without a bridge).
_NO_NETWORK = re.compile(
    r"Temporary failure (?:resolving|in name resolution)|[Cc]ould(?:n't| not) resolve"
    r"|unable to resolve host|Name or service not known|Network is unreachable|network bridge not found"
)
# An apt caching proxy (apt-cacher-ng) is plain http on host:port; nothing else is a proxy here.
APT_PROXY_ENV = "NDGEN_APT_PROXY"
APT_PROXY_TIMEOUT_S = 3.0  # the reachability check before a build: a dead proxy is an error, never a hang
_PROXY_URL = re.compile(
    r"^http://(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):(?P<port>[0-9]{1,5})/?"
)
# Never proxied: the host's own loopback (a local download server, as in the tests).
NO_PROXY = "localhost,127.0.0.1,::1"


class PackageLike(Protocol):
    # Read-only members: render's Package is a frozen attrs class.
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def method(self) -> str: ...
    @property
    def test(self) -> str | None: ...


class RecipeLike(Protocol):
    """What `render.render_recipe` returns (only the fields a build needs)."""

    @property
    def text(self) -> str: ...
    @property
    def fmt(self) -> str: ...
    @property
    def base_image(self) -> str: ...
    @property
    def packages(self) -> Sequence[PackageLike]: ...


@attrs.frozen
class TestOutcome:
    """One test command run in the built image."""

    name: str  # package name, or "%test" for a definition's own test section
    command: str
    exit_code: int | None  # None: timed out (and killed)
    seconds: float
    output: str  # stdout+stderr interleaved: the last `runcapture.TAIL_BYTES`, marked when cut

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def reason(self) -> str:
        if self.exit_code is None:
            return f"timed out after {self.seconds:.0f} s"
        last = next((ln.strip() for ln in reversed(self.output.splitlines()) if ln.strip()), "")
        return f"exit {self.exit_code}" + (f": {last[:120]}" if last else "")


@attrs.frozen
class BuildOutcome:
    tag: str
    image_id: str
    fmt: str
    reused: bool  # an identical build (same recipe-hash label) existed
    build_seconds: float
    log_path: Path
    recipe_path: Path
    tests: tuple[TestOutcome, ...]
    packages: tuple[PackageLike, ...]
    network: str = "default"  # what RUN steps ran on (NETWORKS)

    @property
    def failures(self) -> tuple[TestOutcome, ...]:
        return tuple(t for t in self.tests if not t.passed)

    @property
    def apptainer_command(self) -> str | None:
        return defbuild.apptainer_command(self.tag, self.recipe_path) if self.fmt == "singularity" else None


@attrs.frozen
class AptProxy:
    """An apt caching proxy for RUN steps, and where the setting came from (for messages)."""

    url: str  # http://host:port, as given minus a trailing "/"
    host: str  # an IPv6 address without its brackets
    port: int
    origin: str = "--apt-proxy"  # or APT_PROXY_ENV: the default from the environment

    @property
    def loopback(self) -> bool:
        """The host's own loopback: reached only by RUN steps on --network host."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: whatever it resolves to, the build network decides

    def build_args(self) -> dict[str, str]:
        """Docker's predefined proxy build args: RUN steps see them, the image keeps none of them.

        Only http: apt-cacher-ng is no https proxy, and the bases' mirrors are http.
        Both spellings, since tools differ (curl reads only the lower-case http_proxy).
        """
        return {"http_proxy": self.url, "HTTP_PROXY": self.url, "no_proxy": NO_PROXY, "NO_PROXY": NO_PROXY}


def parse_apt_proxy(url: str, origin: str = "--apt-proxy") -> AptProxy:
    """`url` as an AptProxy: http://HOST:PORT only (no user, path, query or https)."""
    match = _PROXY_URL.fullmatch(url)  # fullmatch: `$` would let a trailing newline through
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise NdgenError(
            f"{origin} {url!r}: expected http://HOST:PORT (an apt caching proxy, e.g. http://127.0.0.1:3142)"
        )
    host = match["host"]
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise NdgenError(f"{origin} {url!r}: {host!r} is not an IPv6 address") from None
    return AptProxy(url=url.rstrip("/"), host=host, port=port, origin=origin)


def check_apt_proxy(proxy: AptProxy, timeout: float = APT_PROXY_TIMEOUT_S) -> None:
    """A TCP connect to the proxy within `timeout` seconds, name resolution included; else one line."""
    deadline = time.monotonic() + timeout
    failure: OSError = OSError(f"no address for {proxy.host}")
    try:
        for family, kind, proto, _, address in _resolve(proxy.host, proxy.port, timeout):
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    sock.connect(address)
                    return
                except OSError as exc:
                    failure = exc
        raise failure
    except TimeoutError:
        reason = f"no connection within {timeout:g} s"
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
    raise NdgenError(f"{proxy.origin} {proxy.url}: no answer ({reason})")


def _resolve(host: str, port: int, timeout: float) -> list[tuple[Any, ...]]:
    """getaddrinfo, bounded: it has no timeout of its own (a dead DNS server takes many seconds)."""
    found: list[Any] = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    worker = threading.Thread(target=lookup, daemon=True)  # a lookup still running is left behind, daemon
    worker.start()
    worker.join(timeout)
    if not found:
        raise TimeoutError
    if isinstance(found[0], OSError):
        raise found[0]
    return found[0]


def apt_proxy_for(proxy: AptProxy | None, network: str) -> tuple[AptProxy | None, str]:
    """The proxy RUN steps on `network` get, and the log's note about it.

    A proxy they cannot reach is an error when asked for with --apt-proxy; the
    environment's default is only a default, so it is left out (said in the log).
    A proxy used is checked first: a dead one fails the build in seconds.
    """
    if proxy is None:
        return None, ""
    if network == "none":
        why = "RUN steps on --network none have no network"
    elif proxy.loopback and network != "host":
        why = f"a loopback address is reached only by RUN steps on --network host, not --network {network}"
    else:
        check_apt_proxy(proxy)
        return (
            proxy,
            f"# apt proxy: {proxy.url} (http_proxy for RUN steps, no_proxy={NO_PROXY}; not kept in the image)\n",
        )
    if proxy.origin != APT_PROXY_ENV:
        raise NdgenError(f"{proxy.origin} {proxy.url}: {why}")
    return None, f"# apt proxy: {APT_PROXY_ENV}={proxy.url} not used: {why}\n"


@attrs.frozen
class _Plan:
    context: BuildContext
    labels: dict[str, str]
    entrypoint: list[str] | None  # for test commands; None keeps the image's own
    has_def_test: bool


@attrs.frozen
class _Job:
    """What every step of one build reads: both entry points and both builders share it."""

    tag: str
    log: engine.StepLog
    no_cache: bool
    network: str  # one of NETWORKS: what RUN steps run on
    proxy: AptProxy | None  # as apt_proxy_for returned it: None when RUN steps get none
    arch: Arch = "x86_64"  # a non-native one builds with BuildKit's --platform, under qemu

    def start(self, header: str, proxy_note: str) -> None:
        """The log's first lines: what is built from what, the network, the apt proxy."""
        self.log.write(header)
        self.log.write(f"# network: {self.network}" + (f" — {HOST_NETWORK_NOTE}\n" if self.network == "host" else "\n"))
        self.log.write(proxy_note)

    def reuse_or(self, client: Any, digest: str, build: Callable[[], str]) -> tuple[str, bool]:
        """(image id, reused): an identical earlier build (same recipe-hash label) now tagged too, else `build()`."""
        image_id = _reuse(client, digest, self.tag, self.no_cache, self.log)
        return (image_id, True) if image_id is not None else (build(), False)


# --------------------------------------------------------------------------- public


def build_recipe(
    recipe: RecipeLike,
    tag: str,
    *,
    run_tests: bool = True,
    no_cache: bool = False,
    log_path: Path | None = None,
    test_timeout: float = TEST_TIMEOUT_S,
    network: str = "default",
    apt_proxy: AptProxy | None = None,
    arch: Arch = "x86_64",
) -> BuildOutcome:
    """Build `recipe` as `tag` on `network` (one of NETWORKS), then (unless `run_tests` is False) run its tests.

    `apt_proxy`: given to RUN steps that can reach it (see `apt_proxy_for`), never kept in the image.
    `arch` (core.arch's name): a non-native one is built FROM the base's per-arch tag
    (`arch_ref`) by BuildKit with `--platform`, its RUN steps and tests under qemu.
    """
    proxy, proxy_note = _preflight(tag, network, apt_proxy)
    base_ref, text = retarget(recipe.text, recipe.base_image, recipe.fmt, arch, f"ndgen build {tag}")
    log_path = Path(log_path) if log_path else engine.new_log_path("build", tag)
    recipe_path = log_path.with_suffix(".def" if recipe.fmt == "singularity" else ".Dockerfile")
    outfile.write_text(recipe_path, text, mkdir=True)
    plan = _plan(recipe.fmt, text, recipe_path)

    client = engine.connect()
    base = engine.local_image(client, base_ref, base=True)
    context_tar = plan.context.tar()
    digest = hashlib.sha256(context_tar.getvalue() + base.id.encode()).hexdigest()
    labels = {**plan.labels, HASH_LABEL: digest, "org.ndgen.format": recipe.fmt}

    started = time.monotonic()
    with engine.step_log(log_path, f"building {tag}") as log:
        job = _Job(tag, log, no_cache, network, proxy, arch)
        job.start(
            f"# ndgen build {tag} ({recipe.fmt}, {arch}) from {base_ref} ({base.id})\n# recipe: {recipe_path}\n",
            proxy_note,
        )
        image_id, reused = job.reuse_or(
            client, digest, lambda: _build_tar(client, job, context_tar, labels, recipe.fmt)
        )
        build_seconds = time.monotonic() - started
        tests = _run_tests(client, image_id, recipe, plan, log, test_timeout) if run_tests else []
    return BuildOutcome(
        tag=tag,
        image_id=image_id,
        fmt=recipe.fmt,
        reused=reused,
        build_seconds=build_seconds,
        log_path=log_path,
        recipe_path=recipe_path,
        tests=tuple(tests),
        packages=tuple(recipe.packages),
        network=network,
    )


def build_context_dir(
    context_dir: Path,
    fmt: str,
    tag: str,
    base_image: str,
    *,
    no_cache: bool = False,
    log_path: Path | None = None,
    network: str = "default",
    apt_proxy: AptProxy | None = None,
    arch: Arch = "x86_64",
) -> BuildOutcome:
    """Build a complete build context (`ndgen recipe --out`: the recipe plus its files) as `tag`.

    Docker: BuildKit through Debian's docker CLI, because recipes read staged
    files with `RUN --mount=type=bind,from=neurocontainer-cache` — the SDK's
    build API is the legacy builder, which has no RUN --mount. The cache is a
    named stage of the same Dockerfile (no buildx `--build-context` here).
    Singularity: the stand-in, with `%files` relative to the context.
    RUN steps run on `network` (one of NETWORKS), with `apt_proxy` as for `build_recipe`;
    `arch` as for `build_recipe` (the context's Dockerfile is left as it is: the retargeted
    copy is built from beside it).
    """
    proxy, proxy_note = _preflight(tag, network, apt_proxy)
    context_dir = Path(context_dir)
    recipe_name = "Singularity.def" if fmt == "singularity" else "Dockerfile"
    recipe_path = context_dir / recipe_name
    base_ref, text = retarget(recipe_path.read_text(encoding="utf-8"), base_image, fmt, arch, f"ndgen build {tag}")
    log_path = Path(log_path) if log_path else engine.new_log_path("build", tag)
    client = engine.connect()
    base = engine.local_image(client, base_ref, base=True)
    tree = _tree_digest(context_dir) + hashlib.sha256(text.encode()).hexdigest()
    digest = hashlib.sha256(tree.encode() + base.id.encode()).hexdigest()
    started = time.monotonic()
    saved = log_path.with_suffix(".def" if fmt == "singularity" else ".Dockerfile")
    outfile.write_text(saved, text, mkdir=True)
    with engine.step_log(log_path, f"building {tag}") as log:
        job = _Job(tag, log, no_cache, network, proxy, arch)
        job.start(
            f"# ndgen build {tag} ({fmt}, {arch}) from {base_ref} ({base.id})\n# context: {context_dir}\n", proxy_note
        )
        built = saved if emulated(arch) else recipe_path
        image_id, reused = job.reuse_or(
            client, digest, lambda: _build_dir(client, job, context_dir, built, fmt, digest)
        )
    return BuildOutcome(
        tag=tag,
        image_id=image_id,
        fmt=fmt,
        reused=reused,
        build_seconds=time.monotonic() - started,
        log_path=log_path,
        recipe_path=saved,
        tests=(),
        packages=(),
        network=network,
    )


def retarget(text: str, base_image: str, fmt: str, arch: Arch, what: str) -> tuple[str, str]:
    """(the base image to build on, the Dockerfile text) for `arch`.

    Native: unchanged.  Emulated: the emulation check (one line when qemu's F
    handler is missing, before any engine work), then every `FROM BASE` line
    points at the base's per-arch tag (`arm64v8/debian:bookworm`, core.arch):
    the classic store has one architecture per tag.
    """
    if not emulated(arch):
        return base_image, text
    if fmt != "docker":
        raise NdgenError(f"{what}: --arch {arch} builds Docker images only (the Apptainer stand-in has no --platform)")
    emulation.check(arch, what)
    base_ref = arch_ref(base_image, arch)
    line = re.compile(rf"^(FROM\s+(?:--platform=\S+\s+)?){re.escape(base_image)}(?=\s|$)", re.MULTILINE | re.IGNORECASE)
    return base_ref, line.sub(lambda m: m.group(1) + base_ref, text)


def _build_tar(client: Any, job: _Job, context_tar: Any, labels: dict[str, str], fmt: str) -> str:
    """The SDK's legacy builder natively; BuildKit (the only one with --platform) for an emulated arch."""
    if not emulated(job.arch):
        return _stream_build(client, job, context_tar, labels, fmt)
    import tarfile

    with scratchdir.directory("ndgen-build-", "/var/tmp") as scratch:
        with tarfile.open(fileobj=context_tar, mode="r") as archive:
            archive.extractall(scratch, filter="data")  # ndgen's own in-memory context
        network = _buildkit_network(client, job.network, job.log)
        return _buildkit_build(job, scratch, scratch / "Dockerfile", labels, network)


def _preflight(tag: str, network: str, apt_proxy: AptProxy | None) -> tuple[AptProxy | None, str]:
    """What both builds check before any engine work: the tag, the network, and the proxy RUN
    steps get with the log's note about it (see `apt_proxy_for`)."""
    check_tag(tag)
    check_network(network)
    return apt_proxy_for(apt_proxy, network)


def _build_dir(client: Any, job: _Job, context_dir: Path, recipe_path: Path, fmt: str, digest: str) -> str:
    if fmt == "docker":
        labels = {HASH_LABEL: digest, "org.ndgen.format": fmt}
        return _buildkit_build(job, context_dir, recipe_path, labels, _buildkit_network(client, job.network, job.log))
    text = recipe_path.read_text(encoding="utf-8")
    definition = defbuild.parse_definition(text, source=str(recipe_path))
    standin = defbuild.translate(definition, source=str(recipe_path), files_root=context_dir)
    labels = {**standin.labels, HASH_LABEL: digest, "org.ndgen.format": fmt}
    return _stream_build(client, job, standin.context.tar(), labels, fmt)


def _buildkit_network(client: Any, network: str, log: engine.StepLog) -> str:
    """BuildKit's name for `network`: on an engine without a bridge, "default" is "none".

    The legacy builder runs a "default" RUN step with no network when dockerd has
    --bridge=none; BuildKit fails it instead ("network bridge not found").  Giving
    BuildKit "none" there keeps one meaning of "default" for both builders.
    """
    if network == "default" and not client.networks.list(names=["bridge"]):
        log.write("# the engine has no bridge network (dockerd --bridge=none): BuildKit gets --network none\n")
        return "none"
    return network


def check_network(network: str) -> None:
    if network not in NETWORKS:
        raise NdgenError(f"bad build network {network!r}: choose one of {', '.join(NETWORKS)}")


def check_tag(tag: str) -> None:
    if not engine.is_image_name(tag, host=False):  # no registry host: there is no registry here
        raise NdgenError(f"bad image tag {tag!r}: expected name[:tag] in lower case, e.g. dcm2niix:sys")


# --------------------------------------------------------------------------- plan


def _plan(fmt: str, text: str, recipe_path: Path) -> _Plan:
    if fmt == "docker":
        return _Plan(BuildContext(text), {}, None, has_def_test=False)
    if fmt == "singularity":
        definition = defbuild.parse_definition(text, source=str(recipe_path))
        standin = defbuild.translate(definition, source=str(recipe_path))
        return _Plan(standin.context, dict(standin.labels), [defbuild.EXEC_ENTRYPOINT], standin.has_test)
    raise NdgenError(f"unknown format {fmt!r}; choose docker or singularity")


def _reuse(client: Any, digest: str, tag: str, no_cache: bool, log: engine.StepLog) -> str | None:
    """The id of an identical earlier build (same recipe-hash label), now also tagged `tag`; None: build."""
    images = [] if no_cache else client.images.list(filters={"label": f"{HASH_LABEL}={digest}"})
    if not images:
        return None
    repo, name_tag = engine.split_ref(tag)
    client.api.tag(images[0].id, repo, name_tag, force=True)
    log.write(f"# reusing {images[0].id} (same recipe-hash {digest})\n")
    return images[0].id


# --------------------------------------------------------------------------- build


def _tree_digest(root: Path) -> str:
    """sha256 over every file of a context (relative path, mode, bytes), in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        info = path.lstat()
        digest.update(f"{path.relative_to(root)}\0{info.st_mode:o}\0".encode())
        digest.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
    return digest.hexdigest()


# BuildKit's plain progress: `#7 [stage-1 3/9] RUN …`, output `#7 1.234 text`, `#7 ERROR: …`.
_BK_STEP = re.compile(r"^#(\d+) (\[[^\]]*\d+/\d+\] .*)$")
_BK_OUT = re.compile(r"^#(\d+) \d+\.\d+ (.*)$")
_BK_ERROR = re.compile(r"^#(\d+) ERROR: (.*)$")
_BK_COUNT = re.compile(r"\[[^\]]*?(\d+)/(\d+)\]")


def _buildkit_build(job: _Job, context_dir: Path, dockerfile: Path, labels: dict[str, str], network: str) -> str:
    """`DOCKER_BUILDKIT=1 /usr/bin/docker build --network NETWORK …`; the new image's id.

    `network` is BuildKit's name for the job's network (`_buildkit_network`).
    """
    import subprocess
    import tempfile

    if not os.access(BUILDKIT_CLI, os.X_OK):
        raise EngineError(
            f"building a recipe needs BuildKit through Debian's docker CLI at {BUILDKIT_CLI} "
            "(apt-get install docker.io): RUN --mount is not in the SDK's legacy builder"
        )
    with tempfile.TemporaryDirectory(prefix="ndgen-iid-") as scratch:
        iidfile = Path(scratch) / "iid"
        argv = _buildkit_argv(job, context_dir, dockerfile, labels, network, iidfile)
        job.log.write("# " + " ".join(argv) + "\n")
        progress = _BuildkitProgress()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = _ANSI.sub("", raw).rstrip("\n")
            job.log.write(line + "\n")
            progress.feed(line, job)
        if proc.wait() != 0:
            raise NdgenError(progress.failure(job, network))
        image_id = iidfile.read_text().strip() if iidfile.exists() else ""
    if not image_id:
        raise EngineError(f"build of {job.tag} finished without an image; log: {job.log.path}")
    return image_id


def _buildkit_argv(
    job: _Job, context_dir: Path, dockerfile: Path, labels: dict[str, str], network: str, iidfile: Path
) -> list[str]:
    argv = [BUILDKIT_CLI, "build", "--network", network, "--progress", "plain", "--pull=false"]
    argv += ["-f", str(dockerfile), "-t", job.tag, "--iidfile", str(iidfile)]
    argv += ["--platform", platform(job.arch)] if emulated(job.arch) else []
    argv += [f"--label={k}={v}" for k, v in labels.items()] + (["--no-cache"] if job.no_cache else [])
    argv += [f"--build-arg={k}={v}" for k, v in (job.proxy.build_args() if job.proxy else {}).items()]
    argv.append(str(context_dir))
    return argv


@attrs.define
class _BuildkitProgress:
    """Follows BuildKit's plain progress: each vertex's step, its last output lines, the first error."""

    steps: dict[str, str] = attrs.field(factory=dict)  # vertex → `[stage 3/9] RUN …`
    tails: dict[str, collections.deque[str]] = attrs.field(  # vertex → its last 40 output lines
        factory=lambda: collections.defaultdict(lambda: collections.deque(maxlen=40))
    )
    failed: tuple[str, str] | None = None  # (vertex, error) of the first ERROR line

    def feed(self, line: str, job: _Job) -> None:
        """Record one line; a numbered step moves the live line."""
        if match := _BK_STEP.match(line):
            self.steps[match[1]] = match[2]
            if count := _BK_COUNT.search(match[2]):
                job.log.status(f"{job.tag}: {_short(match[2], 80)}", int(count[1]) - 1, int(count[2]))
        elif match := _BK_ERROR.match(line):
            self.failed = self.failed or (match[1], match[2])
        elif match := _BK_OUT.match(line):
            self.tails[match[1]].append(match[2])

    def failure(self, job: _Job, network: str) -> str:
        """One line naming the failing step, its exit code and its most telling output line."""
        if self.failed is None:
            return f"build of {job.tag} failed before any step ran; log: {job.log.path}"
        vertex, error = self.failed
        code = re.search(r"exit code: (\d+)", error)
        exit_part = f"exit {code[1]}" if code else _short(error, 120)
        where = self.steps.get(vertex, "the Dockerfile")
        tail = self.tails.get(vertex, ())
        reason = _reason(tail) or error
        hint = _network_hint(network, [*tail, error])
        return f"build of {job.tag} failed at `{_short(where)}` ({exit_part}): {reason}{hint}; log: {job.log.path}"


def _network_hint(network: str, output: Sequence[str]) -> str:
    """Why a RUN step found no mirror, and the explicit way out; "" when that was not the failure."""
    if network == "host" or not any(_NO_NETWORK.search(line) for line in output):
        return ""
    if any("network bridge not found" in line for line in output):
        why = "this engine has no default bridge network (dockerd --bridge=none)"
    else:
        why = "RUN steps found no network"
    return (
        f" ({why}; to reach a package mirror, build with --network host, "
        "which also exposes this host's loopback services)"
    )


@attrs.define
class _StepTracker:
    """Follows the classic builder's stream: which step runs, and its last output lines."""

    number: int = 0
    total: int = 0
    instruction: str = ""
    tail: collections.deque = attrs.field(factory=lambda: collections.deque(maxlen=40))
    partial: str = ""

    def lines(self, chunk: str) -> list[str]:
        """Whole lines from a stream chunk, colour codes and carriage returns removed."""
        text = self.partial + _ANSI.sub("", chunk).replace("\r", "")
        *complete, self.partial = text.split("\n")
        return complete

    def feed(self, line: str) -> bool:
        """Record one output line; True when it starts a new step."""
        match = _STEP.match(line)
        if match:
            self.number, self.total, self.instruction = int(match[1]), int(match[2]), match[3]
            self.tail.clear()
            return True
        if line.strip():
            self.tail.append(line.rstrip())
        return False


def _stream_build(client: Any, job: _Job, context_tar: Any, labels: dict[str, str], fmt: str) -> str:
    """The SDK's (legacy) build of `context_tar`, streamed into the log; the new image's id."""
    import docker.errors

    step = _StepTracker()
    try:
        stream = client.api.build(
            fileobj=context_tar,
            custom_context=True,
            tag=job.tag,
            labels=labels,
            network_mode=job.network,  # NETWORKS: "host" only when asked for
            buildargs=job.proxy.build_args() if job.proxy else None,  # predefined proxy args: not kept in the image
            rm=True,
            forcerm=True,
            pull=False,
            nocache=job.no_cache,
            decode=True,
        )
        image_id = _follow_build(job, step, stream, fmt)
    except docker.errors.APIError as exc:
        job.log.write(f"ERROR: {exc}\n")
        raise EngineError(
            f"build of {job.tag} refused by the engine: {engine.first_line(exc)}; log: {job.log.path}"
        ) from exc
    if not image_id:
        image = engine.find_image(client, job.tag)
        if image is None:
            raise EngineError(f"build of {job.tag} finished without an image; log: {job.log.path}")
        image_id = image.id
    job.log.status(f"{job.tag}: built", step.total, step.total)
    return image_id


def _follow_build(job: _Job, step: _StepTracker, stream: Any, fmt: str) -> str:
    """The builder's stream into the log and the live line; the image id it names ("" when none)."""
    image_id = ""
    for chunk in stream:
        if "stream" in chunk:
            for line in step.lines(chunk["stream"]):
                job.log.write(line + "\n")
                if step.feed(line):
                    status = f"{job.tag}: step {step.number}/{step.total} {step.instruction}"
                    job.log.status(status, step.number - 1, step.total)
        elif "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        elif "error" in chunk:
            for line in step.lines("\n"):  # flush a last line without newline
                job.log.write(line + "\n")
                step.feed(line)
            detail = chunk.get("errorDetail") or {}
            job.log.write(f"ERROR: {chunk['error']}\n")
            raise NdgenError(_build_failure(job, step, detail.get("code"), chunk["error"], fmt))
    return image_id


def _build_failure(job: _Job, step: _StepTracker, code: Any, error: str, fmt: str) -> str:
    """One line naming the failing step (and, for %post, the failing command)."""
    reason = _reason(step.tail) or error
    exit_part = f"exit {code}" if code else error.strip().splitlines()[0][:120]
    if fmt == "singularity" and "/.post.script" in step.instruction:
        traced = [ln[2:] for ln in step.tail if ln.startswith("+ ")]
        where = f"%post command `{_short(traced[-1])}`" if traced else "%post"
    else:
        where = f"step {step.number}/{step.total} `{_short(step.instruction)}`" if step.number else "the Dockerfile"
    hint = _network_hint(job.network, [*step.tail, error])
    return f"build of {job.tag} failed at {where} ({exit_part}): {reason}{hint}; log: {job.log.path}"


def _reason(tail: Sequence[str]) -> str:
    """The most telling output line: apt's `E:` line, else the last non-trace line."""
    lines = [ln.strip() for ln in tail if ln.strip() and not ln.startswith("+ ")]
    lines = [ln for ln in lines if not ln.startswith("The command ") and not ln.startswith("Removing intermediate")]
    for line in reversed(lines):
        if line.startswith("E: "):
            return line
    return lines[-1] if lines else ""


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- tests


def _run_tests(
    client: Any, image_id: str, recipe: RecipeLike, plan: _Plan, log: engine.StepLog, timeout: float
) -> list[TestOutcome]:
    todo = [(p.name, p.test) for p in recipe.packages if p.test]
    outcomes = []
    for index, (name, command) in enumerate(todo, start=1):
        log.status(f"testing {name}: {command}", index - 1, len(todo) + plan.has_def_test)
        outcomes.append(_run_one(client, image_id, name, command, plan.entrypoint, log, timeout))
    if plan.has_def_test:
        log.status("running the definition's %test", len(todo), len(todo) + 1)
        outcomes.append(_run_one(client, image_id, "%test", "", [defbuild.TEST_ENTRYPOINT], log, timeout))
    return outcomes


def _run_one(
    client: Any,
    image_id: str,
    name: str,
    command: str,
    entrypoint: list[str] | None,
    log: engine.StepLog,
    timeout: float,
) -> TestOutcome:
    """`command` under /bin/sh -c in a fresh container of the image, with no network at all.

    The image decides how much the test prints: its output streams into the log, capped
    (`runcapture.LOG_BYTES`, a note, then the tail), and the outcome keeps a bounded tail.
    """
    argv = ["/bin/sh", "-c", command] if command else None
    log.write(f"\n# test {name}: {command or '/.singularity.d/test'}\n")
    result = engine.run_once(
        client,
        image_id,
        argv,
        entrypoint=entrypoint,
        timeout=timeout,
        labels={"org.ndgen.test": name},
        log=log.write,
    )
    log.write(f"\n# test {name} → {result.exit_code}\n")
    return TestOutcome(
        name=name,
        command=command or "%test section",
        exit_code=result.exit_code,
        seconds=result.seconds,
        output=result.output,
    )
