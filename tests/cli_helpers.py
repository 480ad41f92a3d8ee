"""The one runner of the `clipcov` command for tests (the ``cli`` fixture of tests/conftest.py):
in this interpreter by default (fast: no interpreter start-up), in a new process, a shell or a
fresh interpreter only where that process is what is tested (exit, signals, start-up, pipes)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_inproc(capsys, *args, input: str | None = None, monkeypatch=None) -> Result:
    """``clipcov ARGS`` in this interpreter; stdin from ``input``. Output is read through pytest's
    ``capsys`` where given, else (module- or session-scoped fixtures) through redirected streams."""
    if capsys is None:
        return _run_redirected(args, input)
    if input is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(input))
    capsys.readouterr()
    code = _main(args)
    out = capsys.readouterr()
    return Result(code, out.out, out.err)


def _main(args) -> int:
    from clipcov_cli.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _run_redirected(args, input: str | None) -> Result:
    out, err, stdin = io.StringIO(), io.StringIO(), sys.stdin
    if input is not None:
        sys.stdin = io.StringIO(input)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _main(args)
    finally:
        sys.stdin = stdin
    return Result(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environ(env: dict | None):
    """``env`` set in os.environ for a while (for runs without pytest's monkeypatch)."""
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def clipcov_argv(*args) -> list[str]:
    """``clipcov ARGS`` as a command line of this interpreter (the worktree on PYTHONPATH)."""
    return [sys.executable, "-m", "clipcov_cli", *map(str, args)]


def run_subprocess(*args, input: str | None = None, env: dict | None = None, timeout: float = 300,
                   umask: int | None = None) -> Result:
    """``clipcov ARGS`` in a new process: for tests of the process itself (exit, signals, start-up)."""
    r = subprocess.run(clipcov_argv(*args), capture_output=True, text=True, timeout=timeout, input=input,
                       env={**os.environ, **(env or {})},
                       preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    return Result(r.returncode, r.stdout, r.stderr)


def run_python(code: str, *args, env: dict | None = None, timeout: float = 120) -> Result:
    """``python -c CODE ARGS`` in a fresh interpreter: what a process does at start-up and at exit."""
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})})
    return Result(r.returncode, r.stdout, r.stderr)


def run_shell(script: str, cwd: Path, timeout: float = 900) -> Result:
    """``script`` in bash (``set -euo pipefail``) with ``clipcov`` as a shell command of this
    interpreter: the usage card's lines as written, pipes between commands included."""
    env = dict(os.environ)
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    prelude = f'clipcov() {{ "{sys.executable}" -m clipcov_cli "$@"; }}\nset -euo pipefail\n'
    r = subprocess.run(["bash", "-c", prelude + script], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=env)
    return Result(r.returncode, r.stdout, r.stderr)


def one_error_line(r, code: int = 2) -> str:
    """The run failed with ``code`` and said why in one ``error:`` line, no traceback: that line."""
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    return lines[0]


class Runner:
    """The one CLI runner of the tests (the ``cli`` fixture): ``cli(*args)`` runs in this interpreter,
    ``cli.subprocess(*args)`` in a new process, ``cli.argv(*args)`` is the command line for Popen,
    ``cli.shell(script, cwd)`` runs shell lines, ``cli.python(code)`` a fresh interpreter.
    ``Runner()`` without capsys (module- and session-scoped fixtures) captures through redirected streams."""

    def __init__(self, capsys=None, monkeypatch=None) -> None:
        self._capsys, self._monkeypatch = capsys, monkeypatch

    def __call__(self, *args, input: str | None = None, env: dict | None = None) -> Result:
        if self._monkeypatch is None:
            with _environ(env):
                return run_inproc(self._capsys, *args, input=input)
        for k, v in (env or {}).items():
            self._monkeypatch.setenv(k, v)
        return run_inproc(self._capsys, *args, input=input, monkeypatch=self._monkeypatch)

    subprocess = staticmethod(run_subprocess)
    argv = staticmethod(clipcov_argv)
    python = staticmethod(run_python)
    shell = staticmethod(run_shell)
