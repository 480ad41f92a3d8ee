"""Open an embeddings folder (contract 2, or clip-retrieval's inference output) as an EmbeddingSet.

Parts are memory-mapped and, when there are several, concatenated once (in memory when small, into
a temporary memory-mapped file otherwise), so a CC12M-size folder never needs to fit in RAM.
Rows with NaN / inf, zero norm or a norm off 1 (beyond ``NORM_TOLERANCE``) are excluded
(``valid=False``) and counted, not fatal. Labels are checked: a pseudo-label outside ``[0, K)`` or a
NaN / infinite ``label_sim`` on a usable row is an error (the labels are damaged: relabel).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from clipcov_cli.errors import ClipcovError
from clipcov_cli.layout import Layout
from clipcov_cli.select.base import NORM_TOLERANCE, EmbeddingSet, PartFiles, Preparation
from clipcov_cli.select.keys import duplicate_keys, keys_to_numpy, numbers_to_numpy
from clipcov_cli.utils.disk import require_free_space
from clipcov_cli.utils.limits import ensure_open_files

IN_MEMORY_BYTES = 2 << 30  # concatenate in RAM below this size per modality


@dataclass(frozen=True)
class EmbeddingsInfo:
    root: Path
    parts: tuple[str, ...]
    meta: dict | None  # clipcov.json, None for clip-retrieval output
    has_labels: bool
    excluded_nan: int
    excluded_zero: int
    fingerprint: str
    class_names: tuple[str, ...] | None
    excluded_off_norm: int = 0

    @property
    def dataset_dir(self) -> str | None:
        return (self.meta or {}).get("dataset_dir")


def resolve_embeddings_dir(path: Path) -> Path:
    """An embeddings folder, or a dataset folder holding one in ``embeddings/``."""
    path = Path(path)
    if not path.exists():
        raise ClipcovError(f"{path} does not exist")
    for root in (path, path / "embeddings"):
        if Layout(root).img_dir.is_dir():
            return root
    raise ClipcovError(f"{path} holds no embeddings (no img_emb/ here or in embeddings/): run `clipcov embed` first")


def list_parts(root: Path) -> list[str]:
    parts = Layout(root).parts()
    if not parts:
        raise ClipcovError(f"{root}/img_emb holds no img_emb_*.npy part")
    return parts


def _load_meta(root: Path) -> dict | None:
    p = Layout(root).manifest
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        raise ClipcovError(f"{p} is not valid JSON") from None


def _npy(path: Path) -> np.ndarray:
    if not path.exists():
        raise ClipcovError(f"missing {path.relative_to(path.parents[1])}: the embeddings folder is incomplete")
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise ClipcovError(f"cannot read {path}: {exc}") from None
    if arr.ndim != 2:
        raise ClipcovError(f"{path} is not a 2-D array of embeddings")
    return arr


def _concat(arrays: list[np.ndarray], tmpdir: list) -> np.ndarray:
    if len(arrays) == 1:
        return arrays[0]
    n, d = sum(a.shape[0] for a in arrays), arrays[0].shape[1]
    dtype = np.result_type(*arrays)
    if n * d * dtype.itemsize <= IN_MEMORY_BYTES:
        return np.concatenate(arrays)
    require_free_space(tmpdir[0].name if tmpdir else None, n * d * dtype.itemsize, "a temporary copy of the embeddings")
    if not tmpdir:
        tmpdir.append(tempfile.TemporaryDirectory(prefix="clipcov-select-"))
    out = np.lib.format.open_memmap(Path(tmpdir[0].name) / f"cat{len(list(Path(tmpdir[0].name).iterdir()))}.npy",
                                    mode="w+", dtype=dtype, shape=(n, d))
    s = 0
    for a in arrays:
        for c in range(0, a.shape[0], 1 << 16):
            block = a[c: c + (1 << 16)]
            out[s + c: s + c + len(block)] = block
        s += a.shape[0]
    out.flush()
    return out


def _valid_rows(img: np.ndarray, txt: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Flags and counts of NaN / inf rows, zero-norm rows and rows whose norm is off 1 (in either
    modality), the checks of the scan (``_scan_rows``) for the methods that do not scan."""
    valid = np.ones(img.shape[0], bool)
    nan = zero = off = 0
    lo, hi = (1 - NORM_TOLERANCE) ** 2, (1 + NORM_TOLERANCE) ** 2
    for s in range(0, img.shape[0], 1 << 16):
        a = np.asarray(img[s: s + (1 << 16)], np.float32)
        b = np.asarray(txt[s: s + (1 << 16)], np.float32)
        isnan = ~(np.isfinite(a).all(1) & np.isfinite(b).all(1))
        iszero = ~isnan & ((np.abs(a).sum(1) == 0) | (np.abs(b).sum(1) == 0))
        with np.errstate(invalid="ignore", over="ignore"):
            na, nb = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
        isoff = ~isnan & ~iszero & ~((na >= lo) & (na <= hi) & (nb >= lo) & (nb <= hi))
        valid[s: s + len(a)] = ~(isnan | iszero | isoff)
        nan += int(isnan.sum())
        zero += int(iszero.sum())
        off += int(isoff.sum())
    return valid, nan, zero, off


