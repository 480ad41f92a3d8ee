"""`clipcov export`: the selected samples as new WebDataset shards, original bytes, nothing lost.

Roles: ``config.py``, ``plan.py`` (keys -> source shards, key safety), ``copier.py`` (phase 1: per
source shard, parallel), ``writer.py`` (phase 2: final shards in rank order), ``verify.py``,
``runner.py``.
"""

from clipcov_cli.export.config import ExportConfig
from clipcov_cli.export.runner import ExportResult, run_export

__all__ = ["ExportConfig", "ExportResult", "run_export"]
