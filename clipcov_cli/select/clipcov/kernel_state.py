"""The lazy kernel's sizes, the names of its state vectors' entries (control words, counters, norms)
and its int8 screening constants (``lazy_kernel``)."""
from __future__ import annotations

import math

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