def _check_labels(labels: np.ndarray, num_classes: int | None, root: Path) -> None:
    """Every pseudo-label is a class index in ``[0, K)`` (K: the folder's class count, when recorded)."""
    if not len(labels):
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bad = lo if lo < 0 else hi
        k = f"[0, {num_classes})" if num_classes is not None else "[0, K)"
        raise ClipcovError(f"{root}/labels: pseudo_label {bad} is outside {k}: the labels are damaged; "
                           "re-run `clipcov embed --relabel`")


def _check_label_sims(sims: np.ndarray | None, valid: np.ndarray, keys: np.ndarray, root: Path) -> None:
    """A usable row's ``label_sim`` is finite (a NaN would become a NaN gain)."""
    if sims is None:
        return
    bad = valid & ~np.isfinite(sims)
    if bad.any():
        first = int(np.argmax(bad))
        raise ClipcovError(f"{root}/labels: {int(bad.sum())} rows have a NaN or infinite label_sim "
                           f"(e.g. key {keys[first]!r}): the labels are damaged; re-run `clipcov embed --relabel`")


def _same_keys(label_keys, meta_keys, meta_np: np.ndarray) -> bool:
    if meta_keys is not None and label_keys.type == meta_keys.type and label_keys.equals(meta_keys):
        return True
    return label_keys.to_numpy(zero_copy_only=False).astype(str).tolist() == meta_np.tolist()


def _num_classes(labels: np.ndarray) -> int:
    """The number of classes the pseudo-labels index (at least 1)."""
    return int(labels.max()) + 1 if len(labels) else 1


def _check_unique(keys: np.ndarray) -> None:
    dup = duplicate_keys(keys)
    if len(dup):
        raise ClipcovError(f"duplicate keys in the embeddings folder ({len(dup)} keys, e.g. {dup[0]!r})")


def _fingerprint(root: Path, parts: list[str]) -> str:
    """sha256 of clipcov.json and of every part file's name and size (cheap: no embedding is hashed)."""
    h = hashlib.sha256()
    layout = Layout(root)
    if layout.manifest.exists():
        h.update(layout.manifest.read_bytes())
    for part in parts:
        for sub, p in layout.part_files(part):
            h.update(f"{sub}/{p.name}:{p.stat().st_size if p.exists() else -1};".encode())
    return h.hexdigest()


