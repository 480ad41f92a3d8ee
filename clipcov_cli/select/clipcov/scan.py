"""One sequential pass over the embeddings that prepares ClipCov's class-by-class work.

For each chunk of rows, on a thread pool: flag NaN / inf, zero-norm and off-unit-norm rows and add the valid rows
to the corpus sums (exact: sums of float16 values in float64, so the chunks' sums merge exactly).
The class-major order of the rows (``GroupedRows.order``/``starts``: each class' rows in ascending
example index) comes from the labels. The chunks are read through the parts' memory maps when the
units will gather from them anyway (below; float16 parts), else with plain file reads into each
thread's reused buffers (``RowBuffers``), so a CC12M-size corpus never counts in resident memory as a
memory map would.

A class' rows are then read by the unit that needs them (``GroupedRows.block``, into the worker
thread's reused buffers unless the class keeps its rows):
- from the parts themselves (default): a gather through a memory map of each part, kept open for
  the selection and populated in one call when first mapped (by the scan) — fine while the parts
  fit in the page cache (their pages then count in resident memory), and what a Ray task does
  (without populating);
- from a class-major copy made during the scan, when the corpus is larger than about half the
  available memory: rows are copied into a temporary file with ``os.pwrite`` (page cache, not
  resident memory) so that each class is one contiguous read instead of a gather over the whole
  corpus from disk;
- from a caller's in-memory (or memory-mapped) arrays, by example index (``group_from_arrays``: no
  copy is made).
"""

from __future__ import annotations

import mmap
import os
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numba import njit

from clipcov_cli.select.clipcov.lazy_kernel import load_row, scratch_row
from clipcov_cli.utils.disk import out_of_space, require_free_space

GROUP_WHEN_OVER = 0.5  # make the class-major copy (a file) when the corpus exceeds this share of available memory
CHUNK_ROWS = 1 << 15
BUFFER_MAX_ROWS = 1 << 14  # classes up to this many rows are read into a thread's reused buffers
NORM_TOLERANCE = 0.01  # rows are unit vectors (contract 2); float16 rounding moves a norm by < 0.001
F16_TO_F32 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # exact table


@njit(cache=True, nogil=True, fastmath=True)
def _squared_norm(r):
    """Sum of squares of a float32 row, in any order (fastmath: it vectorizes); for a tolerance
    check only, never for the sums."""
    s = np.float32(0.0)
    for q in range(r.shape[0]):
        s += r[q] * r[q]
    return s


@njit(cache=True, nogil=True)
def _scan_rows(U, W, valid, sum_v, sum_t, norm_tol=NORM_TOLERANCE):
    """Flag rows (NaN/inf in either modality, else zero norm in either, else a norm off 1 by more
    than ``norm_tol`` in either) and add valid rows to the corpus sums (exact: float16 values in
    float64). Returns (nan, zero, off_norm) counts. U, W: float16 bit patterns (uint16). The flags are
    OR-reduced bit tests, the rows converted by ``load_row``: both vectorize."""
    nan = 0
    zero = 0
    off = 0
    d = U.shape[1]
    rv, rvb = scratch_row(d)
    rt, rtb = scratch_row(d)
    lo, hi = (1.0 - norm_tol) ** 2, (1.0 + norm_tol) ** 2
    for i in range(U.shape[0]):
        special = np.uint32(0)  # bit 15 set: some exponent all ones (inf or NaN)
        nz_u = np.uint32(0)
        nz_w = np.uint32(0)
        for q in range(d):
            u = np.uint32(U[i, q])
            w = np.uint32(W[i, q])
            special |= (u & np.uint32(0x7C00)) + np.uint32(0x400)
            special |= (w & np.uint32(0x7C00)) + np.uint32(0x400)
            nz_u |= u & np.uint32(0x7FFF)
            nz_w |= w & np.uint32(0x7FFF)
        if special & np.uint32(0x8000):
            valid[i] = False
            nan += 1
        elif nz_u == 0 or nz_w == 0:
            valid[i] = False
            zero += 1
        else:
            load_row(U, i, rv, rvb)
            load_row(W, i, rt, rtb)
            nv = _squared_norm(rv)
            nt = _squared_norm(rt)
            if not (lo <= nv <= hi and lo <= nt <= hi):
                valid[i] = False
                off += 1
                continue
            valid[i] = True
            for q in range(d):
                sum_v[q] += rv[q]
                sum_t[q] += rt[q]
    return nan, zero, off


