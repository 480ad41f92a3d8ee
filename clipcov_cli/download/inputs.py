"""Validate a URL list and normalize it to one parquet file with named columns.

Text lists (tsv/csv/txt, optionally gzipped, with or without a header) are converted chunk by chunk
— a multi-GB file is never held in memory nor edited — into ``OUT/_input/urls.parquet`` (atomic).
Parquet lists are used in place. Validation reads only the head of the file and happens before
anything is written to the output folder.

Only ``http(s)`` URLs are fetched (``file://`` too with ``--allow-file-urls``): a line whose URL has
another scheme (``file:``, ``ftp:``, ``data:`` ...) is dropped from the list img2dataset reads and
counted (``refused``, shown in the summary). A parquet list with such lines is copied without them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipcov_cli.download.config import DownloadConfig
from clipcov_cli.errors import ClipcovError, first_line
from clipcov_cli.utils.atomic import atomic_path, write_json

CHUNK_ROWS = 500_000
INPUT_DIR = "_input"


@dataclass(frozen=True)
class UrlList:
    """A validated URL list in parquet form, and the columns img2dataset should read."""

    path: Path
    rows: int
    url_col: str
    caption_col: str | None
    extra_cols: tuple[str, ...]
    refused: int = 0  # lines dropped: their URL's scheme is not fetched


def _read_text(cfg: DownloadConfig, nrows: int | None = None, chunksize: int | None = None):
    fmt = cfg.resolved_format
    base = fmt.removesuffix(".gz")
    sep = {"tsv": "\t", "csv": ",", "txt": "\n"}[base]
    names = list(cfg.columns) if not cfg.header else (["url"] if base == "txt" else None)
    header = 0 if cfg.header and base != "txt" else None
    return pd.read_csv(cfg.url_list, sep=sep, header=header, names=names, dtype=str, keep_default_na=False,
                       quoting=csv.QUOTE_NONE if base == "tsv" else csv.QUOTE_MINIMAL, nrows=nrows,
                       chunksize=chunksize, compression="gzip" if fmt.endswith(".gz") else None,
                       engine="c", on_bad_lines="error")


def _columns(cfg: DownloadConfig) -> list[str]:
    """The file's column names, reading only its head (or the parquet schema)."""
    if cfg.resolved_format == "parquet":
        try:
            return list(pq.read_schema(cfg.url_list).names)
        except (OSError, pa.ArrowException) as exc:
            raise ClipcovError(f"cannot read {cfg.url_list} as parquet: {first_line(exc)}") from None
    try:
        head = _read_text(cfg, nrows=5)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, EOFError) as exc:
        raise ClipcovError(f"cannot read {cfg.url_list}: {first_line(exc)}") from None
    except pd.errors.EmptyDataError:
        raise ClipcovError(f"URL list {cfg.url_list} is empty") from None
    if len(head) == 0:
        raise ClipcovError(f"URL list {cfg.url_list} has no rows")
    return [str(c) for c in head.columns]


_ANY_SCHEME = r"^\s*[A-Za-z][A-Za-z0-9+.\-]*:"


def fetched(urls: pa.ChunkedArray | pa.Array, allow_file_urls: bool) -> pa.Array:
    """Which URLs may be fetched: http(s) (and file with ``allow_file_urls``), or no scheme at all
    (img2dataset fails those itself, as it does empty ones)."""
    allowed = r"^\s*(?i:https?|file):" if allow_file_urls else r"^\s*(?i:https?):"
    has_scheme = pc.fill_null(pc.match_substring_regex(urls, _ANY_SCHEME), False)
    ok = pc.fill_null(pc.match_substring_regex(urls, allowed), False)
    return pc.or_(pc.invert(has_scheme), ok)


