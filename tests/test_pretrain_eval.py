"""`clipcov pretrain` (open_clip_train, tiny recipe) and `clipcov eval` on a tiny clean corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcov_cli.corpus import CorpusConfig, generate_corpus
from clipcov_cli.pretrain.runner import training_losses
from tests.cli_helpers import one_error_line
from tests.export_helpers import make_source


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fixture_cli):
    root = tmp_path_factory.mktemp("pe")
    layout = generate_corpus(root / "c", CorpusConfig(n_web=60, n_classes=6, n_proxy_per_class=50, n_test_per_class=20))
    r = fixture_cli("pretrain", layout.proxy_dir, "--out", root / "run", "--recipe", "tiny", "--epochs", "6",
                    "--batch-size", "50", "--device", "cpu", "--", "--lr", "2e-3")
    assert r.returncode == 0, r.stderr[-3000:]
    return layout, root


def test_training_loss_decreases_and_checkpoints_exist(trained):
    layout, root = trained
    losses = training_losses(root / "run")
    assert len(losses) >= 6
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    ckpts = sorted((root / "run" / "clipcov" / "checkpoints").glob("epoch_*.pt"))
    assert [p.name for p in ckpts] == [f"epoch_{i}.pt" for i in range(1, 7)]
    params = (root / "run" / "clipcov" / "params.txt").read_text()
    assert "train_num_samples: 300" in params and "dataset_resampled: False" in params


def test_zeroshot_beats_chance_and_retrieval_runs(trained, cli):
    layout, root = trained
    ckpt = root / "run" / "clipcov" / "checkpoints" / "epoch_6.pt"
    first = root / "run" / "clipcov" / "checkpoints" / "epoch_1.pt"
    r = cli("eval", ckpt, first, "--task", "zeroshot", "--data", layout.test_dir, "--out", root / "ev", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((root / "ev" / "results.json").read_text())
    top1 = {row["checkpoint"]: row["value"] for row in rows if row["metric"] == "acc1"}
    chance = 1 / 6
    assert top1[str(ckpt.resolve())] >= chance + 0.3, top1  # clean data: well above chance
    assert "acc1" in r.stdout and "mean_per_class_recall" in r.stdout and "run/epoch_6" in r.stdout and "run/epoch_1" in r.stdout  # one table
    r = cli("eval", ckpt, "--task", "retrieval", "--data", layout.test_dir, "--out", root / "ev", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((root / "ev" / "results.json").read_text())
    metrics = {row["metric"] for row in rows}
    assert {"acc1", "mean_per_class_recall", "image_to_text_R@1", "text_to_image_R@10"} <= metrics  # both runs kept
    r10 = next(row["value"] for row in rows if row["metric"] == "image_to_text_R@10")
    assert r10 > 10 / len(list(layout.test_dir.glob("folder/*/*.jpg")))  # above chance


def test_eval_image_folder_layout(trained, cli):
    layout, root = trained
    ckpt = root / "run" / "clipcov" / "checkpoints" / "epoch_6.pt"
    r = cli("eval", ckpt, "--data", layout.test_dir / "folder", "--templates", layout.templates_path,
                "--out", root / "ev2", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((root / "ev2" / "results.json").read_text())
    assert next(row["value"] for row in rows if row["metric"] == "acc1") >= 1 / 6 + 0.3


def test_resume_continues_from_latest(trained, cli):
    layout, root = trained
    r = cli("pretrain", layout.proxy_dir, "--out", root / "run", "--recipe", "tiny", "--epochs", "7",
                "--batch-size", "50", "--device", "cpu", "--", "--lr", "2e-3")
    assert r.returncode == 0, r.stderr[-3000:]
    log = (root / "run" / "clipcov" / "out.log").read_text()
    assert "epoch_6.pt" in log and "Start epoch 6" in log and log.count("Start epoch 0") == 1
    assert (root / "run" / "clipcov" / "checkpoints" / "epoch_7.pt").exists()


def test_subset_not_exported_trains_on_selected_keys_only(trained, tmp_path, cli):
    layout, root = trained
    keys = pq.read_table(layout.proxy_dir / "00000.parquet").column("key").to_pylist()[::3]
    sub = tmp_path / "subset"
    sub.mkdir()
    pq.write_table(pa.table({"key": keys, "rank": list(range(len(keys)))}), sub / "selection.parquet")
    (sub / "manifest.json").write_text(json.dumps({"source": {"dataset_dir": str(layout.proxy_dir)}}))
    r = cli("pretrain", sub, "--out", tmp_path / "run", "--epochs", "1", "--batch-size", "20", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())
    assert m["count"] == len(keys) == 100
    assert "train_num_samples: 100" in (tmp_path / "run" / "clipcov" / "params.txt").read_text()


def test_bad_inputs(tmp_path, cli):
    r = cli("pretrain", tmp_path / "nope", "--out", tmp_path / "run")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = cli("pretrain", tmp_path, "--out", tmp_path / "run", "--recipe", "huge")
    assert r.returncode == 2 and "unknown --recipe 'huge'" in r.stderr
    r = cli("eval", tmp_path / "x.pt", "--data", tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr


@pytest.fixture()
def train_data(tmp_path) -> Path:
    make_source(tmp_path / "train", shards=1, per=10, real_jpeg=True)
    return tmp_path / "train"


def last_error_line(r, code: int = 2) -> str:
    """open_clip_train logs to stderr while it runs: the error is the last line, no traceback."""
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and sum(ln.startswith("error:") for ln in r.stderr.splitlines()) == 1
    return line


def _pretrain(cli, data: Path, out: Path):
    return cli("pretrain", data, "--out", out, "--epochs", "1", "--batch-size", "5", "--device", "cpu")


def test_pretrain_refuses_a_planted_pickle_on_resume(tmp_path, train_data, cli):
    import torch

    marker = tmp_path / "payload-ran"
    ckpt = tmp_path / "run" / "clipcov" / "checkpoints" / "epoch_1.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "state_dict": _Payload(str(marker))}, ckpt)
    line = one_error_line(_pretrain(cli, train_data, tmp_path / "run"))
    assert "weights_only=True" in line and str(ckpt) in line
    assert not marker.exists()


class _Payload:
    """Unpickling it (weights_only=False) would create a file: the refusal is seen in its absence."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pretrain_resuming_another_models_checkpoint_is_one_line(tmp_path, train_data, cli):
    import torch

    ckpt = tmp_path / "run" / "clipcov" / "checkpoints" / "epoch_1.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "state_dict": {"visual.other.weight": torch.zeros(3, 3)}, "optimizer": {}}, ckpt)
    line = last_error_line(_pretrain(cli, train_data, tmp_path / "run"))
    assert "not a checkpoint of this model" in line


