"""The --retry-failed policy on img2dataset's per-shard parquet: permanent failures skipped unless
retry_all, attempts per URL capped, a URL that succeeded once never retried."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from clipcov_cli.download.retry import is_permanent, rows_to_retry


def shard(out, n, rows):
    pq.write_table(pa.Table.from_pylist([{"key": f"{n:05d}{i:04d}", "url": u, "caption": "c", "status": st,
                                          "error_message": msg} for i, (u, st, msg) in enumerate(rows)]),
                   out / f"{n:05d}.parquet")


def test_permanent_failures():
    assert is_permanent("HTTP Error 404: Not Found") and is_permanent("HTTP Error 410: Gone")
    assert is_permanent("cannot identify image file <_io.BytesIO object at 0x7f>")
    assert is_permanent("image file is truncated (12 bytes not processed)")
    assert not is_permanent("The read operation timed out") and not is_permanent("HTTP Error 429: Too Many Requests")
    assert not is_permanent("HTTP Error 503: Service Unavailable") and not is_permanent(None)


def test_rows_to_retry_filters_by_reason_and_caps_attempts(tmp_path):
    shard(tmp_path, 0, [("u/ok", "success", None), ("u/404", "failed_to_download", "HTTP Error 404: Not Found"),
                        ("u/slow", "failed_to_download", "timed out"), ("u/late", "failed_to_download", "timed out"),
                        ("u/img", "failed_to_resize", "cannot identify image file")])
    shard(tmp_path, 1, [("u/slow", "failed_to_download", "timed out"), ("u/late", "success", None)])
    cols = ["key", "url", "caption"]
    t, skipped = rows_to_retry(tmp_path, [0, 1], cols, retry_all=False, max_attempts=3)
    assert t.column("url").to_pylist() == ["u/slow"] and t.column("key").to_pylist() == ["000010000"]  # its last row
    assert skipped == {"permanent": 2}
    t, skipped = rows_to_retry(tmp_path, [0, 1], cols, retry_all=False, max_attempts=2)
    assert t.num_rows == 0 and skipped == {"permanent": 2, "attempts": 1}
    t, skipped = rows_to_retry(tmp_path, [0, 1], cols, retry_all=True, max_attempts=3)
    assert sorted(t.column("url").to_pylist()) == ["u/404", "u/img", "u/slow"] and not skipped
