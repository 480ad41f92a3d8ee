"""Where ClipCov's units read a class' rows from: three sibling row sources behind one interface,
chosen in one place (``row_source``), held and closed by one owner (``GroupedRows``).

- ``ArrayRows``: a caller's in-memory (or memory-mapped) arrays, by example index (no copy is made);
- ``ClassMajorFile``: the class-major copy the scan wrote into a temporary file (corpora larger than
  about half the available memory): a class is one contiguous read per modality;
- ``MappedParts``: the ``.npy`` parts themselves, gathered through the owner's memory maps
  (``parts.PartMaps``, populated in one call when first mapped).

Every source gives a class' rows as float16 bit patterns (uint16), in ascending example index, the
same bytes whichever source holds them. ``GroupedRows`` is what the units see: the class-major
order, the scan's flags and corpus sums, and the source; closing it closes the source (its maps
dropped, its temporary file removed)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from clipcov_cli.select.clipcov.parts import PartMaps, RowBuffers, gather_parts, pread_into


class RowSource(ABC):
    """The rows of the corpus, read one class at a time (``read``) until ``close``."""

    parts: tuple = ()  # ((NpyPart img, NpyPart txt, first row), ...) behind the source: what a Ray task reads itself

    @abstractmethod
    def read(self, rows: np.ndarray, span: tuple[int, int], keep: np.ndarray | None,
             buffers: RowBuffers | None) -> tuple[np.ndarray, np.ndarray]:
        """One class' rows (uint16 float16 bits): ``rows`` are their example indices (ascending),
        ``span`` the class' [start, stop) in class-major order and ``keep`` the mask over that span
        which ``rows`` are (None: all of it); read into ``buffers`` if given."""

    def close(self) -> None:
        """Drop what the source holds (maps, temporary files); may be called again."""


@dataclass(frozen=True)
class ArrayRows(RowSource):
    img: np.ndarray  # (n, d) uint16 by example index
    txt: np.ndarray

    def read(self, rows, span, keep, buffers):
        return np.take(self.img, rows, axis=0), np.take(self.txt, rows, axis=0)


@dataclass(frozen=True)
class MappedParts(RowSource):
    parts: tuple
    maps: PartMaps = field(default_factory=PartMaps, repr=False)  # kept open across classes; mapped again after close

    def read(self, rows, span, keep, buffers):
        U, W = (buffers or RowBuffers(0)).get(len(rows), self.parts[0][0].dim)
        gather_parts(self.parts, rows, populate=True, out=(U, W), maps=self.maps)  # the scan mapped the parts
        return U, W

    def close(self) -> None:
        self.maps.close()


@dataclass(frozen=True)
class ClassMajorFile(RowSource):
    path: str  # img then txt blocks, each (n, d) uint16 in class-major order
    n: int
    d: int
    tmp: object = field(repr=False)  # the TemporaryDirectory holding it
    parts: tuple = ()

    def read(self, rows, span, keep, buffers):
        (s, e), row = span, self.d * 2
        U, W = (buffers or RowBuffers(0)).get(len(rows), self.d)
        if keep is None or keep.all():  # the block, one contiguous read per modality
            pread_into(self.path, s * row, U)
            pread_into(self.path, (self.n + s) * row, W)
            return U, W
        for out, base in ((U, s), (W, self.n + s)):
            whole = np.fromfile(self.path, np.uint16, count=(e - s) * self.d, offset=base * row)
            out[:] = whole.reshape(e - s, self.d)[keep]
        return U, W

    def close(self) -> None:
        self.tmp.cleanup()  # a TemporaryDirectory: a second call does nothing


def row_source(parts: tuple = (), arrays: tuple | None = None, copy=None, maps: PartMaps | None = None) -> RowSource:
    """The one place a source is chosen: a caller's ``arrays`` (img, txt as uint16 bits), else the
    scan's class-major ``copy`` (its ``path``, ``n``, ``d``, ``tmp``), else the ``parts`` through
    ``maps`` (the scan's, already populated)."""
    if arrays is not None:
        return ArrayRows(*arrays)
    if copy is not None:
        return ClassMajorFile(copy.path, copy.n, copy.d, copy.tmp, tuple(parts))
    return MappedParts(tuple(parts), maps if maps is not None else PartMaps())


@dataclass(frozen=True)
class GroupedRows:
    """The corpus' rows in class-major order, with the scan's flags and corpus sums, and the source
    the rows are read from; not changed once made. Its one owner closes it (``close``, or ``with``):
    the reader's caller for the rows a method's ``prepare`` hook made (``cleanup``, the owner list's
    name for it), ClipCov's ``select`` for rows it grouped itself."""

    order: np.ndarray  # (n,) example index of each grouped position
    starts: np.ndarray  # (K + 1,) class k occupies [starts[k], starts[k+1])
    valid: np.ndarray  # (n,) by example index
    sum_v: np.ndarray
    sum_t: np.ndarray
    nan: int
    zero: int
    d: int
    source: RowSource
    off_norm: int = 0  # rows whose norm is off 1 (excluded, as NaN and zero-norm rows)

    def block(self, k: int, keep: np.ndarray | None = None,
              buffers: RowBuffers | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class k's rows (uint16 bit patterns), ascending example index: all of them, or those where
        ``keep`` (a mask over the class' rows) is set; read into ``buffers`` if given."""
        s, e = int(self.starts[k]), int(self.starts[k + 1])
        rows = self.order[s:e] if keep is None else self.order[s:e][keep]  # ascending within a class
        return self.source.read(rows, (s, e), keep, buffers)

    def close(self) -> None:
        """Close the source (maps dropped, temporary file removed); may be called again."""
        self.source.close()

    def cleanup(self) -> None:
        """``close``, by the name the reader's owner list calls (``base.PreparedRows``)."""
        self.close()

    def __enter__(self) -> "GroupedRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
