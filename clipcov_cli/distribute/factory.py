"""Build the distributor an ``--engine`` option names."""

from __future__ import annotations

import importlib.util

from clipcov_cli.distribute.base import ENGINES, Distributor
from clipcov_cli.errors import ClipcovError

RAY_INSTALL_HINT = 'the Ray engine needs the ray extra: pip install "clipcov[ray]"'


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ClipcovError(f"--engine ray: {RAY_INSTALL_HINT}")


def check_engine(engine: str) -> None:
    """Bad ``--engine`` values, and ``ray`` without the extra, are one-line errors (exit 2)."""
    if engine not in ENGINES:
        raise ClipcovError(f"unknown --engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "ray":
        require_ray()


def make_distributor(engine: str, workers: int = 1, ray_address: str | None = None, **ray_options) -> Distributor:
    if engine == "local":
        from clipcov_cli.distribute.local import LocalDistributor

        return LocalDistributor(workers)
    if engine == "ray":
        require_ray()
        from clipcov_cli.distribute.ray_ import RayDistributor

        return RayDistributor(address=ray_address, **ray_options)
    raise ClipcovError(f"unknown --engine {engine!r}: use one of {', '.join(ENGINES)}")
