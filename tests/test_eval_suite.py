"""`clipcov eval --suite` through clip_benchmark on tiny sets in its WebDataset format, generated here."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests import embed_helpers as h

CLASSES = ("cat", "dog", "car", "tree", "house", "boat")
TEMPLATES = ("a photo of a {c}.", "a picture of the {c}.")


def write_classification(folder, n: int, n_classes: int, seed: int, shards: int = 2):
    """clip_benchmark's layout: test/{0..}.tar (.webp + .cls), test/nshards.txt, classnames.txt, templates."""
    import webdataset as wds
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "test").mkdir(parents=True)
    labels = rng.integers(0, n_classes, size=n)
    images = []
    per = -(-n // shards)
    for s in range(shards):
        with wds.TarWriter(str(folder / "test" / f"{s}.tar")) as sink:
            for i in range(s * per, min(n, (s + 1) * per)):
                buf = io.BytesIO()
                Image.open(io.BytesIO(h.jpeg_bytes(rng))).save(buf, format="WEBP")
                images.append(buf.getvalue())
                sink.write({"__key__": f"s{i:07d}", "webp": buf.getvalue(), "cls": int(labels[i])})
    (folder / "test" / "nshards.txt").write_text(f"{shards}\n")
    (folder / "classnames.txt").write_text("\n".join(CLASSES[:n_classes]) + "\n")
    (folder / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    return images, labels


def write_retrieval(folder, n: int, seed: int):
    import webdataset as wds

    rng = np.random.default_rng(seed)
    (folder / "test").mkdir(parents=True)
    captions = []
    with wds.TarWriter(str(folder / "test" / "0.tar")) as sink:
        for i in range(n):
            captions.append(f"a photo of a {CLASSES[i % len(CLASSES)]} number {i}")
            sink.write({"__key__": f"s{i:07d}", "jpg": h.jpeg_bytes(rng), "txt": captions[-1]})
    (folder / "test" / "nshards.txt").write_text("1\n")
    (folder / "dataset_type.txt").write_text("retrieval\n")


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("bench")
    data = root / "evalsets"
    write_classification(data / "wds_cifar10_test", 30, 6, seed=1)
    write_classification(data / "wds_vtab-pets_test", 20, 3, seed=2, shards=1)  # < 5 classes: no acc5
    write_retrieval(data / "wds_flickr30k_test", 12, seed=3)
    ckpt = tiny_weights
    return root, data, ckpt


def test_suite_rows_average_and_agreement_with_clipcov_eval(suite_root, cli):
    root, data, ckpt = suite_root
    r = cli("eval", ckpt, "--suite", "datacomp", "--data", data, "--model", "clipcov-tiny", "--out", root / "ev",
            "--device", "cpu", "--batch-size", "8")
    code, out, err = r.returncode, r.stdout, r.stderr
    assert code == 0, err
    rows = json.loads((root / "ev" / "results.json").read_text())
    by = {(r["task"], r["metric"]): r["value"] for r in rows}
    assert {("cifar10", "acc1"), ("cifar10", "acc5"), ("cifar10", "mean_per_class_recall"),
            ("vtab/pets", "acc1"), ("vtab/pets", "mean_per_class_recall"),
            ("retrieval/flickr30k", "image_retrieval_recall@1"), ("retrieval/flickr30k", "mean_recall@1")} <= set(by)
    assert ("vtab/pets", "acc5") not in by  # clip_benchmark gives NaN under 5 classes: not written
    # main metrics as in DataComp's tasklist: acc1, mean_per_class_recall (Pets), mean_recall@1 (retrieval)
    mains = [by[("cifar10", "acc1")], by[("vtab/pets", "mean_per_class_recall")], by[("retrieval/flickr30k", "mean_recall@1")]]
    assert by[("vtab/pets", "main")] == mains[1]
    avg = next(r for r in rows if r["task"] == "suite:datacomp")
    assert avg["metric"] == "average" and avg["value"] == pytest.approx(np.mean(mains))
    assert avg["tasks"] == ["cifar10", "vtab/pets", "retrieval/flickr30k"] and len(avg["missing"]) == 30
    assert all(r["checkpoint"] == str(ckpt.resolve()) and r["model"] == "clipcov-tiny" for r in rows)
    assert "30 of the 33 tasks" in err and "suite:datacomp" in out
    # the same images, labels, class names and templates through clipcov's own zero-shot eval: same top-1
    import webdataset as wds

    flat = root / "flat"
    flat.mkdir()
    with wds.TarWriter(str(flat / "00000.tar")) as sink:
        for s in wds.WebDataset(sorted(map(str, (data / "wds_cifar10_test" / "test").glob("*.tar"))), shardshuffle=False):
            sink.write({"__key__": s["__key__"], "webp": s["webp"], "cls": s["cls"]})
    (flat / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (flat / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    r = cli("eval", ckpt, "--data", flat, "--model", "clipcov-tiny", "--out", root / "own", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    own = {r["metric"]: r["value"] for r in json.loads((root / "own" / "results.json").read_text())}
    assert own.get("top1", own.get("acc1")) == pytest.approx(by[("cifar10", "acc1")], abs=1e-9)


def test_suite_errors(suite_root, tmp_path, cli):
    root, data, ckpt = suite_root
    r = cli("eval", ckpt, "--suite", "nope", "--data", data, "--model", "clipcov-tiny")
    assert r.returncode == 2 and "unknown --suite 'nope'" in r.stderr
    r = cli("eval", ckpt, "--suite", "paper", "--data", tmp_path, "--model", "clipcov-tiny")
    assert r.returncode == 2 and "no task of the suite is under" in r.stderr and "wds_imagenet1k_test" in r.stderr
    assert not (tmp_path / "results.json").exists()
