"""`clipcov export`: exactly the selected samples, original bytes, resumable, verified."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds


def clipcov(*args):
    return subprocess.run([sys.executable, "-m", "clipcov_cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def make_source(root: Path, shards: int = 4, per: int = 50) -> dict[str, dict[str, bytes]]:
    """img2dataset-style shards with random bytes per member; returns key -> {ext: bytes}."""
    import numpy as np

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    samples = {}
    for s in range(shards):
        keys = []
        with open(root / f"{s:05d}.tar", "wb") as f:
            w = wds.TarWriter(f)
            for i in range(per):
                key = f"{s:05d}{i:04d}"
                sample = {"jpg": rng.bytes(int(rng.integers(200, 2000))), "txt": f"caption {key}".encode(),
                          "json": json.dumps({"key": key}).encode()}
                w.write({"__key__": key, **sample})
                samples[key] = sample
                keys.append(key)
            w.close()
        pq.write_table(pa.table({"key": keys, "status": ["success"] * per}), root / f"{s:05d}.parquet")
    return samples


def make_subset(root: Path, keys: list[str], dataset: Path | None) -> Path:
    root.mkdir(parents=True)
    pq.write_table(pa.table({"key": keys, "rank": list(range(len(keys)))}), root / "selection.parquet")
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "source": {"dataset_dir": str(dataset) if dataset else None}}))
    return root


def read_back(shards: Path) -> list[dict]:
    return list(wds.WebDataset(sorted(map(str, shards.glob("*.tar"))), shardshuffle=False))


@pytest.fixture
def source(tmp_path):
    samples = make_source(tmp_path / "data")
    keys = sorted(samples)[::3][::-1]  # every third sample, reversed rank order
    return tmp_path / "data", samples, keys


def test_exact_subset_bytes_and_order(tmp_path, source):
    data, samples, keys = source
    subset = make_subset(tmp_path / "s", keys, data)
    r = clipcov("export", subset, "--shard-size", "16", "--workers", "2")
    assert r.returncode == 0, r.stderr
    back = read_back(subset / "shards")
    assert [s["__key__"] for s in back] == keys
    for s in back:
        for ext in ("jpg", "txt", "json"):
            assert s[ext] == samples[s["__key__"]][ext]
    m = json.loads((subset / "shards" / "manifest.json").read_text())
    assert m["count"] == len(keys) and [e["count"] for e in m["shards"]] == [16, 16, 16, 16, 3]
    for e in m["shards"]:
        assert hashlib.sha256((subset / "shards" / e["shard"]).read_bytes()).hexdigest() == e["sha256"]
    assert not (subset / "shards" / ".work").exists()


def test_reads_with_open_clip_train_loader(tmp_path):
    import argparse

    import numpy as np
    from PIL import Image
    import io

    from open_clip_train.data import get_wds_dataset

    data = tmp_path / "data"
    data.mkdir()
    with open(data / "00000.tar", "wb") as f:
        w = wds.TarWriter(f)
        for i in range(20):
            buf = io.BytesIO()
            Image.fromarray(np.full((32, 32, 3), i * 10, np.uint8)).save(buf, format="JPEG")
            w.write({"__key__": f"00000{i:04d}", "jpg": buf.getvalue(), "txt": f"a photo number {i}".encode()})
        w.close()
    subset = make_subset(tmp_path / "s", [f"00000{i:04d}" for i in range(0, 20, 2)], data)
    assert clipcov("export", subset).returncode == 0
    import open_clip
    import torchvision.transforms as T

    args = argparse.Namespace(train_data=str(subset / "shards" / "00000.tar"), val_data=None, train_num_samples=10,
                              val_num_samples=None, dataset_resampled=False, train_data_upsampling_factors=None,
                              batch_size=5, workers=0, world_size=1, seed=0, distributed=False, rank=0)
    tok = open_clip.get_tokenizer("RN50")
    di = get_wds_dataset(args, T.Compose([T.Resize(16), T.ToTensor()]), is_train=True, epoch=0, tokenizer=tok)
    n = sum(len(images) for images, texts in di.dataloader)
    assert n == 10


def test_kill_and_resume_gives_identical_output(tmp_path):
    samples = make_source(tmp_path / "data", shards=4, per=250)
    keys = sorted(samples)[::2]
    ref = make_subset(tmp_path / "ref", keys, tmp_path / "data")
    assert clipcov("export", ref, "--shard-size", "50").returncode == 0
    sub = make_subset(tmp_path / "s", keys, tmp_path / "data")
    proc = subprocess.Popen([sys.executable, "-m", "clipcov_cli", "export", str(sub), "--shard-size", "50"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list((sub / "shards" / ".work").glob("shard_*.json")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (sub / "shards" / "manifest.json").exists()
    assert clipcov("export", sub, "--shard-size", "50").returncode == 0
    a = {p.name: p.read_bytes() for p in (ref / "shards").iterdir()}
    b = {p.name: p.read_bytes() for p in (sub / "shards").iterdir()}
    ma, mb = json.loads(a.pop("manifest.json")), json.loads(b.pop("manifest.json"))
    assert a == b and ma["shards"] == mb["shards"] and ma["count"] == mb["count"] == 500


def test_missing_keys_error_or_recorded(tmp_path, source):
    data, samples, keys = source
    sub = make_subset(tmp_path / "s", keys + ["99999999"], data)
    r = clipcov("export", sub)
    assert r.returncode == 2 and "99999999" in r.stderr and not (sub / "shards").exists()
    r = clipcov("export", sub, "--allow-missing")
    assert r.returncode == 0
    m = json.loads((sub / "shards" / "manifest.json").read_text())
    assert m["missing"] == ["99999999"] and m["count"] == len(keys)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/abs/key", "a/b", ".."])
def test_escaping_keys_refused(tmp_path, source, bad):
    data, _, keys = source
    sub = make_subset(tmp_path / "s", keys[:3] + [bad], data)
    r = clipcov("export", sub)
    assert r.returncode == 2 and "unsafe key" in r.stderr and not (sub / "shards").exists()


def test_bad_subset_folder(tmp_path):
    r = clipcov("export", tmp_path / "nope")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr
