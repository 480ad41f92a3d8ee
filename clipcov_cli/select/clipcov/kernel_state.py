"""The lazy kernel's state (``lazy_kernel``): its sizes, the records its compiled functions take (named
tuples of arrays, which numba passes by field), the names of the state vectors' entries (control
words, counters, norms) and its int8 screening constants.

The records (built by ``greedy.ClassGreedy``, which owns the arrays so that a class can be extended
later; the kernel writes into them, never replaces them):

- ``ClassRows``: the class' data, read only;
- ``Candidates``: per candidate, the heap and what its last evaluation left;
- ``Members``: the selected members (picks, gains, running sums, quantized rows);
- ``Control``: the control words and the counters;
- ``Batch``: the pending batch (its candidates, column blocks, quantized rows, screened products);
- ``Scratch`` (made by the kernel per call): row buffers; ``Entries``: heap entries set aside.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

SMALL = 24  # at most this many new members: evaluate one candidate alone, pair by pair
BATCH = 128  # candidates evaluated together in int8 products
OLD_ROWS = 384  # look-ahead: top a batch up to this many candidates that need the oldest members
POOL = 4 * OLD_ROWS  # ... chosen by fresh O(d) bound among this many entries next in the heap
LOOKAHEAD_MIN = 1024  # ... when the oldest members needed are at least this many (default of ctl[CTL_LOOKAHEAD])
BATCH_CAP = BATCH + OLD_ROWS  # rows of a batch at most
MAX_SEGMENTS = 6  # column blocks of a batch (members sorted by last evaluation: a staircase)
QMAX = 127  # int8 quantization: q = rint(x * QMAX / max |x|)
# control words (int64[CTL]), by name
CTL_SIZE, CTL_PICKS, CTL_PENDING, CTL_SEGMENTS, CTL_CUT, CTL_LOOKAHEAD = range(6)
CTL = 6  # heap size, picks, pending batch size, pending segments, screening cut, look-ahead min
# kernel counters (int64[STATS]), by name (``STAT_NAMES``; read them with ``stat``)
ST_BOUNDS, ST_SINGLE, ST_BATCHES, ST_BATCHED, ST_PAIRS, ST_REDONE, ST_AHEAD = range(7)
STAT_NAMES = ("bounds", "single", "batches", "batched", "pairs", "redone", "ahead")
STATS = len(STAT_NAMES)
# the norms vector (float64[NORMS]): max |v|, max |t|, gamma (dot product rounding), |PV|, |PT|
NORM_V, NORM_T, NORM_GAMMA, NORM_PV, NORM_PT = range(5)
NORMS = 5
INT32_MAX = 2**31 - 1


class ClassRows(NamedTuple):
    """One class' data (read only)."""
    U: np.ndarray  # (m, d) uint16: the image rows, float16 bit patterns
    W: np.ndarray  # (m, d) uint16: the text rows
    a: np.ndarray  # (m,) float64: modular scores
    tau: float  # the cross-similarity threshold


class Candidates(NamedTuple):
    """Per candidate: the heap of (key = -gain bound, position) (its size is ``ctl[CTL_SIZE]``) and what
    the candidate's last evaluation left."""
    hk: np.ndarray  # (m,) float64: heap keys
    hi: np.ndarray  # (m,) int64: heap positions
    seen: np.ndarray  # (m,) int64: the pick count at its last exact evaluation
    bnd: np.ndarray  # (m,) int64: the pick count of its last O(d) bound (-1: none)
    bh: np.ndarray  # (m,) float64: exact <v_j, PT> + <t_j, PV> at its last evaluation, as bh + bl
    bl: np.ndarray
    rhi: np.ndarray  # (m,) float64: its exact redundancy sum, as rhi + rlo
    rlo: np.ndarray


class Members(NamedTuple):
    """The selected members, in selection order (``ctl[CTL_PICKS]`` of them)."""
    picks: np.ndarray  # (m,) int64: their positions
    gains: np.ndarray  # (m,) float64: their gains
    PV: np.ndarray  # (d,) float64: the sum of their image rows (exact)
    PT: np.ndarray  # (d,) float64: ... of their text rows
    norms: np.ndarray  # float64[NORMS] (NORM_*): max |v|, max |t|, gamma, |PV|, |PT|
    QV: np.ndarray  # (capacity, d) int8: their image rows quantized
    QT: np.ndarray  # (capacity, d) int8: ... text rows
    inv_s: np.ndarray  # (2,) float64: the inverse quantization scales (image, text)