@njit(cache=True, nogil=True)
def to_float32(U, lut):
    """float16 bit patterns (uint16, 2-D) to float32 values (exact)."""
    out = np.empty(U.shape, np.float32)
    for i in range(U.shape[0]):
        for q in range(U.shape[1]):
            out[i, q] = lut[U[i, q]]
    return out


@njit(cache=True)
def _class_positions(labels, k):
    """Class-major position of every row (ascending row index within a class) and class starts."""
    counts = np.zeros(k, np.int64)
    for y in labels:
        counts[y] += 1
    starts = np.zeros(k + 1, np.int64)
    for c in range(k):
        starts[c + 1] = starts[c] + counts[c]
    cursor = starts[:k].copy()
    dest = np.empty(labels.shape[0], np.int64)
    for i in range(labels.shape[0]):
        dest[i] = cursor[labels[i]]
        cursor[labels[i]] += 1
    return dest, starts


def as_f16_bits(a: np.ndarray) -> np.ndarray:
    """Rows as float16 bit patterns (float32 input is rounded to float16 first, as ClipCov specifies)."""
    a = np.ascontiguousarray(a)
    if a.dtype != np.float16:
        a = a.astype(np.float16)
    return a.view(np.uint16)


@dataclass(frozen=True)
class NpyPart:
    """A 2-D .npy file read by offset (no memory map)."""

    path: str
    offset: int  # byte offset of the data
    rows: int
    dim: int
    dtype: str

    @staticmethod
    def open(path) -> "NpyPart":
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered 2-D array")
        # absolute: Ray workers on other nodes do not share the driver's working folder
        return NpyPart(str(Path(path).resolve()), offset, int(shape[0]), int(shape[1]), np.dtype(dtype).str)

    def read(self, start: int, stop: int) -> np.ndarray:
        dt = np.dtype(self.dtype)
        return np.fromfile(self.path, dtype=dt, count=(stop - start) * self.dim,
                           offset=self.offset + start * self.dim * dt.itemsize).reshape(stop - start, self.dim)

    def read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows [start, stop) as float16 bits into ``out`` (a reused buffer: fresh memory costs a page
        fault per page); float32 parts are rounded."""
        if np.dtype(self.dtype) != np.float16:
            out[:] = as_f16_bits(self.read(start, stop))
            return
        _pread_into(self.path, self.offset + start * self.dim * 2, out)

    def take_into(self, rows: np.ndarray, out: np.ndarray, populate: bool = False) -> None:
        """Rows by index (ascending) into ``out`` as float16 bits, through a memory map kept open in
        this process (one per file, see ``close_maps``): each page is faulted in once for the whole
        selection, not once per class. ``populate``: map the whole file's pages at once when it is
        first mapped (see ``_mapped``). Float32 parts are rounded to float16."""
        src = _mapped(self, populate)
        if len(rows) and not (0 <= rows.min() and rows.max() < src.shape[0]):
            raise IndexError(f"{self.path}: rows {rows.min()}..{rows.max()} outside 0..{src.shape[0] - 1}")
        if src.dtype == np.float16:
            # mode="clip" (the rows are checked above): numpy buffers ``out`` with the default "raise"
            np.take(src, rows, axis=0, out=out.view(np.float16), mode="clip")
        else:
            out[:] = as_f16_bits(np.take(src, rows, axis=0))


_MAPS: dict = {}
_MAPS_LOCK = threading.Lock()
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14; the constant is 22 there


def _mapped(part: NpyPart, populate: bool = False) -> np.ndarray:
    """The part's rows through a read-only memory map. With ``populate`` the whole file's pages are
    mapped in one call (``MADV_POPULATE_READ``, 0.07 s for 1 GB in the page cache here) instead of
    one fault per 4 KiB page the gathers touch. It reads the file if it is not cached, so only callers
    that will touch most of it ask for it; on kernels without it the pages fault in as usual."""
    st = os.stat(part.path)
    key = (part.path, st.st_ino, st.st_mtime_ns, st.st_size)  # a replaced file is mapped anew
    with _MAPS_LOCK:
        arr = _MAPS.get(key)
    if arr is not None:
        return arr
    with open(part.path, "rb") as f:  # outside the lock: other workers' parts are not held up
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if populate and sys.platform.startswith("linux"):
        try:
            mm.madvise(MADV_POPULATE_READ)
        except (OSError, ValueError):
            pass  # an older kernel: pages fault in on first touch
    arr = np.frombuffer(mm, np.dtype(part.dtype), count=part.rows * part.dim,
                        offset=part.offset).reshape(part.rows, part.dim)
    with _MAPS_LOCK:
        return _MAPS.setdefault(key, arr)  # two workers mapping the same part at once: one map is kept


def close_maps() -> None:
    """Drop this process' memory maps of the parts (their pages leave the resident set)."""
    with _MAPS_LOCK:
        _MAPS.clear()


