"""`clipcov select` end to end on embeddings folders written in contract 2's layout."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.select_helpers import clustered, write_embeddings_folder

METHODS = ["clipcov", "random", "clip-score", "semdedup", "negclip-loss"]


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    V, T, labels, Z = clustered(400, 16, 5, seed=0, spread=1.0)
    keys = np.array([f"{i:09d}" for i in range(400)])
    sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    return write_embeddings_folder(tmp_path_factory.mktemp("e") / "embeddings", V, T, keys, labels, sim, parts=3)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_writes_contract_3(cli, emb_dir, tmp_path, method):
    r = cli("select", emb_dir, "--budget", "10%", "--method", method, "--out", tmp_path / "s", "--print-keys")
    assert r.returncode == 0, r.stderr
    keys = r.stdout.splitlines()
    assert len(keys) == 40 == len(set(keys))
    t = pq.read_table(tmp_path / "s" / "selection.parquet").to_pandas()
    assert t["key"].tolist() == keys and t["rank"].tolist() == list(range(40))
    assert {"key", "rank", "gain", "pseudo_label"} <= set(t.columns)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["method"] == method and m["budget"] == {"asked": "10%", "met": 40}
    assert m["source"]["embeddings_dir"] == str(emb_dir.resolve()) and len(m["source"]["fingerprint"]) == 64
    assert sum(m["class_histogram"]["after"].values()) == 40 and sum(m["class_histogram"]["before"].values()) == 400
    assert m["format_version"] == 1 and m["tool_version"] and m["wall_time_s"] >= 0
    if method == "clipcov":
        assert {"r", "e", "l", "c", "a", "class"} <= set(t.columns)
        assert m["params"] == {"alpha": 2.0, "beta": 0.5, "gamma": 1.0, "tau": 0.0, "r_mode": "auto"}
        assert (np.diff(t["gain"]) <= 0).all()  # tau >= 0: gains only fall


def test_dataset_folder_input_and_count_budgets(cli, emb_dir, tmp_path):
    r = cli("select", emb_dir.parent, "--budget", "25", "--method", "random", "--out", tmp_path / "s", "--print-keys")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 25
    r = cli("select", emb_dir, "--budget", "10%", "--dry-run")
    assert r.returncode == 0 and r.stdout == "" and "40" in r.stderr and "class" in r.stderr


@pytest.mark.parametrize("args,msg", [
    (["--budget", "401"], "larger than the corpus"),
    (["--budget", "0"], "must be positive"),
    (["--budget", "ten"], "cannot read budget"),
    (["--budget", "10%", "--method", "magic"], "unknown --method 'magic'"),
    (["--budget", "10%", "--engine", "spark"], "unknown --engine"),
])
def test_bad_arguments(cli, emb_dir, tmp_path, args, msg):
    r = cli("select", emb_dir, "--out", tmp_path / "s", *args)
    assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


@pytest.mark.parametrize("method,args,flags", [
    ("clipcov", ["--clusters", "5"], "--clusters"),
    ("random", ["--alpha", "1", "--batch-size", "8"], "--alpha, --batch-size"),
    ("semdedup", ["--temperature", "0.1"], "--temperature"),
])
def test_another_methods_options_are_refused(cli, emb_dir, tmp_path, method, args, flags):
    """A method validates its own options: another method's are a one-line error, not silently dropped."""
    r = cli("select", emb_dir, "--out", tmp_path / "s", "--budget", "10%", "--method", method, *args)
    assert r.returncode == 2 and f"error: {flags}: not an option of --method {method}" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_a_methods_own_options_and_defaults_are_accepted(cli, emb_dir, tmp_path):
    r = cli("select", emb_dir, "--out", tmp_path / "s", "--budget", "10%", "--method", "negclip-loss",
                "--batch-size", "64", "--seed", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["params"]["batch"] == 64


def test_a_baseline_imports_neither_numba_nor_the_clipcov_kernel(emb_dir, tmp_path):
    """Methods load lazily by name: `select --method random` runs without ClipCov's module, its
    compiled kernel (numba) or scipy."""
    code = ("import sys\nfrom clipcov_cli.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nprint(sorted(m for m in ('numba', 'scipy', 'clipcov_cli.select.methods.clipcov',"
            " 'clipcov_cli.select.clipcov.lazy_kernel') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, "select", str(emb_dir), "--budget", "10%", "--method", "random",
                        "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
    assert (tmp_path / "s" / "selection.parquet").exists()


def test_the_method_choices_are_the_registrys_and_list_without_loading_a_method():
    """`--method`'s choices come from the registry itself; reading them (as --help does) imports no
    method module and not numpy."""
    code = ("import sys\nfrom clipcov_cli.commands import options\nfrom clipcov_cli.select import methods\n"
            "print(options.METHODS == tuple(methods.METHODS), sorted(m for m in sys.modules if m == 'numpy' or "
            "m.startswith('clipcov_cli.select.') and m != 'clipcov_cli.select.methods'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "[]"], r.stdout


def _folder(tmp_path, n=50, **kw):
    V, T, labels, Z = clustered(n, 8, 3, seed=1, spread=1.0)
    keys = np.array([f"{i:09d}" for i in range(n)])
    sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    return V, T, keys, labels, sim


def test_mismatched_rows_duplicate_keys_missing_labels(cli, tmp_path):
    V, T, keys, labels, sim = _folder(tmp_path)
    bad = write_embeddings_folder(tmp_path / "rows", V, T, keys, labels, sim, parts=2)
    np.save(bad / "text_emb" / "text_emb_00001.npy", T[25:49])
    r = cli("select", bad, "--budget", "5", "--out", tmp_path / "o")
    assert r.returncode == 2 and "row counts differ" in r.stderr and not (tmp_path / "o").exists()
    dup = write_embeddings_folder(tmp_path / "dup", V, T, np.array(["k"] * 50), labels, sim)
    r = cli("select", dup, "--budget", "5", "--out", tmp_path / "o")
    assert r.returncode == 2 and "duplicate keys" in r.stderr
    cr = write_embeddings_folder(tmp_path / "cr", V, T, keys, parts=1, meta=False)  # clip-retrieval layout
    r = cli("select", cr, "--budget", "5", "--out", tmp_path / "o")
    assert r.returncode == 2 and "clipcov embed --relabel" in r.stderr
    r = cli("select", cr, "--budget", "5", "--method", "clip-score", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr


def test_nan_and_zero_rows_are_excluded_and_counted(cli, tmp_path):
    V, T, keys, labels, sim = _folder(tmp_path)
    V = V.copy()
    V[3] = np.nan
    T[7] = 0
    d = write_embeddings_folder(tmp_path / "e", V, T, keys, labels, sim)
    r = cli("select", d, "--budget", "48", "--out", tmp_path / "o", "--print-keys")
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == set(keys) - {keys[3], keys[7]}
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["excluded"] == {"nan": 1, "zero_norm": 1, "off_norm": 0}
    r = cli("select", d, "--budget", "49", "--out", tmp_path / "o2")
    assert r.returncode == 2 and "larger than the corpus" in r.stderr


def test_existing_out_needs_overwrite(cli, emb_dir, tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("x")
    r = cli("select", emb_dir, "--budget", "5", "--out", tmp_path / "s")
    assert r.returncode == 2 and "--overwrite" in r.stderr and (tmp_path / "s" / "keep.txt").exists()
    r = cli("select", emb_dir, "--budget", "5", "--out", tmp_path / "s", "--overwrite")
    assert r.returncode == 2 and "--overwrite refused" in r.stderr  # not select's folder: never deleted
    assert (tmp_path / "s" / "keep.txt").exists() and not (tmp_path / "s" / "selection.parquet").exists()
    (tmp_path / "s" / "keep.txt").unlink()
    assert cli("select", emb_dir, "--budget", "5", "--out", tmp_path / "s", "--overwrite").returncode == 0
    r = cli("select", emb_dir, "--budget", "6", "--out", tmp_path / "s", "--overwrite")
    assert r.returncode == 0 and json.loads((tmp_path / "s" / "manifest.json").read_text())["budget"]["met"] == 6


@pytest.mark.parametrize("patch,msg", [
    # the free-space check before the class-major copy (forced here: the corpus counts as larger than memory)
    ("import collections, clipcov_cli.utils.disk as d; "
     "d.shutil = type('S', (), {'disk_usage': staticmethod(lambda p: collections.namedtuple('U', 'total used free')(1, 1, 1000))})",
     "not enough disk space for the class-major copy"),
    # the disk filling up while the copy is written
    ("import errno, os; from clipcov_cli.select.clipcov import scan as s; "
     "s.os = type('O', (), {**{k: getattr(os, k) for k in dir(os) if not k.startswith('__')}, "
     "'pwrite': staticmethod(lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, 'No space left on device')))})",
     "the disk filled up while writing the class-major copy"),
])
def test_a_full_disk_is_a_one_line_error(emb_dir, tmp_path, patch, msg):
    code = ("import sys; from clipcov_cli.select.clipcov import scan; scan.GROUP_WHEN_OVER = 0.0; " + patch + "; "
            "from clipcov_cli.cli import main; sys.argv = ['clipcov'] + sys.argv[1:]; main()")
    r = subprocess.run([sys.executable, "-c", code, "select", str(emb_dir), "--budget", "20", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("clipcov-select-*"))


def _select_with_copy(emb_dir, tmp_path, out, patch: str = "") -> subprocess.CompletedProcess:
    """`clipcov select` (the executable's entry) with the class-major copy forced, TMPDIR=tmp_path."""
    code = ("import sys; from clipcov_cli.select.clipcov import scan; scan.GROUP_WHEN_OVER = 0.0; " + patch +
            "from clipcov_cli.cli import entry; sys.argv = ['clipcov'] + sys.argv[1:]; entry()")
    return subprocess.run([sys.executable, "-c", code, "select", str(emb_dir), "--budget", "10%", "--out", str(out),
                           "--print-keys"], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "TMPDIR": str(tmp_path), "CLIPCOV_SELECT_PROFILE": "1"})


def test_the_class_major_copy_is_removed_while_the_output_is_written(cli, emb_dir, tmp_path):
    plain = cli("select", emb_dir, "--budget", "10%", "--out", tmp_path / "plain", "--print-keys")
    # the copy must still be there when the method returns, and gone once the command ends
    seen = tmp_path / "seen.txt"
    patch = ("import glob, os; from clipcov_cli.select.methods import clipcov as m; _s = m.ClipCovSelector.select; "
             f"m.ClipCovSelector.select = lambda self, *a, **k: (_s(self, *a, **k), open({str(seen)!r}, 'w').write("
             f"str(len(glob.glob(os.path.join({str(tmp_path)!r}, 'clipcov-select-*', 'grouped.u16'))))))[0]; ")
    r = _select_with_copy(emb_dir, tmp_path, tmp_path / "copied", patch)
    assert r.returncode == 0 and plain.returncode == 0, r.stderr + plain.stderr
    assert seen.read_text() == "1"
    assert r.stdout == plain.stdout and len(r.stdout.splitlines()) == 40
    assert "temporary files and maps dropped" in r.stderr
    assert not list(tmp_path.glob("clipcov-select-*"))


def test_the_copy_is_removed_when_writing_the_output_fails(emb_dir, tmp_path):
    patch = ("from clipcov_cli.select import runner; from clipcov_cli.errors import ClipcovError; "
             "runner.write_subset = lambda *a: (_ for _ in ()).throw(ClipcovError('cannot write the output')); ")
    r = _select_with_copy(emb_dir, tmp_path, tmp_path / "o", patch)
    assert r.returncode == 2 and "cannot write the output" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("clipcov-select-*"))


@pytest.fixture(scope="module")
def many_parts(tmp_path_factory):
    V, T, labels, Z = clustered(600, 16, 5, seed=2, spread=1.0)
    keys = np.array([f"{i:09d}" for i in range(600)])
    sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    return write_embeddings_folder(tmp_path_factory.mktemp("m") / "embeddings", V.astype(np.float16),
                                   T.astype(np.float16), keys, labels, sim, parts=60)


def _with_open_files(soft: int, hard: int):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("method", ["clipcov", "random"])
def test_many_parts_raise_the_open_file_limit(cli, many_parts, tmp_path, method):
    # 60 parts, each memory-mapped (twice for ClipCov's pass): more than a soft limit of 100 allows
    r = subprocess.run(cli.argv("select", many_parts, "--budget", "10%", "--method", method, "--out", tmp_path / "o",
                                "--print-keys"),
                       capture_output=True, text=True, timeout=300, preexec_fn=_with_open_files(100, 4096))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 60


def test_a_hard_open_file_limit_too_low_is_a_one_line_error(cli, many_parts, tmp_path):
    r = subprocess.run(cli.argv("select", many_parts, "--budget", "10%", "--out", tmp_path / "o"),
                       capture_output=True, text=True, timeout=300,
                       preexec_fn=_with_open_files(100, 100))
    assert r.returncode == 2 and "open files" in r.stderr and "ulimit -n" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