def test_pretrain_on_bad_input_leaves_no_empty_out(tmp_path, cli):
    one_error_line(_pretrain(cli, tmp_path / "nope", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_keep_last_checkpoint_replaces_the_one_before_and_resumes(tmp_path, train_data, cli):
    ckpts = tmp_path / "run" / "clipcov" / "checkpoints"
    for epochs in (2, 3):
        r = cli("pretrain", train_data, "--out", tmp_path / "run", "--epochs", str(epochs), "--batch-size", "5",
                "--device", "cpu", "--keep-checkpoints", "last")
        assert r.returncode == 0, r.stderr[-3000:]
        assert [p.name for p in ckpts.glob("*.pt")] == [f"epoch_{epochs}.pt"]
    log = (tmp_path / "run" / "clipcov" / "out.log").read_text()
    assert "epoch_2.pt" in log and "Start epoch 2" in log and log.count("Start epoch 0") == 1


def test_weights_only_checkpoint_is_smaller_evaluates_and_refuses_to_resume(tmp_path, train_data, cli):
    import torch

    from clipcov_cli.pretrain.adapter import drop_training_state

    r = _pretrain(cli, train_data, tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp_path / "run" / "clipcov" / "checkpoints" / "epoch_1.pt"
    full = torch.load(ckpt, map_location="cpu", weights_only=True)
    size = ckpt.stat().st_size
    drop_training_state(ckpt)
    slim = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert set(slim) == {"epoch", "name", "state_dict"} and "optimizer" in full
    assert all(torch.equal(slim["state_dict"][k], v) for k, v in full["state_dict"].items())
    assert ckpt.stat().st_size < 0.5 * size
    assert [p.name for p in ckpt.parent.iterdir()] == ["epoch_1.pt"]  # no temp file left
    line = one_error_line(cli("pretrain", train_data, "--out", tmp_path / "run", "--epochs", "2", "--batch-size", "5",
                              "--device", "cpu"))
    assert "weights only" in line and str(ckpt) in line
