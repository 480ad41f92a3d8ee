"""Validate a URL list and normalize it to one parquet file with named columns.

Text lists (tsv/csv/txt, optionally gzipped, with or without a header) are converted chunk by chunk
— a multi-GB file is never held in memory nor edited — into ``OUT/_input/urls.parquet`` (atomic).
Parquet lists are used in place. Validation reads only the head of the file and happens before
anything is written to the output folder.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
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


def validate(cfg: DownloadConfig) -> list[str]:
    """Check the list exists, is readable, non-empty and has the needed columns. Writes nothing."""
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
    """A parquet copy of the list in ``OUT/_input/`` (reused when the source is unchanged)."""
    keep = [cfg.url_col] + ([cfg.caption_col] if cfg.caption_col else []) + list(cfg.extra_cols)
    if cfg.resolved_format == "parquet":
        rows = pq.ParquetFile(cfg.url_list).metadata.num_rows
        return UrlList(cfg.url_list.resolve(), rows, cfg.url_col, cfg.caption_col, cfg.extra_cols)
    work = cfg.out_dir / INPUT_DIR
    out, stamp_path = work / "urls.parquet", work / "urls.source.json"
    stamp = _source_stamp(cfg.url_list) | {"columns": keep}
    if out.exists() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return UrlList(out, pq.ParquetFile(out).metadata.num_rows, cfg.url_col, cfg.caption_col, cfg.extra_cols)
    work.mkdir(parents=True, exist_ok=True)
    rows = 0
    schema = pa.schema([(c, pa.string()) for c in keep])
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            try:
                for chunk in _read_text(cfg, chunksize=CHUNK_ROWS):
                    table = pa.Table.from_pandas(chunk[keep], schema=schema, preserve_index=False)
                    writer.write_table(table)
                    rows += len(chunk)
            except (pd.errors.ParserError, UnicodeDecodeError) as exc:
                raise ClipcovError(f"cannot parse {cfg.url_list}: {first_line(exc)}") from None
    if rows == 0:
        out.unlink()
        raise ClipcovError(f"URL list {cfg.url_list} has no rows")
    write_json(stamp_path, stamp)
    return UrlList(out, rows, cfg.url_col, cfg.caption_col, cfg.extra_cols)
