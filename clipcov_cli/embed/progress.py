"""Embedding progress on stderr (samples/s, ETA): a rich bar on a terminal, periodic plain lines
in a log file (see ``clipcov_cli.utils.progress``)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from clipcov_cli.utils.progress import job_progress


@contextlib.contextmanager
def embed_progress(total: int | None, label: str, unit: str = "samples") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``."""
    with job_progress(total, label, unit) as p:
        yield p.advance
