"""Phase timings of `clipcov select` on stderr when ``CLIPCOV_SELECT_PROFILE`` is set (never in the
output files), and the worker count both the runner and the ClipCov method use."""

from __future__ import annotations

import os
import sys


def profile(msg: str) -> None:
    if os.environ.get("CLIPCOV_SELECT_PROFILE"):
        print(f"[clipcov select] {msg}", file=sys.stderr)


def process_age() -> float | None:
    """Seconds since this process started (Linux; None elsewhere), to profile the start-up."""
    try:
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def worker_count(workers: int | None) -> int:
    """``--workers``: None or 0 means every CPU of this machine."""
    return max(1, int(workers or os.cpu_count() or 1))
