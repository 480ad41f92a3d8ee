"""Commands with nothing to do say so without loading the heavy libraries (issue #17 item 3).

Finished download, embed and export folders are made once (real img2dataset against a local HTTP
server, a real embed with ``clipcov-tiny`` and random weights, a real export); each no-op re-run and
each ``--help`` then runs in a fresh interpreter that reports, as it exits, which heavy modules it
imported. Behaviour only: the timings are measured in ``benchmarks/noop_commands.py``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from clipcov_cli.commands import COMMANDS

# What a command with nothing to do must not import (each costs 0.3-2 s at start and at exit).
HEAVY = ("torch", "open_clip", "img2dataset", "webdataset", "numba", "ray", "scipy", "faiss", "sklearn")
MARK = "heavy modules loaded: "


def clipcov_probe(cli, *args):
    """``clipcov ARGS`` through the executable's entry in a fresh interpreter; also the heavy modules
    it had imported when it exited."""
    code = textwrap.dedent(f"""
        import atexit, sys
        atexit.register(lambda: print({MARK!r} + ",".join(sorted(
            m for m in sys.modules if m.split(".")[0] in {HEAVY!r} and "." not in m)), file=sys.stderr))
        from clipcov_cli.cli import entry
        sys.argv = ["clipcov"] + {[str(a) for a in args]!r}
        entry()
    """)
    r = cli.python(code)
    line = next((x for x in r.stderr.splitlines() if x.startswith(MARK)), None)
    assert line is not None, r.stderr
    return r, [m for m in line[len(MARK):].split(",") if m]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, fixture_cli, web, tiny_weights, vocab) -> dict[str, Path]:
    """Finished download (2 shards), embed, random subset and export folders."""
    root = tmp_path_factory.mktemp("startup")

    def inproc(*args) -> None:
        r = fixture_cli(*args)
        assert r.returncode == 0, r.stderr[-3000:]

    web.url_list(root / "urls.parquet", 40)
    inproc("download", root / "urls.parquet", "--out", root / "data", "--shard-size", 20, "--threads", 4)
    classes, templates = vocab
    inproc("embed", root / "data", "--model", "clipcov-tiny", "--pretrained", tiny_weights,
           "--classes", classes, "--templates", templates, "--workers", 0, "--batch-size", 16)
    inproc("select", root / "data", "--budget", "50%", "--method", "random", "--out", root / "subset")
    inproc("export", root / "subset")
    return {"root": root, "urls": root / "urls.parquet", "data": root / "data", "subset": root / "subset"}


def test_embed_rerun_on_a_finished_folder(finished, cli):
    r, heavy = clipcov_probe(cli, "embed", finished["data"])
    assert r.returncode == 0, r.stderr
    assert "is already complete" in r.stderr and "nothing to do" in r.stderr
    assert heavy == [], heavy


def test_export_rerun_on_a_finished_export(finished, cli):
    r, heavy = clipcov_probe(cli, "export", finished["subset"])
    assert r.returncode == 0, r.stderr
    assert "is already complete (20 samples): nothing to do" in r.stderr
    assert r.stdout.strip() == str(finished["subset"] / "shards")
    assert heavy == [], heavy


def test_download_rerun_on_a_finished_download(finished, cli):
    r, heavy = clipcov_probe(cli, "download", finished["urls"], "--out", finished["data"], "--shard-size", 20)
    assert r.returncode == 0, r.stderr
    assert "all 2 shards already done" in r.stderr and "nothing to download" in r.stderr
    assert heavy == [], heavy


def test_builtin_vocabulary_is_open_clips_without_importing_it(cli):
    # embed's default vocabulary (ImageNet names x open_clip's 80 templates), checked by every re-run
    code = textwrap.dedent("""
        import sys
        from clipcov_cli.embed.vocab import load_vocabulary
        v = load_vocabulary("imagenet1k", "openai")
        assert "open_clip" not in sys.modules and "torch" not in sys.modules, "open_clip imported"
        print(v.hash, len(v.names), len(v.templates))
    """)
    r = cli.python(code)
    assert r.returncode == 0, r.stderr
    import open_clip  # noqa: F401 - loaded here: load_vocabulary reads open_clip's own module

    from clipcov_cli.embed.vocab import load_vocabulary

    v = load_vocabulary("imagenet1k", "openai")
    assert v.names == tuple(open_clip.IMAGENET_CLASSNAMES)
    assert v.templates == tuple(t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES)
    assert r.stdout.split() == [v.hash, "1000", "80"]


@pytest.mark.parametrize("args", [("--help",), *((name, "--help") for name in COMMANDS)], ids=" ".join)
def test_help_loads_no_library(args, cli):
    r, heavy = clipcov_probe(cli, *args)
    assert r.returncode == 0, r.stderr
    assert "Usage: clipcov" in r.stdout and ("Examples:" in r.stdout or args == ("--help",))
    assert heavy == [], heavy
