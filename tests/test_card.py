"""The usage card's commands, run as written in a shell on a tiny downloaded-layout corpus:
`clipcov embed cc3m/`, `clipcov select --budget N --out subset/` (inside the dataset folder: the
input defaults to `.`), `clipcov pretrain subset/` (no --out: SUBSET/runs/tiny, resumable), and
pipelines of keys between commands. Only `embed` gets extra flags: the tiny model and its classes
(the default ViT-B-32 OpenAI weights cannot be downloaded in tests)."""

from __future__ import annotations

import json

import pytest

from tests import embed_helpers as h


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fixture_cli):
    root = tmp_path_factory.mktemp("card")
    keys = h.make_dataset(root / "cc3m", shards=3, per_shard=12)
    h.tiny_checkpoint(root / "tiny.pt")
    h.vocab_files(root)
    r = fixture_cli.shell("clipcov embed cc3m/ --model clipcov-tiny --pretrained tiny.pt --classes classes.txt "
                          "--templates templates.txt --device cpu --threads 1", root)
    assert r.returncode == 0, r.stderr[-3000:]
    return root, [k for shard in keys for k in shard]


def test_card_select_then_pretrain_without_out_and_resume(corpus, cli):
    root, _ = corpus
    r = cli.shell("cd cc3m && clipcov select --budget 20 --out subset/ && clipcov pretrain subset/", root)
    assert r.returncode == 0, r.stderr[-3000:]
    run = root / "cc3m" / "subset" / "runs" / "tiny"
    assert f"run folder: subset/runs/tiny" in r.stderr
    ckpts = sorted(p.name for p in (run / "clipcov" / "checkpoints").glob("epoch_*.pt"))
    assert "epoch_10.pt" in ckpts  # the tiny recipe's 10 epochs
    assert json.loads((run / "data" / "manifest.json").read_text())["count"] == 20  # the selected keys only
    r = cli.shell("cd cc3m && clipcov pretrain subset/ --epochs 11", root)  # same folder: resumes
    assert r.returncode == 0, r.stderr[-3000:]
    log = (run / "clipcov" / "out.log").read_text()
    assert (run / "clipcov" / "checkpoints" / "epoch_11.pt").exists()
    assert log.count("Start epoch 0") == 1 and "Start epoch 10" in log


def test_card_pipelines_keys_between_commands(corpus, cli):
    root, all_keys = corpus
    r = cli.shell("clipcov select cc3m/ --budget 20 --out s/ --print-keys | head -7 "
           "| clipcov export --keys - --dataset cc3m/ --out first7/ && clipcov select cc3m/ --budget 20 --out s/ "
           "--overwrite --print-keys > keys.txt", root)
    assert r.returncode == 0, r.stderr[-3000:]
    selected = (root / "keys.txt").read_text().splitlines()
    import webdataset as wds

    got = [s["__key__"] for s in wds.WebDataset(sorted(map(str, (root / "first7").glob("*.tar"))), shardshuffle=False)]
    assert got == selected[:7]
    # a key list from any other tool (here: every third key, written by hand) -> pretrain on those only
    (root / "mine.txt").write_text("\n".join(all_keys[::3]) + "\n")
    r = cli.shell("cat mine.txt | clipcov pretrain cc3m/ --keys - --epochs 1", root)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((root / "cc3m" / "runs").glob("tiny-keys-*"))
    assert len(runs) == 1 and f"run folder: cc3m/runs/{runs[0].name}" in r.stderr
    m = json.loads((runs[0] / "data" / "manifest.json").read_text())
    assert m["count"] == 12 and m["source"]["keys"] == "stdin"
    assert "train_num_samples: 12" in (runs[0] / "clipcov" / "params.txt").read_text()
