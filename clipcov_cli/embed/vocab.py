"""The class vocabulary for zero-shot pseudo-labels and its text embeddings.

Default: the 1000 ImageNet class names with the 80 OpenAI prompt templates, both shipped by
open_clip (``simple`` selects open_clip's 18 short templates). A user vocabulary is a text file of
class names (one per line); templates are a text file of prompts with ``{}`` (or ``{c}``) where the
class name goes. Each class is embedded as the normalized mean over templates of the normalized
text embeddings (CLIP's zero-shot classifier).

``kmeans:K`` (or ``kmeans``: K by :func:`clipcov_cli.embed.kmeans_labels.default_k`) is no vocabulary:
the classes are K clusters of the image embeddings (``embed/kmeans_labels.py``); its
:class:`Vocabulary` has no names or templates until the clustering has run, and its hash is that of
the grouping asked for (``kmeans``, K or ``auto``, the seed).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from clipcov_cli.errors import ClipcovError

BUILTIN_CLASSES = "imagenet1k"
BUILTIN_TEMPLATES = "openai"
SIMPLE_TEMPLATES = "simple"
KMEANS = "kmeans"


@dataclass(frozen=True)
class Vocabulary:
    """K class names and the prompt templates (``{}`` marks the class name)."""

    name: str  # "imagenet1k" or the class file's absolute path
    names: tuple[str, ...]
    templates: tuple[str, ...]
    hash: str  # sha256 of names and templates together: what the class embeddings depend on
    templates_name: str = BUILTIN_TEMPLATES
    names_hash: str = ""
    templates_hash: str = ""
    kmeans_k: int | None = None  # --classes kmeans[:K]: K, 0 for the default rule; None: a vocabulary
    seed: int = 0  # the k-means seed

    @property
    def is_kmeans(self) -> bool:
        return self.kmeans_k is not None

    def prompts(self, name: str) -> list[str]:
        return [t.replace("{}", name) for t in self.templates]


def _sha256(obj: object) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(obj, ensure_ascii=False).encode("utf-8")).hexdigest()


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        builtin = BUILTIN_CLASSES if what == "classes" else f"{BUILTIN_TEMPLATES} or {SIMPLE_TEMPLATES}"
        raise ClipcovError(f"{what} file {path} does not exist (or use the built-in: {builtin})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClipcovError(f"cannot read {what} file {path}: {exc}") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ClipcovError(f"{what} file {path} is empty")
    return lines


@functools.lru_cache(maxsize=1)
def _zero_shot_metadata():
    """open_clip's ``zero_shot_metadata`` (ImageNet class names, the prompt templates: plain data), read
    without importing ``open_clip`` itself (torch and every model, 5 s) when it is not loaded yet: a
    re-run on a finished folder checks its vocabulary before any model is needed."""
    import importlib.util
    import sys

    if "open_clip" in sys.modules:
        return importlib.import_module("open_clip.zero_shot_metadata")
    package = importlib.util.find_spec("open_clip")
    if package is None or not package.submodule_search_locations:
        raise ClipcovError("open_clip is not installed: pip install open_clip_torch")
    path = Path(next(iter(package.submodule_search_locations))) / "zero_shot_metadata.py"
    spec = importlib.util.spec_from_file_location("_clipcov_open_clip_zero_shot_metadata", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_names(classes: str) -> tuple[str, tuple[str, ...]]:
    if classes == BUILTIN_CLASSES:
        return BUILTIN_CLASSES, tuple(_zero_shot_metadata().IMAGENET_CLASSNAMES)
    path = Path(classes).expanduser().resolve()
    return str(path), tuple(_read_lines(path, "classes"))


def _load_templates(templates: str) -> tuple[str, tuple[str, ...]]:
    if templates in (BUILTIN_TEMPLATES, SIMPLE_TEMPLATES):
        meta = _zero_shot_metadata()
        builtin = meta.OPENAI_IMAGENET_TEMPLATES if templates == BUILTIN_TEMPLATES else meta.SIMPLE_IMAGENET_TEMPLATES
        return templates, tuple(t("{}") for t in builtin)
    path = Path(templates).expanduser().resolve()
    lines = [ln.replace("{c}", "{}") for ln in _read_lines(path, "templates")]
    bad = [ln for ln in lines if ln.count("{}") != 1]
    if bad:
        raise ClipcovError(f"templates file {path}: each line needs exactly one {{}} for the class name, "
                           f"e.g. 'a photo of a {{}}.' (bad line: {bad[0]!r})")
    return str(path), tuple(lines)


def parse_kmeans(classes: str) -> int | None:
    """``kmeans`` -> 0 (the default K), ``kmeans:K`` -> K, anything else -> None (a vocabulary)."""
    head, sep, tail = str(classes).partition(":")
    if head != KMEANS:
        return None
    if not sep:
        return 0
    if not tail.isdigit() or int(tail) < 1:
        raise ClipcovError(f"--classes {classes}: give the number of clusters, e.g. kmeans:100 (or kmeans for the default)")
    return int(tail)


def kmeans_vocabulary(k: int, seed: int) -> Vocabulary:
    """The placeholder vocabulary of ``--classes kmeans[:K]``: names come from the clustering."""
    name = f"{KMEANS}:{k}" if k else KMEANS
    return Vocabulary(name=name, names=(), templates=(), hash=_sha256([KMEANS, k or "auto", int(seed)]),
                      templates_name="none", names_hash=_sha256([KMEANS, k or "auto"]), templates_hash="",
                      kmeans_k=k, seed=int(seed))


def load_vocabulary(classes: str = BUILTIN_CLASSES, templates: str = BUILTIN_TEMPLATES, seed: int = 0) -> Vocabulary:
    """The vocabulary ``classes`` (``imagenet1k`` or a names file) with ``templates``
    (``openai``, ``simple`` or a file). Duplicate names are kept (ImageNet-1k has two).
    ``kmeans[:K]``: k-means pseudo-classes (``seed``), no text."""
    k = parse_kmeans(str(classes))
    if k is not None:
        return kmeans_vocabulary(k, seed)
    name, names = _load_names(str(classes))
    templates_name, temps = _load_templates(str(templates))
    return Vocabulary(name=name, names=names, templates=temps, hash=_sha256([list(names), list(temps)]),
                      templates_name=templates_name, names_hash=_sha256(list(names)),
                      templates_hash=_sha256(list(temps)))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def class_text_embeddings(loaded_model, vocab: Vocabulary, batch_size: int = 256,
                          on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """``(K, d)`` float32 unit rows: per class, the normalized mean of its normalized template
    embeddings (zero-shot evaluation's classifier, at full precision)."""
    import torch

    from clipcov_cli.embed.mapper import encode_text

    prompts = [p for name in vocab.names for p in vocab.prompts(name)]
    parts = []
    for chunk in _chunks(prompts, max(1, batch_size)):
        parts.append(encode_text(loaded_model, loaded_model.tokenizer(chunk)))
        if on_progress is not None:
            on_progress(len(chunk))
    emb = torch.cat(parts).reshape(len(vocab.names), len(vocab.templates), -1)
    return torch.nn.functional.normalize(emb.mean(dim=1), dim=-1).numpy().astype(np.float32)


def label_class_embeddings(loaded_model, vocab: Vocabulary, batch_size: int = 256,
                           on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """The class embeddings ``labels/`` stores and labels with: :func:`class_text_embeddings` at float16
    precision (:func:`labels.half_values`, as the stored embeddings: exact label similarities)."""
    from clipcov_cli.embed.labels import half_values

    return half_values(class_text_embeddings(loaded_model, vocab, batch_size, on_progress))