def validate(cfg: DownloadConfig) -> list[str]:
    """Check the list exists, is readable, non-empty and has the needed columns. Writes nothing."""
    if cfg.out_dir.exists() and not cfg.out_dir.is_dir():
        raise ClipcovError(f"--out {cfg.out_dir} exists and is not a folder")
    path = cfg.url_list
    if not path.exists():
        raise ClipcovError(f"URL list {path} does not exist")
    if not path.is_file():
        raise ClipcovError(f"URL list {path} is not a file")
    if path.stat().st_size == 0:
        raise ClipcovError(f"URL list {path} is empty")
    cols = _columns(cfg)
    wanted = [cfg.url_col] + ([cfg.caption_col] if cfg.caption_col else []) + list(cfg.extra_cols)
    missing = [c for c in wanted if c not in cols]
    if missing:
        raise ClipcovError(f"URL list {path.name} has no column {missing[0]!r} (columns: {', '.join(cols)}); "
                           "set --url-col/--caption-col, or use a recipe for a headerless file")
    if cfg.resolved_format == "parquet" and pq.ParquetFile(path).metadata.num_rows == 0:
        raise ClipcovError(f"URL list {path} has no rows")
    return cols


def _source_stamp(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def prepare(cfg: DownloadConfig) -> UrlList:
    """A parquet copy of the list in ``OUT/_input/`` (reused when the source is unchanged); a parquet
    list is used in place unless some of its lines are refused."""
    keep = [cfg.url_col] + ([cfg.caption_col] if cfg.caption_col else []) + list(cfg.extra_cols)
    work = cfg.out_dir / INPUT_DIR
    out, stamp_path = work / "urls.parquet", work / "urls.source.json"
    stamp = _source_stamp(cfg.url_list) | {"columns": keep, "allow_file_urls": cfg.allow_file_urls}
    if out.exists() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp | _refused_of(stamp_path):
        return UrlList(out, pq.ParquetFile(out).metadata.num_rows, cfg.url_col, cfg.caption_col, cfg.extra_cols,
                       _refused_of(stamp_path).get("refused", 0))
    if cfg.resolved_format == "parquet":
        urls = pq.read_table(cfg.url_list, columns=[cfg.url_col])[cfg.url_col]
        refused = len(urls) - pc.sum(fetched(urls, cfg.allow_file_urls)).as_py() if len(urls) else 0
        if refused == 0:
            rows = pq.ParquetFile(cfg.url_list).metadata.num_rows
            return UrlList(cfg.url_list.resolve(), rows, cfg.url_col, cfg.caption_col, cfg.extra_cols)
    work.mkdir(parents=True, exist_ok=True)
    rows, refused = _convert(cfg, keep, out)
    if rows == 0:
        out.unlink()
        detail = f" left after refusing {refused} lines that are not http(s) URLs" if refused else ""
        raise ClipcovError(f"URL list {cfg.url_list} has no rows{detail}")
    write_json(stamp_path, stamp | {"refused": refused})
    return UrlList(out, rows, cfg.url_col, cfg.caption_col, cfg.extra_cols, refused)


def _refused_of(stamp_path: Path) -> dict:
    try:
        return {"refused": int(json.loads(stamp_path.read_text())["refused"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _chunks(cfg: DownloadConfig, keep: list[str], schema: pa.Schema):
    """The list's rows as arrow tables of the ``keep`` columns, chunk by chunk."""
    if cfg.resolved_format == "parquet":
        with pq.ParquetFile(cfg.url_list) as f:
            for batch in f.iter_batches(batch_size=CHUNK_ROWS, columns=keep):
                yield pa.Table.from_batches([batch])
        return
    try:
        for chunk in _read_text(cfg, chunksize=CHUNK_ROWS):
            yield pa.Table.from_pandas(chunk[keep], schema=schema, preserve_index=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ClipcovError(f"cannot parse {cfg.url_list}: {first_line(exc)}") from None


def _convert(cfg: DownloadConfig, keep: list[str], out: Path) -> tuple[int, int]:
    """Write the fetched lines of the list to ``out`` (atomic); return (rows written, lines refused)."""
    rows = refused = 0
    schema = pa.schema([(c, pa.string()) for c in keep])
    if cfg.resolved_format == "parquet":
        schema = pq.read_schema(cfg.url_list)
        schema = pa.schema([schema.field(c) for c in keep])
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for table in _chunks(cfg, keep, schema):
                ok = fetched(table[cfg.url_col], cfg.allow_file_urls)
                kept = table.filter(ok)
                writer.write_table(kept.cast(schema))
                rows += kept.num_rows
                refused += table.num_rows - kept.num_rows
    return rows, refused
