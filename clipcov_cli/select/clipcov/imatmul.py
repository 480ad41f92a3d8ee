"""Exact integer products of int8 rows, for the lazy kernel's screening (``lazy_kernel``).

torch's int8 matrix product (``torch._int_mm``: int8 x int8 -> int32, VNNI instructions on x86) runs
about 4x the multiply-adds per second of a float32 BLAS product on one core; it is checked against
numpy's integer product once, and if it is missing or wrong the products are computed in float32
BLAS instead (exact: every partial sum is an integer below 2**24 while d * 127**2 < 2**24, else in
float64). Either way the result is the exact integer matrix.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import numpy as np


@lru_cache(maxsize=1)
def _torch_int_mm():
    """torch's int8 product if it is there and exact on a probe, else None."""
    try:
        import torch

        rng = np.random.default_rng(0)
        A = rng.integers(-127, 128, (17, 40), dtype=np.int8)
        B = rng.integers(-127, 128, (9, 40), dtype=np.int8)
        got = torch._int_mm(torch.from_numpy(A), torch.from_numpy(B).T).numpy()
        if np.array_equal(got, A.astype(np.int64) @ B.astype(np.int64).T):
            return torch._int_mm, torch.from_numpy
    except Exception:  # noqa: BLE001 - any failure means: use the BLAS fallback
        pass
    return None


def backend() -> str:
    return "torch-int8" if _torch_int_mm() is not None else "blas-float"


def float_products(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A @ B.T of int8 matrices through float BLAS, exact (float32 while d * 127**2 < 2**24)."""
    dt = np.float32 if A.shape[1] * 127 * 127 < (1 << 24) else np.float64
    return (A.astype(dt) @ B.astype(dt).T).astype(np.int32)


def int8_products(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The exact (r, w) int32 matrix A @ B.T of int8 rows A (r, d) and B (w, d)."""
    mm = _torch_int_mm()
    if mm is None:
        return float_products(A, B)
    int_mm, from_numpy = mm
    return int_mm(from_numpy(A), from_numpy(B).T).numpy()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads for the block (the per-class workers are the parallelism)."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ThreadShare:
    """How many torch threads a per-class worker should use now. torch's setting is per thread
    (OpenMP), so each worker applies it itself, before each batch's products; the local workers share
    one of these and the driver raises it when a single unit is left. A Ray task gets its own copy."""

    def __init__(self, n: int = 1) -> None:
        self.n = int(n)

    def apply(self) -> None:
        set_torch_threads(self.n)


def set_torch_threads(n: int) -> None:
    """torch's intra-op threads for the calling thread (and threads it starts later), no restore."""
    try:
        import torch
    except ImportError:
        return
    if torch.get_num_threads() != int(n):
        torch.set_num_threads(int(n))
