"""The one exception type the CLI turns into a single stderr line.

Every step raises :class:`NdgenError` (or a subclass) for problems caused by
input or environment; the CLI edge (``cli.main``) prints ``ndgen: error: MSG``
and exits non-zero.  Anything else is a bug and is reported as such.
"""

from __future__ import annotations

import re


class NdgenError(Exception):
    """A user-facing error: the message names the culprit, on one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line only: the CLI promises a single stderr line per error.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class EngineError(NdgenError):
    """No Docker engine, or the engine refused an operation."""


class UnsafePath(NdgenError):
    """A path of an untrusted tree that ndgen will not follow or read: outside the tree, through a
    symlink, not a regular file (or directory where one is allowed), or too big."""


class TraceError(NdgenError):
    """A traced command failed or tracing could not run."""


class ChecksFailed(NdgenError):
    """The image was tested and some test failed: exit 1 (bad input stays exit 2)."""

    exit_code = 1


# An error line echoes what the user typed; a 100 kB argument must not become a
# 100 kB line. Words up to ECHO_LIMIT characters (long URLs, paths) stay whole.
ECHO_LIMIT = 200
_ECHO_KEEP = 100  # how much of a longer word is kept: enough to recognise it
_LINE_LIMIT = 1000  # a message of many words (a long value with spaces)


def clip(value: str, limit: int = ECHO_LIMIT) -> str:
    """`value`, or its start and its length when it is longer than `limit` characters."""
    if len(value) <= limit:
        return value
    return f"{value[: min(_ECHO_KEEP, limit)]}… ({len(value)} characters)"


def bounded(message: str) -> str:
    """`message` on one line with every over-long word clipped, and at most about
    `_LINE_LIMIT` characters in all: what the CLI edge prints, whatever a message echoes."""
    line = " ".join(_clip_word(word) for word in str(message).split())
    if len(line) > _LINE_LIMIT:
        line = f"{line[:_LINE_LIMIT]}… (message of {len(line)} characters cut)"
    return line


def _clip_word(word: str) -> str:
    # The word's quotes and closing punctuation (`'…';`) stay outside the cut:
    # the message still reads, and the length counted is the value's own.
    if len(word) <= ECHO_LIMIT:
        return word
    head = re.match(r"\W{0,3}", word)
    tail = re.search(r"\W{0,3}$", word[_ECHO_KEEP:])
    prefix = head.group() if head else ""
    suffix = tail.group() if tail else ""
    return prefix + clip(word[len(prefix) : len(word) - len(suffix)]) + suffix


def internal_error_line(exc: BaseException) -> str:
    """The one line for an error of ndgen's own (an exception that is no NdgenError):
    its type and its message's first line, bounded."""
    text = str(exc)
    first = bounded(text.splitlines()[0]) if text else ""
    return f"internal error: {type(exc).__name__}: {first} (set NDGEN_DEBUG=1 for a traceback)"
