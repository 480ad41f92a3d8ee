"""The local distributor: a thread pool (numpy, numba nogil kernels, torch and I/O release the GIL),
or a plain loop with one worker."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, ClassVar, Iterator, Sequence, TypeVar

from clipcov_cli.distribute.base import Distributor

T = TypeVar("T")
R = TypeVar("R")


class LocalDistributor(Distributor):
    name: ClassVar[str] = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))

    def imap_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if self.workers == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                yield i, fn(item)
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            pending = {}
            queue = iter(enumerate(items))
            # keep at most 2 x workers units in flight, so a long list does not hold every result
            for i, item in queue:
                pending[pool.submit(fn, item)] = i
                if len(pending) >= 2 * self.workers:
                    break
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = pending.pop(fut)
                        yield i, fut.result()
                    for i, item in queue:
                        pending[pool.submit(fn, item)] = i
                        if len(pending) >= 2 * self.workers:
                            break
            finally:
                for fut in pending:
                    fut.cancel()
