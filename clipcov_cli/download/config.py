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
    min_success: float = 0.0  # the job fails (exit 1) below this share of successes, and always with none
    allow_file_urls: bool = False  # fetch file:// URLs too (default: only http and https)

    def __post_init__(self) -> None:
        from clipcov_cli.distribute import check_engine

        self._check_types()
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
        if not 0.0 <= self.min_success <= 1.0:
            raise ClipcovError(f"--min-success must be a fraction in [0, 1] (got {self.min_success})")

    def _check_types(self) -> None:
        """Values from a recipe arrive as YAML wrote them: a number must be a number (``threads: many``)."""
        for name in ("image_size", "processes", "threads", "shard_size", "timeout", "retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ClipcovError(f"{name} must be a whole number (got {value!r})")
        if isinstance(self.min_success, bool) or not isinstance(self.min_success, (int, float)):
            raise ClipcovError(f"min_success must be a number (got {self.min_success!r})")
        if not isinstance(self.header, bool):
            raise ClipcovError(f"header must be true or false (got {self.header!r})")
        for name in ("input_format", "url_col", "caption_col", "resize_mode"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ClipcovError(f"{name} must be a string (got {value!r})")

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
