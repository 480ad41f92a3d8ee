"""Which failed samples ``--retry-failed`` downloads again.

A URL's attempts are its rows in the completed shards (the first download and every retry). A URL
is retried when none of its attempts succeeded, it has had fewer than ``max_attempts``, and its last
failure is not permanent (an HTTP 4xx other than 408/429, an unreadable or truncated image, an
image the resize filters refuse, a malformed URL) unless ``retry_all``."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MAX_ATTEMPTS = 3
PERMANENT = re.compile(
    r"HTTP Error 4(?!08|29)\d\d|cannot identify image|truncated|decod|image too (small|large)|aspect ratio"
    r"|unknown url type|invalid url|no connection adapters", re.IGNORECASE)


def is_permanent(message: str | None) -> bool:
    """A failure that another attempt would repeat (404, not an image, ...)."""
    return bool(message) and PERMANENT.search(message) is not None


def rows_to_retry(out_dir: Path, shards: list[int], cols: list[str], retry_all: bool,
                  max_attempts: int) -> tuple[pa.Table, Counter[str]]:
    """The last failed row of every URL to retry (``cols``), and the counts of URLs skipped by
    reason (``permanent``, ``attempts``)."""
    last: dict[tuple, dict] = {}
    attempts: Counter[tuple] = Counter()
    succeeded: set[tuple] = set()
    for shard in shards:  # in shard order: a later row is a later attempt
        t = pq.read_table(out_dir / f"{shard:05d}.parquet")
        keep = [c for c in dict.fromkeys([*cols, "status", "error_message"]) if c in t.column_names]
        for row in t.select(keep).to_pylist():
            ident = (row.get("url"), row.get("caption"))
            attempts[ident] += 1
            if row.get("status") == "success":
                succeeded.add(ident)
            last[ident] = row
    chosen, skipped = [], Counter()
    for ident, row in last.items():
        if ident in succeeded:
            continue
        if attempts[ident] >= max_attempts:
            skipped["attempts"] += 1
        elif not retry_all and is_permanent(row.get("error_message")):
            skipped["permanent"] += 1
        else:
            chosen.append({c: row.get(c) for c in cols})
    if not chosen:
        return pa.table({c: pa.array([], pa.string()) for c in cols}), skipped
    return pa.Table.from_pylist(chosen), skipped