class PartsView:
    """Several parts seen as one (n, d) array without copying: slices and index arrays only."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays
        self.bounds = np.cumsum([0] + [a.shape[0] for a in arrays])
        self.shape = (int(self.bounds[-1]), int(arrays[0].shape[1]))
        self.dtype = np.result_type(*arrays)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate(self.arrays)
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key):
        if isinstance(key, slice):
            rows = np.arange(*key.indices(self.shape[0]))
        else:
            rows = np.asarray(key)
            if rows.dtype == bool:
                rows = np.flatnonzero(rows)
        part = np.searchsorted(self.bounds, rows, side="right") - 1
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        for p in np.unique(part):
            sel = part == p
            out[sel] = self.arrays[p][rows[sel] - self.bounds[p]]
        return out


def open_embeddings(path: Path, tmpdir: list,
                    prepare: Callable[[PartFiles], Preparation | None] | None = None) -> tuple[EmbeddingSet, EmbeddingsInfo]:
    """Read an embeddings folder. ``tmpdir`` (a list) receives objects with a ``cleanup()`` the caller
    keeps alive while the returned arrays are in use (a temporary concatenation, a method's prepared rows).

    ``prepare`` (a method's ``Selector.prepare`` hook): when labels are present, nothing is
    concatenated; the method's work on the parts (``PartFiles``) starts before the metadata and labels
    are read, gets the labels as soon as they are read (while the keys are read and checked) if it
    wants them, and its result (``PreparedRows``: the usable rows and the excluded counts) is handed
    to the method as ``EmbeddingSet.prepared``."""
    root = resolve_embeddings_dir(path)
    meta = _load_meta(root)
    if meta is not None and meta.get("complete") is False:
        raise ClipcovError(f"{root} is incomplete ({len(meta.get('parts_done', []))} of "
                           f"{len(meta.get('parts', []))} parts): re-run `clipcov embed` to finish it")
    layout = Layout(root)
    parts = list_parts(root)
    # each part: an image and a text map, mapped again by a method's pass; plus the library's own files
    ensure_open_files(4 * len(parts) + 256, f"the {len(parts)} parts of {root}")
    imgs, txts = _open_arrays(layout, parts)
    work = None
    if prepare is not None and layout.labels_dir.is_dir():
        firsts = np.cumsum([0] + [a.shape[0] for a in imgs])
        work = prepare(PartFiles(tuple(layout.img(p) for p in parts), tuple(layout.txt(p) for p in parts),
                                 tuple(int(f) for f in firsts[:-1])))
    try:
        # a method's pass that needs the labels starts with them, while the keys are read
        on_labels = (lambda labels: work.labels_ready(labels, _num_classes(labels))) \
            if work is not None and work.wants_labels else None
        all_keys, labels, sims = _read_tables(layout, parts, imgs, on_labels, _recorded_classes(meta))
        _check_unique(all_keys)
        has_labels = labels is not None
        prepared = None
        if work is not None and has_labels:
            prepared = work.finish(labels, _num_classes(labels))
            tmpdir.append(prepared)  # the caller's cleanup removes its copy and memory maps
            work = None
    finally:
        if work is not None:  # an error, or a labels part missing: the pass is not needed
            work.abort()
    class_names = tuple(((meta or {}).get("classes") or {}).get("names") or ()) or None
    num_classes = ((meta or {}).get("classes") or {}).get("count")
    if prepared is not None:
        img, txt = (imgs[0], txts[0]) if len(imgs) == 1 else (PartsView(imgs), PartsView(txts))
        valid, nan, zero, off = prepared.valid, prepared.nan, prepared.zero, prepared.off_norm
    else:
        img, txt = _concat(imgs, tmpdir), _concat(txts, tmpdir)
        valid, nan, zero, off = _valid_rows(img, txt)
    _check_label_sims(sims, valid, all_keys, root)
    emb = EmbeddingSet(img=img, txt=txt, keys=all_keys, valid=valid, pseudo_label=labels, label_sim=sims,
                       num_classes=num_classes, prepared=prepared)
    info = EmbeddingsInfo(root=root.resolve(), parts=tuple(parts), meta=meta, has_labels=has_labels,
                          excluded_nan=nan, excluded_zero=zero, fingerprint=_fingerprint(root, parts),
                          class_names=class_names, excluded_off_norm=off)
    return emb, info


def _recorded_classes(meta: dict | None) -> int | None:
    """The class count clipcov.json records (a positive int), else None (K from the labels)."""
    count = ((meta or {}).get("classes") or {}).get("count")
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None


def _open_arrays(layout: Layout, parts: list[str]) -> tuple[list, list]:
    """Every part's image and text arrays (memory maps), with their shapes checked against each other."""
    imgs, txts = [], []
    for part in parts:
        img = _npy(layout.img(part))
        txt = _npy(layout.txt(part))
        if img.shape[0] != txt.shape[0]:
            raise ClipcovError(f"part {part}: row counts differ (image {img.shape[0]}, text {txt.shape[0]})")
        if img.shape[1] != txt.shape[1] or (imgs and img.shape[1] != imgs[0].shape[1]):
            raise ClipcovError(f"part {part}: embedding dimensions differ ({img.shape[1]} vs {txt.shape[1]})")
        imgs.append(img), txts.append(txt)
    return imgs, txts


def _read_tables(layout: Layout, parts: list[str], imgs: list, on_labels=None,
                 num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Keys (metadata/), and pseudo-labels and label similarities (labels/) if every part has them.
    The labels are read first and handed to ``on_labels`` (if given) before the keys are read."""
    rows = []  # each part's metadata row count (files are reopened below: one open at a time)
    for part, img in zip(parts, imgs):
        mpath = layout.meta(part)
        if not mpath.exists():
            raise ClipcovError(f"missing metadata/metadata_{part}.parquet: the embeddings folder is incomplete")
        with pq.ParquetFile(mpath) as mfile:  # not read_table: no pyarrow.dataset (nor pandas) import
            n_meta = mfile.metadata.num_rows
        if img.shape[0] != n_meta:
            raise ClipcovError(f"part {part}: row counts differ (image and text {img.shape[0]}, metadata {n_meta})")
        rows.append(n_meta)
    lpaths = [layout.labels(part) for part in parts]
    has_labels = layout.labels_dir.is_dir() and all(p.exists() for p in lpaths)
    label_keys, labels, sims = [], [], []
    if has_labels:
        for part, n_meta, lpath in zip(parts, rows, lpaths):
            with pq.ParquetFile(lpath) as lfile:
                lt = lfile.read(columns=["key", "pseudo_label", "label_sim"])
            if lt.num_rows != n_meta:
                raise ClipcovError(f"part {part}: labels/ rows do not match metadata/ keys; "
                                   "re-run `clipcov embed --relabel`")
            label_keys.append(lt["key"])
            labels.append(numbers_to_numpy(lt["pseudo_label"], np.int64))
            sims.append(numbers_to_numpy(lt["label_sim"], np.float32))
        labels, sims = np.concatenate(labels), np.concatenate(sims)
        _check_labels(labels, num_classes, layout.root)
        if on_labels is not None:
            on_labels(labels)
    keys = []
    for i, (part, n_meta) in enumerate(zip(parts, rows)):
        with pq.ParquetFile(layout.meta(part)) as mfile:
            cols = mfile.schema_arrow.names
            key_col = "key" if "key" in cols else ("image_path" if "image_path" in cols else None)
            kcol = mfile.read(columns=[key_col])[key_col] if key_col else None
        k = keys_to_numpy(kcol) if key_col else np.array([f"{part}:{j}" for j in range(n_meta)])
        if has_labels and not _same_keys(label_keys[i], kcol, k):
            raise ClipcovError(f"part {part}: labels/ rows do not match metadata/ keys; "
                               "re-run `clipcov embed --relabel`")
        keys.append(k)
    if not has_labels:
        return np.concatenate(keys), None, None
    return np.concatenate(keys), labels, sims
