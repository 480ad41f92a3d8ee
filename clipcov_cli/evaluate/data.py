"""Evaluation data: a labelled WebDataset (``.jpg`` + ``.cls``, optional ``.txt``), an ImageNet-style
class-subfolder image folder, and the class names / templates that go with them."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from clipcov_cli.errors import ClipcovError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class EvalSet:
    """Labels and captions in memory; images decoded one at a time, in the same order, by
    :meth:`images` (from the image files, or from the shards on a second pass)."""

    labels: tuple[int, ...]  # -1 when unlabelled
    captions: tuple[str, ...]  # "" when absent
    class_names: tuple[str, ...] | None
    files: tuple[Path, ...] = ()  # class-subfolder layout: one file per sample
    shards: tuple[Path, ...] = ()  # WebDataset layout

    def __len__(self) -> int:
        return len(self.labels)

    def images(self) -> Iterator[Image.Image]:
        if self.files:
            for f in self.files:
                yield _decode(f, str(f))
            return
        for s in _samples(self.shards):
            yield _decode(io.BytesIO(_image_bytes(s)), f"{s.get('__url__', '')}:{s['__key__']}")


def _decode(source, name: str) -> Image.Image:
    """An image as RGB; an undecodable one is a one-line error naming it."""
    try:
        with Image.open(source) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ClipcovError(f"evaluation image {name} cannot be decoded ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}): "
                           "remove it or fix the data") from None


def _lines(path: Path) -> tuple[str, ...]:
    return tuple(l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip())


def _image_bytes(sample: dict) -> bytes | None:
    return next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)


def _samples(shards: tuple[Path, ...]) -> Iterator[dict]:
    """The shards' samples that hold an image, in shard order (undecoded)."""
    import webdataset as wds

    for s in wds.WebDataset([str(p) for p in shards], shardshuffle=False):
        if _image_bytes(s) is not None:
            yield s


def _from_webdataset(root: Path) -> EvalSet:
    shards = tuple(sorted(root.glob("*.tar")))
    labels, captions = [], []
    for s in _samples(shards):  # labels and captions only: the images are decoded when encoded
        labels.append(int(s["cls"].decode()) if "cls" in s else -1)
        captions.append(s["txt"].decode() if "txt" in s else "")
    return EvalSet(tuple(labels), tuple(captions), None, shards=shards)


WNID = re.compile(r"n\d{8}")


def _folder_name(d: str) -> str:
    return re.sub(r"^\d+_", "", d).replace("_", " ")


def imagenet_names(wnids: list[str]) -> tuple[str, ...]:
    """Class names for ImageNet synset folders (any subset, any order): open_clip's names for the
    1,000 ImageNet-1k synsets (timm's wnid list gives their order), WordNet's first lemma (timm's
    table) for other ImageNet-21k synsets, the id itself when neither knows it."""
    from open_clip import zero_shot_metadata as zs
    from timm.data import ImageNetInfo

    names = dict(zip(ImageNetInfo().label_names(), zs.IMAGENET_CLASSNAMES))
    lemmas = ImageNetInfo("imagenet-22k")
    out = []
    for w in wnids:
        if w in names:
            out.append(names[w])
            continue
        try:
            out.append(lemmas.label_name_to_description(w).split(",")[0].strip() or w)
        except (KeyError, IndexError):
            out.append(w)
    return tuple(out)


def _from_folder(root: Path) -> EvalSet:
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    for idx, d in enumerate(dirs):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_EXTS:
                files.append(f)
                labels.append(idx)
    if dirs and all(WNID.fullmatch(d.name) for d in dirs):  # ImageNet layout (synset folders)
        names = imagenet_names([d.name for d in dirs])
    else:
        names = tuple(_folder_name(d.name) for d in dirs)
    return EvalSet(tuple(labels), ("",) * len(files), names, files=tuple(files))


def load_eval_set(root: Path, classes: Path | None) -> EvalSet:
    if not root.exists():
        raise ClipcovError(f"evaluation data {root} does not exist")
    if any(root.glob("*.tar")):
        es = _from_webdataset(root)
    elif root.is_dir() and any(p.is_dir() for p in root.iterdir()):
        es = _from_folder(root / "folder" if (root / "folder").is_dir() and not any(root.glob("*.tar")) else root)
    else:
        raise ClipcovError(f"{root} is neither a WebDataset folder (*.tar) nor a class-subfolder image folder")
    if not len(es):
        raise ClipcovError(f"{root} holds no image")
    names = es.class_names
    if classes is not None:
        names = _lines(classes)
    elif (root / "classnames.txt").exists():
        names = _lines(root / "classnames.txt")
    return EvalSet(es.labels, es.captions, names, es.files, es.shards)


def templates_for(root: Path, templates: str | None) -> tuple[str, ...]:
    from open_clip import zero_shot_metadata as zs

    if templates is None and (root / "templates.txt").exists():
        templates = str(root / "templates.txt")
    if templates in (None, "openai"):
        return tuple(t("{c}") for t in zs.OPENAI_IMAGENET_TEMPLATES)
    path = Path(templates)
    if not path.is_file():
        raise ClipcovError(f"templates file {path} does not exist")
    lines = tuple(t.replace("{}", "{c}") for t in _lines(path))  # {} as in embed's files, too
    if not lines or any("{c}" not in t for t in lines):
        raise ClipcovError(f"templates file {path} must hold one template per line, each with {{c}} (or {{}})")
    return lines
