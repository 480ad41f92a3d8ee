"""Shared test fixtures. Tests write only under pytest's tmp_path and talk only to 127.0.0.1."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
