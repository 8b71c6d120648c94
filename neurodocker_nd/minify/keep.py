"""Keep step: from the traced paths to the closed set of entries the new image needs.

Everything is resolved *inside* the image (a symlink `/lib64 -> usr/lib64` is
followed against the rootfs, never the host) and every entry on the way is
kept: each directory component, each symlink hop, the final file.  On top of
the trace come the rules for what a trace cannot show:

- the ELF program interpreter and the DT_NEEDED closure (RPATH/RUNPATH with
  $ORIGIN, LD_LIBRARY_PATH from the image's ENV, ld.so.conf directories),
  for files that were only mmap'ed or are loaded after the traced run;
- essentials: passwd/group/nsswitch, ld.so.conf*, ld.so.cache, /bin/sh, the
  image's ENTRYPOINT/CMD programs, /tmp, the user's HOME and WORKDIR;
- fanotify's blind spots: CPython stats ``lib/pythonX.Y/os.py`` (and
  ``lib-dynload``) to find its prefix without opening them, and uses a
  ``__pycache__/*.pyc`` only while its ``.py`` source exists;
- families of data chosen by an input value (time zones, gconv charsets,
  ENV-named locales): whole, once the trace touched a member (:mod:`families`);
- ``--keep-packages``: every OS package owning a traced file, whole but for
  docs and translations, plus ``--keep-package NAME`` (:mod:`packages`);
- ``--keep`` paths/globs and the profile's keep rules (directories whole).
"""

from __future__ import annotations

import fnmatch
import itertools
import mmap
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import attrs

from neurodocker_nd.minify import families, imagefs
from neurodocker_nd.minify import packages as packages_step
from neurodocker_nd.minify.model import DEFAULT_PATH, SHELL, ImageConfig, Mount, TraceRecord
from neurodocker_nd.minify.ptrace import shebang_interpreters
from neurodocker_nd.minify.sandbox import resolve_user

