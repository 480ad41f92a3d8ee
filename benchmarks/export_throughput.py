"""Export throughput against the floor: a raw sequential read of the same source shards.

Makes --samples source samples (~10 KB each, img2dataset layout) in a temporary folder, selects
--fraction of them at random, and prints samples/s and MB/s of `clipcov export` (library, --workers)
and of a sequential read of every source tar member, with their ratio (goal >= 0.5).

    python benchmarks/export_throughput.py --samples 20000 --fraction 0.3 --workers 2
"""

from __future__ import annotations

import argparse
import json
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
    for s in range(0, samples, per_shard):
        shard = s // per_shard
        shard_keys = []
        with open(root / f"{shard:05d}.tar", "wb") as f:
            w = wds.TarWriter(f)
            for i in range(min(per_shard, samples - s)):
                key = f"{shard:05d}{i:04d}"
                w.write({"__key__": key, "jpg": rng.bytes(int(rng.integers(8000, 12000))),
                         "txt": f"caption {key}".encode(), "json": json.dumps({"key": key}).encode()})
                shard_keys.append(key)
            w.close()
        pq.write_table(pa.table({"key": shard_keys, "status": ["success"] * len(shard_keys)}), root / f"{shard:05d}.parquet")
        keys += shard_keys
    return keys


def raw_read(root: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    total = 0
    for tar in sorted(root.glob("*.tar")):
        with tarfile.open(tar, mode="r|*") as tf:
            for m in tf:
                if m.isfile():
                    total += len(tf.extractfile(m).read())
    return time.perf_counter() - t0, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--per-shard", type=int, default=2000)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, sub = Path(tmp) / "src", Path(tmp) / "subset"
        src.mkdir()
        sub.mkdir()
        keys = make_source(src, args.samples, args.per_shard)
        chosen = sorted(np.random.default_rng(1).choice(keys, size=int(args.fraction * len(keys)), replace=False).tolist())
        pq.write_table(pa.table({"key": chosen, "rank": list(range(len(chosen)))}), sub / "selection.parquet")
        (sub / "manifest.json").write_text(json.dumps({"source": {"dataset_dir": str(src)}}))
        floor_s, floor_bytes = raw_read(src)
        t0 = time.perf_counter()
        res = run_export(ExportConfig(subset_dir=sub, workers=args.workers, shard_size=10000))
        export_s = time.perf_counter() - t0
        out_bytes = sum((res.out_dir / e["shard"]).stat().st_size for e in res.shards)
        print(f"source: {args.samples} samples, {floor_bytes / 1e6:.0f} MB in {args.samples // args.per_shard} shards; "
              f"selected {len(chosen)} ({args.fraction:.0%})")
        print(f"floor (sequential read of every source member): {floor_s:.2f} s, {args.samples / floor_s:,.0f} samples/s, "
              f"{floor_bytes / 1e6 / floor_s:,.0f} MB/s")
        print(f"clipcov export (--workers {args.workers}, verified): {export_s:.2f} s, {len(chosen) / export_s:,.0f} "
              f"selected samples/s, {floor_bytes / 1e6 / export_s:,.0f} MB/s of source scanned, "
              f"{out_bytes / 1e6 / export_s:,.0f} MB/s written")
        print(f"ratio (source MB/s scanned by export / floor MB/s): {floor_s / export_s:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
