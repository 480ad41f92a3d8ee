"""embed_throughput: samples/s of `clipcov embed` against `clip-retrieval inference` and decode-only reading.

On the same img2dataset-layout shards (256 px JPEGs, like img2dataset's default) and the same open_clip
model with the same local random weights, this script times, as a user would see them (whole
command, process start to exit, best of --repeats, runs interleaved):

- `clipcov embed` (image + caption embeddings, pseudo-labels over a 20-class vocabulary, parquet metadata)
- `clip-retrieval inference` (image + caption embeddings, metadata), from its own virtual environment
- decode-only: clipcov's reader alone (tar streaming, JPEG decode, preprocess, tokenize) with the same
  workers and no model: the floor of what any embedder can do on this machine

clip-retrieval setup (its own venv; it pins numpy<2 and needs setuptools<81 to import):

    python -m venv --system-site-packages /tmp/cr-venv
    /tmp/cr-venv/bin/pip install clip-retrieval "setuptools<81"

It loads an open_clip model from a local file with `--clip_model open_clip:ARCH//abs/path.pt`
(all_clip splits the value at the first "/"). clipcov-tiny is not an open_clip built-in, so for that
model clip-retrieval's inference `main` is run through `fire` after `open_clip.add_model_config`,
exactly as its CLI does.

Usage: python benchmarks/embed_throughput.py [--model clipcov-tiny --model ViT-B-32] [--samples N ...]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CR_WRAPPER = """
import sys, fire, open_clip
open_clip.add_model_config(sys.argv[1])
from clip_retrieval.clip_inference.main import main
sys.argv = ["clip-retrieval inference"] + sys.argv[2:]
fire.Fire(main)
"""
CR_SAME_THREADS = "clip-retrieval, same threads"
DEFAULT_SAMPLES = {"clipcov-tiny": 2048, "ViT-B-32": 256}


def jpeg(rng: np.random.Generator, size: int = 256) -> bytes:
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    c = rng.uniform(0, 255, size=(3, 1, 1))
    arr = (c + 60 * np.sin(xx / rng.uniform(5, 40)) + 60 * np.cos(yy / rng.uniform(5, 40))).transpose(1, 2, 0)
    arr = np.clip(arr + rng.normal(0, 12, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_dataset(folder: Path, samples: int, shards: int) -> list[Path]:
    import webdataset as wds

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    per = -(-samples // shards)
    paths = []
    for s in range(shards):
        path = folder / f"{s:05d}.tar"
        n = min(per, samples - s * per)
        with wds.TarWriter(str(path)) as sink:
            for i in range(n):
                key = f"{s:05d}{i:04d}"
                caption = f"a photo of a thing number {i} in shard {s}, seen from the side"
                meta = {"url": f"http://127.0.0.1/{key}.jpg", "caption": caption, "key": key, "status": "success"}
                sink.write({"__key__": key, "jpg": jpeg(rng), "txt": caption, "json": json.dumps(meta).encode()})
        (folder / f"{s:05d}_stats.json").write_text(json.dumps({"successes": n}))
        paths.append(path)
    return paths


def save_weights(model: str, path: Path) -> Path:
    import open_clip
    import torch

    from clipcov_cli.models import register_model_config

    register_model_config()
    torch.manual_seed(0)
    torch.save(open_clip.create_model(model).state_dict(), path)
    return path


def timed(cmd: list[str], env: dict | None = None, log: Path | None = None) -> float:
    start = time.perf_counter()
    if log is not None:
        log.unlink(missing_ok=True)
    with open(log or os.devnull, "ab") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} ... exited {proc.returncode} (log: {log})")
    return wall


def clipcov_cmd(a, data: Path, out: Path, ckpt: Path, classes: Path, templates: Path) -> list[str]:
    return [sys.executable, "-m", "clipcov_cli", "embed", str(data), "--out", str(out), "--model", a.model_name,
            "--pretrained", str(ckpt), "--classes", str(classes), "--templates", str(templates),
            "--batch-size", str(a.batch_size), "--workers", str(a.workers), "--device", "cpu", "--overwrite"]


def cr_cmd(a, shards: list[Path], out: Path, ckpt: Path, cfg: Path | None) -> list[str]:
    per = -(-a.n // len(shards))
    pattern = str(shards[0].parent / f"{{00000..{len(shards) - 1:05d}}}.tar")
    args = ["--input_dataset", pattern, "--output_folder", str(out), "--input_format", "webdataset",
            "--enable_metadata", "True", "--batch_size", str(a.batch_size), "--num_prepro_workers", str(a.workers),
            "--clip_model", f"open_clip:{a.model_name}/{ckpt}", "--wds_number_file_per_input_file", str(per),
            "--enable_wandb", "False"]
    venv_bin = Path(a.cr_venv) / "bin"
    if cfg is None:
        return [str(venv_bin / "clip-retrieval"), "inference"] + args
    return [str(venv_bin / "python"), "-c", CR_WRAPPER, str(cfg)] + args


def clipcov_loop_seconds(log: Path) -> float:
    """The embedding loop's time from clipcov's summary ("speed  N samples/s (S s)"): after model load."""
    found = re.findall(r"samples/s \(([\d.]+) s\)", log.read_text())
    return float(found[-1])


def cr_loop_seconds(out: Path) -> float:
    """clip-retrieval's own read + inference + write time (stats/*.json total_duration): after model load and warmup."""
    return sum(json.loads(p.read_text())["total_duration"] for p in (out / "stats").glob("*.json"))


