"""`clipcov export`: exactly the selected samples with their original bytes, readable by webdataset
and open_clip_train, resumable after SIGKILL with byte-identical output, and strict about input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from clipcov_cli.errors import ClipcovError, JobFailed
from clipcov_cli.export import ExportConfig, run_export
from tests.cli_helpers import one_error_line
from tests.export_helpers import folder_bytes, make_source, make_subset, read_back, tree


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "data"
    samples = make_source(root, shards=4, per=50)
    keys = sorted(samples)[::3][::-1]  # every third sample, reversed rank order
    return root, samples, keys


def test_exported_samples_equal_the_source_for_exactly_the_selected_keys(tmp_path, source):
    data, samples, keys = source
    sub = make_subset(tmp_path / "s", keys, data)
    res = run_export(ExportConfig(subset_dir=sub, shard_size=16, workers=2))
    out = sub / "shards"
    assert res.out_dir == out and res.samples == len(keys) and not res.missing

    back = read_back(out)  # webdataset's own reader
    assert [s["__key__"] for s in back] == keys
    for s in back:
        members = {k: v for k, v in s.items() if not k.startswith("__")}
        assert members == samples[s["__key__"]]  # same members, same bytes, nothing re-encoded

    m = json.loads((out / "manifest.json").read_text())
    assert m["count"] == m["selected"] == len(keys) and m["missing"] == []
    assert [e["count"] for e in m["shards"]] == [16, 16, 16, 16, 3]
    for e in m["shards"]:
        assert hashlib.sha256((out / e["shard"]).read_bytes()).hexdigest() == e["sha256"]
        assert all(_fixed_tar_headers(out / e["shard"]))
    assert json.loads((out / "sizes.json").read_text()) == {e["shard"]: e["count"] for e in m["shards"]}
    assert m["shards_pattern"] == "{00000..00004}.tar"
    assert sorted(p.name for p in out.iterdir()) == sorted([e["shard"] for e in m["shards"]] + ["manifest.json", "sizes.json"])

    again = run_export(ExportConfig(subset_dir=sub, shard_size=16))
    assert again.already_complete and again.samples == len(keys)
    other = run_export(ExportConfig(subset_dir=sub, out_dir=tmp_path / "o1", shard_size=16, workers=1))
    assert folder_bytes(other.out_dir) | {"manifest.json": b""} == folder_bytes(out) | {"manifest.json": b""}


def _fixed_tar_headers(path):
    import tarfile

    with tarfile.open(path) as tf:
        for m in tf:
            yield m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "clipcov" and m.mode == 0o444


def test_reads_back_with_open_clip_train_loader(tmp_path):
    import argparse

    import open_clip
    import torchvision.transforms as T
    from open_clip_train.data import get_wds_dataset

    samples = make_source(tmp_path / "data", shards=2, per=12, real_jpeg=True)
    keys = sorted(samples)[1::2]
    sub = make_subset(tmp_path / "s", keys, tmp_path / "data")
    res = run_export(ExportConfig(subset_dir=sub, shard_size=5))
    m = json.loads((res.out_dir / "manifest.json").read_text())
    # train_num_samples=None: the loader takes the count from our sizes.json, as with --train-data only
    args = argparse.Namespace(train_data=str(res.out_dir / m["shards_pattern"]), val_data=None, train_num_samples=None,
                              val_num_samples=None, dataset_resampled=False, train_data_upsampling_factors=None,
                              batch_size=4, workers=0, world_size=1, seed=0, distributed=False, rank=0)
    tok = open_clip.get_tokenizer("RN50")
    info = get_wds_dataset(args, T.Compose([T.Resize(16), T.ToTensor()]), is_train=True, epoch=0, tokenizer=tok)
    assert info.dataloader.num_samples == len(keys)
    texts = []
    for images, tokens in info.dataloader:
        assert images.shape[1:] == (3, 16, 16)
        texts += [tuple(t.tolist()) for t in tokens]
    want = {tuple(tok([samples[k]["txt"].decode()])[0].tolist()) for k in keys}
    assert len(keys) % 4 == 0 and len(texts) == len(keys)  # whole batches: no sample repeated or dropped
    assert set(texts) == want  # every selected caption, nothing else


def test_killed_export_resumes_to_identical_shards_and_manifest(tmp_path, cli):
    samples = make_source(tmp_path / "data", shards=6, per=500)
    keys = sorted(samples)[::2]
    sub = make_subset(tmp_path / "s", keys, tmp_path / "data")
    args = ("export", sub, "--shard-size", "10", "--workers", "2")
    assert cli(*args).returncode == 0
    reference = folder_bytes(sub / "shards")
    shutil.rmtree(sub / "shards")

    killed = 0
    for marker_dir in ("src", "out"):  # kill once in phase 1, once in phase 2
        # its own process group: the kill takes its pool's workers too (as a shell's kill of a job does),
        # so none is left behind
        proc = subprocess.Popen(cli.argv(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not any((sub / "shards" / ".work" / marker_dir).glob("*.json")):
            time.sleep(0.002)
        if proc.poll() is None:
            killed += 1
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert killed >= 1 and not (sub / "shards" / "manifest.json").exists()
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert folder_bytes(sub / "shards") == reference  # every shard, sizes.json and manifest.json
    assert sorted(p.name for p in (sub / "shards").iterdir()) == sorted(reference)  # no .work, no lock, no temp


def test_missing_keys_are_an_error_or_recorded(tmp_path, source, cli):
    data, _, keys = source
    sub = make_subset(tmp_path / "s", keys + ["99999999"], data)
    r = cli("export", sub)
    assert r.returncode == 2 and "99999999" in r.stderr and "--allow-missing" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (sub / "shards").exists()
    res = run_export(ExportConfig(subset_dir=sub, allow_missing=True))
    m = json.loads((res.out_dir / "manifest.json").read_text())
    assert m["missing"] == ["99999999"] and m["count"] == len(keys) and m["selected"] == len(keys) + 1
    assert [s["__key__"] for s in read_back(res.out_dir)] == keys


def test_key_listed_by_parquet_but_absent_from_tar_is_missing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    samples = make_source(tmp_path / "data", shards=2, per=10)
    table = pq.read_table(tmp_path / "data" / "00001.parquet")
    pq.write_table(pa.concat_tables([table, pa.table({"key": ["000010099"], "status": ["success"], "caption": [""]})]),
                   tmp_path / "data" / "00001.parquet")
    keys = sorted(samples)[:3] + ["000010099"]
    sub = make_subset(tmp_path / "s", keys, tmp_path / "data")
    with pytest.raises(ClipcovError, match="000010099"):
        run_export(ExportConfig(subset_dir=sub))
    res = run_export(ExportConfig(subset_dir=sub, allow_missing=True))  # resumes phase 1
    assert res.missing == ("000010099",) and res.samples == 3


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/abs/key", "a/b", "..", "a\\b", "x.jpg", ""])
def test_keys_that_could_escape_are_refused(tmp_path, source, bad):
    data, _, keys = source
    sub = make_subset(tmp_path / "s", keys[:3] + [bad], data)
    with pytest.raises(ClipcovError, match="unsafe key"):
        run_export(ExportConfig(subset_dir=sub))
    assert not (sub / "shards").exists()


def test_cli_errors_are_one_line_with_exit_2(tmp_path, source, cli):
    data, _, keys = source
    r = cli("export", tmp_path / "nope")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr
    sub = make_subset(tmp_path / "s", ["../x"] + keys[:2], data)
    r = cli("export", sub)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "unsafe key" in r.stderr
    r = cli("export", "--help")
    assert r.returncode == 0 and "Examples" in r.stdout and "--allow-missing" in r.stdout


def test_dataset_option_null_manifest_and_tar_listing_fallback(tmp_path, source):
    data, samples, keys = source
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    (copy / "00002.parquet").unlink()  # this shard's keys come from its tar headers
    sub = make_subset(tmp_path / "s", keys, None)
    with pytest.raises(ClipcovError, match="--dataset"):
        run_export(ExportConfig(subset_dir=sub))
    res = run_export(ExportConfig(subset_dir=sub, dataset_dir=copy))
    assert [s["__key__"] for s in read_back(res.out_dir)] == keys


def test_output_folder_rules(tmp_path, source):
    data, _, keys = source
    sub = make_subset(tmp_path / "s", keys, data)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "00000.tar").write_bytes(b"not ours")
    with pytest.raises(ClipcovError, match="did not write"):
        run_export(ExportConfig(subset_dir=sub, out_dir=foreign))
    assert (foreign / "00000.tar").read_bytes() == b"not ours"
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"name": "someone else's"}))
    with pytest.raises(ClipcovError, match="not written by clipcov export"):
        run_export(ExportConfig(subset_dir=sub, out_dir=other, overwrite=True))
    with pytest.raises(ClipcovError, match="source dataset folder"):
        run_export(ExportConfig(subset_dir=sub, out_dir=data))
    run_export(ExportConfig(subset_dir=sub, shard_size=20))
    with pytest.raises(ClipcovError, match="--overwrite"):
        run_export(ExportConfig(subset_dir=sub, shard_size=7))
    res = run_export(ExportConfig(subset_dir=sub, shard_size=7, overwrite=True))
    assert not res.already_complete and len(res.shards) == -(-len(keys) // 7)
    assert sorted(p.name for p in (sub / "shards").glob("*.tar")) == [e["shard"] for e in res.shards]


def test_unreadable_source_shard_fails_the_job(tmp_path):
    samples = make_source(tmp_path / "data", shards=2, per=10)
    tar = tmp_path / "data" / "00001.tar"
    raw = bytearray(tar.read_bytes())
    raw[1024 + 20: 1024 + 60] = bytes(range(40))  # damage a member header; the parquet still lists its keys
    tar.write_bytes(bytes(raw))
    sub = make_subset(tmp_path / "s", sorted(samples), tmp_path / "data")
    with pytest.raises(JobFailed, match="extract phase") as err:
        run_export(ExportConfig(subset_dir=sub, workers=2))
    assert err.value.exit_code == 1 and not (sub / "shards" / "manifest.json").exists()


def test_shard_damaged_between_runs_is_caught_then_rewritten(tmp_path, source):
    data, _, keys = source
    sub = make_subset(tmp_path / "s", keys, data)
    run_export(ExportConfig(subset_dir=sub, shard_size=16))
    reference = folder_bytes(sub / "shards")
    shutil.rmtree(sub / "shards")

    class Stop(Exception):
        pass

    def stop_before_verify(phase, done, total):
        if phase == "verify":
            raise Stop

    with pytest.raises(Stop):  # an interrupted run: all shards written, not yet verified
        run_export(ExportConfig(subset_dir=sub, shard_size=16), stop_before_verify)
    shard = sub / "shards" / "00001.tar"
    raw = bytearray(shard.read_bytes())
    raw[700] ^= 0xFF  # same size, so the resumed run keeps it; verification must catch it
    shard.write_bytes(bytes(raw))
    with pytest.raises(JobFailed, match="failed verification"):
        run_export(ExportConfig(subset_dir=sub, shard_size=16))
    res = run_export(ExportConfig(subset_dir=sub, shard_size=16))  # rewrites the removed shard
    assert not res.already_complete and folder_bytes(sub / "shards") == reference


def test_another_source_dataset_is_never_reused(tmp_path):
    make_source(tmp_path / "a", shards=2, per=20, seed=0)
    other = make_source(tmp_path / "b", shards=2, per=20, seed=1)  # same keys, other bytes
    keys = sorted(other)[::3]
    sub = make_subset(tmp_path / "s", keys, tmp_path / "a")
    run_export(ExportConfig(subset_dir=sub))
    with pytest.raises(ClipcovError, match="source dataset"):
        run_export(ExportConfig(subset_dir=sub, dataset_dir=tmp_path / "b"))
    res = run_export(ExportConfig(subset_dir=sub, dataset_dir=tmp_path / "b", overwrite=True))
    assert not res.already_complete
    back = read_back(res.out_dir)
    assert [s["__key__"] for s in back] == keys
    assert all(s["jpg"] == other[s["__key__"]]["jpg"] for s in back)


@pytest.mark.parametrize("with_parquet", [True, False])
def test_truncated_source_shard_exports_what_is_readable_with_allow_missing(tmp_path, with_parquet, cli):
    samples = make_source(tmp_path / "data", shards=2, per=10)
    tar = tmp_path / "data" / "00001.tar"
    raw = tar.read_bytes()
    tar.write_bytes(raw[: len(raw) // 2 + 100])  # cut inside a member, as a partial copy leaves it
    if not with_parquet:  # the keys then come from the tar's headers
        (tmp_path / "data" / "00001.parquet").unlink()
    import webdataset as wds

    readable = [s["__key__"] for s in wds.WebDataset(str(tar), shardshuffle=False, handler=wds.ignore_and_stop)]
    sub = make_subset(tmp_path / "s", sorted(samples), tmp_path / "data")
    line = one_error_line(cli("export", sub))
    assert "--allow-missing" in line and ("00001.tar (truncated)" in line or not with_parquet)
    res = run_export(ExportConfig(subset_dir=sub, allow_missing=True))
    got = [s["__key__"] for s in read_back(sub / "shards")]
    assert set(got) >= {k for k in samples if k.startswith("00000")}
    assert set(readable[:-1]) <= set(got) - {k for k in samples if k.startswith("00000")} <= set(readable)
    assert len(got) + len(res.missing) == len(samples) and len(res.missing) >= 10 - len(readable)
    for s in read_back(sub / "shards"):  # what was copied is byte-identical
        assert s["jpg"] == samples[s["__key__"]]["jpg"]
    again = cli("export", sub, "--allow-missing")  # a re-run finds it complete
    assert again.returncode == 0 and "already complete" in again.stderr


def test_export_overwrite_refuses_the_dataset_parent_and_foreign_files(tmp_path, pipeline_dataset, cli):
    dataset = pipeline_dataset  # tests/conftest.py
    subset = tmp_path / "subset"
    assert cli("select", dataset, "--budget", "10", "--method", "random", "--out", subset).returncode == 0
    before = tree(tmp_path)
    for out in (dataset.parent, tmp_path):
        line = one_error_line(cli("export", subset, "--out", out, "--overwrite"))
        assert "--overwrite refused" in line and "contains the input" in line
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "00000.txt").write_text("mine")
    line = one_error_line(cli("export", subset, "--out", mine, "--overwrite"))
    assert "not written by clipcov export" in line and (mine / "00000.txt").read_text() == "mine"
    assert tree(tmp_path) == before | {"mine/00000.txt": hashlib.sha256(b"mine").hexdigest()}
