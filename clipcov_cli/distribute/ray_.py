"""The Ray distributor: each unit is a Ray task, retried by Ray when its worker dies.

Imported only when ``--engine ray`` is asked for; without the ``ray`` extra the factory says how
to install it instead of silently running locally.

``--ray-address``: ``None`` starts a private local Ray instance for the run (and stops it at the
end); ``auto`` (or ``ray://…`` / ``host:port``) joins an existing cluster, which is left running.
When Ray is already initialized in this process (a library user, the tests), that instance is used.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ClassVar, Iterator, Sequence, TypeVar

from clipcov_cli.distribute.base import Distributor
from clipcov_cli.errors import ClipcovError, JobFailed, first_line

T = TypeVar("T")
R = TypeVar("R")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to (``address``) or start a local Ray instance unless one is up; True when this call
    started one that the caller must shut down."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
            return False
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        return True
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClipcovError(f"cannot {'join the Ray cluster at ' + repr(address) if address else 'start Ray'}: "
                           f"{first_line(exc, 300)}") from None


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray initialized for the block (see :func:`init_ray`); a started local instance is stopped after."""
    import ray

    owns = init_ray(address, num_cpus)
    try:
        yield
    finally:
        if owns and ray.is_initialized():
            ray.shutdown()


def unit_error(exc: BaseException, what: str) -> BaseException:
    """The error to raise for a unit that failed on Ray: the worker's own ClipcovError (bad input,
    reported as one line), Ray's error with the worker's traceback for any other exception the
    worker raised (a bug), or JobFailed when the unit was lost after Ray's retries (dead workers)."""
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        return cause if isinstance(cause, ClipcovError) else exc
    return JobFailed(f"{what} failed on Ray after its retries ({type(exc).__name__}: {first_line(exc, 200)}); "
                     "finished units are kept: re-run to resume")


class RayDistributor(Distributor):
    name: ClassVar[str] = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_task: float = 1.0,
                 gpus_per_task: float = 0.0, max_retries: int = 3) -> None:
        import ray  # the factory checked it is installed

        self._ray = ray
        self._owns = init_ray(address, num_cpus)
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries

    def _check_fits(self) -> None:
        """A task no node can hold would wait forever: refuse it now, naming what is missing."""
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        if any(r.get("CPU", 0) >= self.cpus_per_task and r.get("GPU", 0) >= self.gpus_per_task for r in nodes):
            return
        most_cpu = max((r.get("CPU", 0) for r in nodes), default=0)
        most_gpu = max((r.get("GPU", 0) for r in nodes), default=0)
        raise ClipcovError(f"no node of the Ray cluster can run a unit needing {self.cpus_per_task:g} CPU and "
                           f"{self.gpus_per_task:g} GPU (largest node: {most_cpu:g} CPU, {most_gpu:g} GPU): "
                           "lower --threads / --num-gpus-per-worker or use --device cpu")

    def cluster_gpus(self) -> float:
        return float(self._ray.cluster_resources().get("GPU", 0))

    def imap_unordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        ray = self._ray
        self._check_fits()  # here: callers may set gpus_per_task after construction
        remote = ray.remote(fn).options(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                                         max_retries=self.max_retries, retry_exceptions=False)
        refs = {remote.remote(item): i for i, item in enumerate(items)}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    i = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        raise unit_error(exc, f"unit {i}") from None
                    yield i, result
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
