"""The one interface every selection method implements.

A method is a :class:`Selector` subclass with one hook, :meth:`Selector.select`, that takes the
corpus' embeddings and a budget (a resolved count) and returns a :class:`Selection`. Methods are
siblings: ClipCov and each baseline live in their own module and share nothing but this interface.
What a method needs beyond the rows it declares on its class, so the runner and the reader never
name a method: ``needs_labels`` (refused early on a folder without ``labels/``), a ``prepare``
hook (work done on the parts while the reader reads the tables: ClipCov's class-major pass), and
its parameters (the dataclass fields: another method's options are refused by ``check_options``).
Where the work runs (``RunSettings``: engine, threads) is apart from the parameters, and a run's
notes and counters come back on the :class:`Selection`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Mapping, Protocol

import numpy as np

NORM_TOLERANCE = 0.01  # rows are unit vectors (contract 2); | |row| - 1 | above it excludes the row (float16 rounding moves a norm by < 0.001)


# a parameter -> the command-line flag that sets it, where not --<name> (another method's, in errors)
FLAGS = {"batch": "--batch-size"}


class PreparedRows(Protocol):
    """What a method's ``prepare`` hook made of the rows (ClipCov: ``GroupedRows``): the rows it
    found usable and the counts of the excluded ones; ``cleanup()`` drops its temporary files and
    maps (the reader hands it to the caller's owner list, its one owner: the method never closes it)."""

    valid: np.ndarray  # (n,) bool
    nan: int
    zero: int
    off_norm: int

    def cleanup(self) -> None: ...


class Preparation(Protocol):
    """A method's work on the parts, started by its ``prepare`` hook before the tables are read."""

    wants_labels: bool  # labels_ready() is worth calling as soon as the labels are read

    def labels_ready(self, labels: np.ndarray, num_classes: int) -> None: ...

    def finish(self, labels: np.ndarray, num_classes: int) -> PreparedRows: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class PartFiles:
    """The parts of an embeddings folder as a ``prepare`` hook sees them: each part's image and
    text ``.npy`` paths and the row index of its first row."""

    img: tuple[Path, ...]
    txt: tuple[Path, ...]
    firsts: tuple[int, ...]


@dataclass(frozen=True)
class RunSettings:
    """Where a method's work runs; never changes a result, so never a parameter (not in the manifest)."""

    engine: str = "local"  # local threads or Ray tasks
    workers: int | None = None  # local threads (default: the CPU count)
    ray_address: str | None = None


@dataclass(frozen=True)
class EmbeddingSet:
    """What a method sees of the corpus; rows are examples, aligned across every array.

    ``img`` and ``txt`` may be float16 memory maps (rows unit-norm). ``valid`` marks the rows a
    method may pick (NaN / zero-norm / off-unit-norm rows are excluded before a method runs). ``pseudo_label`` and
    ``label_sim`` come from ``labels/`` (ClipCov needs them; baselines may ignore them).
    """

    img: np.ndarray  # (n, d)
    txt: np.ndarray  # (n, d)
    keys: np.ndarray  # (n,) str
    valid: np.ndarray  # (n,) bool
    pseudo_label: np.ndarray | None = None  # (n,) int64 class index
    label_sim: np.ndarray | None = None  # (n,) float32: <t_i, z_{y_i}>
    num_classes: int | None = None
    prepared: PreparedRows | None = None  # what the method's prepare hook made while reading (ClipCov: GroupedRows)

    @property
    def n(self) -> int:
        return int(self.img.shape[0])

    @property
    def d(self) -> int:
        return int(self.img.shape[1])

    @property
    def n_valid(self) -> int:
        return int(np.count_nonzero(self.valid))


@dataclass(frozen=True)
class Selection:
    """The result of a method: selected row indices in rank order, with their score.

    ``score`` is the marginal gain (ClipCov) or the method's score for each selected row, in rank
    order. ``terms`` holds extra per-selected-row columns written to ``selection.parquet`` (for
    ClipCov: r, e, l, c, a and the class). ``all_scores`` optionally scores every row (NaN where not
    defined) so the summary can compare kept against dropped.
    """

    indices: np.ndarray  # (B,) int64, rank order
    score: np.ndarray  # (B,) float64
    terms: Mapping[str, np.ndarray] = field(default_factory=dict)
    all_scores: np.ndarray | None = None
    notes: tuple[str, ...] = ()  # how the run went, for the manifest (e.g. ClipCov's r method)
    stats: tuple[np.ndarray, ...] = ()  # the method's counters (ClipCov: each class' kernel counters, then restarts)


class Selector(ABC):
    """Base class of selection methods: one hook, :meth:`select`.

    Subclasses are frozen dataclasses holding their parameters (the fields; a ``run`` field, when
    the method has one, holds its ``RunSettings``); ``name`` is the ``--method`` value.
    """

    name: ClassVar[str]
    needs_labels: ClassVar[bool] = False  # pseudo-labels and label similarities (labels/) required
    flags: ClassVar[Mapping[str, str]] = {}  # parameter -> its command-line flag, where not --<name>

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        from dataclasses import fields

        return tuple(f.name for f in fields(cls) if f.init and f.name != "run")

    @classmethod
    def flag(cls, param: str) -> str:
        return cls.flags.get(param) or FLAGS.get(param) or "--" + param.replace("_", "-")

    @classmethod
    def check_options(cls, given: Iterable[str]) -> None:
        """Options given on the command line (parameter names) that this method does not take are a
        one-line error, not silently dropped."""
        own = cls.parameter_names()
        foreign = [name for name in given if name not in own]
        if foreign:
            from clipcov_cli.errors import ClipcovError

            takes = ", ".join(cls.flag(p) for p in own) or "no options"
            raise ClipcovError(f"{', '.join(cls.flag(p) for p in foreign)}: not an option of --method {cls.name} "
                               f"(it takes {takes}); drop it or choose the method it belongs to")

    def prepare(self, parts: PartFiles) -> Preparation | None:
        """Optional: start work on the parts while the reader reads the tables (ClipCov: one pass that
        flags invalid rows, sums the corpus and puts the rows in class-major order). None (the
        default): the reader flags the invalid rows itself."""
        return None

    @abstractmethod
    def select(self, embeddings: EmbeddingSet, budget: int) -> Selection:
        """Pick exactly ``budget`` valid rows (``budget <= embeddings.n_valid``)."""

    def select_keeping(self, embeddings: EmbeddingSet, budget: int, kept: np.ndarray) -> Selection:
        """Pick exactly ``budget`` valid rows of which the rows ``kept`` (distinct valid row indices,
        in key order; ``len(kept) <= budget``) are all: ``select --keep``. The kept rows come first in
        rank order, the method fills the rest of the budget.

        The default, right for a method that scores each row on its own (random, clip-score,
        negclip-loss) and the simplest correct one for the others: :meth:`select` chooses
        ``budget - len(kept)`` rows among the rows not kept (kept rows hidden from it). Kept rows get a
        NaN score and NaN (float) or -1 (integer) terms. A method whose choice depends on what is
        already in the subset overrides this to start from the kept rows (ClipCov: its greedy starts
        with them as already selected)."""
        kept = np.asarray(kept, np.int64)
        rest = budget - len(kept)
        if rest == 0:
            return Selection(indices=kept, score=np.full(len(kept), np.nan))
        from dataclasses import replace

        valid = np.asarray(embeddings.valid).copy()
        valid[kept] = False
        tail = self.select(replace(embeddings, valid=valid), rest)
        terms = {name: np.concatenate([np.full(len(kept), np.nan if np.issubdtype(np.asarray(col).dtype, np.floating)
                                                else -1, np.asarray(col).dtype), np.asarray(col)])
                 for name, col in tail.terms.items()}
        return Selection(indices=np.concatenate([kept, np.asarray(tail.indices, np.int64)]),
                         score=np.concatenate([np.full(len(kept), np.nan), np.asarray(tail.score, np.float64)]),
                         terms=terms, all_scores=tail.all_scores, notes=tail.notes, stats=tail.stats)

    def warm_up(self) -> Callable[[], None] | None:
        """Optional: start loading what :meth:`select` will need, in the background, while the caller
        reads the embeddings; returns what waits for that loading to end (the caller calls it once
        the selection is done), or None. Never changes a result; by default it does nothing."""
        return None

    def params(self) -> dict:
        """The method's parameters, recorded in the manifest."""
        from dataclasses import asdict, is_dataclass

        return {k: v for k, v in asdict(self).items() if k != "run"} if is_dataclass(self) else {}
