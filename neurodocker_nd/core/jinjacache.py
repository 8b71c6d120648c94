"""Compiled Jinja templates remembered across runs: jinja2's BytecodeCache, trusted only when ours.

Compiling a registry template (lexing, parsing, generating Python, `compile()`) costs a
cold render more than rendering it; the result depends only on the source, on jinja2
and Python, and on core/jinja.py's code generator (its loop and `~` guards and the
intercepted operators are written into the code). So the code is kept, marshalled, in
`$XDG_CACHE_HOME/ndgen/jinja-bytecode/`, one file per sha256 of that fingerprint and the
source, in jinja2's Bucket format (its magic and source checksum), prefixed by the
sha256 of the rest.

Loading a cached entry runs it (unmarshal, pickle, exec): an entry is trusted only if
nobody else could have written it. The directory must be a real directory (not a
symlink) owned by this euid with no group/other bits; an entry a regular file owned by
this euid, opened without following a link, at most MAX_ENTRY_BYTES, whose digest
matches its content. Anything else — someone else's file, a corrupt, truncated or
stale entry, an unreadable or read-only cache — is ignored and the source compiled as
before; nothing here raises. Sandbox semantics do not move into the cache: the
SandboxedEnvironment's checks are calls from the compiled code into the environment
(`environment.getattr`, `call`, `call_binop`), made at render time whatever compiled it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from pathlib import Path
from types import CodeType
from typing import Any

from neurodocker_nd.core import safefs

# A compiled registry template is a few KiB to tens of KiB; a larger entry is refused unread.
MAX_ENTRY_BYTES = 4 << 20
# Entries kept at most: when full, the cache is emptied (registry templates are a few hundred strings).
MAX_ENTRIES = 4096
_DIGEST = 32  # sha256 of the rest of the file, first
_GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO


def cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ndgen" / "jinja-bytecode"


def _owned_dir(create: bool) -> int | None:
    """A no-follow descriptor of the cache directory if it is ours and private (made 0700 when `create`)."""
    path = cache_dir()
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.mkdir(mode=0o700)
        except OSError:  # exists, or a read-only home: checked below either way
            pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & _GROUP_OTHER:
        os.close(fd)
        return None
    return fd


def _read_entry(dir_fd: int, name: str) -> bytes | None:
    fd = safefs.open_own_file(dir_fd, name)
    if fd is None:
        return None
    try:
        with safefs.opened(fd):
            if os.fstat(fd).st_size > MAX_ENTRY_BYTES:
                return None
            data = _read_capped(fd)
    except OSError:
        return None
    digest, body = data[:_DIGEST], data[_DIGEST:]
    if len(data) > MAX_ENTRY_BYTES or hashlib.sha256(body).digest() != digest:
        return None  # truncated, corrupted, or larger than it said
    return body


def _read_capped(fd: int) -> bytes:
    chunks, size = [], 0
    while size <= MAX_ENTRY_BYTES:
        chunk = os.read(fd, MAX_ENTRY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _write_entry(dir_fd: int, name: str, body: bytes) -> None:
    """Write whole or not at all: a temporary file of ours, renamed over the entry."""
    data = hashlib.sha256(body).digest() + body
    if len(data) > MAX_ENTRY_BYTES:
        return
    _make_room(dir_fd)
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass


def _make_room(dir_fd: int) -> None:
    """Empty the cache when it holds MAX_ENTRIES (templates of `--templates` files accumulate)."""
    try:
        names = os.listdir(dir_fd)
        if len(names) < MAX_ENTRIES:
            return
        for name in names:
            os.unlink(name, dir_fd=dir_fd)  # unlink never follows a symlink
    except OSError:
        pass


@functools.cache
def _bytecode_cache() -> Any:
    """jinja2's BytecodeCache over the checks above (jinja2 imports only when rendering)."""
    from jinja2.bccache import BytecodeCache

    class OwnedBytecodeCache(BytecodeCache):
        def get_cache_key(self, name: str, filename: str | None = None) -> str:
            return name  # already the sha256 of fingerprint and source (see `template`)

        def load_bytecode(self, bucket: Any) -> None:
            fd = _owned_dir(create=False)
            if fd is None:
                return
            try:
                body = _read_entry(fd, bucket.key)
            finally:
                os.close(fd)
            if body is None:
                return
            try:  # the Bucket checks jinja2's magic (its format, Python's version) and the source checksum
                bucket.bytecode_from_string(body)
            except Exception:  # noqa: BLE001 - any unreadable entry is a miss
                bucket.reset()
            if not isinstance(bucket.code, CodeType):
                bucket.reset()

        def dump_bytecode(self, bucket: Any) -> None:
            fd = _owned_dir(create=True)
            if fd is None:
                return
            try:
                _write_entry(fd, bucket.key, bucket.bytecode_to_string())
            finally:
                os.close(fd)

    return OwnedBytecodeCache()


def key(source: bytes, fingerprint: bytes) -> str:
    """The entry's name: the compiled code depends on both."""
    return hashlib.sha256(fingerprint + b"\0" + source).hexdigest()


def template(environment: Any, source: str, fingerprint: bytes) -> Any:
    """`environment.from_string(source)`, its code loaded from the cache when a trusted entry
    exists, else compiled and stored. `fingerprint`: everything besides the source that the
    compiled code depends on (the caller's code generator and jinja2's version)."""
    try:
        text = source.encode()
    except UnicodeEncodeError:  # a lone surrogate: no checksum for jinja2's Bucket, so not cached
        return environment.from_string(source)
    cache = _bytecode_cache()
    bucket = cache.get_bucket(environment, key(text, fingerprint), None, source)
    code = bucket.code
    if code is None:
        code = environment.compile(source)
        bucket.code = code
        cache.set_bucket(bucket)
    return environment.template_class.from_code(environment, code, environment.make_globals(None), None)
