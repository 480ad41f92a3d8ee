"""One sequential pass over the embeddings that prepares ClipCov's class-by-class work.

For each chunk of rows, on a thread pool: flag NaN / inf, zero-norm and off-unit-norm rows and add the valid rows
to the corpus sums (exact: sums of float16 values in float64, so the chunks' sums merge exactly).
The class-major order of the rows (``GroupedRows.order``/``starts``: each class' rows in ascending
example index) comes from the labels. The chunks are read through the parts' memory maps when the
units will gather from them anyway (below; float16 parts), else with plain file reads into each
thread's reused buffers (``RowBuffers``), so a CC12M-size corpus never counts in resident memory as a
memory map would.

A class' rows are then read by the unit that needs them (``GroupedRows.block``, into the worker
thread's reused buffers unless the class keeps its rows) from one of three row sources
(``sources.py``), chosen by ``sources.row_source`` and closed by the ``GroupedRows``' owner:
- ``MappedParts``, the parts themselves (default): a gather through a memory map of each part
  (``parts.PartMaps``), populated in one call when first mapped (by the scan) — fine while the parts
  fit in the page cache (their pages then count in resident memory); a Ray task's unit gathers
  through maps of its own, dropped when its gather returns (without populating);
- ``ClassMajorFile``, a class-major copy made during the scan, when the corpus is larger than about
  half the available memory: rows are copied into a temporary file with ``os.pwrite`` (page cache,
  not resident memory) so that each class is one contiguous read instead of a gather over the whole
  corpus from disk;
- ``ArrayRows``, a caller's in-memory (or memory-mapped) arrays, by example index
  (``group_from_arrays``: no copy is made).
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from clipcov_cli.select.clipcov.parts import NpyPart, PartMaps, RowBuffers
from clipcov_cli.select.clipcov.rows import as_f16_bits
from clipcov_cli.select.clipcov.rows import class_positions as _class_positions
from clipcov_cli.select.clipcov.rows import scan_chunk as _scan_chunk
from clipcov_cli.select.clipcov.sources import GroupedRows, row_source
from clipcov_cli.utils.disk import out_of_space, require_free_space

__all__ = ["GROUP_WHEN_OVER", "PartsScan", "available_memory", "group_from_arrays", "group_from_parts", "load_compiled"]

GROUP_WHEN_OVER = 0.5  # make the class-major copy (a file) when the corpus exceeds this share of available memory
CHUNK_ROWS = 1 << 15


class _Sink:
    """The class-major copy in a temporary file."""

    def __init__(self, n: int, d: int, tmpdir: str | None) -> None:
        self.n, self.d = n, d
        require_free_space(tmpdir, 2 * n * d * 2, "the class-major copy of the embeddings")
        self.tmp = tempfile.TemporaryDirectory(prefix="clipcov-select-", dir=tmpdir)
        self.path = str(Path(self.tmp.name) / "grouped.u16")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.fd, 2 * n * d * 2)

    def put(self, U: np.ndarray, W: np.ndarray, dest: np.ndarray) -> None:
        """Rows U[i], W[i] go to grouped position dest[i] (dest sorted within each class run)."""
        order = np.argsort(dest, kind="stable")
        U, W, dest = U[order], W[order], dest[order]
        breaks = np.flatnonzero(np.diff(dest) != 1) + 1
        row = self.d * 2
        try:
            for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(dest)]):
                os.pwrite(self.fd, U[a:b].tobytes(), int(dest[a]) * row)
                os.pwrite(self.fd, W[a:b].tobytes(), (self.n + int(dest[a])) * row)
        except OSError as exc:  # e.g. the space went to something else since the check
            err = out_of_space(exc, self.tmp.name, "the class-major copy of the embeddings")
            if err is None:
                raise
            raise err from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def available_memory() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _chunks_of(parts: list[tuple[NpyPart, NpyPart, int]]):
    for p, (pi, pt, first) in enumerate(parts):
        for s in range(0, pi.rows, CHUNK_ROWS):
            yield p, s, min(pi.rows, s + CHUNK_ROWS), first


def load_compiled() -> None:
    """Load the pass' compiled functions (from numba's cache, or compile them) in the calling thread, for
    the row types the pass uses (read-only rows through memory maps, writable buffers). Loading holds
    the GIL and numba's compiler lock: done inside the pass' threads, each of them waits for the first
    one's load while it competes with the caller's reading (and a warm-up's imports) beside them.
    Cheap once loaded."""
    for writable in (False, True):
        U = np.zeros((1, 1), np.uint16)
        U.setflags(write=writable)
        _scan_chunk(U, U, np.empty(1, bool))
    _class_positions(np.zeros(1, np.int64), 1)


class PartsScan:
    """The one pass over .npy parts (``(img part, txt part, first example index)``), in two steps:
    ``start`` runs the flags and sums on a thread pool in the background (they need no labels), while
    the caller reads the labels; ``finish(labels, num_classes)`` waits for it and adds the class-major
    order. ``copy``: make the class-major copy (default: when the corpus is large against the
    available memory); it needs the labels, so then the pass starts when they are given
    (``start(labels, num_classes)``, while the caller reads the keys, or ``finish``). Without the copy,
    float16 parts that fit in memory are read through the memory maps the units gather from
    (populated once, nothing copied); otherwise chunks are read into each thread's reused buffers."""

    def __init__(self, parts: list[tuple[NpyPart, NpyPart, int]], workers: int = 2, copy: bool | None = None,
                 tmpdir: str | None = None, map_parts: bool = True) -> None:
        self.parts, self.workers, self.tmpdir = list(parts), max(1, int(workers)), tmpdir
        self.n = sum(pi.rows for pi, _, _ in self.parts)
        self.d = self.parts[0][0].dim
        large = 2 * self.n * self.d * 2 > GROUP_WHEN_OVER * available_memory()
        self.copy = large if copy is None else bool(copy)
        # through memory maps only what fits in memory (e.g. not a large corpus scanned for Ray tasks)
        self.mapped = map_parts and not self.copy and not large and all(
            np.dtype(pi.dtype) == np.float16 and np.dtype(pt.dtype) == np.float16 for pi, pt, _ in self.parts)
        self.valid = np.empty(self.n, bool)
        self.maps = None if self.copy else PartMaps()  # the rows are read from the parts: handed to their MappedParts source
        self._buffers = RowBuffers(CHUNK_ROWS)
        self._sink: _Sink | None = None
        self._dest: np.ndarray | None = None  # class-major position of each row, and class starts
        self._starts: np.ndarray | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list = []

    @property
    def wants_labels(self) -> bool:
        """The copy waits for the labels (``labels_ready``): hand them over as soon as they are read."""
        return self.copy

    def labels_ready(self, labels: np.ndarray, num_classes: int) -> None:
        self.start(labels, num_classes)

    def start(self, labels: np.ndarray | None = None, num_classes: int | None = None) -> "PartsScan":
        """Run the pass in the background. The copy needs the labels: without them it waits for them
        (a later ``start(labels, num_classes)``, or ``finish``)."""
        if self._pool is not None:
            return self
        if self.copy:
            if labels is None:
                return self
        load_compiled()
        if self.copy:
            self._dest, self._starts = _class_positions(np.asarray(labels, np.int64), int(num_classes))
            self._sink = _Sink(self.n, self.d, self.tmpdir)
            items = list(_chunks_of(self.parts))
        else:
            items = ([("map", pi) for pair in self.parts for pi in pair[:2]] if self.mapped else []) + \
                list(_chunks_of(self.parts))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clipcov-scan")
        self._futures = [self._pool.submit(self._work, item) for item in items]
        return self

    def finish(self, labels: np.ndarray, num_classes: int) -> GroupedRows:
        """Wait for the pass (started now if it was waiting for the labels) and add the class-major
        order; ``labels`` are the ones given to ``start``, if any."""
        try:
            self.start(labels, num_classes)
            if self._dest is None:
                self._dest, self._starts = _class_positions(np.asarray(labels, np.int64), int(num_classes))
            dest, starts = self._dest, self._starts
            results = [future.result() for future in self._futures]
        except BaseException:
            self.abort()  # a partial copy is removed now, not when collected
            raise
        finally:
            self.cancel()
            self._dest = self._starts = self._buffers = None  # not needed any more (the read buffers, positions)
        source = row_source(self.parts, copy=self._sink, maps=self.maps)
        return _finish([r for r in results if r is not None], dest, starts, self.valid, self.d, source)

    def cancel(self) -> None:
        """Stop the background pass (chunks under way finish); close the copy."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._sink is not None:
            self._sink.close()

    def abort(self) -> None:
        """Stop the pass and drop what it made: memory maps, a partial copy (an error, or the pass is
        not needed)."""
        self.cancel()
        if self._sink is not None:
            self._sink.tmp.cleanup()
        if self.maps is not None:
            self.maps.close()

    def _work(self, item) -> tuple | None:
        if item[0] == "map":  # every part's pages mapped at once, before its chunks are scanned
            self.maps.array(item[1], populate=True)
            return None
        p, s, e, first = item
        pi, pt, _ = self.parts[p]
        if self.mapped:
            U, W = self.maps.array(pi, True)[s:e].view(np.uint16), self.maps.array(pt, True)[s:e].view(np.uint16)
        else:
            U, W = self._buffers.get(e - s, self.d)
            pi.read_into(s, e, U)
            pt.read_into(s, e, W)
        result = _scan_chunk(U, W, self.valid[first + s: first + e])
        if self._sink is not None:
            self._sink.put(U, W, self._dest[first + s: first + e])
        return result


def group_from_parts(parts: list[tuple[NpyPart, NpyPart, int]], labels: np.ndarray, num_classes: int,
                     workers: int = 2, copy: bool | None = None, tmpdir: str | None = None) -> GroupedRows:
    """The one pass over .npy parts in one call (see ``PartsScan``)."""
    return PartsScan(parts, workers, copy, tmpdir).start().finish(labels, num_classes)


def group_from_arrays(img: np.ndarray, txt: np.ndarray, labels: np.ndarray, num_classes: int, workers: int = 1) -> GroupedRows:
    """The same pass over in-memory (or memory-mapped) arrays, for callers holding an EmbeddingSet: no
    class-major copy, a unit gathers its class' rows from the arrays (as float16 bits)."""
    n, d = img.shape
    labels = np.asarray(labels, np.int64)
    dest, starts = _class_positions(labels, int(num_classes))
    U_all, W_all = as_f16_bits(img), as_f16_bits(txt)
    valid = np.empty(n, bool)

    def work(item):
        s, e = item
        return _scan_chunk(U_all[s:e], W_all[s:e], valid[s:e])

    results = _run(work, [(s, min(n, s + CHUNK_ROWS)) for s in range(0, n, CHUNK_ROWS)], workers)
    return _finish(results, dest, starts, valid, d, row_source(arrays=(U_all, W_all)))


def _run(fn, items: list, workers: int) -> list:
    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))
    return [fn(it) for it in items]


def _finish(results: list, dest, starts, valid, d, source) -> GroupedRows:
    """Add up the chunks' sums (sums of float16 values in float64 are exact: order does not matter)."""
    sum_v, sum_t = np.zeros(d), np.zeros(d)
    nan = zero = off = 0
    for sv, st, a, b, c in results:
        sum_v += sv
        sum_t += st
        nan += a
        zero += b
        off += c
    order = np.empty(len(dest), np.int64)
    order[dest] = np.arange(len(dest), dtype=np.int64)
    return GroupedRows(order=order, starts=starts, valid=valid, sum_v=sum_v, sum_t=sum_t, nan=nan, zero=zero, d=d,
                       source=source, off_norm=off)

