"""`clipcov eval`'s data and metrics without a model: mean per-class recall, ImageNet synset folders
named for any subset, and images decoded as they are encoded (not all held in memory)."""

from __future__ import annotations

import numpy as np
import pytest
import webdataset as wds

from clipcov_cli.errors import ClipcovError
from clipcov_cli.evaluate.data import load_eval_set
from clipcov_cli.evaluate.metrics import mean_per_class_recall, topk_accuracy
from tests.export_helpers import jpeg


def test_mean_per_class_recall_on_an_imbalanced_set():
    labels = np.array([0] * 47 + [1] * 100 + [2] * 53)  # largest class: half the images
    only_one = np.zeros((200, 3))
    only_one[:, 1] = 1.0  # predicts class 1 everywhere
    assert topk_accuracy(only_one, labels, 1) == 0.5
    assert mean_per_class_recall(only_one, labels) == 1 / 3  # no credit for the imbalance
    perfect = np.eye(3)[labels]
    assert mean_per_class_recall(perfect, labels) == 1.0
    half = perfect.copy()
    half[:47] = np.eye(3)[2]  # class 0 always wrong
    assert abs(mean_per_class_recall(half, labels) - 2 / 3) < 1e-12


def test_imagenet_synset_folders_are_named_for_any_subset(tmp_path):
    for wnid in ("n01443537", "n01440764", "n00004475"):  # goldfish, tench (1k) and organism (21k only)
        (tmp_path / wnid).mkdir()
        (tmp_path / wnid / "a.jpg").write_bytes(jpeg(3))
    es = load_eval_set(tmp_path, None)
    assert es.class_names == ("organism", "tench", "goldfish")  # folder order: n00004475 < n01440764 < n01443537
    assert list(es.labels) == [0, 1, 2]


def test_loading_the_set_does_not_keep_decoded_images(tmp_path, cli):
    """Resident memory after loading 150 shard images of 256x256 (29 MB decoded): the old loader
    kept every decoded image; the set now holds labels and captions and decodes while encoding."""
    from PIL import Image
    import io

    root = tmp_path / "wds"
    root.mkdir()
    with wds.TarWriter(str(root / "00000.tar")) as w:
        for i in range(150):
            buf = io.BytesIO()
            Image.fromarray(np.full((256, 256, 3), i, np.uint8)).save(buf, format="JPEG")
            w.write({"__key__": f"{i:05d}", "jpg": buf.getvalue(), "cls": str(i % 3).encode(), "txt": b"x"})
    script = (
        "import sys, os\n"
        "from pathlib import Path\n"
        "from clipcov_cli.evaluate.data import load_eval_set\n"
        "import webdataset, PIL.Image\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        "before = rss()\n"
        "es = load_eval_set(Path(sys.argv[1]), None)\n"
        "print(rss() - before, len(es.labels))\n")
    r = cli.python(script, root)  # a fresh interpreter: its resident memory is the set's
    assert r.returncode == 0, r.stderr[-2000:]
    grown, n = map(int, r.stdout.split())
    assert n == 150
    assert grown < 12 * 2**20, grown  # well under the 29 MB the decoded images take
    n_images = sum(1 for _ in load_eval_set(root, None).images())
    assert n_images == 150


def test_eval_templates_take_c_or_empty_braces(tmp_path):
    from clipcov_cli.evaluate.data import templates_for

    (tmp_path / "t.txt").write_text("a photo of a {}.\na {c} in the wild.\n")
    assert templates_for(tmp_path, str(tmp_path / "t.txt")) == ("a photo of a {c}.", "a {c} in the wild.")


def test_eval_on_an_undecodable_image_is_one_line(tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "a.jpg").write_text("<html>not an image</html>")
    es = load_eval_set(tmp_path / "data", None)  # images are decoded as they are encoded (streamed)
    with pytest.raises(ClipcovError, match=r"a\.jpg cannot be decoded"):
        list(es.images())