# Never part of an image's content: the runtime provides them, or they are the workload's scratch.
RUNTIME_DIRS = ("/proc", "/sys", "/dev", "/tmp", "/run")
ESSENTIALS = (
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d/*",
    "/etc/ld.so.cache",
    "/etc/hosts",
    "/etc/host.conf",
    SHELL,
)
_DEFAULT_LIB_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
_PYC = re.compile(r"^(?P<dir>.*)/__pycache__/(?P<name>[^/.]+)\.[^/]+\.pyc$")
_PYTHON_EXE = re.compile(r"^(?P<prefix>.*)/bin/python(?P<ver>\d+\.\d+)$")
_PYTHON_LIB = re.compile(r"^(?P<prefix>.*)/lib/python(?P<ver>\d+\.\d+)/")
# Bounds on what the image's own files make the host do (real systems: a handful of
# ld.so.conf files and directories, a few dozen ELF headers and dynamic entries).
_LD_CONF_LIMIT = 1 << 20  # bytes per ld.so.conf file
_LD_CONF_MAX_FILES = 1024
_LD_CONF_MAX_DIRS = 4096
_ELF_MAX_HEADERS = 4096  # program headers, section headers
_ELF_MAX_DYNAMIC = 4096  # dynamic entries per dynamic section


@attrs.frozen
class KeepSet:
    """Entries (files, symlinks, directories) to write, as in-image absolute paths."""

    paths: frozenset[str]  # every entry, parents included
    trees: frozenset[str]  # directories kept with everything below them (--keep / profile)
    traced: int  # how many traced paths existed in the image
    reasons: dict[str, int]  # entries added per rule, for the report
    image_entries: int  # entries in the whole image (outside runtime dirs), for the report
    unmatched: tuple[str, ...] = ()  # --keep patterns that matched nothing in the image
    packages: tuple[tuple[str, int], ...] = ()  # (package, kept bytes), largest first (--keep-packages)
    why: dict[str, str] = attrs.field(factory=dict)  # entry -> why it was kept (report.REASONS)


class _Image:
    """Path resolution against the rootfs, with lstat/readlink caches."""

    def __init__(self, rootfs: Path) -> None:
        self.root = str(rootfs)
        self._lstat: dict[str, os.stat_result | None] = {}

    def host(self, path: str) -> str:
        return self.root + path

    def lstat(self, path: str) -> os.stat_result | None:
        if path not in self._lstat:
            try:
                self._lstat[path] = os.lstat(self.host(path))
            except OSError:
                self._lstat[path] = None
        return self._lstat[path]

    def resolve(self, path: str, chain: set[str]) -> str | None:
        """Resolve `path` in the image; add every component and symlink hop to `chain`.

        Returns the final symlink-free path, or None when some component is absent.
        """
        return imagefs.resolve(path, self.lstat, lambda p: os.readlink(self.host(p)), chain=chain)

    def is_dir(self, path: str) -> bool:
        """For a path whose directories are real ones in the image (resolved, or a chain entry)."""
        st = self.lstat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def is_real_dir(self, path: str) -> bool:
        """For any in-image path: its directories are resolved in the image first."""
        st = imagefs.lstat_in_root(self.root, path)
        return st is not None and stat.S_ISDIR(st.st_mode)


def _outside_image(path: str, excluded: Sequence[str]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in excluded)


class _Closure:
    def __init__(self, image: _Image, config: ImageConfig, excluded: Sequence[str]) -> None:
        self.image = image
        self.config = config
        self.excluded = excluded
        self.kept: set[str] = set()
        self.trees: set[str] = set()
        self.reasons: dict[str, int] = {}
        self.why: dict[str, str] = {}  # entry -> the rule that kept it first (report.REASONS)
        self._elf_done: set[str] = set()
        self.image_entries = 0
        self._lib_dirs = self._library_dirs()

    # -- adding -------------------------------------------------------------------------------

    def add(self, path: str, reason: str) -> str | None:
        """Keep `path` and everything on the way to it; returns the resolved path."""
        if not path.startswith("/"):
            return None
        path = posixpath.normpath(path)
        if _outside_image(path, self.excluded) and not self.image.is_real_dir(path):
            return None
        chain: set[str] = set()
        resolved = self.image.resolve(path, chain)
        chain = {p for p in chain if not _outside_image(p, self.excluded) or self.image.is_dir(p)}
        self._note(chain - self.kept, reason)
        return resolved

    def _note(self, new: Iterable[str], reason: str) -> None:
        """Keep `new` entries for `reason` (report.REASONS)."""
        count = 0
        for path in new:
            if path not in self.kept:
                self.kept.add(path)
                self.why[path] = reason
                count += 1
        if count:  # counted per package together, per family apart (a handful of those)
            key = "package" if reason.startswith("package:") else reason
            self.reasons[key] = self.reasons.get(key, 0) + count

    def add_tree(self, path: str, reason: str) -> bool:
        """Keep `path`, and everything below it when it is a directory; False when absent."""
        resolved = self.add(path, reason)
        if resolved is None or not self.image.is_dir(resolved):
            return resolved is not None
        self.trees.add(resolved)
        for dirpath, dirnames, filenames in os.walk(self.image.host(resolved)):
            rel = dirpath[len(self.image.root) :] or "/"
            for name in dirnames + filenames:
                entry = posixpath.join(rel, name)
                if entry in self.kept:
                    continue
                self._note((entry,), reason)
                if os.path.islink(os.path.join(dirpath, name)):
                    self.add(entry, reason)  # a link out of the tree keeps its target too
        return True

    def add_pattern(self, pattern: str, reason: str) -> bool:
        """A path or glob, in-image; a directory keeps its whole tree.  False: nothing matched."""
        if not imagefs.has_magic(pattern):
            return self.add_tree(pattern, reason)
        # Matched in the image: a symlink on the way (`/opt/s/x -> /etc`) is followed
        # inside it, and `**` never walks through a link (`-> /proc/self/root`).
        matches = imagefs.glob(self.image.root, pattern)
        for match in matches:
            self.add_tree(match, reason)
        return bool(matches)

    # -- rules --------------------------------------------------------------------------------

    def essentials(self, mounts: Sequence[Mount]) -> None:
        for pattern in ESSENTIALS:
            if imagefs.has_magic(pattern):
                self.add_pattern(pattern, "essential")
            else:
                self.add(pattern, "essential")
        for program in self._config_programs():
            self.add_program(program, "entrypoint")
        for directory in RUNTIME_DIRS:
            self.add(directory, "essential")
        self.add(self.config.workdir or "/", "essential")
        home = resolve_user(Path(self.image.root), self.config.user).home
        self.add(home, "essential")
        for mount in mounts:
            # Docker creates a missing mount point, but keeping existing parents keeps modes.
            self.add(posixpath.dirname(mount.target), "essential")

    def _config_programs(self) -> Iterable[str]:
        for argv in (self.config.entrypoint, self.config.cmd):
            if argv and (found := self._which(argv[0])) is not None:
                yield found

    def _which(self, program: str) -> str | None:
        """`program` as the image's PATH finds it (Docker execs ENTRYPOINT/CMD that way)."""
        if "/" in program:
            return program
        for directory in self.config.env_dict.get("PATH", DEFAULT_PATH).split(":"):
            candidate = posixpath.join(directory or "/", program)
            if self.image.resolve(candidate, set()) is not None:
                return candidate
        return None

    def add_program(self, program: str, reason: str, depth: int = 0) -> None:
        """Keep a program nobody traced (ENTRYPOINT/CMD), with its script interpreter chain.

        `#!/usr/bin/env bash` keeps env and bash, as neurodocker's startup scripts need.
        """
        resolved = self.add(program, reason)
        if resolved is None or depth > 4:
            return
        # Read like every image file: a FIFO or device as ENTRYPOINT has no #! line, it never blocks.
        words = imagefs.shebang(self.image.root, resolved)
        if words:
            self.add_program(words[0], reason, depth + 1)
            if posixpath.basename(words[0]) == "env" and len(words) > 1 and not words[1].startswith("-"):
                if (found := self._which(words[1])) is not None:
                    self.add_program(found, reason, depth + 1)

    def python_rules(self) -> None:
        """CPython's stat-only lookups: prefix landmarks and sources of cached bytecode."""
        prefixes: set[tuple[str, str]] = set()
        for path in list(self.kept):
            if m := _PYC.match(path):
                source = f"{m['dir']}/{m['name']}.py"
                if self.image.lstat(source) is not None:
                    self.add(source, "python-source")
            for pattern in (_PYTHON_EXE, _PYTHON_LIB):
                if (m := pattern.match(path)) is not None:
                    prefixes.add((m["prefix"], m["ver"]))
        for prefix, ver in prefixes:
            lib = f"{prefix}/lib/python{ver}"
            if self.image.lstat(f"{lib}/os.py") is not None:
                self.add(f"{lib}/os.py", "python-landmark")
                self.add(f"{lib}/lib-dynload", "python-landmark")

    def family_rules(self) -> None:
        """Time zones, gconv charsets, ENV-named locales: the whole family once a member is kept."""
        for reason, root in families.family_roots(self.kept, self.config.env_dict):
            self.add_tree(root, reason)

    def package_rules(self, db: packages_step.PackageDb, seeds: Iterable[str], names: Iterable[str]) -> list[str]:
        """Keep whole every package owning a seed entry, and the named ones; returns their names.

        Directories own nothing here (``/usr/bin`` belongs to a hundred packages);
        docs, man pages and other languages' translations stay out unless traced.
        """
        owned = [p for p in seeds if (st := self.image.lstat(p)) is not None and not stat.S_ISDIR(st.st_mode)]
        wanted = sorted(db.owning(owned) | {match for name in names for match in db.lookup(name)})
        languages = packages_step.languages(self.config.env_dict)
        for name in wanted:
            for path in db.packages[name].files:
                if path not in self.kept and not packages_step.is_doc(path, languages):
                    self.add(path, f"package:{name}")
        return wanted

    # -- ELF ----------------------------------------------------------------------------------

    def _library_dirs(self) -> list[str]:
        """ld.so's search list after RPATH/LD_LIBRARY_PATH/RUNPATH: ld.so.conf, then defaults."""
        dirs: dict[str, None] = {}  # ordered, and a membership test that stays cheap
        self._read_ld_conf("/etc/ld.so.conf", dirs, depth=0, seen=set())
        for d in _DEFAULT_LIB_DIRS:
            dirs.setdefault(d)
        return list(dirs)

    def _read_ld_conf(self, path: str, dirs: dict[str, None], depth: int, seen: set[str]) -> None:
        """ld.so.conf and its includes, read as image files (regular, capped), each file once:
        an include of itself or a glob of thousands of files must not multiply the work."""
        resolved = self.image.resolve(path, set())
        if resolved is None or depth > 8 or resolved in seen:
            return
        seen.add(resolved)
        if len(seen) > _LD_CONF_MAX_FILES:
            raise imagefs.ImageFileError(f"image file {path}: more than {_LD_CONF_MAX_FILES} ld.so.conf files included")
        data = imagefs.read_bytes(self.image.root, path, _LD_CONF_LIMIT)  # resolved again: errors name `path`
        if data is None:
            return
        for line in data.decode(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("include"):
                pattern = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
                if not pattern.startswith("/"):
                    pattern = posixpath.join(posixpath.dirname(path), pattern)
                parent = posixpath.dirname(pattern)
                rparent = self.image.resolve(parent, set())
                if rparent is None or not self.image.is_dir(rparent):
                    continue
                for name in sorted(os.listdir(self.image.host(rparent))):
                    if fnmatch.fnmatch(name, posixpath.basename(pattern)):
                        self._read_ld_conf(posixpath.join(rparent, name), dirs, depth + 1, seen)
            elif line.startswith("/") and line not in dirs:
                if len(dirs) >= _LD_CONF_MAX_DIRS:
                    raise imagefs.ImageFileError(
                        f"image file {path}: more than {_LD_CONF_MAX_DIRS} library directories"
                    )
                dirs[line] = None

    def elf_closure(self) -> None:
        """Keep PT_INTERP and DT_NEEDED of every kept ELF file, transitively."""
        ld_library_path = [d for d in self.config.env_dict.get("LD_LIBRARY_PATH", "").split(":") if d]
        queue = [p for p in self.kept if p not in self._elf_done]
        while queue:
            path = queue.pop()
            if path in self._elf_done:
                continue
            self._elf_done.add(path)
            info = _read_elf(self.image, path)
            if info is None:
                continue
            interp, needed, rpath, runpath, ident = info
            new: list[str | None] = []
            if interp:
                new.append(self.add(interp, "elf-interp"))
            origin = posixpath.dirname(path)
            for name in needed:
                found = self._find_library(name, origin, rpath, runpath, ld_library_path, ident)
                if found is not None:
                    new.append(self.add(found, "elf-needed"))
            queue += [p for p in new if p is not None and p not in self._elf_done]

    def _find_library(
        self,
        name: str,
        origin: str,
        rpath: list[str],
        runpath: list[str],
        ld_library_path: list[str],
        ident: tuple[int, int],
    ) -> str | None:
        if "/" in name:
            return name if self.image.lstat(name) is not None else None

        def expand(dirs: list[str]) -> list[str]:
            return [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in dirs]

        search = (expand(rpath) if not runpath else []) + ld_library_path + expand(runpath) + self._lib_dirs
        for directory in search:
            candidate = posixpath.join(directory, name)
            chain: set[str] = set()
            resolved = self.image.resolve(candidate, chain)
            if resolved is not None and _elf_ident(self.image, resolved) == ident:
                return candidate
        return None

    def symlinks_to_kept(self) -> None:
        """Keep every symlink in the image that resolves to a kept entry.

        fanotify reports the file finally opened, never the links on the way
        (`/bin/sh` → dash, `/lib64` → usr/lib64, alternatives): a program
        named through any of them must still find it.
        """
        root = self.image.root
        stack = ["/"]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(root + directory))
            except OSError:
                continue
            self.image_entries += len(entries)
            for entry in entries:
                path = posixpath.join(directory, entry.name)
                if entry.is_symlink():
                    if path not in self.kept:
                        self._keep_link_if_target_kept(path)
                elif entry.is_dir() and not _outside_image(path, self.excluded):
                    stack.append(path)

    def _keep_link_if_target_kept(self, path: str) -> None:
        chain: set[str] = set()
        target = self.image.resolve(path, chain)
        if target is not None and target != "/" and target in self.kept:
            self._note(chain, "symlink")

    # -- result -------------------------------------------------------------------------------

    def parents(self) -> None:
        """Every kept entry's directories, so modes and owners are written too."""
        for path in list(self.kept):
            parent = posixpath.dirname(path)
            while parent not in self.kept and parent != "/":
                self._note((parent,), "parent")
                parent = posixpath.dirname(parent)


def _elf_ident(image: _Image, path: str) -> tuple[int, int] | None:
    """(EI_CLASS, e_machine) of an ELF file, None for anything else: a cheap 20-byte read."""
    try:
        head = imagefs.read_bytes(image.root, path, 20, head=True)
    except (imagefs.ImageFileError, OSError):
        return None  # a FIFO or device named like a library is no candidate
    if head is None or len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return head[4], machine


def _read_elf(image: _Image, path: str) -> tuple[str | None, list[str], list[str], list[str], tuple[int, int]] | None:
    st = image.lstat(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    ident = _elf_ident(image, path)
    if ident is None:
        return None
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        # pyelftools seeks before every small read: on a file object each read is a syscall,
        # on a read-only mapping it is a memory copy (≈10x faster on big shared libraries).
        with imagefs.open_regular(image.root, path) as opened:
            if opened is None:
                return None
            with mmap.mmap(opened[0], 0, access=mmap.ACCESS_READ) as mapped:
                elf = ELFFile(cast(IO[bytes], mapped))  # a mapping has the read/seek/tell ELFFile uses
                # Real objects have a few dozen headers and dynamic entries; a crafted one with
                # 65,535 of each, times thousands of files, would stall the closure.
                if elf.num_segments() > _ELF_MAX_HEADERS or elf.num_sections() > _ELF_MAX_HEADERS:
                    return None
                interp, needed, rpath, runpath = _dynamic(elf)
    except (ELFError, OSError, ValueError, KeyError, imagefs.ImageFileError):
        return None  # a damaged or exotic ELF: the traced run already showed what it opened
    return interp, needed, rpath, runpath, ident


def _dynamic(elf: Any) -> tuple[str | None, list[str], list[str], list[str]]:
    """PT_INTERP, DT_NEEDED, DT_RPATH and DT_RUNPATH of a parsed ELF file, with bounded loops."""
    from elftools.elf.dynamic import DynamicSection

    interp: str | None = None
    needed: list[str] = []
    rpath: list[str] = []
    runpath: list[str] = []
    for segment in elf.iter_segments():
        if segment["p_type"] == "PT_INTERP":
            interp = segment.get_interp_name()
    for section in elf.iter_sections():
        if not isinstance(section, DynamicSection):
            continue
        # pyelftools sets .needed/.rpath/.runpath on a tag at run time, by its kind: untyped
        tags: Iterator[Any] = itertools.islice(section.iter_tags(), _ELF_MAX_DYNAMIC)
        for tag in tags:
            if tag.entry.d_tag == "DT_NEEDED":
                needed.append(tag.needed)
            elif tag.entry.d_tag == "DT_RPATH":
                rpath += tag.rpath.split(":")
            elif tag.entry.d_tag == "DT_RUNPATH":
                runpath += tag.runpath.split(":")
    return interp, needed, rpath, runpath


def closure(
    rootfs: Path,
    config: ImageConfig,
    record: TraceRecord,
    mounts: Sequence[Mount] = (),
    keep: Sequence[str] = (),
    profile_keep: Sequence[str] = (),
    extra_paths: Iterable[str] = (),
    package_db: packages_step.PackageDb | None = None,
    keep_packages: bool = False,
    package_names: Sequence[str] = (),
) -> KeepSet:
    """The keep-set for `record` on the pristine `rootfs` (see module doc for the rules).

    `package_db` (the image's own, :func:`packages.read_database`) is needed for
    `keep_packages` (owners of traced files) and `package_names` (--keep-package).
    """
    image = _Image(rootfs)
    excluded = (*RUNTIME_DIRS, *(m.target for m in mounts))
    c = _Closure(image, config, excluded)
    traced = 0
    for path in sorted(record.paths):
        before = len(c.kept)
        if c.add(path, "traced") is not None or len(c.kept) > before:
            traced += 1
    # Script interpreters the kernel loaded unseen by the tracer, read here in the pristine image.
    for interpreter in sorted(shebang_interpreters(rootfs, record.executed, mounts)):
        before = len(c.kept)
        if c.add(interpreter, "traced") is not None or len(c.kept) > before:
            traced += 1
    seeds = set(c.kept)  # traced entries and the symlink hops to them: what packages are chosen by
    for path in extra_paths:  # verify's repairs: paths a rerun looked for in vain
        c.add(path, "repair")
    c.family_rules()
    kept_packages: list[str] = []
    if package_db is not None and (keep_packages or package_names):
        kept_packages = c.package_rules(package_db, seeds if keep_packages else (), package_names)
    c.essentials(mounts)
    unmatched = tuple(pattern for pattern in keep if not c.add_pattern(pattern, "--keep"))
    for pattern in profile_keep:
        c.add_pattern(pattern, "profile")
    c.python_rules()
    c.elf_closure()
    c.python_rules()  # libraries found by the ELF pass may sit in a Python tree
    c.parents()
    c.symlinks_to_kept()
    c.kept.discard("/")
    c.why.pop("/", None)
    sizes = [
        (name, packages_step.package_bytes(image.root, package_db.packages[name].files, c.kept.__contains__))
        for name in kept_packages
    ] if package_db is not None else []  # fmt: skip
    return KeepSet(
        paths=frozenset(c.kept),
        trees=frozenset(c.trees),
        traced=traced,
        reasons=c.reasons,
        image_entries=c.image_entries,
        unmatched=unmatched,
        packages=tuple(sorted(sizes, key=lambda item: (-item[1], item[0]))),
        why=c.why,
    )
