"""Running aarch64 images on an x86_64 host: qemu-user through binfmt_misc.

The kernel hands an aarch64 ELF to the interpreter registered for it in
binfmt_misc.  Containers (a build's RUN step, a test, minify's sandbox) have
their own root, where the host's /usr/libexec/qemu-binfmt/… does not exist: the
handler needs the F (fix-binary) flag, with which the kernel opens the
interpreter once, at registration, and uses that file in every namespace.

`check(arch)` is asked before any aarch64 build or run: it reads, never changes,
the host.  `setup()` (`ndgen setup-emulation`, root, opt-in) mounts binfmt_misc
and registers qemu-user-static's own handler line with F added.  The line —
magic, mask, interpreter — is read from the installed package's binfmt.d file,
never written here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import attrs

from neurodocker_nd.core.arch import Arch, emulated
from neurodocker_nd.errors import NdgenError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# What qemu-user-static (Debian 12: 1:7.2) installs for systemd-binfmt, one
# `:name:type:offset:magic:mask:interpreter:flags` line per architecture.
BINFMT_D = (Path("/usr/lib/binfmt.d"), Path("/etc/binfmt.d"))
HANDLER = "qemu-aarch64"
FIX_COMMANDS = "apt-get install qemu-user-static && ndgen setup-emulation"
_MAX_ENTRIES = 256  # binfmt_misc entries read while looking for a handler
_MAX_ENTRY_BYTES = 4096
# ELF64, little-endian, e_machine 183 (EM_AARCH64) at byte 18: how a handler's magic names aarch64.
_AARCH64_MAGIC_PREFIX = "7f454c460201"
_AARCH64_MACHINE = "b700"


class EmulationMissing(NdgenError):
    """The host cannot run the requested architecture's binaries in containers."""


@attrs.frozen
class Handler:
    """One binfmt_misc entry as /proc/sys/fs/binfmt_misc/NAME shows it."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    magic: str

    @property
    def runs_aarch64(self) -> bool:
        return self.magic.startswith(_AARCH64_MAGIC_PREFIX) and self.magic[36:40] == _AARCH64_MACHINE

    @property
    def usable(self) -> bool:
        """Enabled, for aarch64 ELF files, and with F: containers find the interpreter."""
        return self.enabled and self.runs_aarch64 and "F" in self.flags


def mounted(binfmt: Path = BINFMT_DIR) -> bool:
    return (binfmt / "register").exists()


def read_handler(path: Path) -> Handler | None:
    """Parse one entry (None when it is not a readable, small regular entry)."""
    try:
        with path.open("rb") as handle:
            text = handle.read(_MAX_ENTRY_BYTES).decode("ascii", "replace")
    except OSError:
        return None
    fields: dict[str, str] = {}
    lines = text.splitlines()
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    return Handler(
        name=path.name,
        enabled=bool(lines) and lines[0].strip() == "enabled",
        interpreter=fields.get("interpreter", ""),
        flags=fields.get("flags", ""),
        magic=fields.get("magic", ""),
    )


def handlers(binfmt: Path = BINFMT_DIR) -> list[Handler]:
    """The registered handlers (at most `_MAX_ENTRIES`), none when binfmt_misc is not mounted."""
    if not mounted(binfmt):
        return []
    found: list[Handler] = []
    for path in sorted(binfmt.iterdir())[:_MAX_ENTRIES]:
        if path.name in ("register", "status"):
            continue
        handler = read_handler(path)
        if handler is not None:
            found.append(handler)
    return found


def problem(arch: Arch, binfmt: Path = BINFMT_DIR) -> str | None:
    """What keeps `arch` binaries from running in containers here; None when nothing does."""
    if not emulated(arch):
        return None
    if arch != "aarch64":
        return f"ndgen emulates only aarch64, not {arch}"
    if not mounted(binfmt):
        return f"binfmt_misc is not mounted at {binfmt}"
    mine = [h for h in handlers(binfmt) if h.runs_aarch64]
    if any(h.usable for h in mine):
        return None
    if not mine:
        return "no binfmt_misc handler runs aarch64 binaries (qemu-user-static)"
    h = mine[0]
    if not h.enabled:
        return f"the binfmt_misc handler {h.name} is disabled"
    flags = h.flags or "none"
    return f"the binfmt_misc handler {h.name} lacks the F flag (flags: {flags}): containers cannot find its interpreter"


def check(arch: Arch, what: str, binfmt: Path = BINFMT_DIR) -> None:
    """Raise one line naming what is missing and the commands that fix it; never changes the host."""
    why = problem(arch, binfmt)
    if why is not None:
        raise EmulationMissing(f"{what} for {arch} needs qemu-user emulation: {why}; as root run: {FIX_COMMANDS}")


# --------------------------------------------------------------------------- setup (opt-in, root)


@attrs.frozen
class SetupResult:
    mounted: bool  # binfmt_misc was mounted by this call
    registered: str | None  # the line written to `register`; None: a usable handler was there
    handler: Handler


def package_line(name: str = HANDLER, places: tuple[Path, ...] = BINFMT_D) -> str:
    """The installed package's binfmt.d line for `name`, as shipped."""
    for place in places:
        path = place / f"{name}.conf"
        if path.is_file():
            for line in path.read_text(encoding="ascii", errors="replace").splitlines():
                if line.startswith(f":{name}:"):
                    return line.strip()
    where = " or ".join(str(p / f"{name}.conf") for p in places)
    raise EmulationMissing(f"no {where}: install qemu-user-static (apt-get install qemu-user-static)")


