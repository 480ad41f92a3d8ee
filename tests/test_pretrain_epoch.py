"""Epoch semantics of `clipcov pretrain`: with several loader workers, each epoch of open_clip_train's own
WebDataset loader (built from the adapter's argv) reads each sample at most once, and as many as it can."""

from __future__ import annotations

from pathlib import Path

import pytest
import webdataset as wds

from clipcov_cli.pretrain.adapter import build_argv
from clipcov_cli.pretrain.config import PretrainConfig
from clipcov_cli.pretrain.inputs import resolve_input
from clipcov_cli.pretrain.recipes import get_recipe
from tests.export_helpers import jpeg, make_source, make_subset


def make_shards(root: Path, sizes: list[int]) -> Path:
    root.mkdir(parents=True)
    n = 0
    for s, size in enumerate(sizes):
        with wds.TarWriter(str(root / f"{s:05d}.tar")) as w:
            for _ in range(size):
                w.write({"__key__": f"{n:09d}", "jpg": jpeg(n, 8), "txt": f"sample {n}".encode()})
                n += 1
    return root


def epoch_reads(argv: list[str], epochs: int = 2) -> list[list[str]]:
    """The captions open_clip_train's training loader yields in each epoch, under these argv."""
    from open_clip_train.data import get_wds_dataset
    from open_clip_train.params import parse_args

    args = parse_args(argv)
    args.world_size, args.rank, args.distributed = 1, 0, False
    info = get_wds_dataset(args, lambda im: 0, is_train=True, tokenizer=lambda text: [text])
    out = []
    for e in range(epochs):
        info.set_epoch(e)
        out.append([t for _, texts in info.dataloader for t in texts])
    return out


@pytest.mark.parametrize("sizes,batch,workers", [([16, 8], 8, 2), ([8, 8, 8, 8], 8, 2), ([12, 12, 12], 4, 2),
                                                 ([10, 7, 9, 6], 4, 2)])
def test_each_sample_at_most_once_per_epoch_with_several_workers(tmp_path, sizes, batch, workers):
    data_dir = make_shards(tmp_path / "wds", sizes)
    cfg = PretrainConfig(data=data_dir, out=tmp_path / "run", recipe=get_recipe("tiny"), batch_size=batch,
                         workers=workers)
    argv = build_argv(cfg, resolve_input(data_dir, tmp_path / "run"), "cpu")
    n = int(argv[argv.index("--train-num-samples") + 1])
    for reads in epoch_reads(argv):
        assert len(reads) == len(set(reads)) == n, (len(reads), len(set(reads)), n)  # no repeats, as many as said
    assert n >= sum(sizes) - batch * len(sizes)  # little is left out
    if len(set(sizes)) == 1 and sizes[0] % batch == 0 and len(sizes) % workers == 0:  # even shards: all, all workers
        assert n == sum(sizes) and argv[argv.index("--workers") + 1] == str(workers)


def test_pretrain_says_its_epoch_and_leaves_nothing_in_the_temp_folder(tmp_path, tmp_path_factory, cli):
    data_dir = make_shards(tmp_path / "wds", [16, 8])
    # the loader's Unix sockets live under TMPDIR (at most 107 bytes with pymp-*/listener-*): a folder near
    # pytest's base, not tmp_path, whose path is 10 bytes longer under pytest-xdist (popen-gwN/)
    tmp = tmp_path_factory.mktemp("tmpdir")
    run = tmp_path / ("a-long-run-folder-name-" * 4) / "run"  # the loader's sockets must not live under it
    # a new process: Python reads TMPDIR once, and what is imported on start-up is part of the case
    r = cli.subprocess("pretrain", data_dir, "--out", run, "--epochs", "1", "--batch-size", "8", "--workers", "2",
                       "--device", "cpu", env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr[-3000:]
    said = " ".join(r.stderr.split())
    assert "each epoch reads 24 of 24 samples once" in said and "1 worker(s) instead of 2" in said, said[-2000:]
    assert "train_num_samples: 24" in (run / "clipcov" / "params.txt").read_text()
    assert sorted(p.name for p in tmp.iterdir()) == []  # wandb-media, wandb-artifacts, torchinductor_*: in RUN/tmp if anywhere


def test_no_copy_streams_only_the_selected_samples_from_the_source_shards(tmp_path):
    truth = make_source(tmp_path / "src", shards=4, per=10, real_jpeg=True)
    keys = [k for k in sorted(truth) if int(k[-4:]) % 10 in (0, 2, 3, 5, 7, 9)]  # 6 of each shard's 10
    sub = make_subset(tmp_path / "subset", keys[::-1], tmp_path / "src")
    run = tmp_path / "run"
    cfg = PretrainConfig(data=sub, out=run, recipe=get_recipe("tiny"), batch_size=4, workers=2, no_copy=True)
    data = resolve_input(sub, run, no_copy=True)
    assert data.samples == 24 and all(str(s).startswith("pipe:") for s in data.shards)
    argv = build_argv(cfg, data, "cpu")
    want = sorted(truth[k]["txt"].decode() for k in keys)
    for reads in epoch_reads(argv):
        assert sorted(reads) == want  # every selected sample once, nothing else
    assert not (run / "data").exists()  # no filtered copy


def test_pretrain_no_copy_trains_without_writing_a_copy(tmp_path, cli):
    truth = make_source(tmp_path / "src", shards=2, per=12, real_jpeg=True)
    sub = make_subset(tmp_path / "subset", sorted(truth)[::2], tmp_path / "src")
    r = cli("pretrain", sub, "--out", tmp_path / "run", "--no-copy", "--epochs", "1", "--batch-size", "4",
            "--workers", "2", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no copy" in r.stderr and "each epoch reads 12 of 12 samples once" in " ".join(r.stderr.split())
    assert "train_num_samples: 12" in (tmp_path / "run" / "clipcov" / "params.txt").read_text()
    assert not (tmp_path / "run" / "data").exists()
    assert (tmp_path / "run" / "clipcov" / "checkpoints" / "epoch_1.pt").exists()
