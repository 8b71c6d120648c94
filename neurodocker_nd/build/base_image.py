"""Base images without a registry: `debootstrap --variant=minbase` → `docker import`.

Sites that cannot `docker pull` still need `debian:bookworm` or `ubuntu:24.04`
to build on. This step bootstraps the distribution from an apt mirror into a
scratch directory and streams it (`tar` → Docker SDK import, no tarball on disk)
into an image carrying the official image's ENV and CMD, so recipes written for
the official images build unchanged.

Suites come from the tag (`bookworm`, `12`, `jammy`, `22.04`, `bookworm-slim`…)
using the distro-info-data tables Debian ships, or from `--suite`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs

from neurodocker_nd.core import emulation, engine, scratchdir
from neurodocker_nd.core.arch import Arch, arch_ref, docker_arch, emulated, platform
from neurodocker_nd.errors import EngineError, NdgenError

Distro = Literal["debian", "ubuntu"]

DEFAULT_MIRRORS: dict[Distro, str] = {
    "debian": "http://deb.debian.org/debian",
    "ubuntu": "http://archive.ubuntu.com/ubuntu",
}
# Ubuntu's other architectures live on its ports archive (debootstrap's scripts/gutsy: every
# architecture but amd64 and i386 defaults to it).
UBUNTU_PORTS = "http://ports.ubuntu.com/ubuntu-ports"
# What the official images set (docker inspect debian:bookworm / ubuntu:24.04).
OFFICIAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OFFICIAL_CMD: dict[Distro, str] = {"debian": '["bash"]', "ubuntu": '["/bin/bash"]'}

DISTRO_INFO_DIR = Path("/usr/share/distro-info")
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
UBUNTU_KEYRING = Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg")

# The container tweaks the official images get from debuerreotype's
# minimizing config: no service starts during `apt-get install` (there is no
# init in a build), no fsync per file in dpkg (much faster builds), and apt
# leaves no caches or translations behind in derived layers.
CONTAINER_CONFIG: dict[str, str] = {
    "usr/sbin/policy-rc.d": "#!/bin/sh\n# ndgen base: no daemons start inside image builds\nexit 101\n",
    "etc/dpkg/dpkg.cfg.d/docker-apt-speedup": "force-unsafe-io\n",
    "etc/apt/apt.conf.d/docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
    ),
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
    "etc/apt/apt.conf.d/docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
}
# Left behind by debootstrap, useless (or host-specific) in an image.
CLEAN_GLOBS = (
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/log/*.log",
    "var/log/apt/*",
    "tmp/*",
    "var/tmp/*",
)
HOST_FILES = ("etc/hostname", "etc/resolv.conf")  # docker mounts its own at run time


@attrs.frozen
class BaseSpec:
    """What to bootstrap and how to tag it."""

    ref: str  # the image reference to create, e.g. debian:bookworm-slim
    distro: Distro
    suite: str  # debootstrap suite (codename), e.g. bookworm, noble
    mirror: str  # apt mirror URL, no trailing slash
    keyring: Path | None = None  # archive keyring; None: the distro's usual one
    arch: Arch = "x86_64"  # core.arch's name; an emulated one is bootstrapped in two stages

    @property
    def archive_keyring(self) -> Path | None:
        """The keyring debootstrap verifies the mirror with (None: its built-in Debian default)."""
        return self.keyring or (UBUNTU_KEYRING if self.distro == "ubuntu" else None)


@attrs.frozen
class BaseResult:
    ref: str
    image_id: str
    created: bool  # False: the tag existed and nothing was done
    seconds: float
    log_path: Path | None


# --------------------------------------------------------------------------- plan


def plan_base(
    image: str,
    mirror: str | None = None,
    suite: str | None = None,
    keyring: Path | None = None,
    arch: Arch = "x86_64",
) -> BaseSpec:
    """Work out distro, suite, mirror and tag for `image` (pure: no engine, no network).

    A non-native `arch` is tagged with its official namespace (core.arch.arch_ref):
    `debian:bookworm` for aarch64 becomes `arm64v8/debian:bookworm`.
    """
    if not image or any(c.isspace() for c in image):
        raise NdgenError(f"bad image reference {image!r}: expected NAME[:TAG], e.g. debian:bookworm")
    repo, tag = engine.split_ref(image)
    name = repo.rsplit("/", 1)[-1]
    distro = _guess_distro(name, mirror, suite or tag)
    chosen = suite or _suite_from_tag(distro, tag)
    if chosen is None:
        raise NdgenError(f"cannot tell the {distro} suite from tag {tag!r} of {image}; pass --suite CODENAME")
    return BaseSpec(
        ref=arch_ref(f"{repo}:{tag}", arch),
        distro=distro,
        suite=chosen,
        mirror=(mirror or _default_mirror(distro, arch)).rstrip("/"),
        keyring=Path(keyring) if keyring else None,
        arch=arch,
    )


def _default_mirror(distro: Distro, arch: Arch) -> str:
    return UBUNTU_PORTS if distro == "ubuntu" and arch != "x86_64" else DEFAULT_MIRRORS[distro]


def _guess_distro(name: str, mirror: str | None, tag_or_suite: str) -> Distro:
    """Ubuntu when the image, the mirror or the tag/suite says so; Debian otherwise."""
    if name == "ubuntu" or (mirror and "ubuntu" in mirror.lower()):
        return "ubuntu"
    if name != "debian" and _strip_variant(tag_or_suite) in _names("ubuntu"):
        return "ubuntu"
    return "debian"


def _names(distro: Distro) -> set[str]:
    """Every series and version number distro-info-data knows for `distro`."""
    rows = _distro_info(distro)
    return {r["series"] for r in rows} | {r["version"].replace(" LTS", "") for r in rows if r["version"]}


def _strip_variant(tag: str) -> str:
    """`bookworm-slim` → `bookworm`: the official variants share one suite."""
    return tag.removesuffix("-slim")


def _suite_from_tag(distro: Distro, tag: str) -> str | None:
    """bookworm / 12 / 12.5 / jammy / 22.04 / latest → the debootstrap suite, or None."""
    tag = _strip_variant(tag)
    rows = _distro_info(distro)
    if tag == "latest":
        released = [r for r in rows if _released(r) and (distro == "debian" or "LTS" in r["version"])]
        return released[-1]["series"] if released else None
    for row in rows:
        version = row["version"].replace(" LTS", "")
        if tag in (row["series"], version) or (distro == "debian" and version and tag.split(".")[0] == version):
            return row["series"]
    # Not in the tables (or no tables installed): a codename debootstrap knows.
    return tag if (DEBOOTSTRAP_SCRIPTS / tag).exists() and not tag[:1].isdigit() else None


def debootstrap_script(spec: BaseSpec) -> Path | None:
    """The script for suites newer than the host's debootstrap (None: it has its own).

    debootstrap itself links every Ubuntu release since gutsy to one script and
    every Debian release since squeeze to debian-common (via sid); a suite it
    does not know yet is bootstrapped the same way.  The mirror check has
    already proven the suite exists.
    """
    if (DEBOOTSTRAP_SCRIPTS / spec.suite).exists():
        return None
    fallback = DEBOOTSTRAP_SCRIPTS / ("gutsy" if spec.distro == "ubuntu" else "sid")
    return fallback if fallback.exists() else None


def _distro_info(distro: Distro) -> list[dict[str, str]]:
    """Rows of distro-info-data's CSV (version, codename, series, release…), oldest first."""
    path = DISTRO_INFO_DIR / f"{distro}.csv"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _released(row: dict[str, str]) -> bool:
    release = row.get("release") or ""
    return bool(release) and release <= dt.date.today().isoformat()


