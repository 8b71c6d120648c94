"""The image's own OS package database, read inside the image root (``--keep-packages``).

A traced run shows the files one input needed; another input of the same tools
(another dcmtk program, ``perl -MPOSIX``, a gawk extension loaded with ``-l``)
needs files of the same *packages* that no trace saw.  This module answers
"which packages own these files" and "which files does package P own", from
the dpkg database inside the image: ``var/lib/dpkg/status`` (parsed with
python-debian's deb822), ``var/lib/dpkg/info/<pkg>.list`` and
``var/lib/dpkg/diversions``.  The host's database is never read, and every
path — the database files themselves and each listed path — is resolved with
:func:`imagefs.resolve` against the image root, so a symlink in the image can
never lead to a host file.

dpkg lists paths as the package shipped them (``/bin/bash``), which on a
merged-/usr image live elsewhere (``/usr/bin/bash``): a listed path is mapped
to its canonical in-image path by resolving its *directory* (cached; the last
component is the owned entry itself, symlink or not).

rpm images: the database (sqlite, ndb or Berkeley DB, by rpm version) needs
rpm's own code, and the host's ``rpm --root`` follows symlinks out of the
root.  So the image's *own* ``rpm`` lists it — ``rpm --dbpath DB -qa`` with
the in-image database directory, run by the caller in the same sandbox as any
workload (untraced), its output treated as untrusted text: every path it
names is resolved inside the image like a dpkg one.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import stat
from collections.abc import Callable, Iterable, Mapping

import attrs

from neurodocker_nd.errors import NdgenError
from neurodocker_nd.minify import imagefs

DPKG_DIR = "/var/lib/dpkg"
RPM_DBS = ("/usr/lib/sysimage/rpm", "/var/lib/rpm")  # newest location first (rpm >= 4.17 moved it)
_RPM_FILES = ("rpmdb.sqlite", "Packages.db", "Packages")  # sqlite, ndb, Berkeley DB
# One line per owned path; %{=NAME} repeats the scalar inside the file-array iteration.
_RPM_QUERY = r"[%{=NAME}\t%{FILENAMES}\n]"  # rpm expands the escapes
# Documentation and translations of a kept package are dropped unless traced: they are most of
# a package's size and no program reads them to compute its output.  Translations of a language
# the image's ENV selects are kept (see `translations_kept`), since messages would differ.
_DOC_DIRS = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/lintian/")
_TRANSLATION = re.compile(r"^/usr/share/locale/(?P<lang>[^/]+)/LC_MESSAGES/")
# The database is the image's, hence untrusted: read as regular files with caps far above
# real ones (status: ~3 MB for 2,000 packages; the biggest .list files a few MB).
_STATUS_LIMIT = 256 << 20
_LIST_LIMIT = 64 << 20  # per .list file, and the diversions file
_DB_TOTAL_LIMIT = 1 << 30  # status, diversions and every .list together


@attrs.frozen
class Package:
    """One installed package: its dpkg name (``libc6:amd64`` for Multi-Arch: same) and files."""

    name: str
    files: tuple[str, ...]  # canonical in-image paths of the entries it owns, directories included


@attrs.frozen
class PackageDb:
    """Installed packages of one image, with an owner index of their non-directory entries."""

    packages: Mapping[str, Package]
    owners: Mapping[str, tuple[str, ...]]  # canonical in-image path -> package names

    def owning(self, paths: Iterable[str]) -> set[str]:
        """Names of the packages owning any of `paths` (canonical; directories own nothing here)."""
        return {name for path in paths for name in self.owners.get(path, ())}

    def lookup(self, name: str) -> list[str]:
        """Package names matching `name` (``perl-base``, or ``libc6:amd64`` exactly)."""
        if name in self.packages:
            return [name]
        return sorted(p for p in self.packages if p.split(":", 1)[0] == name)


class _Root:
    """Reads in-image files through the in-image resolver."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.lstat = imagefs.rootfs_lstat(root)
        self._dirs: dict[str, str | None] = {}
        self.budget = _DB_TOTAL_LIMIT  # bytes of database text still allowed, over all files

    def resolve(self, path: str) -> str | None:
        return imagefs.resolve(path, self.lstat, lambda p: os.readlink(self.root + p))

    def read_text(self, path: str, limit: int) -> str | None:
        """An image file's text, None when absent; a FIFO, device or a file over `limit`
        bytes is an error naming it (:func:`imagefs.read_bytes`)."""
        if self.budget <= 0:
            raise imagefs.ImageFileError(
                f"--keep-packages: the package database is larger than {_DB_TOTAL_LIMIT} bytes"
            )
        data = imagefs.read_bytes(self.root, path, min(limit, self.budget))
        if data is None:
            return None
        self.budget -= len(data)
        return data.decode("utf-8", "surrogateescape")

    def canonical(self, path: str) -> str | None:
        """`path` with its directory resolved in the image (the last component stays as is)."""
        directory, name = posixpath.split(posixpath.normpath(path))
        if directory not in self._dirs:
            self._dirs[directory] = self.resolve(directory)
        parent = self._dirs[directory]
        if parent is None or not name:
            return parent
        return posixpath.join(parent, name)


RpmQuery = Callable[[str], str]  # runs a shell command in the image's sandbox, returns its stdout


