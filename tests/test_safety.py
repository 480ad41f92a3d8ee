"""Bad inputs and faults (issue #19): `--overwrite` never deletes data, outputs get the user's umask,
a killed run's temporary folders go on the next run, `1e3`-style budgets. Each error is one line."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.budget import parse_budget
from tests.export_helpers import make_source
from tests.select_helpers import clustered, write_embeddings_folder


def clipcov(*args, umask: int | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipcov_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256): what "intact" means below."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture()
def dataset(tmp_path) -> Path:
    """A dataset folder as the pipeline leaves it: source shards plus embeddings/ with labels."""
    ds = tmp_path / "parent" / "ds"
    make_source(ds, shards=2, per=20)
    V, T, labels, Z = clustered(40, 8, 3, seed=1)
    keys = np.array([f"{s:05d}{i:04d}" for s in range(2) for i in range(20)])
    sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    emb = write_embeddings_folder(ds / "embeddings", V, T, keys, labels, sim, parts=2)
    meta = json.loads((emb / "clipcov.json").read_text())
    (emb / "clipcov.json").write_text(json.dumps(meta | {"dataset_dir": str(ds.resolve())}))
    (tmp_path / "parent" / "notes.txt").write_text("the user's own file\n")
    return ds


@pytest.mark.parametrize("where", ["input", "embeddings", "parent", "foreign"])
def test_select_overwrite_never_deletes_data(tmp_path, dataset, where):
    out = {"input": dataset, "embeddings": dataset / "embeddings", "parent": dataset.parent,
           "foreign": tmp_path / "mine"}[where]
    if where == "foreign":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
    before = tree(tmp_path)
    line = one_error_line(clipcov("select", dataset, "--budget", "50%", "--method", "random", "--out", out, "--overwrite"))
    assert "--overwrite refused" in line
    assert tree(tmp_path) == before


def test_select_overwrite_onto_a_file_is_one_line(tmp_path, dataset):
    f = tmp_path / "file.txt"
    f.write_text("x")
    line = one_error_line(clipcov("select", dataset, "--budget", "5", "--method", "random", "--out", f, "--overwrite"))
    assert "is a file" in line and f.read_text() == "x"


def test_select_overwrite_replaces_its_own_subset_and_its_export(tmp_path, dataset):
    out = tmp_path / "subset"
    assert clipcov("select", dataset, "--budget", "10", "--method", "random", "--out", out).returncode == 0
    r = clipcov("export", out)
    assert r.returncode == 0, r.stderr
    r = clipcov("select", dataset, "--budget", "5", "--method", "random", "--out", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["budget"]["met"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "selection.parquet"]


def test_export_overwrite_refuses_the_dataset_parent_and_foreign_files(tmp_path, dataset):
    subset = tmp_path / "subset"
    assert clipcov("select", dataset, "--budget", "10", "--method", "random", "--out", subset).returncode == 0
    before = tree(tmp_path)
    for out in (dataset.parent, tmp_path):
        line = one_error_line(clipcov("export", subset, "--out", out, "--overwrite"))
        assert "--overwrite refused" in line and "contains the input" in line
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "00000.txt").write_text("mine")
    line = one_error_line(clipcov("export", subset, "--out", mine, "--overwrite"))
    assert "not written by clipcov export" in line and (mine / "00000.txt").read_text() == "mine"
    assert tree(tmp_path) == before | {"mine/00000.txt": hashlib.sha256(b"mine").hexdigest()}


@pytest.mark.parametrize("where", ["dataset", "parent", "clip-retrieval"])
def test_embed_overwrite_never_deletes_data(tmp_path, dataset, where):
    from tests.embed_helpers import tiny_checkpoint, vocab_files

    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    classes, templates = vocab_files(tmp_path)
    out = {"dataset": dataset, "parent": dataset.parent, "clip-retrieval": tmp_path / "cr"}[where]
    if where == "clip-retrieval":  # another tool's embeddings folder (no clipcov.json)
        (out / "img_emb").mkdir(parents=True)
        np.save(out / "img_emb" / "img_emb_0.npy", np.ones((2, 4), np.float16))
    before = tree(tmp_path)
    line = one_error_line(clipcov("embed", dataset, "--out", out, "--overwrite", "--model", "clipcov-tiny",
                                  "--pretrained", ckpt, "--classes", classes, "--templates", templates, "--workers", "0"))
    assert "--overwrite refused" in line
    assert tree(tmp_path) == before


def test_outputs_follow_the_umask_and_stale_temporaries_go(tmp_path, dataset):
    out = tmp_path / "subset"
    stale = tmp_path / ".subset.k2j4x9q1.tmp"  # what a select killed while writing leaves
    stale.mkdir()
    (stale / "selection.parquet").write_bytes(b"partial")
    other = tmp_path / ".subset.zzzzzzzz.tmp"  # not select's: kept
    other.mkdir()
    (other / "keep.me").write_text("x")
    r = clipcov("select", dataset, "--budget", "5", "--method", "random", "--out", out, umask=0o022)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "manifest.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "selection.parquet").stat().st_mode) == 0o644
    assert not stale.exists() and (other / "keep.me").exists()


@pytest.mark.parametrize("text,count", [("1e3", 1000), ("2.5e2", 250), ("1E4", 10000), ("1e1%", None)])
def test_budgets_in_exponent_notation(text, count):
    b = parse_budget(text)
    assert b.count == count and (count is not None or b.fraction == pytest.approx(0.1))


def test_budget_exponent_must_still_be_whole():
    with pytest.raises(ClipcovError, match="whole number"):
        parse_budget("1e-3")


def emb_folder(root: Path, n: int = 60, k: int = 3, parts: int = 2, edit=None) -> Path:
    """An embeddings folder (unit rows, labels) after ``edit(V, T, labels, sims)`` damaged it in place."""
    V, T, labels, Z = clustered(n, 8, k, seed=3)
    V, T = V.copy(), T.copy()
    keys = np.array([f"{i:09d}" for i in range(n)])
    sims = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels]).astype(np.float32)
    if edit is not None:
        edit(V, T, labels, sims)
    root = write_embeddings_folder(root, V, T, keys, labels, sims, parts=parts)
    meta = json.loads((root / "clipcov.json").read_text())
    meta["classes"] |= {"count": k, "names": [f"class{i}" for i in range(k)]}
    (root / "clipcov.json").write_text(json.dumps(meta))
    return root


def select_in_process(emb: Path, out: Path, method: str = "clipcov", budget: str = "20"):
    from clipcov_cli.select.runner import SelectConfig, run_select

    return run_select(SelectConfig(input=emb, out=out, budget=budget, method=method, workers=2))


def test_nan_label_sim_on_a_usable_row_is_one_line(tmp_path):
    def nan_sim(V, T, labels, sims):
        sims[7] = np.nan

    emb = emb_folder(tmp_path / "e", edit=nan_sim)
    line = one_error_line(clipcov("select", emb, "--budget", "20", "--out", tmp_path / "s"))
    assert "label_sim" in line and "000000007" in line and "--relabel" in line
    assert not (tmp_path / "s").exists()


def test_nan_label_sim_of_an_excluded_row_is_only_counted(tmp_path):
    def nan_row(V, T, labels, sims):
        V[7] = np.nan
        sims[7] = np.nan

    res = select_in_process(emb_folder(tmp_path / "e", edit=nan_row), tmp_path / "s")
    assert res.manifest["excluded"]["nan"] == 1 and "000000007" not in res.keys


@pytest.mark.parametrize("bad", [-1, 3])
def test_labels_outside_the_classes_are_one_line(tmp_path, bad):
    def relabel(V, T, labels, sims):
        labels[11] = bad

    emb = emb_folder(tmp_path / "e", edit=relabel)
    for method in ("clipcov", "random"):
        line = one_error_line(clipcov("select", emb, "--budget", "20", "--method", method, "--out", tmp_path / method))
        assert f"pseudo_label {bad} is outside [0, 3)" in line


@pytest.mark.parametrize("method", ["clipcov", "clip-score", "random"])
def test_rows_off_unit_norm_are_excluded_and_counted(tmp_path, method):
    def scale(V, T, labels, sims):
        V[20] = (V[20].astype(np.float32) * 50).astype(np.float16)  # norm 50
        T[21] = (T[21].astype(np.float32) * 0.5).astype(np.float16)  # norm 0.5

    res = select_in_process(emb_folder(tmp_path / "e", edit=scale), tmp_path / "s", method, budget="58")
    assert res.manifest["excluded"] == {"nan": 0, "zero_norm": 0, "off_norm": 2}
    assert len(res.keys) == 58 and not {"000000020", "000000021"} & set(res.keys)
    gains = np.asarray(__import__("pyarrow.parquet", fromlist=["x"]).read_table(tmp_path / "s" / "selection.parquet")["gain"])
    assert method == "random" or np.isfinite(gains).all()


@pytest.mark.parametrize("with_parquet", [True, False])
def test_truncated_source_shard_exports_what_is_readable_with_allow_missing(tmp_path, with_parquet):
    from clipcov_cli.export import ExportConfig, run_export
    from tests.export_helpers import make_subset, read_back

    samples = make_source(tmp_path / "data", shards=2, per=10)
    tar = tmp_path / "data" / "00001.tar"
    raw = tar.read_bytes()
    tar.write_bytes(raw[: len(raw) // 2 + 100])  # cut inside a member, as a partial copy leaves it
    if not with_parquet:  # the keys then come from the tar's headers
        (tmp_path / "data" / "00001.parquet").unlink()
    import webdataset as wds

    readable = [s["__key__"] for s in wds.WebDataset(str(tar), shardshuffle=False, handler=wds.ignore_and_stop)]
    sub = make_subset(tmp_path / "s", sorted(samples), tmp_path / "data")
    line = one_error_line(clipcov("export", sub))
    assert "--allow-missing" in line and ("00001.tar (truncated)" in line or not with_parquet)
    res = run_export(ExportConfig(subset_dir=sub, allow_missing=True))
    got = [s["__key__"] for s in read_back(sub / "shards")]
    assert set(got) >= {k for k in samples if k.startswith("00000")}
    assert set(readable[:-1]) <= set(got) - {k for k in samples if k.startswith("00000")} <= set(readable)
    assert len(got) + len(res.missing) == len(samples) and len(res.missing) >= 10 - len(readable)
    for s in read_back(sub / "shards"):  # what was copied is byte-identical
        assert s["jpg"] == samples[s["__key__"]]["jpg"]
    again = clipcov("export", sub, "--allow-missing")  # a re-run finds it complete
    assert again.returncode == 0 and "already complete" in again.stderr


def test_eval_on_an_undecodable_image_is_one_line(tmp_path):
    from clipcov_cli.evaluate.data import load_eval_set

    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "a.jpg").write_text("<html>not an image</html>")
    es = load_eval_set(tmp_path / "data", None)  # images are decoded as they are encoded (streamed)
    with pytest.raises(ClipcovError, match=r"a\.jpg cannot be decoded"):
        list(es.images())


@pytest.fixture()
def train_data(tmp_path) -> Path:
    make_source(tmp_path / "train", shards=1, per=10, real_jpeg=True)
    return tmp_path / "train"


def last_error_line(r: subprocess.CompletedProcess, code: int = 2) -> str:
    """open_clip_train logs to stderr while it runs: the error is the last line, no traceback."""
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and sum(ln.startswith("error:") for ln in r.stderr.splitlines()) == 1
    return line


def _pretrain(data: Path, out: Path) -> subprocess.CompletedProcess:
    return clipcov("pretrain", data, "--out", out, "--epochs", "1", "--batch-size", "5", "--device", "cpu", timeout=400)


def test_pretrain_refuses_a_planted_pickle_on_resume(tmp_path, train_data):
    import torch

    marker = tmp_path / "payload-ran"
    ckpt = tmp_path / "run" / "clipcov" / "checkpoints" / "epoch_1.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "state_dict": _Payload(str(marker))}, ckpt)
    line = one_error_line(_pretrain(train_data, tmp_path / "run"))
    assert "weights_only=True" in line and str(ckpt) in line
    assert not marker.exists()


class _Payload:
    """Unpickling it (weights_only=False) would create a file: the refusal is seen in its absence."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pretrain_resuming_another_models_checkpoint_is_one_line(tmp_path, train_data):
    import torch

    ckpt = tmp_path / "run" / "clipcov" / "checkpoints" / "epoch_1.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "state_dict": {"visual.other.weight": torch.zeros(3, 3)}, "optimizer": {}}, ckpt)
    line = last_error_line(_pretrain(train_data, tmp_path / "run"))
    assert "not a checkpoint of this model" in line


def test_pretrain_on_bad_input_leaves_no_empty_out(tmp_path):
    one_error_line(_pretrain(tmp_path / "nope", tmp_path / "run"))
    assert not (tmp_path / "run").exists()
