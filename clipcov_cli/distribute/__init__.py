"""Where independent units of work run: one seam, a local and a Ray implementation.

Every long job in clipcov is a set of independent units (a shard to download or embed, a class to
run the greedy on). The job builds the units, hands them to a :class:`Distributor` with a pure
worker function, and consumes the results as they complete. The worker builds whatever it needs
(models, memory maps) itself, so the same function runs in a local loop or on a cluster.
"""

from clipcov_cli.distribute.base import Distributor, ENGINES
from clipcov_cli.distribute.factory import RAY_INSTALL_HINT, check_engine, make_distributor, require_ray

__all__ = ["Distributor", "ENGINES", "RAY_INSTALL_HINT", "check_engine", "make_distributor", "require_ray"]
