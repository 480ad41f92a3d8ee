"""Long jobs with stderr redirected to a file (nohup, Slurm): periodic plain progress lines (count,
rate, ETA) instead of a silent rich bar, and messages kept on one line (no wrapping at 80 columns)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from clipcov_cli.utils.progress import PlainProgress, progress_line
from tests import embed_helpers as h
from tests.cli_helpers import clipcov_argv


def run_logged(tmp_path: Path, name: str, *args) -> str:
    """Run clipcov with stderr into a file (not a terminal), as nohup or Slurm do; return the file's text."""
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "CLIPCOV_PROGRESS_SECONDS": "0", "COLUMNS": "80"}
    with open(log, "w") as err:
        r = subprocess.run(clipcov_argv(*args), stdout=subprocess.PIPE, stderr=err, text=True, timeout=300, env=env)
    text = log.read_text()
    assert r.returncode == 0, text[-3000:]
    return text


def test_progress_line_has_count_rate_and_eta():
    assert progress_line("embedding", 1200, 10000, "samples", 4.0) == \
        "embedding: 1,200/10,000 samples (12%), 300.0 samples/s, ETA 0:00:29, 0:00:04 elapsed"
    lines = []
    p = PlainProgress("x", 10, "rows", 3600.0, lines.append)
    p.advance(4)
    p.finish()
    assert lines == []  # not before the interval, and a short phase ends quietly
    p = PlainProgress("x", 10, "rows", 0.0, lines.append)
    p.advance(4)
    p.finish()
    assert len(lines) == 2 and lines[-1].startswith("x: 4/10 rows (40%)")


def test_embed_select_export_print_progress_lines_into_a_log_file(tmp_path, tiny_weights, vocab):
    h.make_dataset(tmp_path / "data", shards=3, per_shard=12)
    ckpt = tiny_weights
    classes, templates = vocab
    emb = tmp_path / "a-rather-long-folder-name-so-that-messages-pass-eighty-columns" / "emb"
    text = run_logged(tmp_path, "embed", "embed", tmp_path / "data", "--out", emb, "--model", "clipcov-tiny",
                      "--pretrained", ckpt, "--classes", classes, "--templates", templates, "--device", "cpu",
                      "--batch-size", "6", "--workers", "0", "--threads", "1")
    lines = [l for l in text.splitlines() if l.startswith("embedding: ")]
    assert len(lines) >= 3, text  # one per batch at interval 0, not just the summary
    assert lines[-1].startswith("embedding: 36/36 samples (100%)") and "samples/s" in lines[-1]
    assert any("ETA" in l for l in lines), lines

    text = run_logged(tmp_path, "select", "select", emb, "--budget", "50%", "--out", tmp_path / "subset")
    assert "select: clipcov choosing 18 of 36 rows: done in 0:00:0" in text
    assert "select: reading" in text and "select: writing" in text

    text = run_logged(tmp_path, "export", "export", tmp_path / "subset", "--out", tmp_path / "shards")
    assert any(l.startswith("extract: ") and "units" in l for l in text.splitlines()), text
    done = [l for l in text.splitlines() if l.startswith("exported 18 samples")]
    assert len(done) == 1 and done[0].endswith("verified"), text  # one line, however long
    assert len(done[0]) > 80
