"""Key lists given on the command line: ``FILE`` or ``-`` (stdin), one sample key per line.

What `select --print-keys` writes, `head` keeps, or any other tool produces: surrounding blanks and
a ``\\r`` are stripped, empty lines are skipped; nothing else is changed (the keys are checked where
they are used: `export` refuses unsafe or repeated keys)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from clipcov_cli.errors import ClipcovError

STDIN = "-"


def parse_key_lines(lines) -> tuple[str, ...]:
    return tuple(s for s in (line.strip() for line in lines) if s)


def read_key_list(spec: str | Path, stdin: TextIO | None = None, what: str = "--keys") -> tuple[str, ...]:
    """The keys of ``spec`` (a file, or ``-`` for stdin), in file order; an empty list is an error."""
    if str(spec) == STDIN:
        stream = stdin if stdin is not None else sys.stdin
        if stream is None or stream.isatty():
            raise ClipcovError(f"{what} - reads keys from stdin, but stdin is a terminal: pipe keys in "
                               "(e.g. clipcov select ... --print-keys | clipcov export --keys - ...)")
        keys = parse_key_lines(stream)
        source = "stdin"
    else:
        path = Path(spec)
        if not path.is_file():
            raise ClipcovError(f"{what} {path}: no such file")
        try:
            keys = parse_key_lines(path.read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError) as exc:
            raise ClipcovError(f"{what} {path}: cannot read it as text ({exc})".splitlines()[0]) from None
        source = str(path)
    if not keys:
        raise ClipcovError(f"{what}: {source} lists no key (one key per line)")
    return keys


def describe(spec: str | Path) -> str:
    """How a key source is recorded in a manifest."""
    return "stdin" if str(spec) == STDIN else str(Path(spec).resolve())
