"""`clipcov select`: choose a subset at a budget with ClipCov or a baseline.

Roles: ``base.py`` (the Selector interface), ``clipcov/`` (formula terms, exact greedy, compiled
lazy kernel), ``methods/`` (ClipCov and the baselines, siblings), ``reader.py`` (embeddings folder
-> EmbeddingSet), ``writer.py`` (selection.parquet + manifest.json, atomic), ``summary.py``,
``runner.py`` (SelectConfig -> run_select).
"""
