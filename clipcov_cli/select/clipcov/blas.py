"""One BLAS thread and one torch thread per per-class worker thread (threadpoolctl, torch).

numba's ``np.dot`` calls scipy's OpenBLAS, which threadpoolctl only sees once it is loaded, so it
is loaded first. The classes are the parallelism; a multi-threaded BLAS on the kernel's small
products oversubscribes the cores (measured several times slower on 2 cores). The same holds for
torch's int8 products (``imatmul``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loads the OpenBLAS numba calls)
    except ImportError:
        pass
    from clipcov_cli.select.clipcov.imatmul import torch_threads

    with threadpool_limits(limits=int(n), user_api="blas"), torch_threads(n):
        yield