def decode_only(a, shards: list[Path], ckpt: Path) -> float:
    from clipcov_cli.embed.model import ModelSpec, load_model
    from clipcov_cli.embed.reader import load_batches

    loaded = load_model(ModelSpec(model=a.model_name, pretrained=str(ckpt), device="cpu"))
    start = time.perf_counter()
    n = sum(len(b.keys) for b in load_batches(shards, loaded.preprocess, loaded.tokenizer, a.batch_size, a.workers))
    wall = time.perf_counter() - start
    assert n == a.n, (n, a.n)
    return wall


def bench_model(a, work: Path) -> dict:
    from clipcov_cli.embed.config import model_threads
    from clipcov_cli.models import builtin_config_path

    root = work / a.model_name
    shards = make_dataset(root / "data", a.n, a.shards)
    ckpt = save_weights(a.model_name, root / "weights.pt")
    classes, templates = root / "classes.txt", root / "templates.txt"
    classes.write_text("\n".join(f"class {i}" for i in range(20)) + "\n")
    templates.write_text("a photo of a {}.\n")
    cfg = builtin_config_path(a.model_name) if builtin_config_path(a.model_name).exists() else None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    times: dict[str, list[tuple[float, float]]] = {"clipcov embed": [], "clip-retrieval inference": [], "decode only": []}
    cr_ok = Path(a.cr_venv, "bin", "python").exists()
    if cr_ok and a.cr_same_threads:
        times[CR_SAME_THREADS] = []
    for r in range(a.repeats):
        if cr_ok:
            shutil.rmtree(root / "cr_out", ignore_errors=True)
            wall = timed(cr_cmd(a, shards, root / "cr_out", ckpt, cfg), env, root / "clip-retrieval.log")
            times["clip-retrieval inference"].append((wall, cr_loop_seconds(root / "cr_out")))
        if CR_SAME_THREADS in times:
            shutil.rmtree(root / "cr_out", ignore_errors=True)
            same = {**env, "OMP_NUM_THREADS": str(model_threads(0, a.workers))}
            wall = timed(cr_cmd(a, shards, root / "cr_out", ckpt, cfg), same, root / "clip-retrieval.log")
            times[CR_SAME_THREADS].append((wall, cr_loop_seconds(root / "cr_out")))
        wall = timed(clipcov_cmd(a, root / "data", root / "emb", ckpt, classes, templates), env, root / "clipcov.log")
        times["clipcov embed"].append((wall, clipcov_loop_seconds(root / "clipcov.log")))
        wall = decode_only(a, shards, ckpt)
        times["decode only"].append((wall, wall))
        print(f"  [{a.model_name}] repeat {r + 1}: " + ", ".join(
            f"{k} {v[-1][0]:.1f}s (loop {v[-1][1]:.1f}s)" for k, v in times.items() if v), flush=True)
    check_outputs(a, root, cr_ok)
    return {k: (min(w for w, _ in v), min(s for _, s in v)) for k, v in times.items() if v}


