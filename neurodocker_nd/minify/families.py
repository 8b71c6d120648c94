"""Families of data files chosen by an input value, not by the program (closure rules).

A traced run opens the one member its input picked: ``TZ=Europe/Paris`` opens
``zoneinfo/Europe/Paris``, ``iconv -f LATIN1`` opens ``gconv/ISO8859-1.so``,
``LANG=de_DE.UTF-8`` opens that locale's ``LC_*`` files.  The same program
with another input value needs another member, which no trace of the first run
can show.  So when the trace touched any member of a family, the whole family
is kept, under a named reason:

- ``family:zoneinfo`` — the time-zone database (``/usr/share/zoneinfo``, or
  ``$TZDIR``): ~4 MB on Debian; any zone file (``/etc/localtime`` resolves
  into it) keeps every zone.
- ``family:gconv`` — glibc's charset converters (``<libdir>/gconv``, or
  ``$GCONV_PATH``): ~8 MB; touching ``gconv-modules``(``.cache``) or a
  converter keeps all of them, since the charset is an argument.
- ``family:locale`` — the compiled locales the image's ENV names
  (``LANG``, ``LC_ALL``, ``LC_*``), once the trace touched any compiled locale:
  a program that only set ``LC_CTYPE`` leaves ``LC_TIME`` unread, and the next
  program may not.  Locales *not* named in ENV are not kept: a container gets
  its locale from ENV, and keeping every locale (``locales-all`` is ~250 MB)
  would defeat minifying.  ``locale-archive`` is one file and kept when traced.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping

LOCALE_DIR = "/usr/lib/locale"
_ZONEINFO = "/usr/share/zoneinfo"
# glibc's gconv directory: <libdir>/gconv, libdir e.g. /usr/lib/x86_64-linux-gnu or /usr/lib64.
_GCONV = re.compile(r"^(?P<dir>(/usr)?/lib(32|64|x32)?(/[^/]+)?/gconv)/")


def family_roots(kept: Iterable[str], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(reason, in-image directory) for every family a kept path is a member of."""
    kept = list(kept)
    roots: dict[str, str] = {}
    zone_dirs = {_ZONEINFO, *([env["TZDIR"]] if env.get("TZDIR", "").startswith("/") else [])}
    gconv_dirs = {d for d in env.get("GCONV_PATH", "").split(":") if d.startswith("/")}
    locale_dirs = {LOCALE_DIR, *([env["LOCPATH"]] if env.get("LOCPATH", "").startswith("/") else [])}
    locale_touched = False
    for path in kept:
        for directory in zone_dirs:
            if path.startswith(directory + "/"):
                roots[directory] = "family:zoneinfo"
        if m := _GCONV.match(path):
            roots[m["dir"]] = "family:gconv"
        for directory in gconv_dirs:
            if path.startswith(directory.rstrip("/") + "/"):
                roots[directory.rstrip("/")] = "family:gconv"
        if any(path.startswith(d + "/") for d in locale_dirs):
            locale_touched = True
    if locale_touched:
        for name in env_locales(env):
            for directory in locale_dirs:
                for variant in locale_variants(name):
                    roots[posixpath.join(directory, variant)] = "family:locale"
    return sorted((reason, root) for root, reason in roots.items())


def env_locales(env: Mapping[str, str]) -> set[str]:
    """Locale names set in ENV (``LANG``, ``LC_ALL``, ``LC_*``), except the built-in C/POSIX."""
    names = {value for key, value in env.items() if key == "LANG" or key.startswith("LC_")}
    return {n for n in names if n and n not in ("C", "POSIX") and "/" not in n and ".." not in n}


def locale_variants(name: str) -> list[str]:
    """The directory names glibc tries for `name`: as written, then with a normalised codeset.

    ``de_DE.UTF-8`` → ``de_DE.UTF-8``, ``de_DE.utf8`` (glibc lowercases the
    codeset and drops everything but letters and digits).
    """
    base, dot, rest = name.partition(".")
    if not dot:
        return [name]
    codeset, at, modifier = rest.partition("@")
    normal = "".join(ch.lower() for ch in codeset if ch.isalnum())
    variants = [name, f"{base}.{normal}{at}{modifier}"]
    return list(dict.fromkeys(variants))
