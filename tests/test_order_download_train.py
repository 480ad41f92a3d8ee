"""Order fixed by keys and seed, not by arrival: download shards in key order, training order seeded.

img2dataset writes a shard's samples in completion order; `download` puts them in key order.
open_clip_train's sample shuffle is seeded by the clock; `pretrain` replaces it with a seeded shuffle
by key, so one command gives the same weights twice, whatever the order of the samples in the tars."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clipcov_cli.corpus import CorpusConfig, generate_corpus
from clipcov_cli.download import DownloadConfig, run_download
from clipcov_cli.download.order import sort_parquet, sort_tar


def _names(tar: Path) -> list[str]:
    with tarfile.open(tar) as tf:
        return tf.getnames()


def _shuffled_copy(src: Path, dst: Path, seed: int) -> None:
    """``src``'s tars with their samples in another order (members of a sample kept together)."""
    import random

    dst.mkdir(parents=True)
    for tar in sorted(src.glob("*.tar")):
        with tarfile.open(tar) as tf:
            members = [(m, tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]
        groups: dict[str, list] = {}
        for m, data in members:
            groups.setdefault(m.name.split(".", 1)[0], []).append((m, data))
        keys = sorted(groups)
        random.Random(seed).shuffle(keys)
        with tarfile.open(dst / tar.name, "w") as out:
            for k in keys:
                for m, data in groups[k]:
                    out.addfile(m, io.BytesIO(data))
    for other in src.iterdir():
        if other.suffix != ".tar":
            (dst / other.name).write_bytes(other.read_bytes())


def test_sort_tar_and_parquet_are_key_order_and_idempotent(tmp_path):
    layout = generate_corpus(tmp_path / "c", CorpusConfig(n_web=20, n_classes=4, n_proxy_per_class=5, n_test_per_class=1))
    _shuffled_copy(layout.proxy_dir, tmp_path / "shuffled", seed=1)
    tar = next((tmp_path / "shuffled").glob("*.tar"))
    before = _names(tar)
    assert before != sorted(before, key=lambda n: (n.split(".", 1)[0]))  # shuffled
    assert sort_tar(tar) is True
    after = _names(tar)
    assert sorted(after) == sorted(before) and [n.split(".", 1)[0] for n in after] == sorted(n.split(".", 1)[0] for n in after)
    assert sort_tar(tar) is False  # already in order: nothing rewritten
    meta = tmp_path / "m.parquet"
    pq.write_table(pa.table({"key": ["b", "a", "c"], "x": [2, 1, 3]}), meta)
    assert sort_parquet(meta) is True and pq.read_table(meta).to_pydict() == {"key": ["a", "b", "c"], "x": [1, 2, 3]}
    assert sort_parquet(meta) is False


def test_download_writes_samples_in_key_order(tmp_path, web):
    run_download(DownloadConfig(url_list=web.url_list(tmp_path / "urls.parquet", 80), out_dir=tmp_path / "out",
                                shard_size=40, threads=8), echo=lambda m: None)
    tars = sorted((tmp_path / "out").glob("*.tar"))
    assert len(tars) == 2
    for tar in tars:
        keys = [n.split(".", 1)[0] for n in _names(tar)]
        assert keys == sorted(keys) and len(set(keys)) == 40
        meta = pq.read_table(tar.with_suffix(".parquet"))["key"].to_pylist()
        assert meta == sorted(meta)


def _train(cli, data: Path, out: Path) -> dict:
    import torch

    r = cli("pretrain", data, "--out", out, "--recipe", "tiny", "--epochs", "2", "--batch-size", "20", "--seed", "3",
            "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out / "clipcov" / "checkpoints" / "epoch_2.pt", map_location="cpu", weights_only=False)["state_dict"]


def test_training_order_is_seeded_not_file_or_clock_order(tmp_path, cli):
    """Two runs of one command, the second on the same samples in other tar orders: the same weights."""
    import torch

    layout = generate_corpus(tmp_path / "c", CorpusConfig(n_web=20, n_classes=4, n_proxy_per_class=20, n_test_per_class=1))
    _shuffled_copy(layout.proxy_dir, tmp_path / "shuffled", seed=2)
    a = _train(cli, layout.proxy_dir, tmp_path / "a")
    b = _train(cli, tmp_path / "shuffled", tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
