"""The Ray distributor: each unit is a Ray task, retried by Ray when its worker dies.

Imported only when ``--engine ray`` is asked for; without the ``ray`` extra the factory says how
to install it instead of silently running locally.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Iterator, Sequence, TypeVar

from clipcov_cli.distribute.base import Distributor
from clipcov_cli.errors import ClipcovError

T = TypeVar("T")
R = TypeVar("R")


class RayDistributor(Distributor):
    name: ClassVar[str] = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_task: float = 1.0,
                 gpus_per_task: float = 0.0, max_retries: int = 3) -> None:
        import ray  # the factory checked it is installed

        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
                    self._owns = True
            except ConnectionError as exc:
                raise ClipcovError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries

    @property
    def parallelism(self) -> int:
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        return max(1, int(cpus // max(self.cpus_per_task, 1e-9)))

    def imap_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        ray = self._ray
        remote = ray.remote(fn).options(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                                         max_retries=self.max_retries, retry_exceptions=False)
        refs = {remote.remote(item): i for i, item in enumerate(items)}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    i = refs.pop(ref)
                    yield i, ray.get(ref)
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
