"""Export throughput against the floor: a raw sequential read of the same source shards.

Makes --samples source samples (~10 KB random "jpg" + caption + json each, img2dataset layout with
parquet) in a temporary folder, selects --fraction of them at random (random rank order), and
times, on the same source shards:

- floor: a raw sequential read of every source .tar (1 MiB reads, bytes only);
- floor, per sample: a sequential read of every member through tarfile (what any tar reader does);
- clipcov export (the library, --workers): plan, extract, write, verify, manifest.

Each is timed twice: with the source files in the page cache (warm) and after evicting them from
it with posix_fadvise(DONTNEED) (cold: read from the disk, as a corpus larger than memory is). The
ratio is export's source MB/s (source bytes / export time) over the floor's MB/s (goal >= 0.5).

    python benchmarks/export_throughput.py --samples 20000 --fraction 0.3 --workers 2 --shard-size 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from clipcov_cli.export import ExportConfig, run_export


def make_source(root: Path, samples: int, per_shard: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    keys = []
    for shard, s in enumerate(range(0, samples, per_shard)):
        shard_keys = []
        with open(root / f"{shard:05d}.tar", "wb") as f:
            w = wds.TarWriter(f)
            for i in range(min(per_shard, samples - s)):
                key = f"{shard:05d}{i:04d}"
                w.write({"__key__": key, "jpg": rng.bytes(int(rng.integers(8000, 12000))),
                         "txt": f"caption {key}".encode(), "json": json.dumps({"key": key}).encode()})
                shard_keys.append(key)
            w.close()
        pq.write_table(pa.table({"key": shard_keys, "status": ["success"] * len(shard_keys)}),
                       root / f"{shard:05d}.parquet")
        keys += shard_keys
    return keys


def evict(root: Path) -> None:
    """Drop these files' pages from the page cache (only ours; needs no privilege)."""
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def raw_read(root: Path) -> float:
    t0 = time.perf_counter()
    buf = bytearray(1 << 20)
    for tar in sorted(root.glob("*.tar")):
        with open(tar, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - t0


def tar_read(root: Path) -> float:
    t0 = time.perf_counter()
    for tar in sorted(root.glob("*.tar")):
        with tarfile.open(tar, mode="r|") as tf:
            for m in tf:
                if m.isfile():
                    tf.extractfile(m).read()
    return time.perf_counter() - t0


def export_once(sub: Path, workers: int, shard_size: int) -> tuple[float, int, int, dict[str, float]]:
    """Seconds, samples, bytes written, and the seconds spent from each phase's start to the next's."""
    shutil.rmtree(sub / "shards", ignore_errors=True)
    starts: dict[str, float] = {}
    t0 = time.perf_counter()
    res = run_export(ExportConfig(subset_dir=sub, workers=workers, shard_size=shard_size),
                     lambda phase, done, total: starts.setdefault(phase, time.perf_counter()))
    end = time.perf_counter()
    marks = sorted(starts.items(), key=lambda kv: kv[1]) + [("end", end)]
    phases = {"read selection": marks[0][1] - t0}
    phases |= {name: marks[i + 1][1] - at for i, (name, at) in enumerate(marks[:-1])}
    return end - t0, res.samples, sum(e["bytes"] for e in res.shards), phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--per-shard", type=int, default=2000)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, sub = Path(tmp) / "src", Path(tmp) / "subset"
        src.mkdir()
        sub.mkdir()
        keys = make_source(src, args.samples, args.per_shard)
        rng = np.random.default_rng(1)
        chosen = rng.choice(keys, size=int(args.fraction * len(keys)), replace=False).tolist()
        pq.write_table(pa.table({"key": chosen, "rank": list(range(len(chosen)))}), sub / "selection.parquet")
        (sub / "manifest.json").write_text(json.dumps({"format_version": 1, "source": {"dataset_dir": str(src)}}))
        src_mb = sum(p.stat().st_size for p in src.glob("*.tar")) / 1e6
        n_shards = len(list(src.glob("*.tar")))
        print(f"source: {args.samples:,} samples, {src_mb:.0f} MB in {n_shards} shards; selected {len(chosen):,} "
              f"({args.fraction:.0%}) in random rank order; export --workers {args.workers}, --shard-size {args.shard_size}")
        print(f"{'cache':5} {'run':34} {'seconds':>8} {'samples/s':>10} {'src MB/s':>9} {'out MB/s':>9} {'ratio':>6}")
        for cache in ("warm", "cold"):
            timings = {}
            for name, fn in (("floor: raw sequential read", raw_read), ("floor: tarfile read of every member", tar_read)):
                if cache == "cold":
                    evict(src)
                else:
                    raw_read(src)  # make sure it is cached
                timings[name] = fn(src)
            if cache == "cold":
                evict(src)
            exp_s, n, out_bytes, phases = export_once(sub, args.workers, args.shard_size)
            floor = timings["floor: raw sequential read"]
            for name, sec in timings.items():
                print(f"{cache:5} {name:34} {sec:8.2f} {args.samples / sec:10,.0f} {src_mb / sec:9,.0f} {'':>9} "
                      f"{'':>6}")
            print(f"{cache:5} {'clipcov export (verified)':34} {exp_s:8.2f} {n / exp_s:10,.0f} {src_mb / exp_s:9,.0f} "
                  f"{out_bytes / 1e6 / exp_s:9,.0f} {floor / exp_s:6.2f}")
            tar_floor = timings["floor: tarfile read of every member"]
            print(f"{cache:5} export phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
            print(f"{cache:5} ratio vs raw read {floor / exp_s:.2f}, vs tarfile read {tar_floor / exp_s:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
