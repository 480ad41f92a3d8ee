"""`clipcov eval --suite`: every checkpoint on every task of the suite found under --data."""

from __future__ import annotations

from pathlib import Path

from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.console import console, err_console


def _require_clip_benchmark() -> None:
    try:
        import clip_benchmark  # noqa: F401
    except ImportError:
        raise ClipcovError("--suite needs clip_benchmark: pip install 'clipcov[bench]' (or pip install clip_benchmark)") from None


def run_suite_command(suite: str, checkpoints: list[Path], data: Path, model: str | None, model_config: Path | None,
                      out: Path, batch_size: int, device: str) -> None:
    from clipcov_cli.evaluate.results import write_results
    from clipcov_cli.evaluate.runner import check_checkpoints, load_checkpoint
    from clipcov_cli.evaluate.suite import find_tasks, get_suite, suite_rows, suite_table

    tasks = get_suite(suite)
    check_checkpoints(checkpoints)
    _require_clip_benchmark()
    found, missing = find_tasks(tasks, data)
    if missing:
        err_console.print(f"{len(missing)} of the {len(tasks)} tasks of suite {suite} are not under {data} "
                          f"(e.g. {', '.join(missing[:3])}): the average is over the {len(found)} found")
    rows = []
    for ckpt in checkpoints:
        name, loaded = load_checkpoint(ckpt, model, model_config, device)
        rows += suite_rows(suite, loaded, found, missing, batch_size,
                           {"model": name, "checkpoint": str(ckpt.resolve())})
    out.mkdir(parents=True, exist_ok=True)
    path = write_results(out, rows)
    console.print(suite_table(rows))
    err_console.print(f"wrote {path}")
