"""One in-process runner of the `clipcov` command for tests (fast: no interpreter start-up)."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_inproc(capsys, *args, input: str | None = None, monkeypatch=None) -> Result:
    """``clipcov ARGS`` in this interpreter; stdin from ``input`` (needs ``monkeypatch``)."""
    from clipcov_cli.cli import main

    if input is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(input))
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return Result(code, out.out, out.err)
