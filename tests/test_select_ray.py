"""`clipcov select --engine ray` writes the same files as `--engine local` (a real local Ray instance)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from tests.select_helpers import clustered, write_embeddings_folder  # noqa: E402

pytestmark = pytest.mark.ray
TIMING_FIELDS = {"wall_time_s"}


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    V, T, labels, Z = clustered(900, 16, 6, seed=4, spread=1.5)
    V, T = V.copy(), T.copy()
    V[11] = np.nan  # excluded rows must be excluded the same way by both engines
    T[500] = 0
    keys = np.array([f"{i:09d}" for i in range(len(V))])
    sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    return write_embeddings_folder(tmp_path_factory.mktemp("e") / "embeddings", V, T, keys, labels, sim, parts=3)


def _select(cli, emb_dir, out, *args):
    r = cli("select", emb_dir, "--out", out, *args)
    assert r.returncode == 0, r.stderr
    table = pq.read_table(out / "selection.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    return table, {k: v for k, v in manifest.items() if k not in TIMING_FIELDS}


@pytest.mark.parametrize("args", [
    ("--budget", "20%"),  # tau = 0, exact r (auto at this size)
    ("--budget", "300", "--tau", "0.2", "--r-mode", "mean"),  # thresholding on most pairs
    ("--budget", "15", "--method", "clip-score"),  # a baseline: runs locally, same output
])
def test_ray_engine_writes_the_same_files_as_local(cli, emb_dir, tmp_path, args):
    local_t, local_m = _select(cli, emb_dir, tmp_path / "local", *args, "--engine", "local", "--threads", "2")
    ray_t, ray_m = _select(cli, emb_dir, tmp_path / "ray", *args, "--engine", "ray")
    assert local_t.num_rows == {"20%": 179, "300": 300, "15": 15}[args[1]]
    assert ray_t.equals(local_t)  # same keys, order, gains and terms, bit for bit
    assert ray_m == local_m


def test_ray_units_read_rows_from_the_parts(emb_dir):
    """The worker function is top-level and picklable, and reads its class' rows itself."""
    import pickle

    from clipcov_cli.select.clipcov.units import PartsSource, run_class_unit
    from clipcov_cli.select.methods import ClipCovSelector
    from clipcov_cli.select.reader import open_embeddings

    keep: list = []
    emb, _ = open_embeddings(emb_dir, keep, prepare=ClipCovSelector(workers=1).prepare)
    try:
        g = emb.prepared
        k = int(np.argmax(np.diff(g.starts)))
        rows = np.sort(g.order[g.starts[k]: g.starts[k + 1]])
        rows = rows[emb.valid[rows]]
        source = PartsSource(g.source.parts, rows)
        U, W = pickle.loads(pickle.dumps(source)).load()
        keep_mask = emb.valid[g.order[g.starts[k]: g.starts[k + 1]]]
        GU, GW = g.block(k)
        assert np.array_equal(U, GU[keep_mask]) and np.array_equal(W, GW[keep_mask])
        assert pickle.loads(pickle.dumps(run_class_unit)) is run_class_unit
    finally:
        for t in keep:
            t.cleanup()


def test_ray_engine_keep_equals_local(cli, emb_dir, tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("000000400\n000000003\n000000899\n")
    local_t, local_m = _select(cli, emb_dir, tmp_path / "local", "--budget", "100", "--keep", keep, "--engine", "local")
    ray_t, ray_m = _select(cli, emb_dir, tmp_path / "ray", "--budget", "100", "--keep", keep, "--engine", "ray")
    assert sorted(local_t.column("key").to_pylist()[:3]) == ["000000003", "000000400", "000000899"]
    assert ray_t.equals(local_t) and ray_m == local_m
