"""The intermediate record of one sample: its members' names and original bytes, packed.

    record = u32 little-endian header length | header (JSON [[ext, size], ...]) | member bytes...

Phase 1 appends records to ``.work/src/{stem}.bin``; phase 2 reads them back by offset."""

from __future__ import annotations

import json
import struct

_LEN = struct.Struct("<I")


def encode_record(members: list[tuple[str, bytes]]) -> bytes:
    header = json.dumps([[ext, len(data)] for ext, data in members], separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(header)), header, *(data for _, data in members)])


def decode_record(buf: bytes) -> list[tuple[str, bytes]]:
    (n,) = _LEN.unpack_from(buf, 0)
    pos = _LEN.size + n
    members = []
    for ext, size in json.loads(buf[_LEN.size: pos]):
        members.append((ext, buf[pos: pos + size]))
        pos += size
    if pos != len(buf):
        raise ValueError(f"record of {len(buf)} bytes holds {pos}")
    return members
