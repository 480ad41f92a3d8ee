"""The embeddings folder's layout (contract 2, clip-retrieval's inference output plus ``labels/``
and ``clipcov.json``): the one place its paths are spelled, used by ``embed`` (which writes it) and
``select`` (which reads it). Cheap to import: no embed or select code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "clipcov.json"
SKIPPED_REPORT = "skipped.jsonl"
CLASS_EMB = "class_emb.npy"
OUTPUT_DIRS = ("img_emb", "text_emb", "metadata", "labels", "skipped")
_PART = re.compile(r"^img_emb_(.+)\.npy$")


@dataclass(frozen=True)
class Layout:
    """Paths of an embeddings folder."""

    root: Path

    def img(self, part: str) -> Path:
        return self.root / "img_emb" / f"img_emb_{part}.npy"

    def txt(self, part: str) -> Path:
        return self.root / "text_emb" / f"text_emb_{part}.npy"

    def meta(self, part: str) -> Path:
        return self.root / "metadata" / f"metadata_{part}.parquet"

    def labels(self, part: str, labels_dir: Path | None = None) -> Path:
        return (labels_dir or self.labels_dir) / f"labels_{part}.parquet"

    def skipped(self, part: str) -> Path:
        return self.root / "skipped" / f"skipped_{part}.jsonl"

    @property
    def img_dir(self) -> Path:
        return self.root / "img_emb"

    @property
    def labels_dir(self) -> Path:
        return self.root / "labels"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def class_emb(self) -> Path:
        return self.labels_dir / CLASS_EMB

    @property
    def report(self) -> Path:
        return self.root / SKIPPED_REPORT

    def part_files(self, part: str) -> tuple[tuple[str, Path], ...]:
        """The part's files by sub-folder (``img_emb``, ``text_emb``, ``metadata``, ``labels``)."""
        return (("img_emb", self.img(part)), ("text_emb", self.txt(part)), ("metadata", self.meta(part)),
                ("labels", self.labels(part)))

    def parts(self) -> list[str]:
        """The parts present (``img_emb/img_emb_{part}.npy``), in natural order (2 before 10)."""
        return sorted((m.group(1) for p in self.img_dir.iterdir() if (m := _PART.match(p.name))), key=_natural)


def _natural(part: str):
    return (0, int(part), part) if part.isdigit() else (1, 0, part)
