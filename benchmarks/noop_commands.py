"""Commands with nothing to do, timed as child processes against the interpreter's own start-up.

Builds tiny finished folders in a temporary directory: a real download (img2dataset against a local
HTTP server serving the demo corpus generator's images), a real embed (``clipcov-tiny`` with random
weights), a random subset and its real export. Then times, best of --repeats, each as a fresh
``python -m clipcov_cli ...`` child process:

- the baselines: ``python -c pass`` and ``python -c "import typer"`` (the floor of any Typer CLI);
- ``clipcov --help`` and ``clipcov CMD --help`` for every command;
- ``embed``, ``export`` and ``download`` re-run on their finished folders (nothing to do);
- ``select --method random`` on the embedded folder (a baseline method: no ClipCov kernel needed);

goal: <= 1.5 s each (issue #17 item 3). Last, the interpreter's exit once the heavy libraries are
loaded (``import torch, open_clip, webdataset``), timed from the child's last statement to its end:
the plain exit, the exit after ``gc.freeze()`` (what ``clipcov`` does) and ``os._exit`` (no
teardown at all), side by side.

    python benchmarks/noop_commands.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 1.5
HEAVY = "import torch, open_clip, webdataset"


def clipcov_inproc(*args) -> None:
    """Build step: ``clipcov ARGS`` in this interpreter (its start-up is not what is measured)."""
    from clipcov_cli.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"clipcov {' '.join(map(str, args))} failed with status {exc.code}") from None


def random_checkpoint(path: Path) -> Path:
    import open_clip
    import torch

    from clipcov_cli.models import register_model_config

    torch.manual_seed(0)
    torch.save(open_clip.create_model(register_model_config()).state_dict(), path)
    return path


def build(root: Path) -> dict[str, Path]:
    """Finished download, embed, subset and export folders under ``root``."""
    from clipcov_cli.corpus import CorpusConfig, CorpusServer, generate_corpus, write_url_list

    layout = generate_corpus(root / "corpus", CorpusConfig(n_web=60, n_proxy_per_class=1, n_test_per_class=1))
    with CorpusServer(layout.web_dir) as srv:
        write_url_list(layout, srv.base_url, root / "urls.parquet")
        clipcov_inproc("download", root / "urls.parquet", "--out", root / "data", "--shard-size", 30, "--threads", 4)
    (root / "classes.txt").write_text("cat\ndog\ncar\ntree\n")
    clipcov_inproc("embed", root / "data", "--model", "clipcov-tiny", "--pretrained", random_checkpoint(root / "tiny.pt"),
                   "--classes", root / "classes.txt", "--workers", 0, "--batch-size", 16)
    clipcov_inproc("select", root / "data", "--budget", "50%", "--method", "random", "--out", root / "subset")
    clipcov_inproc("export", root / "subset")
    return {"urls": root / "urls.parquet", "data": root / "data", "subset": root / "subset", "root": root}


def best_of(argv: list[str], repeats: int) -> tuple[float, int]:
    """The shortest wall time of ``argv`` as a child process over ``repeats`` runs, and its status."""
    best, status = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        status = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300).returncode
        best = min(best, time.perf_counter() - t0)
    return best, status


def cases(f: dict[str, Path]) -> list[tuple[str, list[str]]]:
    from clipcov_cli.commands import COMMANDS

    cli = [sys.executable, "-m", "clipcov_cli"]
    helps = [(f"clipcov {name} --help", [*cli, name, "--help"]) for name in COMMANDS]
    return [
        ("clipcov --help", [*cli, "--help"]), *helps,
        ("clipcov embed DIR (finished)", [*cli, "embed", str(f["data"])]),
        ("clipcov export SUBSET (finished)", [*cli, "export", str(f["subset"])]),
        ("clipcov download URLS --out DIR (finished)",
         [*cli, "download", str(f["urls"]), "--out", str(f["data"]), "--shard-size", "30"]),
        ("clipcov select DIR --method random", [*cli, "select", str(f["data"]), "--budget", "50%", "--method", "random",
                                                "--out", str(f["root"] / "subset-bench"), "--overwrite"]),
    ]


EXITS = (("plain exit", ""), ("gc.freeze() then exit (clipcov)", "import gc; gc.freeze()"),
         ("os._exit (no teardown)", "import os; os._exit(0)"))


def exit_seconds(ending: str, repeats: int) -> float:
    """The shortest time from the end of ``HEAVY`` (a child's last stamp on stdout) to the child's
    exit, with ``ending`` as its last statement: the exit alone, not the imports before it."""
    code = f"{HEAVY}; import sys, time; sys.stdout.write(repr(time.time())); sys.stdout.flush(); {ending}"
    best = float("inf")
    for _ in range(repeats):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        best = min(best, time.time() - float(r.stdout))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per command; the best is reported")
    args = ap.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    with tempfile.TemporaryDirectory(prefix="clipcov-noop-") as tmp:
        folders = build(Path(tmp))
        base_pass, _ = best_of([sys.executable, "-c", "pass"], args.repeats)
        base_typer, _ = best_of([sys.executable, "-c", "import typer"], args.repeats)
        print(f"load average {os.getloadavg()[0]:.2f}; python {sys.version.split()[0]}; best of {args.repeats}\n")
        print("| command | wall s | x `python -c pass` | x `import typer` | status | goal <= 1.5 s |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        print(f"| `python -c pass` (baseline) | {base_pass:.2f} | 1.0 | | 0 | |")
        print(f"| `python -c \"import typer\"` (baseline) | {base_typer:.2f} | {base_typer / base_pass:.1f} | 1.0 | 0 | |")
        for label, argv in cases(folders):
            wall, status = best_of(argv, args.repeats)
            met = "yes" if wall <= GOAL_S and status == 0 else "no"
            print(f"| `{label}` | {wall:.2f} | {wall / base_pass:.1f} | {wall / base_typer:.1f} | {status} | {met} |")
        print(f"\n| exit after `{HEAVY}` | exit s (last statement to process end) |")
        print("| --- | ---: |")
        for label, ending in EXITS:
            print(f"| {label} | {exit_seconds(ending, args.repeats):.2f} |")


if __name__ == "__main__":
    main()
