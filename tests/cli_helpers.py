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


def clipcov_argv(*args) -> list[str]:
    """``clipcov ARGS`` as a command line of this interpreter (the worktree on PYTHONPATH)."""
    return [sys.executable, "-m", "clipcov_cli", *map(str, args)]


def run_subprocess(*args, input: str | None = None, env: dict | None = None, timeout: float = 300) -> Result:
    """``clipcov ARGS`` in a new process: for tests of the process itself (exit, signals, start-up)."""
    import os
    import subprocess

    r = subprocess.run(clipcov_argv(*args), capture_output=True, text=True, timeout=timeout, input=input,
                       env={**os.environ, **(env or {})})
    return Result(r.returncode, r.stdout, r.stderr)


class Runner:
    """The one CLI runner of the tests (the ``cli`` fixture): ``cli(*args)`` runs in this interpreter,
    ``cli.subprocess(*args)`` in a new process, ``cli.argv(*args)`` is the command line for Popen."""

    def __init__(self, capsys, monkeypatch) -> None:
        self._capsys, self._monkeypatch = capsys, monkeypatch

    def __call__(self, *args, input: str | None = None, env: dict | None = None) -> Result:
        for k, v in (env or {}).items():
            self._monkeypatch.setenv(k, v)
        return run_inproc(self._capsys, *args, input=input, monkeypatch=self._monkeypatch)

    subprocess = staticmethod(run_subprocess)
    argv = staticmethod(clipcov_argv)
