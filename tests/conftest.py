"""Shared test fixtures. Tests write only under pytest's tmp_path and talk only to 127.0.0.1.

Helpers are imported one way only, as the ``tests`` package (``from tests.embed_helpers import ...``;
pyproject's ``pythonpath`` puts the repository root on the path)."""

from __future__ import annotations

import os

import pytest

from tests.cli_helpers import Runner

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture()
def cli(capsys, monkeypatch) -> Runner:
    """The one CLI runner (tests/cli_helpers.py Runner): ``cli("select", ...)`` in-process,
    ``cli.subprocess(...)`` / ``cli.argv(...)`` / ``cli.shell(...)`` where the process is what is tested."""
    return Runner(capsys, monkeypatch)


@pytest.fixture(scope="session")
def fixture_cli() -> Runner:
    """The same runner for module- and session-scoped fixtures (no capsys there): in-process runs
    read their output through redirected streams."""
    return Runner()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """Random ``clipcov-tiny`` weights (seed 0) as a state dict, made once: read-only for the tests."""
    from tests.embed_helpers import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pt")


@pytest.fixture(scope="session")
def vocab(tmp_path_factory):
    """(classes.txt, templates.txt) of tests/embed_helpers.py's CLASSES and TEMPLATES, made once."""
    from tests.embed_helpers import vocab_files

    return vocab_files(tmp_path_factory.mktemp("vocab"))


class WebCorpus:
    """A generated web corpus (``layout``) served on 127.0.0.1 (``server``); ``url_list(path, n)`` writes
    the URL list of its first ``n`` pairs (all if None)."""

    def __init__(self, layout, server) -> None:
        self.layout, self.server = layout, server

    def url_list(self, path, n: int | None = None):
        import pyarrow.parquet as pq

        from clipcov_cli.corpus import write_url_list

        write_url_list(self.layout, self.server.base_url, path)
        if n is not None:
            pq.write_table(pq.read_table(path).slice(0, n), path)
        return path


@pytest.fixture(scope="session")
def web(tmp_path_factory):
    """The demo corpus generator's web pairs (240) behind one local HTTP server for the session:
    read-only for the tests (a test that adds or breaks files serves its own corpus)."""
    from clipcov_cli.corpus import CorpusConfig, CorpusServer, generate_corpus

    layout = generate_corpus(tmp_path_factory.mktemp("web") / "c",
                             CorpusConfig(n_web=240, n_proxy_per_class=1, n_test_per_class=1))
    with CorpusServer(layout.web_dir) as srv:
        yield WebCorpus(layout, srv)


@pytest.fixture()
def pipeline_dataset(tmp_path):
    """A dataset folder as the pipeline leaves it (tests/export_helpers.py pipeline_dataset)."""
    from tests.export_helpers import pipeline_dataset

    return pipeline_dataset(tmp_path)
