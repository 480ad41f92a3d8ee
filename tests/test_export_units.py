"""The pure pieces of export, each against a reference: the fast tar scanner against Python's
tarfile on every header format, the record codec, the key rules."""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import pytest

from clipcov_cli.export.keys import fingerprint, is_safe_key, split_member
from clipcov_cli.export.records import decode_record, encode_record
from clipcov_cli.export.tarscan import TarScanError, scan


def _tar(path, fmt, names, mtime=1.5e9):
    rng = np.random.default_rng(0)
    truth = []
    with tarfile.open(path, "w", format=fmt) as tf:
        d = tarfile.TarInfo("somedir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for i, name in enumerate(names):
            data = rng.bytes(int(rng.integers(0, 3000)))
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime + i * 0.25
            tf.addfile(info, io.BytesIO(data))
            truth.append((name, data))
        link = tarfile.TarInfo("alink")
        link.type, link.linkname = tarfile.SYMTYPE, names[0]
        tf.addfile(link)
    return truth


NAMES = ["000001.jpg", "000001.txt", "dir/000002.json", "k" * 150 + ".jpg", "ключ.txt", "a/" * 60 + "b.cls", "000003.jpg"]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_scan_reads_what_tarfile_reads(tmp_path, fmt):
    names = NAMES if fmt != tarfile.USTAR_FORMAT else [n for n in NAMES if len(n.encode()) <= 100]
    path = tmp_path / "x.tar"
    truth = _tar(path, fmt, names)
    with tarfile.open(path) as tf:
        assert [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()] == truth  # the reference agrees
    assert list(scan(path, lambda n: True)) == truth
    wanted = {names[1], names[3 % len(names)]}
    assert list(scan(path, wanted.__contains__)) == [(n, d if n in wanted else None) for n, d in truth]


def test_scan_of_a_compressed_tar_falls_back_to_tarfile(tmp_path):
    plain = tmp_path / "x.tar"
    truth = _tar(plain, tarfile.PAX_FORMAT, NAMES)
    gz = tmp_path / "x.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(scan(gz, lambda n: True)) == truth


def test_scan_refuses_damaged_and_truncated_tars(tmp_path):
    path = tmp_path / "x.tar"
    _tar(path, tarfile.PAX_FORMAT, NAMES)
    raw = path.read_bytes()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(raw[:600] + b"\x07" + raw[601:])  # inside the second header block
    with pytest.raises(TarScanError):
        list(scan(bad, lambda n: True))
    short = tmp_path / "short.tar"
    short.write_bytes(raw[:3000])
    with pytest.raises(TarScanError):
        list(scan(short, lambda n: True))


def test_record_round_trip():
    members = [("jpg", b"\xff\xd8" + bytes(range(256)) * 3), ("txt", "ünï".encode()), ("json", b""), ("x.y", b"1")]
    assert decode_record(encode_record(members)) == members
    with pytest.raises(ValueError):
        decode_record(encode_record(members) + b"extra")


def test_key_rules():
    for good in ["000000012", "a_b-c", "ключ", "ABC123"]:
        assert is_safe_key(good)
    for bad in ["", ".", "..", "../x", "/abs", "a/b", "a\\b", "a.b", "a\nb", "a b", "a\x00b"]:
        assert not is_safe_key(bad)
    assert split_member("dir/000012.jpg") == ("000012", "jpg")
    assert split_member("000012.seg.png") == ("000012", "seg.png")
    assert fingerprint(["a", "b"], 10) != fingerprint(["b", "a"], 10) != fingerprint(["a", "b"], 11)
    assert fingerprint(["ab"], 10) != fingerprint(["a", "b"], 10)
    assert fingerprint(["a"], 10, "/data/x") != fingerprint(["a"], 10, "/data/y")
