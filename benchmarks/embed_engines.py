"""embed_engines: samples/s of `clipcov embed --engine local` against `--engine ray`, per Ray worker.

On the same img2dataset-layout shards (256 px JPEGs, made by embed_throughput.make_dataset) and the
same open_clip model with local random weights, it runs, in this process, one after the other:

- local: the local engine (decode worker processes + one model in the main process), with
  ``--workers 1 --threads 1`` (2 CPUs: the reference bytes) and with its defaults (all CPUs);
- ray xN: a fresh local Ray instance with N CPUs, `--engine ray --threads 1` (N workers, one shard
  per task, decode and model in the worker: one CPU each).

It reports the embedding phase's samples/s (``EmbedSummary.samples_per_s``: after the model and
class embeddings are ready, so start-up is left out; Ray's workers are started and have built
their model in a warm-up run on a few tiny shards first, as on a long job where start-up is
amortized) and the whole timed call's wall time, and checks that
every run wrote the same bytes as the local run with the same ``--threads``.

Usage: python benchmarks/embed_engines.py [--model clipcov-tiny --model ViT-B-32] [--workers 1 --workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from embed_throughput import make_dataset  # noqa: E402

SAMPLES = {"clipcov-tiny": 4096, "ViT-B-32": 96}


def checkpoint(model: str, folder: Path) -> Path:
    import open_clip
    import torch

    from clipcov_cli.models import register_model_config

    register_model_config()
    torch.manual_seed(0)
    path = folder / f"{model}-random.pt"
    torch.save(open_clip.create_model(model).state_dict(), path)
    return path


def folder_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def run(cfg, ray_cpus: int | None, warmup=None):
    import ray

    from clipcov_cli.embed import run_embed

    if ray_cpus:
        ray.init(num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
    try:
        if warmup is not None:  # start every Ray worker and build its model before the timed run
            run_embed(warmup)
        t0 = time.perf_counter()
        summary = run_embed(cfg)
        return summary, time.perf_counter() - t0
    finally:
        if ray_cpus:
            ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append")
    ap.add_argument("--workers", action="append", type=int, help="Ray CPUs (= workers) to try")
    ap.add_argument("--samples", type=int, action="append")
    ap.add_argument("--shards", type=int, default=8)
    args = ap.parse_args()
    models = args.model or ["clipcov-tiny", "ViT-B-32"]
    ray_workers = args.workers or [1, 2]
    from clipcov_cli.embed import EmbedConfig
    from clipcov_cli.embed.config import available_cpus

    cpus_here = available_cpus()

    root = Path(tempfile.mkdtemp(prefix="clipcov-engines-"))
    try:
        (root / "classes.txt").write_text("\n".join(f"class {i}" for i in range(20)) + "\n")
        (root / "templates.txt").write_text("a photo of a {}.\n")
        print("| model, samples | engine | CPUs | embedding samples/s | per CPU | wall s | same bytes as local --threads 1 |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for i, model in enumerate(models):
            n = (args.samples or [])[i] if args.samples and i < len(args.samples) else SAMPLES.get(model, 256)
            data = root / f"data-{model}"
            make_dataset(data, n, args.shards)
            ckpt = checkpoint(model, root)
            base = dict(dataset_dir=data, model=model, pretrained=str(ckpt), classes=str(root / "classes.txt"),
                        templates=str(root / "templates.txt"), batch_size=32, device="cpu")
            runs = [("local --threads 1", EmbedConfig(out_dir=root / f"{model}-ref", workers=1, threads=1, **base), None, 2),
                    ("local (defaults)", EmbedConfig(out_dir=root / f"{model}-local", **base), None, cpus_here)]
            runs += [(f"ray x{w}", EmbedConfig(out_dir=root / f"{model}-ray{w}", threads=1, engine="ray", **base), w, w)
                     for w in ray_workers]
            tiny = root / f"warm-{model}"
            make_dataset(tiny, 4 * max(ray_workers), 2 * max(ray_workers))
            ref = None
            for name, cfg, cpus, per in runs:
                warm = None
                if cpus:
                    warm = replace(cfg, dataset_dir=tiny, out_dir=root / f"warm-{model}-{cpus}", batch_size=2)
                summary, wall = run(cfg, cpus, warm)
                got = folder_bytes(cfg.out_dir)
                ref = ref or got
                same = "yes" if got == ref else f"no ({sum(got.get(k) != ref.get(k) for k in ref)} files differ)"
                print(f"| {model}, {n} | {name} | {per} | {summary.samples_per_s:.1f} | "
                      f"{summary.samples_per_s / per:.1f} | {wall:.1f} | {same} |", flush=True)
            ckpt.unlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
