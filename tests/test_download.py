"""`clipcov download` end to end: real img2dataset against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds

from clipcov_cli.corpus import CorpusConfig, CorpusServer, generate_corpus, write_url_list
from clipcov_cli.download import DownloadConfig, run_download

REPO = Path(__file__).resolve().parents[1]
CFG = CorpusConfig(n_web=120, n_proxy_per_class=1, n_test_per_class=1)


def read_shards(out: Path) -> list[dict]:
    tars = sorted(str(p) for p in out.glob("*.tar"))
    return list(wds.WebDataset(tars, shardshuffle=False)) if tars else []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    layout = generate_corpus(root / "c", CFG)
    broken = layout.web_dir / "broken"
    broken.mkdir()
    (broken / "not_an_image.jpg").write_text("<html>this is not an image</html>")
    good = (layout.web_dir / "images" / "w000000.jpg").read_bytes()
    (broken / "truncated.jpg").write_bytes(good[: len(good) // 3])
    with CorpusServer(layout.web_dir, stall_seconds=4.0) as srv:
        yield layout, srv


def url_list_with_broken(layout, srv, path: Path) -> pd.DataFrame:
    write_url_list(layout, srv.base_url, path)
    df = pd.read_parquet(path)
    bad = pd.DataFrame({
        "url": [f"{srv.base_url}/images/missing.jpg", f"{srv.base_url}/broken/not_an_image.jpg",
                f"{srv.base_url}/broken/truncated.jpg", f"{srv.base_url}/stall/images/w000001.jpg"],
        "caption": ["a 404", "not an image", "truncated", "stalls"], "uid": ["b0", "b1", "b2", "b3"]})
    df = pd.concat([df, bad], ignore_index=True)
    df.to_parquet(path)
    return df


def test_demo_corpus_and_broken_cases(corpus, tmp_path):
    layout, srv = corpus
    df = url_list_with_broken(layout, srv, tmp_path / "urls.parquet")
    cfg = DownloadConfig(url_list=tmp_path / "urls.parquet", out_dir=tmp_path / "out", extra_cols=("uid",),
                         shard_size=50, timeout=2, threads=8)
    summary = run_download(cfg, echo=lambda m: None)
    samples = read_shards(tmp_path / "out")
    assert summary.count == len(df) == 124
    assert summary.successes == len(samples) == CFG.n_web
    for s in samples:  # every success has its image, caption and metadata
        meta = json.loads(s["json"])
        assert s["jpg"][:2] == b"\xff\xd8" and s["txt"].decode() == meta["caption"]
        assert meta["uid"].startswith("w") and meta["status"] == "success"
    assert len({s["__key__"] for s in samples}) == len(samples)
    reasons = " | ".join(summary.failures).lower()
    assert summary.failed == 4, summary.failures
    assert "404" in reasons and "timed out" in reasons
    assert sum(summary.failures.values()) == 4 and len(summary.failures) >= 3


@pytest.mark.parametrize("recipe,order", [("cc3m", ("caption", "url")), ("cc12m", ("url", "caption"))])
def test_official_headerless_formats_with_recipe_only(corpus, tmp_path, recipe, order, cli):
    layout, srv = corpus
    write_url_list(layout, srv.base_url, tmp_path / "u.parquet")
    df = pd.read_parquet(tmp_path / "u.parquet").head(100)
    lines = ["\t".join(row[c] for c in order) for _, row in df.iterrows()]
    (tmp_path / "official.tsv").write_text("\n".join(lines) + "\n")
    r = cli.subprocess("download", tmp_path / "official.tsv", "--recipe", recipe, "--out", tmp_path / "out")  # its stdout
    assert r.returncode == 0, r.stderr[-2000:]
    samples = read_shards(tmp_path / "out")
    assert len(samples) == 100
    assert sorted(s["txt"].decode() for s in samples) == sorted(df.caption)
    assert r.stdout == ""  # img2dataset's chatter goes to the log, not stdout


def test_kill_and_resume_completes_without_duplicates(corpus, tmp_path, cli):
    layout, srv = corpus
    write_url_list(layout, srv.base_url, tmp_path / "urls.parquet")
    args = ("download", tmp_path / "urls.parquet", "--out", tmp_path / "out", "--shard-size", "10",
            "--threads", "2", "--extra-col", "uid")
    proc = subprocess.Popen(cli.argv(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "out").glob("*_stats.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((tmp_path / "out").glob("*_stats.json")))
    assert 1 <= done_before < 12
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "already done" in r.stderr
    samples = read_shards(tmp_path / "out")
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)) == CFG.n_web
    assert sorted(json.loads(s["json"])["uid"] for s in samples) == sorted(pd.read_parquet(tmp_path / "urls.parquet").uid)


def test_retry_failed_skips_permanent_failures_and_caps_attempts(corpus, tmp_path, cli):
    layout, srv = corpus
    write_url_list(layout, srv.base_url, tmp_path / "urls.parquet")
    good = pd.read_parquet(tmp_path / "urls.parquet").head(5)
    bad = pd.DataFrame({"url": [f"{srv.base_url}/images/missing.jpg", f"{srv.base_url}/broken/not_an_image.jpg",
                                f"{srv.base_url}/stall/images/w000001.jpg"],
                        "caption": ["a 404", "not an image", "stalls"], "uid": ["b0", "b1", "b2"]})
    pd.concat([good, bad], ignore_index=True).to_parquet(tmp_path / "urls.parquet")
    base = ["download", str(tmp_path / "urls.parquet"), "--out", str(tmp_path / "out"), "--timeout", "1",
            "--threads", "4"]
    assert cli(*base).returncode == 0
    r = cli(*base, "--retry-failed", "--max-attempts", "2")  # only the time-out is worth another try
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipping 2 permanent failures" in r.stderr and "retrying 1 failed samples" in r.stderr, r.stderr
    r = cli(*base, "--retry-failed", "--max-attempts", "2")  # the time-out has had its 2 attempts
    assert r.returncode == 0 and "skipping 1 URLs that failed 2 times" in r.stderr, r.stderr
    assert "no failed sample left to retry" in r.stderr
    assert len(list((tmp_path / "out").glob("*.tar"))) == 2
    r = cli(*base, "--retry-all")  # everything that never succeeded, up to 3 attempts
    assert r.returncode == 0 and "retrying 3 failed samples" in r.stderr, r.stderr
    assert len(read_shards(tmp_path / "out")) == 5  # the good ones, once; the broken ones stay broken


def test_retry_failed_only_touches_failures(corpus, tmp_path, cli):
    layout, srv = corpus
    write_url_list(layout, srv.base_url, tmp_path / "urls.parquet")
    df = pd.read_parquet(tmp_path / "urls.parquet").head(30)
    late = layout.web_dir / "late"
    late.mkdir(exist_ok=True)
    df.loc[:4, "url"] = [f"{srv.base_url}/late/{u}.jpg" for u in df.uid[:5]]  # 404 for now
    df.to_parquet(tmp_path / "urls.parquet")
    base = ["download", str(tmp_path / "urls.parquet"), "--out", str(tmp_path / "out"), "--shard-size", "20", "--threads", "4"]
    assert cli(*base).returncode == 0
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert len(read_shards(tmp_path / "out")) == 25
    for u in df.uid[:5]:  # the files appear on the server
        (late / f"{u}.jpg").write_bytes((layout.web_dir / "images" / f"{u}.jpg").read_bytes())
    r = cli(*base, "--retry-failed")
    assert r.returncode == 0 and "skipping 5 permanent failures" in r.stderr, r.stderr[-2000:]  # 404s
    assert not (tmp_path / "out" / "00002.tar").exists()
    r = cli(*base, "--retry-all")  # the 404s were only late: retry them anyway
    assert r.returncode == 0, r.stderr[-2000:]
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert all(after[k] == v for k, v in before.items())  # good shards untouched
    assert {"00002.tar", "00002_stats.json"} <= set(after) - set(before)
    samples = read_shards(tmp_path / "out")
    assert len(samples) == 30 and len({s["__key__"] for s in samples}) == 30
    r = cli(*base, "--retry-failed")
    assert r.returncode == 0 and "no failed sample left" in r.stderr


@pytest.mark.parametrize("case", ["missing", "empty", "column", "unreadable", "recipe", "noext"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, case, cli):
    out = tmp_path / "out"
    src = tmp_path / "urls.tsv"
    extra: list[str] = []
    if case == "empty":
        src.write_text("")
    elif case == "column":
        src.write_text("link\ttext\nhttp://127.0.0.1:1/a.jpg\tx\n")
    elif case == "unreadable":
        src = tmp_path / "urls.parquet"
        src.write_bytes(b"PAR1 definitely not parquet")
    elif case == "recipe":
        src.write_text("url\tcaption\nhttp://127.0.0.1:1/a.jpg\tx\n")
        extra = ["--recipe", "cc99m"]
    elif case == "noext":
        src = tmp_path / "urls.data"
        src.write_text("url\tcaption\n")
    r = cli("download", src, "--out", out, *extra)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_shipped_recipes_match_top_level_copies():
    for name in ("cc3m", "cc12m"):
        assert (REPO / "recipes" / f"{name}.yaml").read_text() == (REPO / "clipcov_cli" / "recipes" / f"{name}.yaml").read_text()
