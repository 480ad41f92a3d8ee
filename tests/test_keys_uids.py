"""Keys in: `export --keys FILE|-`, `pretrain --keys`; DataComp: `select --uids-out` / `export --uids`."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcov_cli.utils.uids import UID_DTYPE, read_uids
from tests.export_helpers import make_source, read_back
from tests.select_helpers import clustered, write_embeddings_folder


def uid_of(key: str) -> str:
    return hashlib.md5(key.encode()).hexdigest()  # 32 hex digits, like DataComp's uids


def with_uids(parquet) -> None:
    t = pq.read_table(parquet)
    pq.write_table(t.append_column("uid", pa.array([uid_of(k) for k in t.column("key").to_pylist()])), parquet)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "data"
    samples = make_source(root, shards=3, per=20)
    for p in root.glob("*.parquet"):
        with_uids(p)
    return root, samples


def test_export_keys_from_a_file_and_from_stdin(source, tmp_path, cli):
    data, samples = source
    keys = ["000020005", "000000003", "000010019", "000000000"]  # any order: exported in this order
    (tmp_path / "keys.txt").write_text("\n".join(keys) + "\n\n")
    r = cli("export", "--keys", tmp_path / "keys.txt", "--dataset", data, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    got = read_back(tmp_path / "a")
    assert [s["__key__"] for s in got] == keys
    assert all(s["txt"] == samples[s["__key__"]]["txt"] for s in got)
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["count"] == 4 and m["source"]["keys"] == str((tmp_path / "keys.txt").resolve()) and m["source"]["subset_dir"] is None
    r = cli("export", "--keys", "-", "--dataset", data, "--out", tmp_path / "b", input="\r\n".join(keys) + "\r\n")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "00000.tar").read_bytes() == (tmp_path / "a" / "00000.tar").read_bytes()
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["source"]["keys"] == "stdin"


def test_unknown_keys_are_an_error_listing_the_first_few(source, tmp_path, cli):
    data, _ = source
    keys = ["000000001"] + [f"nope{i}" for i in range(7)]
    r = cli("export", "--keys", "-", "--dataset", data, "--out", tmp_path / "o", input="\n".join(keys))
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "7 selected key(s) are not in" in line and "nope0, nope1, nope2, nope3, nope4 ..." in line
    assert "--allow-missing" in line and not (tmp_path / "o").exists()
    r = cli("export", "--keys", "-", "--dataset", data, "--out", tmp_path / "o", "--allow-missing",
                  input="\n".join(keys))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["count"] == 1 and m["missing"] == keys[1:]


def test_key_list_errors(source, tmp_path, cli):
    data, _ = source
    (tmp_path / "k.txt").write_text("000000001\n")
    for args, msg in [(("--keys", tmp_path / "k.txt", "--out", tmp_path / "o"), "needs --dataset DIR (the source shards) and --out DIR"),
                      (("--keys", tmp_path / "k.txt", "--dataset", data), "and --out DIR"),
                      (("--keys", tmp_path / "none.txt", "--dataset", data, "--out", tmp_path / "o"), "no such file"),
                      ((tmp_path, "--keys", tmp_path / "k.txt", "--dataset", data, "--out", tmp_path / "o"), "not both"),
                      ((), "nothing to export")]:
        r = cli("export", *args)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    (tmp_path / "dup.txt").write_text("000000001\n000000001\n")
    r = cli("export", "--keys", tmp_path / "dup.txt", "--dataset", data, "--out", tmp_path / "o")
    assert r.returncode == 2 and "more than once" in r.stderr
    r = cli("export", "--keys", "-", "--dataset", data, "--out", tmp_path / "o", input="\n \n")
    assert r.returncode == 2 and "lists no key" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def embeddings(source, tmp_path_factory):
    """Embeddings of the source's 60 samples; embed keeps the .json's scalar fields, so uid is in metadata/."""
    data, samples = source
    keys = np.array(sorted(samples))
    V, T, labels, Z = clustered(len(keys), 16, 3, seed=0, spread=1.0)
    sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    root = write_embeddings_folder(tmp_path_factory.mktemp("e") / "embeddings", V, T, keys, labels, sim, parts=2)
    for p in (root / "metadata").glob("*.parquet"):
        with_uids(p)
    return root


def test_uids_round_trip_in_datacomps_format(source, embeddings, tmp_path, cli):
    data, _ = source
    r = cli("select", embeddings, "-b", "25", "-o", tmp_path / "s", "--uids-out", tmp_path / "uids.npy", "--print-keys")
    assert r.returncode == 0, r.stderr
    selected = r.stdout.splitlines()
    arr = np.load(tmp_path / "uids.npy")
    assert arr.dtype == np.dtype("u8,u8") == UID_DTYPE and arr.dtype.names == ("f0", "f1") and arr.shape == (25,)
    # DataComp's resharder: divmod(int(uid, 16), 2**64) per sample, searchsorted into the (sorted) array
    expect = np.array([divmod(int(uid_of(k), 16), 2 ** 64) for k in selected], dtype=np.dtype("u8,u8"))
    assert arr.tolist() == sorted(expect.tolist())
    assert all(np.searchsorted(arr, e, "right") - np.searchsorted(arr, e, "left") == 1 for e in expect)
    # and back: export --uids gives the selected samples (in uid order)
    r = cli("export", "--uids", tmp_path / "uids.npy", "--dataset", data, "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    got = [s["__key__"] for s in read_back(tmp_path / "o")]
    assert sorted(got) == sorted(selected)
    assert got == sorted(selected, key=lambda k: int(uid_of(k), 16))
    # a headerless array (the resharder also memory-maps raw u8,u8 bytes) reads the same
    arr.tofile(tmp_path / "raw.bin")
    assert read_uids(tmp_path / "raw.bin").tolist() == arr.tolist()


def test_uids_errors(source, embeddings, tmp_path, cli):
    data, _ = source
    np.save(tmp_path / "bad.npy", np.arange(4, dtype=np.uint64))
    r = cli("export", "--uids", tmp_path / "bad.npy", "--dataset", data, "--out", tmp_path / "o")
    assert r.returncode == 2 and "expected a 1-d array of dtype 'u8,u8'" in r.stderr
    np.save(tmp_path / "other.npy", np.array([(1, 2), (3, 4)], dtype="u8,u8"))
    r = cli("export", "--uids", tmp_path / "other.npy", "--dataset", data, "--out", tmp_path / "o")
    assert r.returncode == 2 and "2 uid(s)" in r.stderr and "00000000000000010000000000000002" in r.stderr
    plain = tmp_path / "plain"
    make_source(plain, shards=1, per=5)  # no uid column
    r = cli("export", "--uids", tmp_path / "other.npy", "--dataset", plain, "--out", tmp_path / "o")
    assert r.returncode == 2 and "no 'uid' column" in r.stderr and "--extra-col uid" in r.stderr
    V, T, labels, Z = clustered(20, 8, 2, seed=1)
    no_uid = write_embeddings_folder(tmp_path / "e2", V, T, np.array([f"k{i}" for i in range(20)]), labels,
                                     np.zeros(20, np.float32), parts=1)
    r = cli("select", no_uid, "-b", "5", "-o", tmp_path / "s", "--uids-out", tmp_path / "u.npy")
    assert r.returncode == 2 and "no 'uid' column" in r.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "u.npy").exists()
