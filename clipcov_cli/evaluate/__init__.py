"""`clipcov eval`: zero-shot top-1/top-5 and retrieval R@1/5/10 of checkpoints.

Roles: ``data.py`` (labelled WebDataset, class-subfolder image folder, names, templates),
``metrics.py`` (pure metric functions), ``evaluator.py`` (one checkpoint, one task),
``results.py`` (results.json, table).
"""