@dataclass(frozen=True)
class GroupedRows:
    """The corpus' rows in class-major order (float16 bit patterns), with the corpus sums; not changed
    once made (``cleanup()`` only removes its temporary file and maps, and may be called again)."""

    order: np.ndarray  # (n,) example index of each grouped position
    starts: np.ndarray  # (K + 1,) class k occupies [starts[k], starts[k+1])
    valid: np.ndarray  # (n,) by example index
    sum_v: np.ndarray
    sum_t: np.ndarray
    nan: int
    zero: int
    d: int
    off_norm: int = 0  # rows whose norm is off 1 (excluded, as NaN and zero-norm rows)
    img: np.ndarray | None = None  # (n, d) uint16 by example index, in memory (a caller's arrays)
    txt: np.ndarray | None = None
    path: str | None = None  # else: a file holding img then txt blocks, each (n, d) uint16
    parts: tuple = ()  # ((NpyPart img, NpyPart txt, first row), ...): the source, for remote workers
    _tmp: object = field(default=None, repr=False)

    def block(self, k: int, keep: np.ndarray | None = None,
              buffers: RowBuffers | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class k's rows (uint16 bit patterns), ascending example index: all of them, or those where
        ``keep`` (a mask over the class' rows) is set; read into ``buffers`` if given."""
        s, e = int(self.starts[k]), int(self.starts[k + 1])
        rows = self.order[s:e] if keep is None else self.order[s:e][keep]  # ascending within a class
        if self.img is not None:
            return np.take(self.img, rows, axis=0), np.take(self.txt, rows, axis=0)
        U, W = (buffers or RowBuffers(0)).get(len(rows), self.d)
        if self.path is None:
            gather_parts(self.parts, rows, populate=True, out=(U, W))  # scan: parts are mapped
            return U, W
        n, row = len(self.order), self.d * 2
        if keep is None or keep.all():  # the block, one contiguous read per modality
            _pread_into(self.path, s * row, U)
            _pread_into(self.path, (n + s) * row, W)
            return U, W
        for out, base in ((U, s), (W, n + s)):
            whole = np.fromfile(self.path, np.uint16, count=(e - s) * self.d, offset=base * row)
            out[:] = whole.reshape(e - s, self.d)[keep]
        return U, W

    def cleanup(self) -> None:
        if self.parts and self.path is None:  # the scan or the units mapped the parts
            close_maps()
        if self._tmp is not None:
            self._tmp.cleanup()  # a TemporaryDirectory: a second call does nothing


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


def gather_parts(parts, rows: np.ndarray, populate: bool = False,
                 out: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows (example indices, ascending) of the parts ``((img, txt, first), ...)`` as float16 bits,
    gathered straight into one output per modality (no intermediate copies; ``out``: those outputs);
    ``populate``: see ``_mapped``."""
    d = parts[0][0].dim
    if out is None:
        out = (np.empty((len(rows), d), np.uint16), np.empty((len(rows), d), np.uint16))
    U, W = out
    for pi, pt, first in parts:
        lo, hi = np.searchsorted(rows, [first, first + pi.rows])
        if hi > lo:
            local = rows[lo:hi] - first
            pi.take_into(local, U[lo:hi], populate)
            pt.take_into(local, W[lo:hi], populate)
    return U, W


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


def _scan_chunk(U: np.ndarray, W: np.ndarray, valid: np.ndarray) -> tuple:
    """One chunk's flags (into ``valid``), sums and counts: (sum_v, sum_t, nan, zero, off_norm)."""
    sum_v, sum_t = np.zeros(U.shape[1]), np.zeros(U.shape[1])
    nan, zero, off = _scan_rows(U, W, valid, sum_v, sum_t)
    return sum_v, sum_t, nan, zero, off


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
        return _finish([r for r in results if r is not None], dest, starts, self.valid, self.d, self.parts,
                       self._sink)

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
        if self.mapped:
            close_maps()

    def _work(self, item) -> tuple | None:
        if item[0] == "map":  # every part's pages mapped at once, before its chunks are scanned
            _mapped(item[1], populate=True)
            return None
        p, s, e, first = item
        pi, pt, _ = self.parts[p]
        if self.mapped:
            U, W = _mapped(pi, populate=True)[s:e].view(np.uint16), _mapped(pt, populate=True)[s:e].view(np.uint16)
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
    return replace(_finish(results, dest, starts, valid, d, (), None), img=U_all, txt=W_all)


class RowBuffers:
    """Reused row buffers, one (U, W) pair per thread: a class' or a chunk's rows are read into the
    calling thread's pair, which the next class or chunk on that thread overwrites. Fresh memory costs
    a page fault (and zeroing) per page, about as much as the copy itself. Row counts above
    ``max_rows`` get fresh arrays (not kept: memory stays bounded)."""

    def __init__(self, max_rows: int = BUFFER_MAX_ROWS) -> None:
        self.max_rows = int(max_rows)
        self._local = threading.local()  # a thread's pair goes when the thread ends

    def get(self, rows: int, d: int) -> tuple[np.ndarray, np.ndarray]:
        if rows > self.max_rows:
            return np.empty((rows, d), np.uint16), np.empty((rows, d), np.uint16)
        pair = getattr(self._local, "pair", None)
        if pair is None or pair[0].shape[0] < rows or pair[0].shape[1] != d:
            have = pair[0].shape[0] if pair is not None and pair[0].shape[1] == d else 0
            cap = min(self.max_rows, max(rows, 2 * have))
            pair = self._local.pair = (np.empty((cap, d), np.uint16), np.empty((cap, d), np.uint16))
        return pair[0][:rows], pair[1][:rows]


def _pread_into(path: str, offset: int, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous) with the bytes of ``path`` from ``offset``."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    done = 0
    with open(path, "rb", buffering=0) as f:
        while done < len(view):
            got = os.preadv(f.fileno(), [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"{path}: ends at byte {offset + done}, {len(view) - done} bytes short")
            done += got


def _run(fn, items: list, workers: int) -> list:
    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))
    return [fn(it) for it in items]


def _finish(results: list, dest, starts, valid, d, parts, sink) -> GroupedRows:
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
    return GroupedRows(order=order, starts=starts, valid=valid, sum_v=sum_v, sum_t=sum_t, nan=nan, zero=zero, d=d, off_norm=off,
                       path=sink.path if sink else None, parts=tuple(parts), _tmp=sink.tmp if sink else None)
