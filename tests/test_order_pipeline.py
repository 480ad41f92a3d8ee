"""Two downloads of one URL list, embedded and selected the same way, give identical selections
(img2dataset finishes downloads in a different order each time; nothing downstream may follow it)."""

from __future__ import annotations

import tarfile

import pyarrow.parquet as pq

from clipcov_cli.download import DownloadConfig, run_download
from clipcov_cli.embed import EmbedConfig, run_embed
from clipcov_cli.select.runner import SelectConfig, run_select

METHODS = (("clipcov", ()), ("random", (("seed", 1),)), ("negclip-loss", (("seed", 1), ("batch", 64))),
           ("clip-score", ()))


def _members(folder):
    out = []
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as tf:
            out.append(tf.getnames())
    return out


def test_two_downloads_give_identical_shards_embeddings_and_selections(tmp_path, web, tiny_weights):
    layout, ckpt = web.layout, tiny_weights
    urls = web.url_list(tmp_path / "urls.parquet")  # 240 pairs
    for name in ("a", "b"):
        run_download(DownloadConfig(url_list=urls, out_dir=tmp_path / name, shard_size=120, threads=16,
                                    image_size=32, resize_mode="border"), echo=lambda m: None)
    assert _members(tmp_path / "a") == _members(tmp_path / "b")  # same samples, same order in each shard
    tables = {}
    for name in ("a", "b"):
        run_embed(EmbedConfig(dataset_dir=tmp_path / name, out_dir=tmp_path / name / "embeddings", model="clipcov-tiny",
                              pretrained=str(ckpt), classes=str(layout.classnames_path),
                              templates=str(layout.templates_path), batch_size=50, workers=1, device="cpu", threads=1))
        for method, params in METHODS:
            out = tmp_path / f"{name}-{method}"
            run_select(SelectConfig(input=tmp_path / name / "embeddings", out=out, budget="30%", method=method,
                                    params=params))
            tables[name, method] = pq.read_table(out / "selection.parquet")
    for method, _ in METHODS:
        a, b = tables["a", method], tables["b", method]
        assert a.num_rows == 72 and a.equals(b), method  # keys, rank order, scores and terms
