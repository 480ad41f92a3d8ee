"""`clipcov eval`: zero-shot acc1/acc5/mean per-class recall and retrieval R@1/5/10 of checkpoints.

Roles: ``data.py`` (labelled WebDataset, class-subfolder image folder, names, templates),
``metrics.py`` (pure metric functions), ``evaluator.py`` (one checkpoint, one task),
``results.py`` (results.json, table), ``runner.py`` (EvalConfig, run_eval).
"""
