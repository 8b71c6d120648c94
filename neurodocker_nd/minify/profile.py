"""Minify profiles: a package's reference workload, read from ``minify/<name>.yaml``.

A profile says how to make input data inside the container (``setup``, run
once and untraced), which commands to trace (``commands``, each like one
``ndgen minify -c``), which in-container directories get a fresh writable
scratch directory (``mounts``), and extra keep rules (``keep``).  ``apt`` names
the Debian packages of the reference image the profile is measured on.

Validation reuses the registry's YAML reader and schema checker, so a bad
profile is one line naming the file, the line and the YAML path.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from neurodocker_nd.core import paths
from neurodocker_nd.core.yamlfile import check_schema, read_yaml, schema_validator
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.minify.model import ImageConfig, Mount
from neurodocker_nd.minify.sandbox import run_plain

if TYPE_CHECKING:
    from neurodocker_nd.build.docker_build import AptProxy

SCHEMA_NAME = "profile.schema.json"
REFERENCE_LABEL = "org.ndgen.reference.apt"  # the Debian packages a reference image holds


@attrs.frozen
class Profile:
    """A validated minify profile."""

    name: str
    description: str
    commands: tuple[str, ...]
    setup: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()  # in-container dirs backed by fresh scratch dirs
    apt: tuple[str, ...] = ()  # Debian packages of the reference image
    path: Path | None = attrs.field(default=None, eq=False)


def list_profiles(directory: Path | None = None) -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in (directory or paths.profiles_dir()).glob("*.yaml"))


def profile_path(name_or_path: str | Path, directory: Path | None = None) -> Path:
    """A profile name resolves in ``minify/``; anything path-like is taken as a file."""
    text = str(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise NdgenError(f"profile file not found: {path}")
        return path
    path = (directory or paths.profiles_dir()) / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(list_profiles(directory)) or "none"
        raise NdgenError(f"unknown profile {text!r} (known: {known})")
    return path


def load_profile(name_or_path: str | Path, directory: Path | None = None) -> Profile:
    """Read, validate and return a profile; errors are one line naming file and YAML path."""
    path = profile_path(name_or_path, directory)
    data = read_yaml(path)
    check_schema(data, path, schema_validator(paths.schemas_dir() / SCHEMA_NAME), "profile")
    if data["name"] != path.stem:
        raise NdgenError(f"{path}: name: {data['name']!r} must equal the file name {path.stem!r}")
    return Profile(
        name=data["name"],
        description=data["description"],
        commands=tuple(data["commands"]),
        setup=tuple(data.get("setup", ())),
        keep=tuple(data.get("keep", ())),
        mounts=tuple(data.get("mounts", ())),
        apt=tuple(data.get("apt", ())),
        path=path,
    )


def scratch_mounts(profile: Profile, scratch: Path) -> tuple[Mount, ...]:
    """Fresh, empty, writable host directories under `scratch` for the profile's mounts."""
    mounts = []
    for index, target in enumerate(profile.mounts):
        host = scratch / f"profile-mount-{index}"
        host.mkdir(parents=True)
        mounts.append(Mount(host=host, target=target))
    return tuple(mounts)


def run_setup(
    profile: Profile, rootfs: Path, config: ImageConfig, mounts: Sequence[Mount], timeout: float | None = None
) -> None:
    """Make the input data: each setup command once, untraced; the first failure is one line."""
    for command in profile.setup:
        result = run_plain(rootfs, config, command, mounts, timeout=timeout)
        if not result.ok:
            last = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
            raise NdgenError(
                f"profile {profile.name}: setup command failed (exit {result.exit_code}): "
                f"{command.splitlines()[0]!r}: {last[-1] if last else 'no output'}"
            )


def reference_dockerfile(apt: Sequence[str], base: str = "debian:bookworm") -> str:
    """The Dockerfile of a reference image: `base` plus Debian packages (no recommends)."""
    return (
        f"FROM {base}\n"
        "RUN apt-get update \\\n"
        f" && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {' '.join(apt)} \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
    )


def ensure_reference_image(
    client: Any, tag: str, apt: Sequence[str], base: str = "debian:bookworm", *, apt_proxy: AptProxy | None = None
) -> bool:
    """Build `tag` from `reference_dockerfile` unless it exists with the same packages.

    The package list is stored as a label, so editing a profile's `apt` rebuilds
    its image instead of silently reusing a stale one.  True when built now.
    `apt_proxy`: an apt cache for the RUN step, as `ndgen build --apt-proxy` passes
    it (Docker's predefined proxy build args: the image keeps none of it).
    """
    import docker.errors

    from neurodocker_nd.build.docker_build import apt_proxy_for

    wanted = " ".join(apt)
    try:
        if client.images.get(tag).labels.get(REFERENCE_LABEL) == wanted:
            return False
    except docker.errors.ImageNotFound:
        pass
    proxy, _ = apt_proxy_for(apt_proxy, "host")  # a dead proxy is an error in seconds, never a hang
    try:
        client.images.build(
            fileobj=io.BytesIO(reference_dockerfile(apt, base).encode()),
            tag=tag,
            labels={REFERENCE_LABEL: wanted},
            network_mode="host",  # no bridge network on this engine; apt needs the mirror
            buildargs=proxy.build_args() if proxy else None,
            rm=True,
            forcerm=True,
        )
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise NdgenError(f"cannot build reference image {tag} ({wanted}): {exc}") from exc
    return True
