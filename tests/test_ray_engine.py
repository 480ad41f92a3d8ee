"""`--engine ray` for `embed` and `download` on a real local Ray instance (2 CPUs, started once for the
module): the same output folders as `--engine local`, byte for byte for embed; a Ray worker that
really dies in the middle of a shard is retried and the folder is still complete and identical; the
one-line install hint when ray is missing."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from clipcov_cli.distribute import RAY_INSTALL_HINT
from clipcov_cli.embed.ray_engine import FAULT_ENV
from tests import embed_helpers as h


def folder_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real local Ray instance with 2 CPUs. Its workers inherit the fault-injection variable: the
    worker that embeds part 00001 kills itself once, when the test creates the marker file."""
    ray = pytest.importorskip("ray")
    marker = tmp_path_factory.mktemp("fault") / "kill-00001"
    saved = {k: os.environ.get(k) for k in (FAULT_ENV, "RAY_AUTH_MODE")}
    os.environ[FAULT_ENV] = f"00001:{marker}"
    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written under ~/.ray by the tests
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield marker
    finally:
        ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fixture_cli, tiny_weights, vocab):
    root = tmp_path_factory.mktemp("rayembed")
    h.make_dataset(root / "data", shards=4, per_shard=10)
    ckpt = h.tiny_checkpoint(root / "tiny.pt")  # its own path: a test swaps it in the args
    classes, templates = vocab
    args = ["embed", root / "data", "--model", "clipcov-tiny", "--pretrained", ckpt, "--classes", classes,
            "--templates", templates, "--batch-size", "4", "--device", "cpu", "--threads", "1"]
    assert fixture_cli(*args, "--out", root / "local", "--workers", "1").returncode == 0
    return {"root": root, "args": args, "local": folder_bytes(root / "local")}


@pytest.mark.ray
def test_embed_ray_equals_local_byte_for_byte(ray_cluster, corpus, tmp_path, cli):
    out = tmp_path / "emb"
    assert cli(*corpus["args"], "--out", out, "--engine", "ray").returncode == 0
    got = folder_bytes(out)
    assert sorted(got) == sorted(corpus["local"])
    assert [k for k in got if got[k] != corpus["local"][k]] == []
    manifest = json.loads((out / "clipcov.json").read_text())
    assert manifest["complete"] and manifest["parts_done"] == ["00000", "00001", "00002", "00003"]


@pytest.mark.ray
def test_worker_killed_mid_shard_is_retried_and_output_identical(ray_cluster, corpus, tmp_path, cli):
    marker = ray_cluster
    marker.write_text("die once")
    out = tmp_path / "emb"
    assert cli(*corpus["args"], "--out", out, "--engine", "ray").returncode == 0
    assert not marker.exists()  # the worker embedding 00001 reached the fault and exited
    got = folder_bytes(out)
    assert sorted(got) == sorted(corpus["local"])  # no stray temporary file from the dead worker
    assert [k for k in got if got[k] != corpus["local"][k]] == []


