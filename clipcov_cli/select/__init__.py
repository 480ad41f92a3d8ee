"""`clipcov select`: choose a subset at a budget with ClipCov or a baseline.

Roles: ``base.py`` (the Selector interface: what a method declares, run settings, Selection),
``methods/`` (the registry by name, loaded lazily; ClipCov and the baselines, siblings), ``clipcov/``
(ClipCov's own code: formula terms, class-major scan and row sources, exact greedy and merge, compiled lazy kernel),
``reader.py`` (embeddings folder -> EmbeddingSet, running a method's ``prepare`` hook), ``writer.py``
(selection.parquet + manifest.json, atomic), ``summary.py``, ``runner.py`` (SelectConfig ->
run_select; never names a method). See docs/architecture.md, "The select package".
"""
