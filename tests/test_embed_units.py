"""Pure pieces of `clipcov embed`: label formulas against brute force, the vocabulary, the reader on
odd tars, the metadata table, the manifest bookkeeping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipcov_cli.embed import manifest as mf
from clipcov_cli.embed.labels import half_values, label_agreement, labels_with_margin, pseudo_labels
from clipcov_cli.embed.vocab import load_vocabulary
from clipcov_cli.embed.writer import metadata_table
from clipcov_cli.errors import ClipcovError
from tests import embed_helpers as h


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pseudo_labels_and_agreement_equal_brute_force():
    """Exact: class embeddings at float16 precision, products and sums in float64 (no rounding)."""
    rng = np.random.default_rng(0)
    img, txt, z = unit(rng, 50, 16).astype(np.float16), unit(rng, 50, 16).astype(np.float16), unit(rng, 7, 16)
    y, top = pseudo_labels(img, z)
    l_sim = label_agreement(txt, z, y)
    zh = half_values(z)
    assert np.abs(zh - z).max() <= 2**-12 and np.array_equal(zh.astype(np.float16).astype(np.float32), zh)
    for i in range(50):
        sims = [sum(float(a) * float(b) for a, b in zip(img[i], zh[c])) for c in range(7)]
        assert y[i] == int(np.argmax(sims))
        assert top[i] == np.float32(sims[y[i]])
        assert l_sim[i] == np.float32(sum(float(a) * float(b) for a, b in zip(txt[i], zh[y[i]])))
    assert y.dtype == np.int64 and top.dtype == l_sim.dtype == np.float32


def test_labels_of_a_row_do_not_depend_on_its_position():
    """The same rows at other positions of a batch (BLAS blocks) get bit-identical labels and sims."""
    rng = np.random.default_rng(1)
    img, txt, z = unit(rng, 999, 64).astype(np.float16), unit(rng, 999, 64).astype(np.float16), unit(rng, 37, 64)
    y, top, margin = labels_with_margin(img, z)
    sim = label_agreement(txt, z, y)
    p = rng.permutation(999)
    y2, top2, margin2 = labels_with_margin(img[p], z)
    assert np.array_equal(y[p], y2) and np.array_equal(top[p], top2) and np.array_equal(margin[p], margin2)
    assert np.array_equal(sim[p], label_agreement(txt[p], z, y2))
    one = [labels_with_margin(img[i:i + 1], z) for i in range(0, 999, 97)]
    assert [(int(a[0][0]), float(a[1][0]), float(a[2][0])) for a in one] == \
        [(int(y[i]), float(top[i]), float(margin[i])) for i in range(0, 999, 97)]


def test_pseudo_label_ties_go_to_the_lower_class():
    z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y, _ = pseudo_labels(np.array([[1.0, 0.0]], dtype=np.float16), z)
    assert y.tolist() == [0]


def test_builtin_vocabulary_is_open_clips_imagenet_with_80_templates():
    from open_clip import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    v = load_vocabulary()
    assert v.name == "imagenet1k" and v.names == tuple(IMAGENET_CLASSNAMES) and len(v.names) == 1000
    assert len(v.templates) == 80 and v.prompts("dog")[0] == OPENAI_IMAGENET_TEMPLATES[0]("dog")
    assert v.hash == load_vocabulary().hash and v.hash.startswith("sha256:")


def test_vocabulary_files(tmp_path):
    classes, templates = h.vocab_files(tmp_path)
    v = load_vocabulary(str(classes), str(templates))
    assert v.names == h.CLASSES and v.prompts("cat") == [t.format("cat") for t in h.TEMPLATES]
    c_style = tmp_path / "c.txt"
    c_style.write_text("a photo of a {c}.\n\n{c}, seen from above\n")
    assert load_vocabulary(str(classes), str(c_style)).templates == ("a photo of a {}.", "{}, seen from above")
    assert load_vocabulary(str(classes), str(templates)).hash != load_vocabulary(str(classes)).hash
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ClipcovError, match="empty"):
        load_vocabulary(str(tmp_path / "empty.txt"))
    with pytest.raises(ClipcovError, match="does not exist"):
        load_vocabulary(str(tmp_path / "missing.txt"))


def test_metadata_table_columns_and_types():
    metas = [{"url": "u1", "uid": "a", "width": 3, "exif": {"x": 1}, "error_message": None, "caption": "x"},
             {"url": None, "uid": "b", "width": 4, "error_message": None, "mixed": 1},
             {"uid": "c", "mixed": "two"}]
    t = metadata_table(["k1", "k2", "k3"], ["c1", "c2", "c3"], "00007", metas)
    assert t.column_names == ["key", "caption", "shard", "url", "uid", "width", "error_message", "mixed"]
    assert t["caption"].to_pylist() == ["c1", "c2", "c3"] and t["shard"].to_pylist() == ["00007"] * 3
    assert str(t["error_message"].type) == "string" and t["mixed"].to_pylist() == [None, "1", "two"]


def test_manifest_marks_parts_and_merges_stats():
    m = {"parts": ["00000", "00001"], "parts_done": [], "part_stats": {}, "rows": 0, "skipped": {}, "complete": False}
    m = mf.mark_done(m, "00001", {"rows": 5, "skipped": {"decode_error": 2}})
    assert m["parts_done"] == ["00001"] and not m["complete"] and m["rows"] == 5
    m = mf.mark_done(m, "00000", {"rows": 7, "skipped": {"decode_error": 1, "empty_caption": 1}})
    assert m["complete"] and m["rows"] == 12 and m["skipped"] == {"decode_error": 3, "empty_caption": 1}
    m = mf.with_parts(m, ["00000", "00001", "00002"])
    assert m["parts"][-1] == "00002" and not m["complete"]
    json.dumps(m)


def test_reader_shard_of_bad_samples_still_yields_one_final_batch(tmp_path):
    from clipcov_cli.embed.mapper import EmbeddedBatch
    from clipcov_cli.embed.reader import iter_shard_batches
    from clipcov_cli.embed.writer import Layout, PartBuffer, write_part

    rng = np.random.default_rng(1)
    shard = h.write_shard(tmp_path / "data", 3, [h.sample(3, i, rng, caption="") for i in range(4)])
    batches = list(iter_shard_batches(shard, lambda im: None, lambda caps: None, batch_size=2))
    assert len(batches) == 1 and batches[0].last and batches[0].keys == [] and batches[0].read == 4
    assert [s["reason"] for s in batches[0].skipped] == ["empty_caption"] * 4
    empty = np.zeros((0, 8), np.float16)
    buf = PartBuffer("00003", [EmbeddedBatch("00003", [], [], [], empty, empty, batches[0].skipped, True)])
    stats = write_part(Layout(tmp_path / "emb"), buf, np.eye(3, 8, dtype=np.float32), dim=8)
    assert stats == {"rows": 0, "skipped": {"empty_caption": 4}}
    assert np.load(tmp_path / "emb" / "img_emb" / "img_emb_00003.npy").shape == (0, 8)


def test_reader_batches_never_cross_a_shard_and_mark_the_last(tmp_path):
    import torch

    from clipcov_cli.embed.reader import iter_shard_batches

    rng = np.random.default_rng(2)
    shard = h.write_shard(tmp_path / "data", 0, [h.sample(0, i, rng) for i in range(7)])
    batches = list(iter_shard_batches(shard, lambda im: torch.zeros(3, 4, 4), lambda caps: torch.zeros(len(caps), 5),
                                      batch_size=3))
    assert [len(b.keys) for b in batches] == [3, 3, 1] and [b.last for b in batches] == [False, False, True]
    assert [k for b in batches for k in b.keys] == [f"00000{i:04d}" for i in range(7)]
    assert batches[0].images.shape == (3, 3, 4, 4) and batches[0].meta[0]["uid"] == "u000000000"
