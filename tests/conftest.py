"""Shared test fixtures. Tests write only under pytest's tmp_path and talk only to 127.0.0.1."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture()
def cli(capsys, monkeypatch):
    """The one CLI runner (tests/cli_helpers.py Runner): ``cli("select", ...)`` in-process,
    ``cli.subprocess(...)`` where the process is what is tested."""
    from tests.cli_helpers import Runner

    return Runner(capsys, monkeypatch)
