"""Build the distributor an ``--engine`` option names."""

from __future__ import annotations

import importlib.util

from clipcov_cli.distribute.base import ENGINES, Distributor
from clipcov_cli.errors import ClipcovError

RAY_INSTALL_HINT = 'the Ray engine needs the ray extra: pip install "clipcov[ray]"'


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ClipcovError(f"--engine ray: {RAY_INSTALL_HINT}")


def check_engine(engine: str, ray_address: str | None = None, **ray_only) -> None:
    """Bad ``--engine`` values, ``ray`` without the extra, and Ray options given without
    ``--engine ray`` (which would silently run locally) are one-line errors (exit 2).
    ``ray_only``: other Ray-only options by option name, None when not given."""
    if engine not in ENGINES:
        raise ClipcovError(f"unknown --engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "ray":
        require_ray()
        return
    given = (["--ray-address"] if ray_address else []) + [name for name, value in ray_only.items() if value is not None]
    if given:
        raise ClipcovError(f"{', '.join(given)} only apply with --engine ray (this run would be local): add --engine ray")


def make_distributor(engine: str, workers: int = 1, ray_address: str | None = None, **ray_options) -> Distributor:
    if engine == "local":
        from clipcov_cli.distribute.local import LocalDistributor

        return LocalDistributor(workers)
    if engine == "ray":
        require_ray()
        from clipcov_cli.distribute.ray_ import RayDistributor

        return RayDistributor(address=ray_address, **ray_options)
    raise ClipcovError(f"unknown --engine {engine!r}: use one of {', '.join(ENGINES)}")
