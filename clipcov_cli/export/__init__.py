"""`clipcov export`: the selected samples as new WebDataset shards, original bytes, nothing lost.

One module per role:

- ``config.py``  the frozen ``ExportConfig``
- ``keys.py``    pure key rules: safe names, member name -> (key, ext), the request's fingerprint
- ``plan.py``    read the selection and map selected keys to source shards (img2dataset parquet,
  else tar headers); reads only
- ``layout.py``  the output folder: names, ownership checks, lock, resume state
- ``records.py`` the intermediate record of one sample (member names and bytes)
- ``copier.py``  phase 1, per source shard: copy the selected samples' member bytes
- ``writer.py``  phase 2, per final shard: webdataset ``TarWriter``, rank order, deterministic
- ``verify.py``  phase 3, per final shard, then the whole-export checks
- ``runner.py``  ``run_export(cfg) -> ExportResult``: the phases over a process pool, manifest last
"""

from clipcov_cli.export.config import ExportConfig
from clipcov_cli.export.runner import ExportResult, run_export

__all__ = ["ExportConfig", "ExportResult", "run_export"]
