"""The Docker engine edge shared by `ndgen base`, `ndgen build`, `ndgen test` and minify's verify.

Everything here imports the Docker SDK lazily, inside the functions, so that
`ndgen --pkg …` (rendering) never loads it.  Engine problems become one-line
:class:`EngineError` messages; a missing image becomes an :class:`NdgenError`
that says how to get it (no pull is ever attempted: there is no registry here).

It also owns the saved step log (:class:`StepLog`): every engine step writes its
full output to a file and shows only a one-line live status on stderr; and the
one runner of throw-away containers (:func:`run_once`, its output captured by
:mod:`runcapture`).
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import attrs

from neurodocker_nd.core import runcapture
from neurodocker_nd.errors import EngineError, NdgenError

# Builds and tests can take long (apt installs); the SDK's default 60 s read
# timeout would abort a quiet RUN step, so the client waits up to an hour.
_CLIENT_TIMEOUT_S = 3600


def connect() -> Any:
    """A connected `docker.DockerClient`, or EngineError naming the problem."""
    try:
        import docker
    except ImportError as exc:  # the package depends on it, but be explicit
        raise EngineError("the Docker SDK is not installed: pip install docker") from exc
    try:
        client = docker.from_env(timeout=_CLIENT_TIMEOUT_S)
        client.ping()
    except Exception as exc:  # any failure here means: no usable engine
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise EngineError(
            f"no Docker engine answers at {where} ({first_line(exc)}); "
            "start one, e.g. dockerd --bridge=none --iptables=false --ip-masq=false"
        ) from exc
    return client


def find_image(client: Any, ref: str) -> Any | None:
    """The local image `ref` (name:tag or id), or None when the engine lacks it."""
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot inspect image {ref}: {first_line(exc)}") from exc


def local_image(client: Any, ref: str, *, base: bool = False) -> Any:
    """The image `ref` on this engine, or the one error every command gives when it is not there
    (ndgen never pulls); a base image's says how to create it."""
    image = find_image(client, ref)
    if image is None:
        if base:
            hint = f"ndgen base {ref}" if _is_debootstrappable(ref) else f"docker load -i {slug(ref)}.tar"
            raise NdgenError(f"base image {ref} is not on this engine (ndgen never pulls): create it with: {hint}")
        raise NdgenError(f"image {ref} is not on this engine (ndgen never pulls): build it or `docker load` it")
    return image


def _is_debootstrappable(ref: str) -> bool:
    return ref.split("/")[-1].split(":")[0] in {"debian", "ubuntu"}


# Docker's reference grammar (distribution/reference): path components of lower-case letters
# and digits joined by one '.', one '_', '__' or a run of '-'; a tag of at most 128 word
# characters, dots and dashes, not starting with either.  A registry host is optional and
# only where the name may live in a registry.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_TAG = rf"{_COMPONENT}(?:/{_COMPONENT})*(?::\w[\w.-]{{0,127}})?"
_NAME = re.compile(_PATH_TAG)
_NAME_WITH_HOST = re.compile(rf"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_PATH_TAG}")


def is_image_name(ref: str | None, *, host: bool) -> bool:
    """`ref` is `name[:tag]` by docker's grammar; `host` allows a leading `registry[:port]/`.

    The whole text must match (a trailing newline is no part of a name).
    """
    grammar = _NAME_WITH_HOST if host else _NAME
    return grammar.fullmatch(ref or "") is not None


def split_ref(ref: str) -> tuple[str, str]:
    """`repo[:tag]` → (repo, tag) as the engine reads it (a registry port is not a tag);
    the tag defaults to `latest` as docker's does."""
    from docker.utils import parse_repository_tag

    repo, tag = parse_repository_tag(ref)
    return repo, tag or "latest"


