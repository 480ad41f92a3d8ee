"""`clipcov select`'s bad inputs and faults (issue #19): `--overwrite` never deletes data, outputs get the
user's umask, a killed run's temporary folders go on the next run, `1e3`-style budgets, damaged
embeddings. Each error is one line. (The other commands' own cases are in their files.)"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.budget import parse_budget
from tests.cli_helpers import one_error_line
from tests.export_helpers import tree
from tests.select_helpers import clustered, write_embeddings_folder


@pytest.fixture()
def dataset(pipeline_dataset) -> Path:
    return pipeline_dataset  # tests/conftest.py: source shards plus embeddings/ with labels


@pytest.mark.parametrize("where", ["input", "embeddings", "parent", "foreign"])
def test_select_overwrite_never_deletes_data(tmp_path, dataset, where, cli):
    out = {"input": dataset, "embeddings": dataset / "embeddings", "parent": dataset.parent,
           "foreign": tmp_path / "mine"}[where]
    if where == "foreign":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
    before = tree(tmp_path)
    line = one_error_line(cli("select", dataset, "--budget", "50%", "--method", "random", "--out", out, "--overwrite"))
    assert "--overwrite refused" in line
    assert tree(tmp_path) == before


def test_select_overwrite_onto_a_file_is_one_line(tmp_path, dataset, cli):
    f = tmp_path / "file.txt"
    f.write_text("x")
    line = one_error_line(cli("select", dataset, "--budget", "5", "--method", "random", "--out", f, "--overwrite"))
    assert "is a file" in line and f.read_text() == "x"


def test_select_overwrite_replaces_its_own_subset_and_its_export(tmp_path, dataset, cli):
    out = tmp_path / "subset"
    assert cli("select", dataset, "--budget", "10", "--method", "random", "--out", out).returncode == 0
    r = cli("export", out)
    assert r.returncode == 0, r.stderr
    r = cli("select", dataset, "--budget", "5", "--method", "random", "--out", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["budget"]["met"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "selection.parquet"]


def test_outputs_follow_the_umask_and_stale_temporaries_go(tmp_path, dataset, cli):
    out = tmp_path / "subset"
    stale = tmp_path / ".subset.k2j4x9q1.tmp"  # what a select killed while writing leaves
    stale.mkdir()
    (stale / "selection.parquet").write_bytes(b"partial")
    other = tmp_path / ".subset.zzzzzzzz.tmp"  # not select's: kept
    other.mkdir()
    (other / "keep.me").write_text("x")
    umask = os.umask(0o022)
    try:
        r = cli("select", dataset, "--budget", "5", "--method", "random", "--out", out)
    finally:
        os.umask(umask)
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


def test_nan_label_sim_on_a_usable_row_is_one_line(tmp_path, cli):
    def nan_sim(V, T, labels, sims):
        sims[7] = np.nan

    emb = emb_folder(tmp_path / "e", edit=nan_sim)
    line = one_error_line(cli("select", emb, "--budget", "20", "--out", tmp_path / "s"))
    assert "label_sim" in line and "000000007" in line and "--relabel" in line
    assert not (tmp_path / "s").exists()


def test_nan_label_sim_of_an_excluded_row_is_only_counted(tmp_path):
    def nan_row(V, T, labels, sims):
        V[7] = np.nan
        sims[7] = np.nan

    res = select_in_process(emb_folder(tmp_path / "e", edit=nan_row), tmp_path / "s")
    assert res.manifest["excluded"]["nan"] == 1 and "000000007" not in res.keys


@pytest.mark.parametrize("bad", [-1, 3])
def test_labels_outside_the_classes_are_one_line(tmp_path, bad, cli):
    def relabel(V, T, labels, sims):
        labels[11] = bad

    emb = emb_folder(tmp_path / "e", edit=relabel)
    for method in ("clipcov", "random"):
        line = one_error_line(cli("select", emb, "--budget", "20", "--method", method, "--out", tmp_path / method))
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