class Control(NamedTuple):
    ctl: np.ndarray  # int64[CTL]: the control words (CTL_*)
    stats: np.ndarray  # int64[STATS]: the counters (ST_*, ``STAT_NAMES``)


class Batch(NamedTuple):
    """A batch of candidates evaluated together, between the kernel and its caller's int8 products."""
    bidx: np.ndarray  # int64[BATCH_CAP]: its candidates (``ctl[CTL_PENDING]`` of them)
    cuts: np.ndarray  # int64[MAX_SEGMENTS + 2]: column block i is members [cuts[i], cuts[i + 1])
    seg_rows: np.ndarray  # int64[MAX_SEGMENTS + 2]: block i is needed by the first seg_rows[i] candidates
    seg_off: np.ndarray  # int64[MAX_SEGMENTS + 2]: block i's products in xbuf, ybuf (-1: all above the cut)
    xbuf: np.ndarray  # int32: products <v_c, t_l> of the flagged blocks (the caller's, grown on demand)
    ybuf: np.ndarray  # int32: products <t_c, v_l>
    Qbv: np.ndarray  # (BATCH_CAP, d) int8: the candidates' image rows quantized
    Qbt: np.ndarray  # (BATCH_CAP, d) int8: ... text rows


class Scratch(NamedTuple):
    """Row buffers (float32) and their uint32 views (``kernel_rows.load_row``)."""
    rv: np.ndarray  # the candidate at hand's image row
    rvb: np.ndarray
    rt: np.ndarray  # ... its text row
    rtb: np.ndarray
    mv: np.ndarray  # a member's image row
    mvb: np.ndarray
    mt: np.ndarray  # ... its text row
    mtb: np.ndarray


class Entries(NamedTuple):
    """Heap entries set aside (out of the heap) while a batch is gathered."""
    k: np.ndarray  # float64: keys
    i: np.ndarray  # int64: positions


def stat(stats, name: str) -> int:
    """The kernel counter ``name`` (of ``STAT_NAMES``) of a counters vector (0 if the vector is shorter)."""
    i = STAT_NAMES.index(name)
    return int(stats[i]) if len(stats) > i else 0


def quantization(max_abs: float) -> float:
    """The inverse scale of a modality's int8 quantization, 1 / s = QMAX / max |x| (x = s q + error)."""
    return QMAX / max_abs if max_abs > 0 else 1.0


def screening_error(d: int, inv_v: float, inv_t: float, norm_v: float, norm_t: float) -> float:
    """A rigorous bound of |<v, t> - s_v s_t <q_v, q_t>| for rows of the class (either way round).

    Each quantized value is off by at most s/2 (rint, computed in float64; widened by a relative 1e-9), so
    |v - s_v q_v| <= dv = s_v/2 sqrt(d); then <v,t> - <v^,t^> = <v - v^, t> + <v^, t - t^> is at most
    dv |t| + (|v| + dv) dt (|v|, |t| <= the class' largest row norms). Widened by a relative 1e-6;
    the integer products themselves are exact."""
    dv = 0.5 / inv_v * math.sqrt(d) * (1 + 1e-9)
    dt = 0.5 / inv_t * math.sqrt(d) * (1 + 1e-9)
    e1 = dv * norm_t + (norm_v + dv) * dt
    e2 = dt * norm_v + (norm_t + dt) * dv
    return max(e1, e2) * (1 + 1e-6) + 1e-12


def screening_cut(tau: float, err: float, inv_v: float, inv_t: float) -> int:
    """Integer products D <= cut are recomputed exactly; D > cut proves the cross similarity > tau:
    s_v s_t D >= s_v s_t (cut + 1) > tau + err (one unit of margin over the float rounding here)."""
    c = math.floor((tau + err) * inv_v * inv_t) + 1
    return int(min(max(c, -INT32_MAX), INT32_MAX))