@pytest.mark.ray
def test_embed_ray_resumes_a_local_run_and_reports_worker_errors(ray_cluster, corpus, tmp_path, cli):
    """A folder started locally is finished on Ray (same bytes); bad input found on a worker is one line."""
    out = tmp_path / "emb"
    assert cli(*corpus["args"], "--out", out, "--workers", "0").returncode == 0
    manifest = json.loads((out / "clipcov.json").read_text())
    assert manifest["parts_done"] == ["00000", "00001", "00002", "00003"]
    # drop the last two parts, as if the local run had been killed after two parts, and resume on Ray
    for part in ("00002", "00003"):
        manifest["parts_done"].remove(part)
        manifest["part_stats"].pop(part)
    manifest["complete"] = False
    (out / "clipcov.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for d in ("img_emb", "text_emb", "metadata", "labels", "skipped"):
        for f in (out / d).glob("*_0000[23].*"):
            f.unlink()
    (out / "skipped.jsonl").unlink()
    r = cli(*corpus["args"], "--out", out, "--engine", "ray")
    assert r.returncode == 0, r.stderr
    assert "resuming: 2 of 4 parts done" in r.stderr
    got = folder_bytes(out)
    assert [k for k in set(got) | set(corpus["local"]) if got.get(k) != corpus["local"].get(k)] == []
    # a checkpoint of another architecture is found on the worker: still one line, exit 2
    vit = tmp_path / "wrong.pt"
    vit.write_bytes((corpus["root"] / "tiny.pt").read_bytes()[:100])
    args = [a if a != corpus["root"] / "tiny.pt" else vit for a in corpus["args"]]
    r = cli(*args, "--out", tmp_path / "bad", "--engine", "ray")
    assert r.returncode == 2, r.stderr
    err = r.stderr
    assert err.strip().splitlines()[-1].startswith("error: cannot load checkpoint") and "Traceback (most" not in err
    # a unit no node can hold (4 CPUs per worker on a 2-CPU instance) is refused, not left waiting
    r = cli(*corpus["args"], "--out", tmp_path / "big", "--engine", "ray", "--threads", "4")
    assert r.returncode == 2, r.stderr
    assert "no node of the Ray cluster" in r.stderr


@pytest.mark.ray
def test_embed_kmeans_on_ray_equals_local(ray_cluster, corpus, tmp_path, cli):
    """--classes kmeans: parts embedded on Ray workers, clustered on the driver: the local folder's bytes."""
    args = [a for a in corpus["args"]]
    i = args.index("--classes")
    args[i + 1] = "kmeans:3"
    assert cli(*args, "--out", tmp_path / "local", "--workers", "1").returncode == 0
    assert cli(*args, "--out", tmp_path / "ray", "--engine", "ray").returncode == 0
    local, ray_ = folder_bytes(tmp_path / "local"), folder_bytes(tmp_path / "ray")
    assert sorted(local) == sorted(ray_) and "labels/centroids.npy" in ray_
    assert [k for k in local if local[k] != ray_[k]] == []
    assert json.loads(ray_["clipcov.json"])["grouping"]["kind"] == "kmeans"


@pytest.mark.ray
def test_download_ray_gives_the_same_samples_as_local(ray_cluster, tmp_path, cli, web):
    web.url_list(tmp_path / "urls.parquet", 60)
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        assert cli("download", tmp_path / "urls.parquet", "--out", out, "--shard-size", "25", "--threads", "4",
                   "--extra-col", "uid", "--engine", engine).returncode == 0
        runs[engine] = out
    import webdataset as wds

    def samples(out: Path) -> dict:
        tars = sorted(str(p) for p in out.glob("*.tar"))
        return {s["__key__"]: (s["jpg"], s["txt"], json.loads(s["json"]))
                for s in wds.WebDataset(tars, shardshuffle=False)}

    local, ray_ = samples(runs["local"]), samples(runs["ray"])
    assert len(local) == 60 and local == ray_
    names = lambda out: sorted(p.name for p in out.iterdir() if not p.name.startswith("_"))  # noqa: E731
    assert names(runs["local"]) == names(runs["ray"]) == ["00000.parquet", "00000.tar", "00000_stats.json",
                                                          "00001.parquet", "00001.tar", "00001_stats.json",
                                                          "00002.parquet", "00002.tar", "00002_stats.json"]


@pytest.mark.parametrize("command", ["embed", "download"])
def test_engine_ray_without_ray_says_how_to_install(command, tmp_path, monkeypatch, cli):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    urls = tmp_path / "urls.parquet"
    args = ["embed", tmp_path] if command == "embed" else ["download", urls, "--out", tmp_path / "out"]
    r = cli(*args, "--engine", "ray")
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert RAY_INSTALL_HINT in err and len(err.splitlines()) == 1
    r = cli(*args, "--engine", "spark")
    assert r.returncode == 2, r.stderr
    assert "unknown --engine 'spark'" in r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "embeddings").exists()


@pytest.mark.parametrize("command", ["embed", "download", "select"])
def test_ray_options_without_engine_ray_are_refused(command, tmp_path, cli):
    """--ray-address without --engine ray would run locally without a word: refused, nothing written."""
    args = {"embed": ["embed", tmp_path], "download": ["download", tmp_path / "urls.parquet", "--out", tmp_path / "out"],
            "select": ["select", tmp_path, "--budget", "10", "--out", tmp_path / "out"]}[command]
    r = cli(*args, "--ray-address", "auto")
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert "only apply with --engine ray" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "embeddings").exists()
    if command == "embed":
        r = cli(*args, "--num-gpus-per-worker", "1")
        assert r.returncode == 2, r.stderr
        assert "--num-gpus-per-worker only apply" in r.stderr
