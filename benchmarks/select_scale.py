"""Scale benchmark of `clipcov select` (ClipCov) on synthetic clustered embeddings.

Prints, on one machine in one script:
  1. the floor: one sequential pass summing all embeddings from the .npy files (run twice; the second,
     with the page cache as clipcov's run then finds it, is the one compared);
  2. ClipCov end to end (`clipcov select`, a child process: reading, terms, greedy, writing) at
     --fraction, its wall time, the multiple of the floor, and the child's peak RSS;
  3. the reference algorithm of the authors' notebook (per-class n_k x n_k similarity matrices,
     re-scoring a class every 200 picks), re-implemented here, against ClipCov on --ref-n pairs, both
     given the same in-memory arrays; ClipCov with its default r (``--r-mode auto``: the mean
     identity at this size) and with exact thresholded r (the same O(n_k^2 d) products the reference
     computes), and how far apart the two selections are.

    python benchmarks/select_scale.py --n 2800000          # CC3M size
    python benchmarks/select_scale.py --n 12000000         # CC12M size (needs ~25 GB of disk)

Set CLIPCOV_SELECT_PROFILE=1 to see clipcov's phases (read, units, merge) and kernel counters.
"""

from __future__ import annotations

import argparse
import heapq
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import write_synthetic  # noqa: E402


def floor_pass(root: Path) -> float:
    t0 = time.perf_counter()
    total = np.zeros(2, np.float64)
    for sub in ("img_emb", "text_emb"):
        for f in sorted((root / sub).glob("*.npy")):
            a = np.load(f, mmap_mode="r")
            for s in range(0, a.shape[0], 1 << 16):
                total[0] += np.asarray(a[s: s + (1 << 16)], np.float32).sum()
    return time.perf_counter() - t0


