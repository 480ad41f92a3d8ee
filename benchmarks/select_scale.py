"""Scale benchmark of `clipcov select` (ClipCov) on synthetic clustered embeddings.

Prints, on one machine in one script, for each data regime (``--regimes``; one regime's data on disk
at a time, deleted after its run unless ``--keep-data``):
  1. the floor: one sequential pass summing all embeddings from the .npy files (run twice; the second,
     with the page cache as clipcov's run then finds it, is the one compared);
  2. ClipCov end to end (`clipcov select`, a child process: reading, terms, greedy, writing) at
     --fraction, its wall time, the multiple of the floor, and the child's peak RSS;
  3. the reference algorithm of the authors' notebook (per-class n_k x n_k similarity matrices,
     re-scoring a class every 200 picks), re-implemented here, against ClipCov on --ref-n pairs, both
     given the same in-memory arrays; ClipCov with its default r (``--r-mode auto``: the mean
     identity at this size) and with exact thresholded r (the same O(n_k^2 d) products the reference
     computes), and how far apart the two selections are.

Regimes: ``norm1``, ``norm2``, ``norm3`` (rows = unit(centre + noise of that norm), Zipf 1.0), ``clip``
(CLIP-like: a shared mean direction, matched cosine ~0.3, unmatched in the class ~0.2, across classes
~0.1, some negative; see ``_synthetic._pairs_clip``), ``zipf0.8``, ``zipf1.2`` (noise norm 1). The first
regime's run starts with an empty numba cache (``NUMBA_CACHE_DIR`` a fresh folder: the first run after
``pip install``, compile time counted), then runs again with the cache it filled.

    python benchmarks/select_scale.py --n 2800000          # CC3M size, every regime, then the reference at 300k
    python benchmarks/select_scale.py --n 12000000 --regimes clip --skip-reference   # CC12M (~25 GB of disk)

Set CLIPCOV_SELECT_PROFILE=1 to see clipcov's phases (read, units, merge) and kernel counters.
"""

from __future__ import annotations

import argparse
import heapq
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import write_synthetic  # noqa: E402


