"""DataComp's ``uids.npy``: the subset file its resharder reads.

DataComp names every sample by a 128-bit ``uid`` (32 hex digits in the sample's ``.json`` and the
metadata parquet; img2dataset keeps the column with ``--save_additional_columns uid``, clipcov's
``download --extra-col uid``). A subset is a NumPy array of dtype ``u8,u8`` (``f0``: the high 64 bits,
``f1``: the low 64 bits), sorted ascending, which the resharder binary-searches with
``np.searchsorted``; a uid string parses as ``divmod(int(uid, 16), 2**64)``. The file may also be
that array's raw bytes without a ``.npy`` header (the resharder memory-maps those)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow.parquet as pq

from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.atomic import atomic_path

UID_DTYPE = np.dtype("u8,u8")
UID_COLUMN = "uid"
_NPY_MAGIC = b"\x93NUMPY"


def uid_pair(uid: str) -> tuple[int, int]:
    """``'0123...ef'`` (at most 32 hex digits) -> (high 64 bits, low 64 bits)."""
    text = str(uid).strip()
    try:
        value = int(text, 16)
    except ValueError:
        raise ClipcovError(f"uid {text!r} is not a hexadecimal number (DataComp uids are 32 hex digits)") from None
    if value < 0 or value >= 1 << 128 or text.startswith(("-", "+", "0x", "0X")) or "_" in text:
        raise ClipcovError(f"uid {text!r} is not a 128-bit hexadecimal uid")
    return divmod(value, 1 << 64)


def uid_hex(pair) -> str:
    return f"{int(pair[0]):016x}{int(pair[1]):016x}"


def pack_uids(uids: Iterable[str]) -> np.ndarray:
    """Sorted, distinct ``u8,u8`` records of the uid strings."""
    arr = np.array([uid_pair(u) for u in uids], dtype=UID_DTYPE)
    return np.unique(arr)  # sorts by (f0, f1): the 128-bit value's order


def write_uids(path: Path, uids) -> int:
    """Write the sorted ``uids.npy`` atomically (uid strings, or records from :func:`pack_uids`); returns the count."""
    arr = uids if isinstance(uids, np.ndarray) and uids.dtype == UID_DTYPE else pack_uids(uids)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a bare name
            np.save(f, arr, allow_pickle=False)
    return len(arr)


def read_uids(path: Path) -> np.ndarray:
    """A ``uids.npy`` (or its raw bytes): the ``u8,u8`` records, sorted and distinct."""
    path = Path(path)
    if not path.is_file():
        raise ClipcovError(f"--uids {path}: no such file")
    with open(path, "rb") as f:
        has_header = f.read(6) == _NPY_MAGIC
    try:
        arr = np.load(path, allow_pickle=False) if has_header else np.fromfile(path, dtype=UID_DTYPE)
    except ValueError as exc:
        raise ClipcovError(f"--uids {path}: cannot read it ({exc})".splitlines()[0]) from None
    if arr.dtype != UID_DTYPE or arr.ndim != 1:
        raise ClipcovError(f"--uids {path}: dtype {arr.dtype} shape {arr.shape}, expected a 1-d array of "
                           "dtype 'u8,u8' (DataComp's uids.npy)")
    if len(arr) == 0:
        raise ClipcovError(f"--uids {path} holds no uid")
    return np.unique(arr)


def uids_of_keys(parquets: Iterable[Path]) -> dict[str, str]:
    """key -> uid from the parquet files that have both columns (others are skipped)."""
    out: dict[str, str] = {}
    for p in parquets:
        try:
            names = pq.read_schema(p).names
        except Exception:  # noqa: BLE001 - a damaged or foreign parquet: not a uid source
            continue
        if "key" not in names or UID_COLUMN not in names:
            continue
        cols = ["key", UID_COLUMN] + (["status"] if "status" in names else [])
        t = pq.read_table(p, columns=cols)
        status = t.column("status").to_pylist() if "status" in names else None
        for i, (k, u) in enumerate(zip(t.column("key").to_pylist(), t.column(UID_COLUMN).to_pylist())):
            if k is not None and u is not None and (status is None or status[i] == "success"):
                out[str(k)] = str(u)
    return out


def dataset_uid_parquets(dataset_dir: Path) -> list[Path]:
    """img2dataset's per-shard parquet files of a dataset folder."""
    return sorted(p for p in Path(dataset_dir).glob("*.parquet") if p.with_suffix(".tar").exists())


def keys_for_uids(dataset_dir: Path, uids: np.ndarray) -> tuple[list[str], list[str]]:
    """The keys of the dataset's samples whose uid is in ``uids`` (in uid order; every sample of a uid,
    as the resharder copies them all), and the uids (hex) found in no sample."""
    by_uid: dict[tuple[int, int], list[str]] = {}
    mapping = uids_of_keys(dataset_uid_parquets(dataset_dir))
    if not mapping:
        raise ClipcovError(f"{dataset_dir} has no '{UID_COLUMN}' column in its parquet files: download it with "
                           f"--extra-col {UID_COLUMN} (img2dataset: --save_additional_columns '[\"uid\"]')")
    for key, uid in mapping.items():
        by_uid.setdefault(uid_pair(uid), []).append(key)
    keys, missing = [], []
    for rec in uids.tolist():
        pair = (int(rec[0]), int(rec[1]))
        if pair in by_uid:
            keys.extend(by_uid[pair])
        else:
            missing.append(uid_hex(pair))
    return keys, missing


def keys_for_uid_file(dataset_dir: Path | None, path: Path, allow_missing: bool) -> tuple[list[str], list[str]]:
    """The dataset keys of a ``uids.npy``; uids in no sample are an error listing the first few,
    unless ``allow_missing`` (then they are returned, to be reported)."""
    if dataset_dir is None:
        raise ClipcovError("--uids needs --dataset DIR (the shards whose parquet files hold the uid column)")
    if not Path(dataset_dir).is_dir():
        raise ClipcovError(f"source dataset {dataset_dir} does not exist")
    keys, missing = keys_for_uids(Path(dataset_dir), read_uids(path))
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ClipcovError(f"{len(missing)} uid(s) of {path} are in no sample of {dataset_dir}: {shown} "
                           "(pass --allow-missing to export the others)")
    if not keys:
        raise ClipcovError(f"no uid of {path} is in {dataset_dir}")
    return keys, missing
