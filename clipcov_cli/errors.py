"""User-facing errors.

Library code raises :class:`ClipcovError` (or a subclass) for bad input; the CLI prints its
message as one line on stderr and exits with ``exit_code`` (2 by default), never a traceback.
"""

from __future__ import annotations


class ClipcovError(Exception):
    """An error caused by the user's input or environment, reported as one line."""

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class JobFailed(ClipcovError):
    """A long job finished but some of its units failed (exit code 1)."""

    exit_code = 1


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type name when it has none), cut to ``limit``
    characters if given: what a one-line error quotes from a library's multi-line message."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
