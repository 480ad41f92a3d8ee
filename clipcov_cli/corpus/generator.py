"""Generate the web-like corpus: a noisy web split (served over HTTP), a clean proxy split, a clean
class-balanced test split, and a ground-truth sidecar. Deterministic given the config.

Layout under ``out_dir`` (see docs/demo-corpus.md):
    web/images/{uid}.jpg, web/samples.parquet          noisy corpus, served by CorpusServer
    truth.parquet                                      uid, true_class, class_name, kind, dup_group
    proxy/{shard:05d}.tar (+ .parquet, _stats.json)    clean split for the proxy CLIP
    test/{shard:05d}.tar, test/classnames.txt, test/templates.txt, test/folder/{idx:03d}_{name}/
    corpus.json                                        config, counts, measured noise fractions
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clipcov_cli.corpus.captions import PROMPT_TEMPLATES, clean_caption, junk_caption, web_caption
from clipcov_cli.corpus.concepts import TEXTURES, all_concepts, draw_concept, draw_junk, perturb
from clipcov_cli.corpus.config import CorpusConfig
from clipcov_cli.corpus.noise import KINDS, kind_counts, plan_noise, zipf_probs
from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.atomic import atomic_path, write_json, write_text

WEB, PROXY, TEST = 0, 1, 2  # seed-sequence streams: disjoint seeds per split


@dataclass(frozen=True)
class CorpusLayout:
    root: Path
    class_names: tuple[str, ...]
    n_web: int
    n_proxy: int
    n_test: int

    @property
    def web_dir(self) -> Path:
        return self.root / "web"

    @property
    def samples_path(self) -> Path:
        return self.root / "web" / "samples.parquet"

    @property
    def truth_path(self) -> Path:
        return self.root / "truth.parquet"

    @property
    def proxy_dir(self) -> Path:
        return self.root / "proxy"

    @property
    def test_dir(self) -> Path:
        return self.root / "test"

    @property
    def classnames_path(self) -> Path:
        return self.root / "test" / "classnames.txt"

    @property
    def templates_path(self) -> Path:
        return self.root / "test" / "templates.txt"

    @property
    def corpus_json(self) -> Path:
        return self.root / "corpus.json"


def _rng(cfg: CorpusConfig, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([cfg.seed, stream])))


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _generate_web(cfg: CorpusConfig, root: Path, names: list[str]) -> dict:
    rng = _rng(cfg, WEB)
    concepts = all_concepts()[: cfg.n_classes]
    counts = kind_counts(cfg.n_web, cfg.mismatch_frac, cfg.duplicate_frac, cfg.junk_frac)
    plan = plan_noise(cfg.n_web, cfg.n_classes, zipf_probs(cfg.n_classes, cfg.zipf_exponent), counts,
                      cfg.max_group_size, rng)
    images: dict[int, Image.Image] = {}
    captions: list[str] = [""] * cfg.n_web
    order = [i for i in range(cfg.n_web) if plan.kind[i] != "duplicate"]
    order += [i for i in range(cfg.n_web) if plan.kind[i] == "duplicate"]  # originals drawn first
    for i in order:
        kind = plan.kind[i]
        texture = TEXTURES[int(rng.integers(0, len(TEXTURES)))]
        if kind == "junk":
            images[i], captions[i] = draw_junk(cfg.image_size, rng), junk_caption(rng)
            continue
        if kind == "duplicate":
            images[i] = perturb(images[int(plan.original[i])], rng)
        else:
            images[i] = draw_concept(concepts[int(plan.true_class[i])], texture, cfg.image_size, rng)
        captions[i] = web_caption(concepts[int(plan.caption_class[i])], texture, rng)
    uids = [f"w{i:06d}" for i in range(cfg.n_web)]
    img_dir = root / "web" / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for i, uid in enumerate(uids):
        (img_dir / f"{uid}.jpg").write_bytes(_jpeg(images[i], cfg.jpeg_quality))
    _write_parquet(root / "web" / "samples.parquet", pa.table({
        "uid": uids, "caption": captions, "path": [f"images/{u}.jpg" for u in uids]}))
    dup_group = np.where(plan.kind == "duplicate", plan.original, -1)
    dup_group = np.where(np.isin(np.arange(cfg.n_web), plan.original[plan.original >= 0]), np.arange(cfg.n_web), dup_group)
    _write_parquet(root / "truth.parquet", pa.table({
        "uid": uids,
        "true_class": plan.true_class.astype(np.int64),
        "class_name": [names[c] if c >= 0 else "" for c in plan.true_class],
        "kind": [str(k) for k in plan.kind],
        "dup_group": dup_group.astype(np.int64),
    }))
    return {k: int(np.count_nonzero(plan.kind == k)) for k in KINDS}


def _write_shards(cfg: CorpusConfig, out: Path, stream: int, prefix: str, with_cls: bool) -> list[tuple[str, int]]:
    """A clean class-balanced split as img2dataset-style WebDataset shards. Returns (uid, class)."""
    import webdataset as wds

    rng = _rng(cfg, stream)
    concepts = all_concepts()[: cfg.n_classes]
    per_class = cfg.n_test_per_class if with_cls else cfg.n_proxy_per_class
    classes = np.repeat(np.arange(cfg.n_classes), per_class)
    rng.shuffle(classes)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, int]] = []
    for shard_start in range(0, len(classes), cfg.shard_size):
        shard = shard_start // cfg.shard_size
        keys, caps, uids = [], [], []
        with atomic_path(out / f"{shard:05d}.tar") as tmp, open(tmp, "wb") as f:
            writer = wds.TarWriter(f, mtime=0.0)
            for j, c in enumerate(classes[shard_start: shard_start + cfg.shard_size]):
                texture = TEXTURES[int(rng.integers(0, len(TEXTURES)))]
                img = draw_concept(concepts[int(c)], texture, cfg.image_size, rng)
                key, uid, cap = f"{shard:05d}{j:04d}", f"{prefix}{shard_start + j:06d}", clean_caption(concepts[int(c)], texture)
                sample = {"__key__": key, "jpg": _jpeg(img, cfg.jpeg_quality), "txt": cap.encode(),
                          "json": json.dumps({"key": key, "uid": uid, "caption": cap, "true_class": int(c),
                                              "status": "success"}, sort_keys=True).encode()}
                if with_cls:
                    sample["cls"] = str(int(c)).encode()
                writer.write(sample)
                keys.append(key), caps.append(cap), uids.append(uid), rows.append((uid, int(c)))
            writer.close()
        _write_parquet(out / f"{shard:05d}.parquet", pa.table({
            "key": keys, "caption": caps, "uid": uids, "status": ["success"] * len(keys)}))
        write_json(out / f"{shard:05d}_stats.json", {"count": len(keys), "successes": len(keys), "failed_to_download": 0,
                                                      "failed_to_resize": 0, "status_dict": {"success": len(keys)}})
    return rows


def _write_test_folder(test_dir: Path, names: list[str]) -> None:
    """An ImageNet-style class-subfolder copy of the test split."""
    import webdataset as wds

    folder = test_dir / "folder"
    for tar in sorted(test_dir.glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            c = int(sample["cls"].decode())
            d = folder / f"{c:03d}_{names[c].replace(' ', '_')}"
            d.mkdir(parents=True, exist_ok=True)
            uid = json.loads(sample["json"])["uid"]
            (d / f"{uid}.jpg").write_bytes(sample["jpg"])


def generate_corpus(out_dir: str | Path, cfg: CorpusConfig = CorpusConfig()) -> CorpusLayout:
    """Write the whole corpus under ``out_dir`` (which must be absent or empty)."""
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise ClipcovError(f"{root} is not empty: choose a new folder for the corpus")
    names = [c.name for c in all_concepts()[: cfg.n_classes]]
    counts = _generate_web(cfg, root, names)
    proxy = _write_shards(cfg, root / "proxy", PROXY, "p", with_cls=False)
    test = _write_shards(cfg, root / "test", TEST, "t", with_cls=True)
    write_text(root / "test" / "classnames.txt", "\n".join(names) + "\n")
    write_text(root / "test" / "templates.txt", "\n".join(PROMPT_TEMPLATES) + "\n")
    _write_test_folder(root / "test", names)
    write_json(root / "corpus.json", {
        "format_version": 1,
        "config": cfg.to_dict(),
        "class_names": names,
        "counts": {"web": cfg.n_web, "proxy": len(proxy), "test": len(test), **counts},
        "noise_fractions": {k: counts[k] / cfg.n_web for k in KINDS},
    })
    return CorpusLayout(root=root, class_names=tuple(names), n_web=cfg.n_web, n_proxy=len(proxy), n_test=len(test))


def load_layout(root: str | Path) -> CorpusLayout:
    """Re-open a generated corpus from its ``corpus.json``."""
    root = Path(root)
    try:
        meta = json.loads((root / "corpus.json").read_text())
    except (OSError, ValueError):
        raise ClipcovError(f"{root} holds no generated corpus (corpus.json missing or unreadable)") from None
    c = meta["counts"]
    return CorpusLayout(root=root, class_names=tuple(meta["class_names"]), n_web=c["web"], n_proxy=c["proxy"], n_test=c["test"])


def write_url_list(layout: CorpusLayout, base_url: str, path: str | Path, fmt: str = "parquet") -> Path:
    """The URL list for ``clipcov download``: columns url, caption, uid (with a header row)."""
    table = pq.read_table(layout.samples_path)
    urls = [f"{base_url.rstrip('/')}/{p}" for p in table.column("path").to_pylist()]
    out = pa.table({"url": urls, "caption": table.column("caption"), "uid": table.column("uid")})
    path = Path(path)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            pq.write_table(out, tmp)
        elif fmt in ("tsv", "csv"):
            out.to_pandas().to_csv(tmp, sep="\t" if fmt == "tsv" else ",", index=False)
        else:
            raise ClipcovError(f"unknown URL list format {fmt!r}: use tsv, csv or parquet")
    return path