def normalize_ref(ref: str) -> str:
    """`ref` in docker's fully qualified form: `repo` → `docker.io/library/repo:latest`.

    Docker's reference rules: the first component is a registry only when it holds
    a '.' or ':' or is `localhost`; Docker Hub names without a namespace live under
    `library/`; a missing tag is `latest` (a digest reference keeps its digest).
    """
    name, at, digest = ref.partition("@")
    repo, tag = split_ref(name)
    first, slash, rest = repo.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", repo
    if first in ("docker.io", "index.docker.io"):
        first = "docker.io"
        if "/" not in rest:
            rest = f"library/{rest}"
    full = f"{first}/{rest}"
    return f"{full}@{digest}" if at else f"{full}:{tag}"


def slug(text: str) -> str:
    """A file-name-safe rendering of an image reference."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (the SDK's `explanation` when it has one)."""
    text = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__


def logs_dir() -> Path:
    """Where build logs go by default: $XDG_CACHE_HOME/ndgen/logs (~/.cache/ndgen/logs)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ndgen" / "logs"


def new_log_path(kind: str, ref: str) -> Path:
    """A fresh log file name for one step on one image, e.g. build-dcm2niix_sys-20261125T083000Z.log."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return logs_dir() / f"{kind}-{slug(ref)}-{stamp}.log"


class StepLog:
    """The full output of one step in a file, plus one live progress line on stderr.

    Users see a spinner (and a bar once the number of steps is known) with the
    current step; the file keeps every line so a failure can be read in full
    (its path goes into every error message).
    """

    def __init__(self, path: Path, handle: IO[str], progress: Any) -> None:
        self.path = path
        self._handle = handle
        self._progress = progress
        self._task = progress.add_task("", total=None)

    def write(self, text: str) -> None:
        """Append raw output (may hold several lines) to the log file."""
        self._handle.write(text)
        self._handle.flush()

    def status(self, text: str, done: int | None = None, total: int | None = None) -> None:
        """Replace the live line; `done`/`total` drive the bar when given."""
        self._progress.update(self._task, description=text[:100], completed=done or 0, total=total)


# Off while several steps run at once (`ndgen fleet run --jobs N`): two live lines on one
# terminal overwrite each other; the fleet prints its own whole lines instead.
_live = {"on": True}


def live_progress(on: bool) -> None:
    _live["on"] = on


