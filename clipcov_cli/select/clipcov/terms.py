"""One pure function per formula of the ClipCov method (see docs/method.md and the spec).

Notation: V (m, d) image rows and T (m, d) caption rows of one class k (unit norm), Z (K, d) class
text embeddings. Products of float16-valued inputs are computed in float64, where they are exact
(see :func:`cross_dots`), so any summation order gives the same numbers.
"""

from __future__ import annotations

import numpy as np

BLOCK_ROWS = 4096
MAX_BLOCK_CELLS = 1 << 25  # float64 cells of one block of products: 256 MiB


def pseudo_labels(V: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """y_i = argmax_c <v_i, z_c> (ties: the lower class index)."""
    return np.argmax(np.asarray(V, np.float32) @ np.asarray(Z, np.float32).T, axis=1).astype(np.int64)


def alignment(V: np.ndarray, T: np.ndarray) -> np.ndarray:
    """e_i = <v_i, t_i>."""
    return np.einsum("ij,ij->i", np.asarray(V, np.float64), np.asarray(T, np.float64))


def label_agreement(T: np.ndarray, Z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """l_i = <t_i, z_{y_i}>."""
    return np.einsum("ij,ij->i", np.asarray(T, np.float64), np.asarray(Z, np.float64)[y])


def threshold(x: np.ndarray, tau: float) -> np.ndarray:
    """[x]_tau = x where x > tau, else 0."""
    return np.where(x > tau, x, 0.0)


def cross_dots(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A @ B.T in float64. For float16-valued unit rows every product is a multiple of 2**-48 and
    every partial sum is below 2 in magnitude, so float64 holds each result exactly whatever the
    summation order (BLAS blocking, batch shapes)."""
    return np.asarray(A, np.float64) @ np.asarray(B, np.float64).T


def cross_similarity(Vj: np.ndarray, Tj: np.ndarray, Vl: np.ndarray, Tl: np.ndarray, tau: float) -> np.ndarray:
    """s_jl = [<v_j, t_l>]_tau + [<v_l, t_j>]_tau for every j (rows) and l (columns)."""
    return threshold(cross_dots(Vj, Tl), tau) + threshold(cross_dots(Tj, Vl), tau)


def representativeness_mean(V: np.ndarray, T: np.ndarray) -> np.ndarray:
    """r_j without thresholding: (1/m) sum_i (<v_i,t_j> + <v_j,t_i>) = <muV, t_j> + <v_j, muT>. O(m d)."""
    V64, T64 = np.asarray(V, np.float64), np.asarray(T, np.float64)
    return T64 @ V64.mean(axis=0) + V64 @ T64.mean(axis=0)


def representativeness_exact(V: np.ndarray, T: np.ndarray, tau: float, block: int = BLOCK_ROWS) -> np.ndarray:
    """r_j = (1/m) sum_i s_ij with thresholding, in row blocks: O(m^2 d) time, O(block * m) memory.

    M_ij = <v_i, t_j>; s_ij = [M_ij]_tau + [M_ji]_tau, so r = (column sums + row sums of [M]_tau) / m.
    The products are float64 (:func:`cross_dots`: exact for float16-valued rows, so a row's products do
    not depend on where it sits in a BLAS block) and every column and row is summed in one order: equal
    rows get equal r, whatever their positions.
    """
    V, T = np.asarray(V, np.float64), np.asarray(T, np.float64)
    m = V.shape[0]
    block = max(1, min(block, MAX_BLOCK_CELLS // max(m, 1)))
    col = np.zeros(m, np.float64)
    row = np.zeros(m, np.float64)
    for s in range(0, m, block):
        Mb = threshold(cross_dots(V[s: s + block], T), tau)  # (b, m): [<v_i, t_j>]_tau
        col += Mb.sum(axis=0)
        row[s: s + block] = Mb.sum(axis=1)
    return (col + row) / m


def center_term(V: np.ndarray, T: np.ndarray, sum_v_out: np.ndarray, sum_t_out: np.ndarray, n_out: int) -> np.ndarray:
    """c_j = <v_j, mT_notk> + <t_j, mV_notk>: similarity to the mean caption / image outside class k
    (zero when the class is the whole corpus)."""
    if n_out == 0:
        return np.zeros(V.shape[0], np.float64)
    return (np.asarray(V, np.float64) @ (sum_t_out / n_out)) + (np.asarray(T, np.float64) @ (sum_v_out / n_out))


def modular_score(r: np.ndarray, e: np.ndarray, l: np.ndarray, c: np.ndarray, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """a_j = r_j + alpha e_j + beta l_j - gamma c_j."""
    return r + alpha * e + beta * l - gamma * c


def exact_add(hi: np.ndarray, lo: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) + x with no rounding error: TwoSum puts hi + x's rounding error into lo.

    Used for redundancy sums, whose terms are multiples of 2**-48 below 2 in magnitude: the errors
    are multiples of 2**-48 too and stay far below 2**5, so ``lo`` holds them exactly and hi + lo is
    the exact sum; ``hi + lo`` (one rounding) is then the correctly rounded sum, independent of the
    order and grouping of the terms."""
    s = hi + x
    bp = s - hi
    return s, lo + ((hi - (s - bp)) + (x - bp))


def marginal_gain(a_j: float | np.ndarray, redundancy_sum: float | np.ndarray, m: int):
    """gain(j | S) = a_j - (1/n_k) sum_{l in S_k} s_jl, given the redundancy sum."""
    return a_j - redundancy_sum / m


def objective(a: np.ndarray, V: np.ndarray, T: np.ndarray, S: np.ndarray, tau: float) -> float:
    """F(S) for one class: sum_{j in S} a_j - (1/n_k) sum_{pairs {j,l} in S, j != l} s_jl."""
    S = np.asarray(S, np.int64)
    if len(S) == 0:
        return 0.0
    s = cross_similarity(V[S], T[S], V[S], T[S], tau)
    pairs = (s.sum() - np.trace(s)) / 2.0
    return float(a[S].sum() - pairs / V.shape[0])
