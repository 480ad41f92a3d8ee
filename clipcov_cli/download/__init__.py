"""`clipcov download`: URL lists to WebDataset shards through img2dataset.

Roles: ``config.py`` (frozen DownloadConfig), ``recipes.py`` (YAML presets), ``inputs.py``
(validation, headerless conversion to parquet), ``runner.py`` (the in-process img2dataset run,
resume, --retry-failed, completeness check), ``summary.py`` (per-shard stats merged).
"""

from clipcov_cli.download.config import DownloadConfig
from clipcov_cli.download.recipes import builtin_recipes, load_recipe
from clipcov_cli.download.runner import run_download
from clipcov_cli.download.summary import DownloadSummary, summary_table

__all__ = ["DownloadConfig", "DownloadSummary", "builtin_recipes", "load_recipe", "run_download", "summary_table"]