def _rows_by_key(folder: Path, key_col: str) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    rows = {}
    for npy in sorted((folder / "img_emb").glob("img_emb_*.npy")):
        part = npy.stem[len("img_emb_"):]
        keys = pq.read_table(folder / "metadata" / f"metadata_{part}.parquet")[key_col].to_pylist()
        rows.update(zip(keys, np.load(npy).astype(np.float32)))
    return rows


def check_outputs(a, root: Path, cr_ok: bool) -> None:
    """Both tools embedded every sample with the same model: cosine of the two rows of each key."""
    ours = _rows_by_key(root / "emb", "key")
    assert len(ours) == a.n, (len(ours), a.n)
    if cr_ok:
        theirs = _rows_by_key(root / "cr_out", "image_path")
        assert set(theirs) == set(ours), (len(theirs), a.n)
        cos = [float(ours[k] @ theirs[k]) for k in ours]
        print(f"  [{a.model_name}] {len(ours)} rows each; cosine of clipcov's and clip-retrieval's image rows, "
              f"same key: min {min(cos):.4f}, mean {statistics.mean(cos):.4f}", flush=True)


def report(model: str, n: int, best: dict) -> list[str]:
    """Whole command (process start to exit) and loop only (after imports, model load, warmup)."""
    base = best.get("clip-retrieval inference")
    floor = best["decode only"][0]
    lines = [f"model {model}, {n} samples (256 px JPEG), best of runs; 'loop' excludes imports, model load and warmup:",
             f"  {'':26s} {'wall s':>7s} {'samples/s':>10s} {'vs c-r':>7s} {'loop s':>7s} {'loop/s':>8s} {'vs c-r':>7s}"
             f" {'decode-only/loop':>17s}"]
    for name, (wall, loop) in best.items():
        vs_wall = f"{base[0] / wall:.2f}x" if base else "n/a"
        vs_loop = f"{base[1] / loop:.2f}x" if base else "n/a"
        lines.append(f"  {name:26s} {wall:7.1f} {n / wall:10.1f} {vs_wall:>7s} {loop:7.1f} {n / loop:8.1f} {vs_loop:>7s}"
                     f" {floor / loop:16.2f}x")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", help="clipcov-tiny and/or ViT-B-32 (repeatable) [default: both]")
    p.add_argument("--samples", type=int, action="append", help="samples per model, in --model order")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cr-venv", default="/tmp/cr-venv")
    p.add_argument("--keep", type=Path, help="keep the work folder here")
    p.add_argument("--cr-same-threads", action="store_true",
                   help="also time clip-retrieval with OMP_NUM_THREADS set to clipcov's model thread count")
    args = p.parse_args()
    models = args.model or ["clipcov-tiny", "ViT-B-32"]
    samples = args.samples or [DEFAULT_SAMPLES.get(m, 256) for m in models]
    if not Path(args.cr_venv, "bin", "python").exists():
        print(f"clip-retrieval venv {args.cr_venv} not found: clip-retrieval is skipped (see the docstring to set it up)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="embed-bench-"))
    lines = [f"machine: {os.cpu_count()} CPUs, torch threads {__import__('torch').get_num_threads()}, "
             f"batch {args.batch_size}, {args.workers} decode workers, {args.shards} shards"]
    try:
        for model, n in zip(models, samples):
            a = argparse.Namespace(**vars(args), model_name=model, n=n)
            lines += report(model, n, bench_model(a, work))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
