"""The ``clipcov`` executable's exit (``cli.entry``): the interpreter's normal exit, with the command's status."""

from __future__ import annotations

import subprocess
import textwrap

import pytest


@pytest.fixture()
def run_entry(cli):
    """Run ``cli.entry`` in a fresh interpreter after ``setup`` (Python code), with ``args``."""
    def run(setup: str, *args: str):
        code = textwrap.dedent(setup) + textwrap.dedent(f"""
            from clipcov_cli.cli import entry
            sys.argv = ["clipcov"] + {list(args)!r}
            entry()
            raise SystemExit(99)  # not reached: entry ends with SystemExit(status)
        """)
        return cli.python(code)

    return run


def test_exit_runs_threads_atexit_and_flushes(tmp_path, run_entry):
    marker = tmp_path / "thread-finished"
    r = run_entry(f"""
        import atexit, sys, threading, time
        atexit.register(lambda: print("atexit ran", file=sys.stderr))
        def late():  # a non-daemon thread still running when the command returns
            time.sleep(0.5)
            open({str(marker)!r}, "w").close()
        threading.Thread(target=late).start()
        sys.stdout.write("x" * 200_000 + "\\n")  # buffered (stdout is a pipe): lost unless flushed
    """, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "x" * 200_000 + "\nclipcov " + r.stdout.rsplit("clipcov ", 1)[1]
    assert r.stdout.endswith("\n") and "atexit ran" in r.stderr
    assert marker.exists()


def test_exit_keeps_the_error_status(tmp_path, run_entry):
    r = run_entry("import sys", "select", str(tmp_path / "missing"), "--budget", "1", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_failed_last_flush_is_not_success(run_entry):
    # stdout breaks after the command (a reader that went away): Python's own exit reports 120
    r = run_entry("""
        import atexit, io, sys
        class Closing(io.StringIO):
            broken = False
            def flush(self):
                if self.broken:
                    raise BrokenPipeError(32, "Broken pipe")
        sys.stdout = Closing()
        atexit.register(lambda: setattr(sys.stdout, "broken", True))
    """, "--version")
    assert r.returncode == 120, (r.returncode, r.stderr)


def test_a_closed_stdout_is_skipped(tmp_path, run_entry):
    # started with `1>&-`, Python has no sys.stdout: nothing to flush, the command's own status stands
    r = run_entry("import sys; sys.stdout = None", "select", str(tmp_path / "missing"), "--budget", "1",
                  "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


def test_under_a_profiler_the_interpreter_exits_normally(tmp_path, cli):
    out = tmp_path / "profile.out"
    python, *clipcov = cli.argv("--version")  # python -m cProfile -o OUT -m clipcov_cli --version
    r = subprocess.run([python, "-m", "cProfile", "-o", str(out), *clipcov], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("clipcov "), r.stderr
    assert out.stat().st_size > 0  # cProfile writes it after the program returns


def test_entry_ends_with_system_exit_for_the_interpreter(tmp_path, cli):
    # no os._exit: the caller sees SystemExit(status) and the interpreter's own exit follows
    code = textwrap.dedent(f"""
        import sys
        from clipcov_cli.cli import entry
        sys.argv = ["clipcov", "select", {str(tmp_path / "missing")!r}, "--budget", "1", "--out", {str(tmp_path / "o")!r}]
        try:
            entry()
        except SystemExit as exc:
            print("caught", exc.code)
    """)
    r = cli.python(code)
    assert r.returncode == 0 and r.stdout == "caught 2\n", (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
