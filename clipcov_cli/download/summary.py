"""Merge img2dataset's per-shard ``{shard}_stats.json`` (and shard sizes) into one summary."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

_STATS = re.compile(r"^(\d+)_stats\.json$")


@dataclass(frozen=True)
class DownloadSummary:
    shards_done: int
    shards_skipped: int  # already complete before this run
    count: int
    successes: int
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count
    retried: int = 0  # failed samples re-queued into later shards by --retry-failed
    bytes_written: int = 0
    seconds: float = 0.0
    run_count: int = 0  # samples processed by this run (shards it completed)
    refused: int = 0  # lines of the URL list not fetched (not an http(s) URL)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def samples_per_s(self) -> float:
        return self.run_count / self.seconds if self.seconds > 0 else 0.0


def done_shards(out_dir: Path) -> list[int]:
    """Shards whose stats file (img2dataset's completion marker, written last) exists."""
    if not out_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in out_dir.iterdir() if (m := _STATS.match(p.name)))


def _reason(message: str) -> str:
    """Group messages that differ only in URLs or numbers (e.g. two 404s of different files)."""
    message = re.sub(r"https?://\S+", "<url>", message)
    return message.strip()[:120] or "unknown"


def summarize(out_dir: Path, before: frozenset[int], seconds: float, retried_keys: frozenset[str] = frozenset(),
              refused: int = 0) -> DownloadSummary:
    shards = done_shards(out_dir)
    count = successes = run_count = 0
    failures: Counter[str] = Counter()
    for shard in shards:
        stats = json.loads((out_dir / f"{shard:05d}_stats.json").read_text())
        count += int(stats.get("count", 0))
        run_count += 0 if shard in before else int(stats.get("count", 0))
        successes += int(stats.get("successes", 0))
        for reason, n in stats.get("status_dict", {}).items():
            if reason != "success":
                failures[_reason(reason)] += int(n)
    retried = 0
    if retried_keys:
        retried = len(retried_keys)
        count -= retried  # retried samples are counted again in the shards that retried them
        for reason, n in _retried_reasons(out_dir, retried_keys).items():
            failures[reason] -= n
            if failures[reason] <= 0:
                del failures[reason]
    size = sum(p.stat().st_size for p in out_dir.glob("*.tar"))
    return DownloadSummary(len(shards), len(before), count, successes, dict(failures.most_common()), retried, size,
                           seconds, run_count, refused)


def too_few_successes(s: DownloadSummary, min_success: float) -> str | None:
    """Why the download failed as a job (exit 1), or None: no success at all, or a share of
    successes below ``min_success`` (``--min-success``, default 0: only a download with none fails)."""
    share = s.successes / s.count if s.count else 0.0
    if s.successes == 0:
        return f"no sample was downloaded ({s.count:,} tried, {s.refused:,} lines refused): see the summary above"
    if share < min_success:
        return (f"only {100 * share:.1f}% of the samples were downloaded, below --min-success "
                f"{100 * min_success:g}%: see the summary above")
    return None


def _retried_reasons(out_dir: Path, keys: frozenset[str]) -> Counter[str]:
    import pyarrow.parquet as pq

    reasons: Counter[str] = Counter()
    for p in sorted(out_dir.glob("[0-9]*.parquet")):
        t = pq.read_table(p, columns=["key", "error_message"]).to_pydict()
        for k, msg in zip(t["key"], t["error_message"]):
            if k in keys:
                reasons[_reason(msg or "unknown")] += 1
    return reasons


def summary_table(s: DownloadSummary) -> Table:
    t = Table(title="download summary", show_header=True, header_style="bold")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("shards complete", f"{s.shards_done} ({s.shards_skipped} already done before this run)")
    t.add_row("samples", f"{s.count:,}")
    t.add_row("successes", f"{s.successes:,} ({100 * s.successes / max(s.count, 1):.1f}%)")
    t.add_row("failures", f"{s.failed:,}")
    if s.refused:
        t.add_row("refused lines (not http/https)", f"{s.refused:,}")
    for reason, n in s.failures.items():
        t.add_row(f"  {reason}", f"{n:,}")
    if s.retried:
        t.add_row("retried by --retry-failed", f"{s.retried:,}")
    t.add_row("bytes written", f"{s.bytes_written / 1e6:,.1f} MB")
    t.add_row("samples/s (this run)", f"{s.samples_per_s:,.1f}")
    return t