@contextmanager
def step_log(path: Path, title: str) -> Iterator[StepLog]:
    """Open `path` (creating its directory) and show a live progress line titled `title`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    path.parent.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not (console.is_terminal and _live["on"]),  # CI logs get the notes, not spinner frames
    )
    with path.open("w", encoding="utf-8") as handle, progress:
        log = StepLog(path, handle, progress)
        log.status(title)
        yield log


# --------------------------------------------------------------------------- build contexts


@attrs.frozen
class ContextFile:
    """One file of a build context: literal `data`, or a host path `source` (file or tree)."""

    arcname: str
    data: str | bytes | None
    source: Path | None = None
    mode: int = 0o644


@attrs.frozen
class BuildContext:
    """A Dockerfile plus the files it copies; sent to the engine as an in-memory tar."""

    dockerfile: str
    files: tuple[ContextFile, ...] = ()

    def tar(self) -> io.BytesIO:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            _add_bytes(archive, "Dockerfile", self.dockerfile.encode(), 0o644)
            for item in self.files:
                if item.source is not None:
                    archive.add(str(item.source), arcname=item.arcname)
                else:
                    data = item.data.encode() if isinstance(item.data, str) else (item.data or b"")
                    _add_bytes(archive, item.arcname, data, item.mode)
        buffer.seek(0)
        return buffer


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0  # fixed: identical inputs give an identical context (and build cache hits)
    archive.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------- one-shot containers


def run_once(
    client: Any,
    image: str,
    argv: list[str] | None,
    *,
    entrypoint: list[str] | None = None,
    timeout: float | None,
    binds: tuple[Path, ...] = (),
    mounts: Sequence[tuple[Path, str, bool]] = (),
    workdir: str | None = None,
    hostname: str | None = None,
    user: str | None = None,
    labels: dict[str, str] | None = None,
    probe: tuple[str, ...] = (),
    expect: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    tail_bytes: int = runcapture.TAIL_BYTES,
    log_bytes: int = runcapture.LOG_BYTES,
    keep_bytes: int = 0,
) -> runcapture.CapturedRun:
    """Run `argv` in a fresh container of `image` with no network at all; always remove it.

    The one runner for every throw-away container (`ndgen test`, `ndgen build`'s
    package tests, minify's verify rerun). `binds` are host directories mounted
    read-write at the same path (as Apptainer binds them); `mounts` are (host,
    target, read_only) triples. `probe` paths are looked up in the stopped
    container's own root by the engine (never on the host), so a path a test
    wrote anywhere in the container is seen, and a path can never reach out of it.
    `timeout` None waits for the command however long it runs; past a timeout the
    container is killed and `exit_code` is None. A command the runtime cannot
    start (e.g. no bash in the image) exits 127 with the reason on stderr, as the
    shell would report it, so a test fails with the reason instead of aborting the run.

    The image decides how much the command prints, so its output is streamed
    through a `runcapture.Capture`, never held whole: bounded tails (`tail_bytes`),
    `expect` texts watched for, the capped interleaved output into `log`, and,
    when `keep_bytes` > 0, that much of each stream exact (verify's byte comparison).
    """
    import docker.types

    capture = runcapture.Capture.new(
        expect=expect, log=log, tail_bytes=tail_bytes, log_bytes=log_bytes, keep_bytes=keep_bytes
    )
    volumes = {str(p): {"bind": str(p), "mode": "rw"} for p in binds}
    volumes.update({str(host): {"bind": target, "mode": "ro" if ro else "rw"} for host, target, ro in mounts})
    started = time.monotonic()
    container = client.containers.create(
        image,
        command=argv,
        entrypoint=entrypoint,
        network_mode="none",
        volumes=volumes,
        working_dir=workdir,
        hostname=hostname,
        user=user,
        labels=labels or {},
        # The output reaches ndgen through the attach; the engine keeps no second copy on its disk.
        log_config=docker.types.LogConfig(type="none"),
    )
    try:
        exit_code, present = _attached_run(client, container, capture, timeout, probe)
        seconds = time.monotonic() - started
    finally:
        container.remove(force=True)
    return capture.result(exit_code, seconds, present)


# After the command ended, how long the attach may take to deliver what is left.
_DRAIN_S = 30.0


def _attached_run(
    client: Any, container: Any, capture: runcapture.Capture, timeout: float | None, probe: tuple[str, ...]
) -> tuple[int | None, tuple[str, ...]]:
    """Start `container` with its output attached to `capture`: (exit code, probed paths present)."""
    import docker.errors

    # Attached before the start, so not a byte is missed; demux keeps stdout and stderr apart.
    stream = client.api.attach(container.id, stdout=True, stderr=True, stream=True, logs=False, demux=True)
    reader = capture.follow(stream)
    try:
        try:
            container.start()
        except docker.errors.APIError as exc:
            capture.say(first_line(exc))  # the runtime's reason, as the shell's 127 would come with one
            return 127, ()
        exit_code = _wait(container, timeout)
        reader.join(_DRAIN_S)
        return exit_code, tuple(p for p in probe if _exists_in(client, container.id, p))
    finally:
        stream.close()  # unblocks the reader if the engine still holds the attach open
        reader.join(_DRAIN_S)


def _wait(container: Any, timeout: float | None) -> int | None:
    """The command's exit code, or None when it was still running at `timeout` (then killed)."""
    import docker.errors
    from requests.exceptions import RequestException  # the SDK's transport: a read timeout lands here

    try:
        return int(container.wait(timeout=timeout)["StatusCode"])
    except RequestException:  # no answer within the timeout: a hung command
        try:
            container.kill()
        except docker.errors.APIError:  # it exited between the timeout and the kill
            pass
        return None


def _exists_in(client: Any, container_id: str, path: str) -> bool:
    """A HEAD on the engine's archive endpoint: the engine resolves `path` inside the container."""
    api = client.api
    url = f"{api.base_url}/v{api.api_version}/containers/{container_id}/archive"
    return api.head(url, params={"path": path}).status_code == 200
