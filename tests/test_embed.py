"""`clipcov embed` end to end with a real tiny open_clip model (random weights in a local checkpoint)
on img2dataset-layout shards: layout, unit norms, keys, labels against brute force, resume after a
kill (bit for bit), bad samples, unsafe checkpoints, relabel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from clipcov_cli.embed import EmbedConfig, ModelSpec, load_model, load_vocabulary, run_embed
from clipcov_cli.errors import ClipcovError
from tests import embed_helpers as h
from tests.cli_helpers import one_error_line
from tests.export_helpers import tree

torch.set_num_threads(1)  # runs use --threads 1 (in-process and in subprocesses): bitwise comparisons


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_weights, vocab):
    root = tmp_path_factory.mktemp("embed")
    keys = h.make_dataset(root / "data", shards=3, per_shard=12)
    ckpt = tiny_weights
    classes, templates = vocab
    return {"root": root, "data": root / "data", "keys": keys, "ckpt": ckpt, "classes": classes, "templates": templates}


def config(env, out: Path, **kw) -> EmbedConfig:
    base = dict(dataset_dir=env["data"], out_dir=out, model="clipcov-tiny", pretrained=str(env["ckpt"]),
                classes=str(env["classes"]), templates=str(env["templates"]), batch_size=5, workers=2, device="cpu",
                threads=1)
    return EmbedConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def embedded(env):
    out = env["root"] / "emb"
    summary = run_embed(config(env, out))
    return out, summary


def tar_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        names = [m.name for m in tf.getmembers() if m.name.endswith(".jpg")]
    return [n[: -len(".jpg")] for n in names]


def brute_force_class_emb(loaded, vocab) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for name in vocab.names:
            embs = []
            for t in vocab.templates:
                e = loaded.model.encode_text(loaded.tokenizer([t.replace("{}", name)]))[0].float()
                embs.append(e / e.norm())
            m = torch.stack(embs).mean(0)
            rows.append((m / m.norm()).numpy())
    return np.stack(rows).astype(np.float32)


def check_labels(out: Path, part: str, class_emb: np.ndarray) -> None:
    """Stored labels equal a per-row float64 computation on the stored embeddings, bit for bit: the
    class embeddings hold float16 values, so every dot product is exact (any summation order)."""
    np.testing.assert_array_equal(class_emb.astype(np.float16).astype(np.float32), class_emb)
    z = class_emb.astype(np.float64)
    img = np.load(out / "img_emb" / f"img_emb_{part}.npy").astype(np.float64)
    txt = np.load(out / "text_emb" / f"text_emb_{part}.npy").astype(np.float64)
    lab = pq.read_table(out / "labels" / f"labels_{part}.parquet").to_pydict()
    for i in range(len(img)):
        sims = [float(np.dot(img[i], zc)) for zc in z]
        y = lab["pseudo_label"][i]
        assert y == int(np.argmax(sims))  # ties: the lower class
        assert lab["top_sim"][i] == np.float32(sims[y])
        assert lab["label_sim"][i] == np.float32(np.dot(txt[i], z[y]))


def folder_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_layout_manifest_and_unit_rows(env, embedded):
    out, summary = embedded
    manifest = json.loads((out / "clipcov.json").read_text())
    assert manifest["format_version"] == 1 and manifest["complete"] is True
    assert manifest["parts"] == manifest["parts_done"] == ["00000", "00001", "00002"]
    assert manifest["model"] == "clipcov-tiny" and manifest["dim"] == 64 and manifest["rows"] == 36
    assert manifest["weights_sha256"].startswith("sha256:") and manifest["dataset_dir"] == str(env["data"].resolve())
    assert manifest["classes"]["names"] == list(h.CLASSES) and manifest["classes"]["count"] == len(h.CLASSES)
    assert manifest["templates"]["count"] == len(h.TEMPLATES) and manifest["skipped"] == {}
    assert summary.rows == 36 and summary.parts_done_now == 3
    for part in manifest["parts"]:
        for kind in ("img", "text"):
            arr = np.load(out / f"{kind}_emb" / f"{kind}_emb_{part}.npy")
            assert arr.dtype == np.float16 and arr.shape == (12, 64)
            np.testing.assert_allclose(np.linalg.norm(arr.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_keys_metadata_match_source_in_order(env, embedded):
    out, _ = embedded
    for shard, keys in enumerate(env["keys"]):
        part = f"{shard:05d}"
        meta = pq.read_table(out / "metadata" / f"metadata_{part}.parquet")
        assert meta.column_names[:4] == ["key", "caption", "shard", "url"] and "uid" in meta.column_names
        assert meta["key"].to_pylist() == keys == tar_keys(env["data"] / f"{part}.tar")
        assert set(meta["shard"].to_pylist()) == {part}
        assert meta["uid"].to_pylist() == [f"u{k}" for k in keys]
        assert pq.read_table(out / "labels" / f"labels_{part}.parquet")["key"].to_pylist() == keys


def test_embeddings_and_labels_equal_brute_force(env, embedded):
    out, _ = embedded
    loaded = load_model(ModelSpec(model="clipcov-tiny", pretrained=str(env["ckpt"]), device="cpu"))
    vocab = load_vocabulary(str(env["classes"]), str(env["templates"]))
    class_emb = brute_force_class_emb(loaded, vocab)
    np.testing.assert_allclose(np.load(out / "labels" / "class_emb.npy"), class_emb, atol=2**-12)  # float16 precision
    # one sample embedded by hand: image through the eval transform, caption through the tokenizer
    import webdataset as wds
    from PIL import Image
    import io

    first = next(iter(wds.WebDataset(str(env["data"] / "00001.tar"), shardshuffle=False)))
    with torch.no_grad():
        v = loaded.model.encode_image(loaded.preprocess(Image.open(io.BytesIO(first["jpg"])).convert("RGB"))[None])[0]
        t = loaded.model.encode_text(loaded.tokenizer([first["txt"].decode()]))[0]
    np.testing.assert_allclose(np.load(out / "img_emb" / "img_emb_00001.npy")[0], (v / v.norm()).numpy(), atol=1e-3)
    np.testing.assert_allclose(np.load(out / "text_emb" / "text_emb_00001.npy")[0], (t / t.norm()).numpy(), atol=1e-3)
    for part in ("00000", "00001", "00002"):
        check_labels(out, part, np.load(out / "labels" / "class_emb.npy"))


def test_finished_folder_left_alone_and_other_model_refused(env, embedded, cli):
    out, _ = embedded
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    summary = run_embed(config(env, out))
    assert summary.already_complete and {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    other = h.tiny_checkpoint(env["root"] / "other.pt", seed=1)
    r = cli("embed", env["data"], "--out", out, "--model", "clipcov-tiny", "--pretrained", other,
            "--classes", env["classes"], "--templates", env["templates"], "--workers", "0")
    err = r.stderr
    assert r.returncode == 2, err
    assert "different" in err and "--overwrite" in err and "Traceback" not in err
    assert cli("embed", env["data"], "--out", out, "--classes", "imagenet1k", "--workers", "0").returncode == 2  # vocabulary
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_overwrite_recomputes_with_other_weights(env, embedded, tmp_path):
    out = tmp_path / "emb"
    run_embed(config(env, out, workers=0))
    first = json.loads((out / "clipcov.json").read_text())["weights_sha256"]
    other = h.tiny_checkpoint(tmp_path / "other.pt", seed=1)
    run_embed(config(env, out, pretrained=str(other), overwrite=True, workers=0))
    manifest = json.loads((out / "clipcov.json").read_text())
    assert manifest["weights_sha256"] != first and manifest["complete"] and manifest["rows"] == 36


def test_kill_after_first_part_then_resume_is_bit_identical(env, embedded, tmp_path, cli):
    """Shard 00001 is a FIFO, so the run blocks there after finishing 00000 (and 00002): SIGKILL it,
    put the real shard back, re-run: the folder equals an uninterrupted run's, byte for byte."""
    data = tmp_path / "data"
    h.make_dataset(data, shards=3, per_shard=12)
    real = data / "00001.tar"
    saved = real.read_bytes()
    real.unlink()
    os.mkfifo(real)
    out = tmp_path / "emb"
    args = cli.argv("embed", data, "--out", out, "--model", "clipcov-tiny", "--pretrained", env["ckpt"],
                    "--classes", env["classes"], "--templates", env["templates"], "--batch-size", "5", "--workers", "2",
                    "--device", "cpu", "--threads", "1")
    proc = subprocess.Popen(args, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest_path, deadline = out / "clipcov.json", time.time() + 60
    try:
        while time.time() < deadline and proc.poll() is None:
            if manifest_path.exists() and "00000" in json.loads(manifest_path.read_text())["parts_done"]:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        done = json.loads(manifest_path.read_text())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its decode workers (one is blocked on the FIFO)
        proc.wait()
    assert "00000" in done["parts_done"] and "00001" not in done["parts_done"] and not done["complete"]
    real.unlink()
    real.write_bytes(saved)
    resumed = run_embed(config(env, out, dataset_dir=data))
    assert resumed.parts_done_now == 3 - len(done["parts_done"])
    reference = tmp_path / "reference"
    run_embed(config(env, reference, dataset_dir=data))
    assert folder_bytes(out) == folder_bytes(reference)


def test_bad_samples_skipped_and_reported(env, tmp_path, cli):
    rng = np.random.default_rng(5)
    data = tmp_path / "data"
    s0 = [h.sample(0, i, rng) for i in range(8)]
    s0[2] = h.sample(0, 2, rng, image=b"\xff\xd8\xff\xe0 this is not a jpeg")  # corrupt JPEG
    s0[4] = h.sample(0, 4, rng, caption="   ")  # empty caption
    s0[6] = {k: v for k, v in h.sample(0, 6, rng).items() if k != "jpg"}  # no image
    h.write_shard(data, 0, s0)
    s1 = [h.sample(1, i, rng) for i in range(10)]
    tar1 = h.write_shard(data, 1, s1)
    raw = tar1.read_bytes()
    tar1.write_bytes(raw[: int(len(raw) * 0.55)])  # truncated tar
    h.write_shard(data, 2, [h.sample(2, i, rng) for i in range(4)])
    out = tmp_path / "emb"
    assert cli("embed", data, "--out", out, "--model", "clipcov-tiny", "--pretrained", env["ckpt"],
               "--classes", env["classes"], "--templates", env["templates"], "--workers", "2",
               "--batch-size", "3").returncode == 0
    manifest = json.loads((out / "clipcov.json").read_text())
    assert manifest["complete"]
    assert manifest["skipped"]["decode_error"] == 1 and manifest["skipped"]["empty_caption"] == 1
    assert manifest["skipped"]["missing_image"] == 1 and manifest["skipped"]["truncated_tar"] == 1
    report = [json.loads(ln) for ln in (out / "skipped.jsonl").read_text().splitlines()]
    by_reason = {r["reason"]: r for r in report}
    assert by_reason["decode_error"]["key"] == "000000002" and by_reason["empty_caption"]["key"] == "000000004"
    assert by_reason["truncated_tar"]["shard"] == "00001"
    keys0 = pq.read_table(out / "metadata" / "metadata_00000.parquet")["key"].to_pylist()
    assert keys0 == [s["__key__"] for i, s in enumerate(s0) if i not in (2, 4, 6)]
    keys1 = pq.read_table(out / "metadata" / "metadata_00001.parquet")["key"].to_pylist()
    assert 1 <= len(keys1) < 10 and keys1 == [s["__key__"] for s in s1[: len(keys1)]]
    assert pq.read_table(out / "metadata" / "metadata_00002.parquet").num_rows == 4
    assert manifest["rows"] == 5 + len(keys1) + 4 == np.load(out / "img_emb" / "img_emb_00001.npy").shape[0] + 9
    check_labels(out, "00001", np.load(out / "labels" / "class_emb.npy"))


def test_checkpoint_needing_unpickling_is_refused(env, tmp_path, cli):
    import argparse

    state = torch.load(env["ckpt"], weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, evil)
    out = tmp_path / "emb"
    r = cli("embed", env["data"], "--out", out, "--model", "clipcov-tiny", "--pretrained", evil)
    err = r.stderr.strip()
    assert r.returncode == 2, err
    assert "refusing" in err and "unpickling" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_open_clip_train_checkpoint_and_model_config(env, tmp_path):
    wrapped = h.tiny_checkpoint(tmp_path / "epoch_1.pt", wrap=True)  # {"state_dict": {"module.…": …}}
    a = load_model(ModelSpec(model="clipcov-tiny", pretrained=str(env["ckpt"]), device="cpu"))
    b = load_model(ModelSpec(model="clipcov-tiny", pretrained=str(wrapped), device="cpu"))
    tokens = a.tokenizer(["a dog on a boat"])
    with torch.no_grad():
        assert torch.equal(a.model.encode_text(tokens), b.model.encode_text(tokens))
    assert a.dim == b.dim == 64 and a.weights_fingerprint != b.weights_fingerprint
    cfg = json.loads((Path(__file__).parents[1] / "clipcov_cli" / "models" / "clipcov-tiny.json").read_text())
    cfg["embed_dim"] = 32
    path = tmp_path / "tiny32.json"
    path.write_text(json.dumps(cfg))
    c = load_model(ModelSpec(model_config=path, pretrained="none", device="cpu"))
    assert c.name == "tiny32" and c.dim == 32
    with pytest.raises(ClipcovError, match="cannot load checkpoint"):
        load_model(ModelSpec(model_config=path, pretrained=str(env["ckpt"]), device="cpu"))  # 64-d weights


def test_relabel_recomputes_only_labels(env, tmp_path, cli):
    out = tmp_path / "emb"
    run_embed(config(env, out, workers=0))
    new_classes = tmp_path / "animals.txt"
    new_classes.write_text("zebra\ngiraffe\nelephant\nlion\n")
    before = folder_bytes(out)
    assert cli("embed", "--relabel", "--classes", new_classes, "--templates", env["templates"], out).returncode == 0
    after = folder_bytes(out)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed and all(k.startswith("labels/") or k == "clipcov.json" for k in changed)
    manifest = json.loads((out / "clipcov.json").read_text())
    assert manifest["classes"]["names"] == ["zebra", "giraffe", "elephant", "lion"]
    loaded = load_model(ModelSpec(model="clipcov-tiny", pretrained=str(env["ckpt"]), device="cpu"))
    class_emb = brute_force_class_emb(loaded, load_vocabulary(str(new_classes), str(env["templates"])))
    np.testing.assert_allclose(np.load(out / "labels" / "class_emb.npy"), class_emb, atol=2**-12)  # float16 precision
    for part in manifest["parts"]:
        labels = pq.read_table(out / "labels" / f"labels_{part}.parquet")
        assert labels["pseudo_label"].to_numpy().max() < 4
        check_labels(out, part, np.load(out / "labels" / "class_emb.npy"))
    other = h.tiny_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(ClipcovError, match="relabel with the model that made it"):
        run_embed(EmbedConfig(dataset_dir=None, out_dir=out, relabel=True, pretrained=str(other), device="cpu"))


def test_user_errors_are_one_line(env, tmp_path, cli):
    r = cli("embed", tmp_path / "nope")
    assert r.returncode == 2 and "does not exist" in r.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = cli("embed", env["data"], "--out", foreign, "--model", "clipcov-tiny", "--pretrained", env["ckpt"])
    assert r.returncode == 2 and "not a clipcov embeddings folder" in r.stderr
    bad = tmp_path / "bad_templates.txt"
    bad.write_text("a photo\n")
    r = cli("embed", env["data"], "--out", tmp_path / "x", "--templates", bad)
    assert r.returncode == 2 and "exactly one {}" in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("where", ["dataset", "parent", "clip-retrieval"])
def test_overwrite_never_deletes_data(tmp_path, pipeline_dataset, where, cli, tiny_weights, vocab):
    dataset = pipeline_dataset  # tests/conftest.py: source shards plus embeddings/ with labels
    classes, templates = vocab
    out = {"dataset": dataset, "parent": dataset.parent, "clip-retrieval": tmp_path / "cr"}[where]
    if where == "clip-retrieval":  # another tool's embeddings folder (no clipcov.json)
        (out / "img_emb").mkdir(parents=True)
        np.save(out / "img_emb" / "img_emb_0.npy", np.ones((2, 4), np.float16))
    before = tree(tmp_path)
    line = one_error_line(cli("embed", dataset, "--out", out, "--overwrite", "--model", "clipcov-tiny",
                              "--pretrained", tiny_weights, "--classes", classes, "--templates", templates,
                              "--workers", "0"))
    assert "--overwrite refused" in line
    assert tree(tmp_path) == before
