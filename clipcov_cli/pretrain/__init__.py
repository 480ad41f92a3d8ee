"""`clipcov pretrain`: train a CLIP from scratch on a subset with open_clip_train.

Roles: ``recipes.py`` (paper, tiny), ``inputs.py`` (exported subset, WebDataset folder, or a subset
exported on the fly), ``adapter.py`` (the single open_clip_train adapter), ``config.py``,
``runner.py``.
"""
