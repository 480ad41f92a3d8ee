"""Evaluation data: a labelled WebDataset (``.jpg`` + ``.cls``, optional ``.txt``), an ImageNet-style
class-subfolder image folder, and the class names / templates that go with them."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clipcov_cli.errors import ClipcovError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class EvalSet:
    images: list  # PIL images
    labels: list[int]  # -1 when unlabelled
    captions: list[str]  # "" when absent
    class_names: tuple[str, ...] | None


def _decode(source, name: str) -> Image.Image:
    """An image as RGB; an undecodable one is a one-line error naming it."""
    try:
        return Image.open(source).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ClipcovError(f"evaluation image {name} cannot be decoded ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}): "
                           "remove it or fix the data") from None


def _lines(path: Path) -> tuple[str, ...]:
    return tuple(l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip())


def _from_webdataset(root: Path) -> EvalSet:
    import webdataset as wds

    images, labels, captions = [], [], []
    for s in wds.WebDataset(sorted(map(str, root.glob("*.tar"))), shardshuffle=False):
        img = next((s[k] for k in ("jpg", "jpeg", "png", "webp") if k in s), None)
        if img is None:
            continue
        images.append(_decode(io.BytesIO(img), f"{s.get('__url__', root)}:{s['__key__']}"))
        labels.append(int(s["cls"].decode()) if "cls" in s else -1)
        captions.append(s["txt"].decode() if "txt" in s else "")
    return EvalSet(images, labels, captions, None)


def _folder_name(d: str) -> str:
    return re.sub(r"^\d+_", "", d).replace("_", " ")


def _from_folder(root: Path) -> EvalSet:
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for idx, d in enumerate(dirs):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_EXTS:
                images.append(_decode(f, str(f)))
                labels.append(idx)
    names = tuple(_folder_name(d.name) for d in dirs)
    if len(dirs) == 1000:  # ImageNet layout (synset folders): open_clip's class names
        from open_clip import zero_shot_metadata as zs

        names = tuple(zs.IMAGENET_CLASSNAMES)
    return EvalSet(images, labels, [""] * len(images), names)


def load_eval_set(root: Path, classes: Path | None) -> EvalSet:
    if not root.exists():
        raise ClipcovError(f"evaluation data {root} does not exist")
    if any(root.glob("*.tar")):
        es = _from_webdataset(root)
    elif root.is_dir() and any(p.is_dir() for p in root.iterdir()):
        es = _from_folder(root / "folder" if (root / "folder").is_dir() and not any(root.glob("*.tar")) else root)
    else:
        raise ClipcovError(f"{root} is neither a WebDataset folder (*.tar) nor a class-subfolder image folder")
    if not es.images:
        raise ClipcovError(f"{root} holds no image")
    names = es.class_names
    if classes is not None:
        names = _lines(classes)
    elif (root / "classnames.txt").exists():
        names = _lines(root / "classnames.txt")
    return EvalSet(es.images, es.labels, es.captions, names)


def templates_for(root: Path, templates: str | None) -> tuple[str, ...]:
    from open_clip import zero_shot_metadata as zs

    if templates is None and (root / "templates.txt").exists():
        templates = str(root / "templates.txt")
    if templates in (None, "openai"):
        return tuple(t("{c}") for t in zs.OPENAI_IMAGENET_TEMPLATES)
    path = Path(templates)
    if not path.is_file():
        raise ClipcovError(f"templates file {path} does not exist")
    lines = _lines(path)
    if not lines or any("{c}" not in t for t in lines):
        raise ClipcovError(f"templates file {path} must hold one template per line, each with {{c}}")
    return lines