def clipcov_child(root: Path, fraction: str, out: Path, workers: int, engine: str = "local") -> tuple[float, float, list[str]]:
    """Wall seconds, peak RSS (GB) and phase lines of `clipcov select` in a child process."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "clipcov_cli", "select", str(root), "--budget", fraction, "--out", str(out),
           "--overwrite", "--threads", str(workers), "--engine", engine]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=os.environ | {"CLIPCOV_SELECT_PROFILE": "1"})
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)  # this child's own resource usage
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"clipcov select failed:\n{err[-3000:]}")
    peak = usage.ru_maxrss / 1e6  # KB -> GB
    return wall, peak, [line for line in err.splitlines() if line.startswith("[clipcov select]")]


def reference_notebook(V, T, labels, label_sim, budget, alpha=2.0, beta=0.5, gamma=1.0, every=200) -> np.ndarray:
    """The authors' approximation: per-class similarity matrices in memory (the notebook kept them on
    disk), gains of a class re-scored only after every ``every`` picks in that class."""
    n, d = V.shape
    V32, T32 = V.astype(np.float32), T.astype(np.float32)
    sum_v, sum_t = V32.sum(0, dtype=np.float64), T32.sum(0, dtype=np.float64)
    classes = {}
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        Vk, Tk = V32[idx], T32[idx]
        M = Vk @ Tk.T
        S = np.maximum(M, 0) + np.maximum(M, 0).T  # thresholded cross similarity, n_k x n_k
        r = S.sum(0) / len(idx)
        e = np.einsum("ij,ij->i", Vk, Tk)
        out = max(n - len(idx), 1)
        c = Vk @ ((sum_t - Tk.sum(0)) / out) + Tk @ ((sum_v - Vk.sum(0)) / out)
        a = r + alpha * e + beta * label_sim[idx] - gamma * c
        classes[int(k)] = {"idx": idx, "S": S, "a": a, "gain": a.copy(), "taken": np.zeros(len(idx), bool), "since": 0, "sel": []}
    heap = [(-cl["gain"].max(), k) for k, cl in classes.items()]
    heapq.heapify(heap)
    picks = []
    while len(picks) < budget and heap:
        _, k = heapq.heappop(heap)
        cl = classes[k]
        j = int(np.argmax(np.where(cl["taken"], -np.inf, cl["gain"])))
        cl["taken"][j] = True
        cl["sel"].append(j)
        picks.append(cl["idx"][j])
        cl["since"] += 1
        if cl["since"] >= every:  # re-score the class
            cl["gain"] = cl["a"] - cl["S"][:, cl["sel"]].sum(1) / len(cl["idx"])
            cl["since"] = 0
        if not cl["taken"].all():
            heapq.heappush(heap, (-np.where(cl["taken"], -np.inf, cl["gain"]).max(), k))
    return np.array(picks)


def compare_reference(workdir: Path, n: int, fraction: float, workers: int) -> None:
    from clipcov_cli.select.base import EmbeddingSet
    from clipcov_cli.select.methods import make_selector
    from clipcov_cli.select.reader import open_embeddings

    root = write_synthetic(workdir / f"ref_{n}", n, part_rows=n)
    floor_pass(root)
    floor = floor_pass(root)
    wall, rss, _ = clipcov_child(root, f"{fraction:.0%}", workdir / f"subset_ref_{n}", workers)
    print(f"{n:,} pairs: floor {floor:.2f} s; clipcov select end to end {wall:.2f} s = {wall / floor:.1f}x the floor; "
          f"peak RSS {rss:.2f} GB")
    keep: list = []
    emb, _ = open_embeddings(root, keep)
    budget = int(fraction * n)
    V, T = np.asarray(emb.img), np.asarray(emb.txt)
    mem = EmbeddingSet(img=V, txt=T, keys=emb.keys, valid=emb.valid, pseudo_label=emb.pseudo_label,
                       label_sim=emb.label_sim, num_classes=emb.num_classes)
    make_selector("clipcov", workers=workers).select(mem, 100)  # load the compiled kernels once
    t0 = time.perf_counter()
    reference_notebook(V, T, np.asarray(emb.pseudo_label), np.asarray(emb.label_sim), budget)
    ref = time.perf_counter() - t0
    runs = {}
    for r_mode in ("auto", "exact"):
        sel = make_selector("clipcov", r_mode=r_mode, workers=workers)
        t0 = time.perf_counter()
        res = sel.select(mem, budget)
        runs[r_mode] = (res, time.perf_counter() - t0, "; ".join(res.notes))
    print(f"reference (notebook algorithm, approximate) on {n:,} pairs at {fraction:.0%}: {ref:.2f} s")
    for r_mode, (res, t, note) in runs.items():
        print(f"clipcov (exact greedy), --r-mode {r_mode} ({note}): {t:.2f} s -> speed-up {ref / t:.1f}x (goal >= 50x)")
    a, b = runs["auto"][0], runs["exact"][0]
    same = len(np.intersect1d(a.indices, b.indices))
    print(f"mean-identity r vs exact thresholded r: max |r difference| {np.nanmax(np.abs(a.all_scores - b.all_scores)):.2e}; "
          f"{same / budget:.2%} of the selected rows in common")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_800_000)
    ap.add_argument("--fraction", default="10%")
    ap.add_argument("--ref-n", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "clipcov-bench" / "select_scale")
    ap.add_argument("--skip-scale", action="store_true", help="only the reference comparison")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    import platform

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} at start; --workers {args.workers}")
    # one small run first, so that numba's on-disk cache of the compiled kernels is warm
    clipcov_child(write_synthetic(args.workdir / "warmup_20000", 20_000), "10%", args.workdir / "subset_warmup", args.workers)
    if not args.skip_scale:
        t0 = time.perf_counter()
        root = write_synthetic(args.workdir / f"n_{args.n}", args.n)
        print(f"synthetic data: {args.n:,} pairs, d=512, 1000 Zipf classes ({time.perf_counter() - t0:.0f} s to make or reuse)")
        first = floor_pass(root)
        floor = floor_pass(root)  # the page cache as clipcov's run finds it (the first pass may read from disk)
        print(f"floor: one sequential pass summing all embeddings: {floor:.1f} s (first pass {first:.1f} s)")
        wall, rss, phases = clipcov_child(root, args.fraction, args.workdir / f"subset_{args.n}", args.workers)
        for line in phases:
            print("  " + line)
        print(f"clipcov select --budget {args.fraction} end to end: {wall:.1f} s = {wall / floor:.1f}x the floor "
              f"(goal <= 3x); peak RSS {rss:.2f} GB; load average {os.getloadavg()[0]:.1f} at the end")
    if not args.skip_reference:
        compare_reference(args.workdir, args.ref_n, float(args.fraction.rstrip("%")) / 100, args.workers)


if __name__ == "__main__":
    main()
