"""The download configuration: defaults < recipe < command-line flags, frozen once built."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from clipcov_cli.errors import ClipcovError

TEXT_FORMATS = ("txt", "csv", "tsv", "txt.gz", "csv.gz", "tsv.gz")
INPUT_FORMATS = TEXT_FORMATS + ("parquet",)
RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")


@dataclass(frozen=True)
class DownloadConfig:
    url_list: Path
    out_dir: Path
    input_format: str | None = None  # None: from the file's extension
    header: bool = True
    columns: tuple[str, ...] = ()  # names of a headerless file's columns, in order
    url_col: str = "url"
    caption_col: str | None = "caption"
    extra_cols: tuple[str, ...] = ()
    image_size: int = 256
    resize_mode: str = "border"
    processes: int = 1
    threads: int = 16
    shard_size: int = 10000
    retries: int = 0
    timeout: int = 10
    retry_failed: bool = False
    retry_all: bool = False  # with retry_failed: permanent failures too (404, not an image)
    max_attempts: int = 3  # with retry_failed: attempts per URL, the first download included
    engine: str = "local"  # local: img2dataset's multiprocessing distributor; ray: its Ray distributor
    ray_address: str | None = None  # None: start a local Ray instance; "auto": join the running cluster

    def __post_init__(self) -> None:
        from clipcov_cli.distribute import check_engine

        check_engine(self.engine, self.ray_address)
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise ClipcovError(f"unknown input format {self.input_format!r}: use one of {', '.join(INPUT_FORMATS)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ClipcovError(f"unknown resize mode {self.resize_mode!r}: use one of {', '.join(RESIZE_MODES)}")
        for name in ("image_size", "processes", "threads", "shard_size", "timeout", "max_attempts"):
            if getattr(self, name) < 1:
                raise ClipcovError(f"--{name.replace('_', '-')} must be at least 1")
        if self.retries < 0:
            raise ClipcovError("--retries must be >= 0")
        if not self.header and not self.columns:
            raise ClipcovError("a headerless URL list needs its column names (recipe key `columns`)")

    def with_overrides(self, **overrides: Any) -> "DownloadConfig":
        """A copy with the given fields replaced, ignoring ``None`` values (flags not given)."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if v is not None and k in known})

    @property
    def resolved_format(self) -> str:
        if self.input_format:
            return self.input_format
        name = self.url_list.name.lower()
        for fmt in sorted(INPUT_FORMATS, key=len, reverse=True):
            if name.endswith("." + fmt):
                return fmt
        raise ClipcovError(f"cannot tell the format of {self.url_list.name}: pass --input-format (tsv, csv, parquet, txt)")
