"""`clipcov demo`: the main job on the embedded web-like corpus.

Roles: ``config.py`` (sizes, seeds, budget), ``stages.py`` (one function per stage, each resumable
from its output folder), ``report.py`` (table, results.json, report.html), ``runner.py``.
"""