def in_child(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh process. The data and the floor's passes run there so that this
    process stays small: Linux gives a child started by vfork + exec (``subprocess``) at least its
    parent's peak RSS as its own ``ru_maxrss``, which would inflate clipcov's peak RSS."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def floor_pass(root: Path) -> float:
    t0 = time.perf_counter()
    total = np.zeros(2, np.float64)
    for sub in ("img_emb", "text_emb"):
        for f in sorted((root / sub).glob("*.npy")):
            a = np.load(f, mmap_mode="r")
            for s in range(0, a.shape[0], 1 << 16):
                total[0] += np.asarray(a[s: s + (1 << 16)], np.float32).sum()
    return time.perf_counter() - t0


REGIMES = {  # name -> write_synthetic's keywords
    "norm1": {"noise": 1.0}, "norm2": {"noise": 2.0}, "norm3": {"noise": 3.0}, "clip": {"regime": "clip"},
    "zipf0.8": {"zipf": 0.8}, "zipf1.2": {"zipf": 1.2},
}


def goals(n: int) -> tuple[float, float, float]:
    """(seconds, multiple of the floor, peak RSS GB) goals: CC3M size (<= 2.8M) 45 s and 3x; CC12M size
    5 min and 8 GB (no floor multiple stated: inf)."""
    return (45.0, 3.0, float("inf")) if n <= 2_800_000 else (300.0, float("inf"), 8.0)


def clipcov_child(root: Path, fraction: str, out: Path, workers: int, engine: str = "local",
                  env: dict | None = None) -> tuple[float, float, list[str]]:
    """Wall seconds, peak RSS (GB) and phase lines of `clipcov select` in a child process."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "clipcov_cli", "select", str(root), "--budget", fraction, "--out", str(out),
           "--overwrite", "--threads", str(workers), "--engine", engine]
    # cwd: out's folder, never the repository: `python -m` puts the working directory first on sys.path, so
    # from a checkout the child would import that checkout's clipcov_cli whatever PYTHONPATH says
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=out.parent,
                         env=os.environ | {"CLIPCOV_SELECT_PROFILE": "1"} | (env or {}))
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
        np.maximum(M, 0, out=M)  # in place: the largest class needs two n_k x n_k matrices at once, not four
        S = M + M.T  # thresholded cross similarity, n_k x n_k
        del M
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


def reference_bytes(labels: np.ndarray, n: int, d: int = 512) -> int:
    """The reference's peak memory: the matrices of the classes built so far (in label order) plus a
    second copy of the one being built, and the float32 copies of both modalities."""
    mats = 4 * np.bincount(labels).astype(np.int64) ** 2
    return int((np.cumsum(mats) + mats).max() + 2 * 4 * n * d)


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def compare_reference(workdir: Path, n: int, fraction: float, workers: int, regime: str = "norm1",
                      keep_data: bool = False) -> None:
    from clipcov_cli.select.base import EmbeddingSet
    from clipcov_cli.select.methods import make_selector
    from clipcov_cli.select.reader import open_embeddings

    root = write_synthetic(workdir / f"ref_{regime}_{n}", n, part_rows=n, **REGIMES[regime])
    print(f"reference comparison, regime {regime}:")
    floor_pass(root)
    floor = floor_pass(root)
    wall, rss, _ = clipcov_child(root, f"{fraction:.0%}", workdir / f"subset_ref_{n}", workers)
    print(f"{n:,} pairs: floor {floor:.2f} s; clipcov select end to end {wall:.2f} s = {wall / floor:.1f}x the floor; "
          f"peak RSS {rss:.2f} GB")
    keep: list = []
    emb, _ = open_embeddings(root, keep)
    budget = int(fraction * n)
    need, avail = reference_bytes(np.asarray(emb.pseudo_label), n), mem_available()
    print(f"reference's matrices on {n:,} pairs: {need / 1e9:.1f} GB at its peak (every class's n_k x n_k "
          f"float32 matrix, the one being built twice, the data in float32); {avail / 1e9:.1f} GB available")
    if need > 0.9 * avail:
        raise SystemExit(f"the reference does not fit in memory at --ref-n {n:,}: choose a smaller size")
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
    if not keep_data:
        del emb, mem, V, T
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(workdir / f"subset_ref_{n}", ignore_errors=True)


def run_regime(args, name: str, cold: bool) -> list[tuple]:
    """One regime: its data, its floor, clipcov select (first with an empty numba cache if ``cold``).
    Returns table rows (regime, run, seconds, floor, ratio, RSS, load)."""
    t0 = time.perf_counter()
    root = in_child(write_synthetic, args.workdir / f"{name}_{args.n}", args.n, part_rows=args.part_rows, **REGIMES[name])
    print(f"[{name}] synthetic data: {args.n:,} pairs, d=512, 1000 classes, {-(-args.n // args.part_rows)} parts of up to "
          f"{args.part_rows:,} rows ({time.perf_counter() - t0:.0f} s to make or reuse)")
    first = in_child(floor_pass, root)
    floor = in_child(floor_pass, root)  # the page cache as clipcov's run finds it (the first pass may read from disk)
    print(f"[{name}] floor: one sequential pass summing all embeddings: {floor:.1f} s (first pass {first:.1f} s)")
    runs = []
    if cold:
        cache = Path(args.workdir) / "numba_cache_cold"
        shutil.rmtree(cache, ignore_errors=True)
        runs.append(("first run, empty numba cache", {"NUMBA_CACHE_DIR": str(cache)}))
    for rep in range(args.repeat):  # this code and the baseline alternate, so that neither always runs first
        suffix = f" #{rep + 1}" if args.repeat > 1 else ""
        pair = [("warm" + suffix, {})] + ([("baseline code" + suffix, baseline_env(args))] if args.baseline_code else [])
        runs += pair if rep % 2 == 0 else pair[::-1]
    out = []
    for label, env in runs:
        wall, rss, phases = clipcov_child(root, args.fraction, args.workdir / f"subset_{name}", args.workers, env=env)
        for line in phases:
            print(f"  [{name}, {label}] " + line)
        load = os.getloadavg()[0]
        print(f"[{name}, {label}] clipcov select --budget {args.fraction}: {wall:.1f} s = {wall / floor:.2f}x the floor; "
              f"peak RSS {rss:.2f} GB; load average {load:.1f}")
        out.append((name, label, wall, floor, wall / floor, rss, load))
    if not args.keep_data:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(args.workdir / f"subset_{name}", ignore_errors=True)
    return out


def check_code(cwd: Path, env: dict) -> str:
    """The clipcov_cli package a child started as `clipcov_child` starts it (same cwd, same environment)
    imports; stops if it is not the one ``env`` asks for (``PYTHONPATH``'s or this checkout's)."""
    want = Path(env["PYTHONPATH"]).resolve() if "PYTHONPATH" in env else Path(__file__).resolve().parents[1]
    ran = subprocess.run([sys.executable, "-c", "import clipcov_cli; print(clipcov_cli.__file__)"], cwd=cwd,
                         env=os.environ | env, capture_output=True, text=True, check=True).stdout.strip()
    if Path(ran).resolve().parents[1] != want:
        raise SystemExit(f"the child would import clipcov_cli from {ran}, expected it under {want}")
    return ran


def baseline_env(args) -> dict:
    """The child's environment to run the code in ``--baseline-code`` (e.g. an older revision's tree)."""
    return {"PYTHONPATH": str(Path(args.baseline_code).resolve())}


def print_table(rows: list[list[tuple]], args) -> None:
    sec, mult, gb = goals(args.n)
    print(f"\n{args.n:,} pairs at {args.fraction}; goals: <= {sec:.0f} s, <= {mult}x the floor, <= {gb} GB peak RSS")
    print("| regime | run | time (s) | floor (s) | ratio | peak RSS (GB) | load | goal met |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label, wall, floor, ratio, rss, load in (r for rr in rows for r in rr):
        met = wall <= sec and ratio <= mult and rss <= gb
        print(f"| {name} | {label} | {wall:.1f} | {floor:.1f} | {ratio:.2f}x | {rss:.2f} | {load:.1f} | {'yes' if met else 'no'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_800_000)
    ap.add_argument("--fraction", default="10%")
    ap.add_argument("--part-rows", type=int, default=1_000_000, help="rows per embeddings part (the scale runs)")
    ap.add_argument("--ref-n", type=int, default=300_000, help="pairs of the reference comparison (its matrices must "
                    "fit in memory: 300k needs about 14 GB)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "clipcov-bench" / "select_scale")
    ap.add_argument("--regimes", default=",".join(REGIMES), help=f"comma-separated, of {', '.join(REGIMES)}")
    ap.add_argument("--baseline-code", help="also run each regime with the clipcov_cli under this folder "
                    "(e.g. `git archive REV | tar -x -C DIR`): before/after in one run")
    ap.add_argument("--repeat", type=int, default=1, help="runs of this code (and of the baseline, alternating "
                    "which goes first) per regime")
    ap.add_argument("--skip-cold", action="store_true", help="no run with an empty numba cache")
    ap.add_argument("--keep-data", action="store_true", help="keep each regime's data (default: delete after its run)")
    ap.add_argument("--skip-scale", action="store_true", help="only the reference comparison")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--ref-regimes", default="norm1,clip", help="regimes of the reference comparison")
    args = ap.parse_args()
    import platform

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} at start; --workers {args.workers}")
    # small runs first, so that numba's on-disk caches of the compiled kernels are warm (this code's, the baseline's)
    warm = in_child(write_synthetic, args.workdir / "warmup_20000", 20_000)
    for env in [{}] + ([baseline_env(args)] if args.baseline_code else []):
        print(f"code: {check_code(args.workdir, env)}")
        clipcov_child(warm, "10%", args.workdir / "subset_warmup", args.workers, env=env)
    if not args.skip_scale:
        rows = [run_regime(args, name, cold=(i == 0 and not args.skip_cold)) for i, name in enumerate(args.regimes.split(","))]
        print_table(rows, args)
    if not args.skip_reference:
        for regime in args.ref_regimes.split(","):
            compare_reference(args.workdir, args.ref_n, float(args.fraction.rstrip("%")) / 100, args.workers, regime,
                              args.keep_data)


if __name__ == "__main__":
    main()
