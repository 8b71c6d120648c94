"""The one exception type the CLI turns into a single stderr line.

Every step raises :class:`NdgenError` (or a subclass) for problems caused by
input or environment; the CLI edge (``cli.main``) prints ``ndgen: error: MSG``
and exits non-zero.  Anything else is a bug and is reported as such.
"""

from __future__ import annotations


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