def with_fix_binary(line: str) -> str:
    """`:name:M::magic:mask:interpreter:FLAGS` with F among FLAGS (the other flags kept)."""
    head, sep, flags = line.rpartition(":")
    if not sep or line.count(":") < 7:
        raise EmulationMissing(
            f"unexpected binfmt.d line {line[:80]!r}: expected :name:type:offset:magic:mask:interpreter:flags"
        )
    return f"{head}:{flags if 'F' in flags else flags + 'F'}"


def setup(binfmt: Path = BINFMT_DIR, places: tuple[Path, ...] = BINFMT_D) -> SetupResult:
    """Mount binfmt_misc if needed and register qemu-aarch64 with F; nothing when a usable one exists."""
    if os.geteuid() != 0:
        raise NdgenError("ndgen setup-emulation must run as root (it mounts binfmt_misc and registers a handler)")
    did_mount = False
    if not mounted(binfmt):
        _mount(binfmt)
        did_mount = True
    usable = [h for h in handlers(binfmt) if h.usable]
    if usable:
        return SetupResult(did_mount, None, usable[0])
    line = with_fix_binary(package_line(HANDLER, places))
    interpreter = line.split(":")[6]
    if not os.path.isfile(interpreter):
        raise EmulationMissing(
            f"the interpreter {interpreter} of {HANDLER} is missing: apt-get install qemu-user-static"
        )
    existing = binfmt / HANDLER
    if existing.exists():  # registered without F (or disabled): replace it, the only way to change flags
        existing.write_text("-1")
    (binfmt / "register").write_text(line)
    handler = read_handler(existing)
    if handler is None or not handler.usable:
        raise EmulationMissing(f"registered {HANDLER} but {existing} does not show an enabled F handler")
    return SetupResult(did_mount, line, handler)


def _mount(binfmt: Path) -> None:
    proc = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True, text=True, timeout=30
    )
    if proc.returncode != 0 or not mounted(binfmt):
        err = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise EmulationMissing(f"cannot mount binfmt_misc at {binfmt}: {err}")


def check_image(image_attrs: dict[str, object], what: str, binfmt: Path = BINFMT_DIR) -> None:
    """`check` for an image's own Architecture (docker inspect's `Architecture`; none: amd64)."""
    from neurodocker_nd.core.arch import normalise

    check(normalise(str(image_attrs.get("Architecture") or "amd64")), what, binfmt)