# --------------------------------------------------------------------------- checks


def check_host(spec: BaseSpec) -> None:
    """Root, debootstrap and the archive keyring: what the host needs before anything runs."""
    if os.geteuid() != 0:
        raise NdgenError("ndgen base must run as root (debootstrap creates device nodes and owns files as root)")
    if shutil.which("debootstrap") is None:
        raise NdgenError("debootstrap is not installed (apt-get install debootstrap)")
    keyring = spec.archive_keyring
    if keyring is not None and not keyring.is_file():
        raise NdgenError(
            f"archive keyring {keyring} not found; install the {spec.distro} archive keyring or pass --keyring FILE"
        )


def check_mirror(mirror: str, suite: str, timeout: float = 15.0) -> None:
    """The mirror must serve dists/SUITE/Release: a quick, clear failure beats a debootstrap log."""
    url = f"{mirror}/dists/{suite}/Release"
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        raise NdgenError(f"mirror {mirror} has no suite {suite!r} ({url} → HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NdgenError(f"mirror {mirror} is unreachable ({reason})") from None


# --------------------------------------------------------------------------- build


def build_base(spec: BaseSpec, force: bool = False) -> BaseResult:
    """Create the image `spec.ref` unless it exists (or `force`); never touch other tags."""
    check_host(spec)
    emulation.check(spec.arch, f"ndgen base {spec.ref}")
    client = engine.connect()
    existing = engine.find_image(client, spec.ref)
    if existing is not None and not force:
        return BaseResult(spec.ref, existing.id, created=False, seconds=0.0, log_path=None)
    check_mirror(spec.mirror, spec.suite)
    started = time.monotonic()
    log_path = engine.new_log_path("base", spec.ref)
    with engine.step_log(log_path, f"debootstrap {spec.suite} ({spec.arch}) from {spec.mirror}") as log:
        # debootstrap mounts /proc and /sys in its target: never delete through them.
        with scratchdir.directory("ndgen-base-", scratch_parent()) as scratch:
            rootfs = scratch / "rootfs"
            _debootstrap(spec, rootfs, log)
            if emulated(spec.arch):
                _second_stage(spec, rootfs, log)
            _containerize(rootfs)
            log.status(f"import → {spec.ref}")
            if emulated(spec.arch):
                image_id = _build_from_rootfs(client, rootfs, scratch / "import", spec, log)
            else:
                image_id = _import_rootfs(client, rootfs, spec, log)
    return BaseResult(spec.ref, image_id, created=True, seconds=time.monotonic() - started, log_path=log_path)


def scratch_parent() -> str:
    """Where the rootfs is bootstrapped unless NDGEN_SCRATCH says otherwise: scratchdir's
    private base in /var/tmp (/var/tmp/ndgen-UID, 0700: see scratchdir.base).

    Not /tmp: it is often a tmpfs (RAM) mounted nodev, and debootstrap makes device nodes.
    """
    return "/var/tmp"


def debootstrap_argv(spec: BaseSpec, target: Path) -> list[str]:
    argv = ["debootstrap", "--variant=minbase", "--components=main"]
    if emulated(spec.arch):
        # The foreign arch's maintainer scripts run in the second stage, under qemu (F handler).
        argv += ["--foreign", f"--arch={docker_arch(spec.arch)}"]
    if spec.archive_keyring is not None:
        argv.append(f"--keyring={spec.archive_keyring}")
    script = debootstrap_script(spec)
    return [*argv, spec.suite, str(target), spec.mirror, *([str(script)] if script else [])]


def _debootstrap(spec: BaseSpec, rootfs: Path, log: engine.StepLog) -> None:
    _run_logged(debootstrap_argv(spec, rootfs), spec, log, "debootstrap")


def _second_stage(spec: BaseSpec, rootfs: Path, log: engine.StepLog) -> None:
    """`chroot ROOTFS /debootstrap/debootstrap --second-stage`: the target's own binaries, emulated.

    The target is ndgen's fresh scratch rootfs, made by the first stage from
    the signed archive; the chroot runs its packages' maintainer scripts.
    """
    _run_logged(["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"], spec, log, "second stage")


def _run_logged(
    argv: list[str], spec: BaseSpec, log: engine.StepLog, what: str, env: dict[str, str] | None = None
) -> None:
    log.write("$ " + " ".join(argv) + "\n")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    last = ""
    for line in proc.stdout:
        log.write(line)
        if line.strip():
            last = line.strip()
            log.status(f"{what} {spec.suite}: {last}")
    if proc.wait() != 0:
        raise NdgenError(f"{what} {spec.suite} failed (exit {proc.returncode}): {last}; log: {log.path}")


def _containerize(rootfs: Path) -> None:
    """Apply the official images' container config and drop caches and host files."""
    for rel, text in CONTAINER_CONFIG.items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if rel.startswith("usr/sbin/"):
            path.chmod(0o755)
    for pattern in CLEAN_GLOBS:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    for rel in HOST_FILES:
        path = rootfs / rel
        if path.is_file() and not path.is_symlink():
            path.write_text("", encoding="utf-8")


def _import_rootfs(client: Any, rootfs: Path, spec: BaseSpec, log: engine.StepLog) -> str:
    """Stream `tar -C rootfs .` into the engine; tag only a complete import."""
    changes = [
        f"ENV PATH={OFFICIAL_PATH}",
        f"CMD {OFFICIAL_CMD[spec.distro]}",
        f"LABEL org.ndgen.base.suite={spec.suite} org.ndgen.base.mirror={spec.mirror}",
    ]
    # --one-file-system: never follow a mount that a failed bootstrap left behind.
    argv = ["tar", "--numeric-owner", "--one-file-system", "--xattrs", "-C", str(rootfs), "-cf", "-", "."]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        # Untagged first: a tar that dies half-way must not leave a tagged, half-written image.
        reply = client.api.import_image_from_stream(_chunks(proc.stdout), changes=changes)
    except Exception as exc:
        proc.kill()
        proc.wait()
        raise EngineError(f"docker import of {spec.ref} failed: {engine.first_line(exc)}") from exc
    tar_err = proc.stderr.read().decode(errors="replace").strip()
    image_id = _imported_id(reply)
    if proc.wait() != 0 or not image_id:
        if image_id:
            client.images.remove(image_id, force=True)
        raise EngineError(f"docker import of {spec.ref} failed: {tar_err or reply!r}")
    repo, tag = engine.split_ref(spec.ref)
    client.api.tag(image_id, repo, tag, force=True)
    log.write(f"imported {image_id} as {spec.ref}\n")
    return image_id


def _build_from_rootfs(client: Any, rootfs: Path, context: Path, spec: BaseSpec, log: engine.StepLog) -> str:
    """`FROM scratch` + `ADD rootfs.tar /` built by BuildKit with `--platform`: the image's
    Architecture is the rootfs's (Debian's docker 20.10 ignores `docker import --platform`)."""
    from neurodocker_nd.build.docker_build import BUILDKIT_CLI

    context.mkdir(mode=0o700)
    tar = ["tar", "--numeric-owner", "--one-file-system", "--xattrs", "-C", str(rootfs)]
    _run_logged([*tar, "-cf", str(context / "rootfs.tar"), "."], spec, log, "tar")
    lines = [
        "FROM scratch",
        "ADD rootfs.tar /",
        f"ENV PATH={OFFICIAL_PATH}",
        f"CMD {OFFICIAL_CMD[spec.distro]}",
        f"LABEL org.ndgen.base.suite={spec.suite} org.ndgen.base.mirror={spec.mirror}",
    ]
    (context / "Dockerfile").write_text("\n".join(lines) + "\n", encoding="utf-8")
    iidfile = context.parent / "iid"
    argv = [BUILDKIT_CLI, "build", "--platform", platform(spec.arch), "--progress", "plain"]
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    _run_logged([*argv, "--iidfile", str(iidfile), str(context)], spec, log, "BuildKit import", env)
    image_id = iidfile.read_text(encoding="ascii").strip() if iidfile.is_file() else ""
    if not image_id:
        raise EngineError(f"the import of {spec.ref} gave no image; log: {log.path}")
    repo, tag = engine.split_ref(spec.ref)
    client.api.tag(image_id, repo, tag, force=True)  # untagged until complete, as docker import
    log.write(f"built {image_id} ({platform(spec.arch)}) as {spec.ref}\n")
    return image_id


def _chunks(stream: Any, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def _imported_id(reply: Any) -> str:
    """The image id from the engine's import reply (JSON lines ending in {"status": "sha256:…"})."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    for line in reversed(text.strip().splitlines()):
        try:
            status = json.loads(line).get("status", "")
        except (ValueError, AttributeError):
            continue
        if status.startswith("sha256:"):
            return status
    return ""
