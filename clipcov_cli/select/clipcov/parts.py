"""Reading the embeddings' .npy parts: by offset into reused buffers (``NpyPart.read_into``,
``RowBuffers``), or by row index through memory maps held by one owner (``PartMaps``).

A ``PartMaps`` keeps one read-only map per file for as long as its owner lives (the ``MappedParts``
row source of the scan's ``GroupedRows``, closed with it, or one gather), so each page is faulted
in once for the whole selection, not once per class; there are no process-wide maps."""

from __future__ import annotations

import mmap
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcov_cli.select.clipcov.rows import as_f16_bits

BUFFER_MAX_ROWS = 1 << 14  # classes up to this many rows are read into a thread's reused buffers
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14; the constant is 22 there


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
        pread_into(self.path, self.offset + start * self.dim * 2, out)

    def take_into(self, rows: np.ndarray, out: np.ndarray, populate: bool = False,
                  maps: "PartMaps | None" = None) -> None:
        """Rows by index (ascending) into ``out`` as float16 bits, through ``maps`` (the owner's memory
        maps, kept open across calls; None: a map for this call only). ``populate``: see
        ``PartMaps.array``. Float32 parts are rounded to float16."""
        src = (maps if maps is not None else PartMaps()).array(self, populate)
        if len(rows) and not (0 <= rows.min() and rows.max() < src.shape[0]):
            raise IndexError(f"{self.path}: rows {rows.min()}..{rows.max()} outside 0..{src.shape[0] - 1}")
        if src.dtype == np.float16:
            # mode="clip" (the rows are checked above): numpy buffers ``out`` with the default "raise"
            np.take(src, rows, axis=0, out=out.view(np.float16), mode="clip")
        else:
            out[:] = as_f16_bits(np.take(src, rows, axis=0))


class PartMaps:
    """Read-only memory maps of parts, one per file (a replaced file is mapped anew), shared by the
    threads of one owner, which closes them (``close``; mapping again afterwards is allowed)."""

    def __init__(self) -> None:
        self._arrays: dict = {}
        self._lock = threading.Lock()

    def array(self, part: NpyPart, populate: bool = False) -> np.ndarray:
        """The part's rows through a read-only memory map. With ``populate`` the whole file's pages are
        mapped in one call (``MADV_POPULATE_READ``, 0.07 s for 1 GB in the page cache here) instead of
        one fault per 4 KiB page the gathers touch. It reads the file if it is not cached, so only
        callers that will touch most of it ask for it; on kernels without it the pages fault in as usual."""
        st = os.stat(part.path)
        key = (part.path, st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            arr = self._arrays.get(key)
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
        with self._lock:
            return self._arrays.setdefault(key, arr)  # two threads mapping the same part at once: one map is kept

    def mapped(self) -> list[str]:
        """Paths of the parts mapped now."""
        with self._lock:
            return [key[0] for key in self._arrays]

    def close(self) -> None:
        """Drop the maps (their pages leave the resident set once no array taken from them is left)."""
        with self._lock:
            self._arrays.clear()


def gather_parts(parts, rows: np.ndarray, populate: bool = False, out: tuple | None = None,
                 maps: PartMaps | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows (example indices, ascending) of the parts ``((img, txt, first), ...)`` as float16 bits,
    gathered straight into one output per modality (no intermediate copies; ``out``: those outputs);
    ``maps``: the owner's memory maps (None: maps for this gather only, e.g. a Ray task's unit);
    ``populate``: see ``PartMaps.array``."""
    d = parts[0][0].dim
    if out is None:
        out = (np.empty((len(rows), d), np.uint16), np.empty((len(rows), d), np.uint16))
    own = maps is None  # maps for this gather only: dropped when it returns
    maps = PartMaps() if own else maps
    U, W = out
    for pi, pt, first in parts:
        lo, hi = np.searchsorted(rows, [first, first + pi.rows])
        if hi > lo:
            local = rows[lo:hi] - first
            pi.take_into(local, U[lo:hi], populate, maps)
            pt.take_into(local, W[lo:hi], populate, maps)
    if own:
        maps.close()
    return U, W


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


def pread_into(path: str, offset: int, out: np.ndarray) -> None:
    """Fill ``out`` (C-contiguous) with the bytes of ``path`` from ``offset``."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    done = 0
    with open(path, "rb", buffering=0) as f:
        while done < len(view):
            got = os.preadv(f.fileno(), [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"{path}: ends at byte {offset + done}, {len(view) - done} bytes short")
            done += got
