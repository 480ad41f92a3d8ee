"""One BLAS thread and one torch thread per per-class worker thread (threadpoolctl, torch).

The classes are the parallelism; a multi-threaded BLAS on a class' products (numpy's: the exact r,
``terms``; the float fallback of the int8 products, ``imatmul``) oversubscribes the cores (measured
several times slower on 2 cores). The same holds for torch's int8 products (``imatmul``). (The
compiled kernel calls no BLAS: numba's ``np.dot``, and with it scipy's OpenBLAS, is not used.)"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    from clipcov_cli.select.clipcov.imatmul import torch_threads

    with threadpool_limits(limits=int(n), user_api="blas"), torch_threads(n):
        yield
