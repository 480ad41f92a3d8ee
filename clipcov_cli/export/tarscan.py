"""A fast reader of a tar's regular-file members: names from the headers, data only for the members
asked for, seeking over the rest. It reads the formats tar writers produce (ustar, pax extended
headers as webdataset's and so img2dataset's writer makes for every member, GNU long names) and
checks each header's checksum. Python's tarfile lists headers about 4x slower (docs/benchmarks.md,
export_throughput), which dominated export; compressed tars fall back to tarfile."""

from __future__ import annotations

import os
import struct
import tarfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")


class TarScanError(ValueError):
    """The file is not a readable tar (bad checksum, truncated header)."""


class TarTruncated(TarScanError):
    """The tar ends early (a partial copy, a killed writer): the members before the break were read."""


def scan(path: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) of every regular file member of the tar at ``path``, in order; ``data`` is read
    only for the names ``want`` accepts (None for the others, whose data is skipped)."""
    with open(path, "rb") as f:
        magic = f.read(6)
        f.seek(0)
        if magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ":
            yield from _scan_compressed(f, want)
        else:
            yield from _scan_plain(f, os.fstat(f.fileno()).st_size, want)


def _scan_plain(f: BinaryIO, end: int, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
    pos, pax_path, pax_size, long_name = 0, None, None, None
    while True:
        f.seek(pos)
        block = f.read(BLOCK)
        if not block and pos == end or block == bytes(BLOCK):  # end of archive
            return
        if len(block) < BLOCK:
            raise TarTruncated(f"the tar file ends early (at byte {end})")
        _check_sum(block, pos)
        kind, size = block[156:157], _number(block[124:136])
        data = pos + BLOCK
        if kind in _REGULAR and pax_size is not None:
            size = pax_size
        pos = data + -(-size // BLOCK) * BLOCK
        if kind in (b"x", b"L", b"g", b"K"):
            payload = _read_exact(f, data, size)
            if kind == b"x":
                pax_path, pax_size = _pax(payload, data)
            elif kind == b"L":
                long_name = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        if kind in _REGULAR:
            name = pax_path or long_name or _ustar_name(block)
            yield name, (_read_exact(f, data, size) if want(name) else None)
        pax_path, pax_size, long_name = None, None, None


def _scan_compressed(f: BinaryIO, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
    with tarfile.open(fileobj=f, mode="r|*") as tf:
        for m in tf:
            if m.isfile():
                yield m.name, (tf.extractfile(m).read() if want(m.name) else None)


def _check_sum(block: bytes, pos: int) -> None:
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise TarScanError(f"invalid tar header at byte {pos}") from None
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if stored != unsigned and stored != sum(struct.unpack("148b8x356b", block)) + 256:  # some writers sign
        raise TarScanError(f"bad tar header checksum at byte {pos}")


def _number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _ustar_name(block: bytes) -> str:
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax(payload: bytes, pos_in_file: int) -> tuple[str | None, int | None]:
    """``path`` and ``size`` from pax records ``"%d %s=%s\\n"``."""
    try:
        return _pax_records(payload)
    except ValueError:
        raise TarScanError(f"invalid pax header at byte {pos_in_file}") from None


def _pax_records(payload: bytes) -> tuple[str | None, int | None]:
    path = size = None
    pos = 0
    while pos < len(payload) and payload[pos:pos + 1] != b"\0":
        length = int(payload[pos: payload.index(b" ", pos)])
        if length <= 0 or pos + length > len(payload):
            raise ValueError("bad pax record length")
        record = payload[pos: pos + length]
        field, _, value = record[record.index(b" ") + 1: -1].partition(b"=")
        if field == b"path":
            path = value.decode("utf-8", "surrogateescape")
        elif field == b"size":
            size = int(value)
        pos += length
    return path, size


def _read_exact(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise TarTruncated(f"the tar file ends early (a member at byte {offset} needs {size} bytes)")
    return data