def read_database(root: str, rpm_query: RpmQuery | None = None) -> PackageDb:
    """The image's dpkg database, else its rpm one; an error naming the problem when there is none."""
    image = _Root(root)
    status = image.read_text(f"{DPKG_DIR}/status", _STATUS_LIMIT)
    if status is None:
        rpm_db = next((db for db in RPM_DBS if _has_rpm_db(image, db)), None)
        if rpm_db is not None and rpm_query is not None:
            return _read_rpm(image, rpm_db, rpm_query)
        if rpm_db is not None:
            raise NdgenError(f"--keep-packages: the image's rpm database ({rpm_db}) needs its rpm to read")
        raise NdgenError(f"--keep-packages: the image has no package database ({DPKG_DIR}/status or an rpm one)")
    diverted = _diversions(image.read_text(f"{DPKG_DIR}/diversions", _LIST_LIMIT) or "")
    packages: dict[str, Package] = {}
    owners: dict[str, list[str]] = {}
    for name in _installed(status):
        if "/" in name or name.startswith("."):
            continue  # never a dpkg name: it would name another file than info/NAME.list
        listing = image.read_text(f"{DPKG_DIR}/info/{name}.list", _LIST_LIMIT)
        if listing is None:
            continue
        files: list[str] = []
        for line in listing.splitlines():
            if not line.startswith("/") or line == "/.":
                continue
            # A path another package diverted is this package's file under the diverted name.
            moved = diverted.get(line)
            if moved is not None and moved[1] != name.split(":", 1)[0]:
                line = moved[0]
            path = image.canonical(line)
            if path is None:
                continue  # removed after install (e.g. docs pruned in a Dockerfile)
            files.append(path)
            owners.setdefault(path, []).append(name)
        packages[name] = Package(name=name, files=tuple(dict.fromkeys(files)))
    return PackageDb(packages=packages, owners={path: tuple(names) for path, names in owners.items()})


def _has_rpm_db(image: _Root, directory: str) -> bool:
    return any(image.resolve(f"{directory}/{name}") is not None for name in _RPM_FILES)


def rpm_command(db: str) -> str:
    """The query the image's own rpm runs: every installed package's paths, one per line."""
    return f"rpm --dbpath {shlex.quote(db)} -qa --qf {shlex.quote(_RPM_QUERY)}"


def _read_rpm(image: _Root, db: str, rpm_query: RpmQuery) -> PackageDb:
    files: dict[str, list[str]] = {}
    owners: dict[str, list[str]] = {}
    for line in rpm_query(rpm_command(db)).splitlines():
        name, tab, listed = line.partition("\t")
        if not tab or not name or not listed.startswith("/"):
            continue  # "(none)" for a package without files, or noise
        path = image.canonical(listed)
        if path is None:
            continue
        files.setdefault(name, []).append(path)
        owners.setdefault(path, []).append(name)
    if not files:
        raise NdgenError(f"--keep-packages: the image's rpm lists no files in {db}")
    packages = {name: Package(name=name, files=tuple(dict.fromkeys(paths))) for name, paths in files.items()}
    return PackageDb(packages=packages, owners={path: tuple(dict.fromkeys(n)) for path, n in owners.items()})


def _installed(status: str) -> list[str]:
    """dpkg names (``pkg`` or ``pkg:arch`` for Multi-Arch: same, as the .list files are named)."""
    from debian.deb822 import Deb822

    names = []
    for para in Deb822.iter_paragraphs(status.splitlines(keepends=True), use_apt_pkg=False):
        state = para.get("Status", "").split()
        if len(state) != 3 or state[2] in ("not-installed", "config-files"):
            continue
        name = para["Package"]
        if para.get("Multi-Arch") == "same":
            name = f"{name}:{para.get('Architecture', '')}"
        names.append(name)
    return names


def _diversions(text: str) -> dict[str, tuple[str, str]]:
    """dpkg's diversions file: triples of lines (from, to, diverting package or ':' for local)."""
    lines = text.splitlines()
    return {lines[i]: (lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)}


def is_doc(path: str, languages: Iterable[str] = ()) -> bool:
    """Docs, man/info pages and translations (except those of `languages`) of a package."""
    if path.startswith(_DOC_DIRS):
        return True
    m = _TRANSLATION.match(path)
    return m is not None and m["lang"] not in set(languages)


def languages(env: Mapping[str, str]) -> set[str]:
    """Message catalogue languages the image's ENV selects: ``de_DE.UTF-8`` → de_DE, de.

    gettext tries LANGUAGE's entries, then LC_ALL / LC_MESSAGES / LANG, each
    with and without its territory and codeset.
    """
    names = [
        *env.get("LANGUAGE", "").split(":"),
        env.get("LC_ALL", ""),
        env.get("LC_MESSAGES", ""),
        env.get("LANG", ""),
    ]
    found: set[str] = set()
    for name in names:
        base = name.split("@", 1)[0].split(".", 1)[0]
        if base and base not in ("C", "POSIX"):
            found |= {name, base, base.split("_", 1)[0]}
    return found


def package_bytes(root: str, files: Iterable[str], kept: Callable[[str], bool]) -> int:
    """Bytes of the regular files in `files` that are kept (hard links counted once)."""
    lstat = imagefs.rootfs_lstat(root)
    total, seen = 0, set()
    for path in files:
        st = lstat(path) if kept(path) else None
        if st is not None and stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
