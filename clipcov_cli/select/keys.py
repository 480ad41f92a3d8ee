"""Example keys and columns between Arrow and numpy, fast, the duplicate check, and the key order
(``key_order``: the order every tie breaks in).

A CC3M-size folder holds ~3M keys; converting them through Python strings and sorting them (``np.unique``)
took about 2 s of `clipcov select`'s start. Here ASCII keys go straight from the Arrow buffers to a
fixed-width numpy array (and back, for the selection), and duplicates are found by hashing (exact: equal
hashes are compared by value). Numeric columns are read from and written to Arrow buffers directly:
pyarrow's ``to_numpy`` and ``pa.array`` import pandas to check for its types (~0.2-0.5 s).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def numbers_to_numpy(column, dtype) -> np.ndarray:
    """A numeric Arrow array or chunked array without nulls as a numpy array of ``dtype``, read from
    the Arrow buffers: ``to_numpy`` imports pandas (~0.5 s) to check for it. Other columns (nulls,
    booleans, dictionaries) go through ``to_numpy``."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    t = column.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        kind = "f" if pa.types.is_floating(t) else ("i" if pa.types.is_signed_integer(t) else "u")
        native = np.dtype(f"{kind}{t.bit_width // 8}")
        if not column.null_count:
            parts = [np.frombuffer(c.buffers()[1], native, count=len(c), offset=c.offset * native.itemsize)
                     for c in chunks if len(c)]
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
    return column.to_numpy(zero_copy_only=False).astype(dtype)


def numbers_to_arrow(values: np.ndarray) -> pa.Array:
    """A 1-D numeric numpy array as an Arrow array sharing its buffer (``pa.array`` imports pandas)."""
    values = np.ascontiguousarray(values)
    if values.dtype.kind not in "iuf" or values.ndim != 1 or not values.dtype.isnative:
        return pa.array(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def keys_to_arrow(keys: np.ndarray) -> pa.Array:
    """A numpy unicode array of keys as an Arrow string array, from the UCS4 code points when every key
    is ASCII (what ``keys_to_numpy`` makes), else through Python strings."""
    keys = np.asarray(keys)
    if keys.dtype.kind != "U" or keys.ndim != 1 or len(keys) == 0 or keys.dtype.itemsize == 0:
        return pa.array(keys.astype(str).tolist(), pa.string())
    width = keys.dtype.itemsize // 4
    codes = np.ascontiguousarray(keys).view(np.uint32).reshape(len(keys), width)
    if codes.max() >= 128:
        return pa.array(keys.tolist(), pa.string())
    lengths = np.char.str_len(keys)
    offsets = np.zeros(len(keys) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:  # beyond a string array's 32-bit offsets
        return pa.array(keys.tolist(), pa.string())
    data = codes[np.arange(width) < lengths[:, None]].astype(np.uint8)  # row by row: each key's characters
    return pa.Array.from_buffers(pa.string(), len(keys), [None, pa.py_buffer(offsets.astype(np.int32)),
                                                          pa.py_buffer(data)])


def keys_to_numpy(column) -> np.ndarray:
    """A string (or large_string) Arrow array or chunked array as a numpy unicode array, the same as
    ``column.to_numpy(zero_copy_only=False).astype(str)``. Keys without NUL bytes and nulls are
    copied from the Arrow buffers with numpy; other keys go through Python strings."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)) or arr.null_count or len(arr) == 0 \
            or not pc.all(pc.string_is_ascii(arr)).as_py():
        return arr.to_numpy(zero_copy_only=False).astype(str)
    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    _, offsets_buf, data_buf = arr.buffers()
    if data_buf is None:  # every key empty
        return arr.to_numpy(zero_copy_only=False).astype(str)
    offsets = np.frombuffer(offsets_buf, offset_type)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8)[offsets[0]: offsets[-1]]
    lengths = np.diff(offsets)
    width = max(1, int(lengths.max()))
    if (data == 0).any():  # numpy's fixed-width strings drop trailing NULs
        return arr.to_numpy(zero_copy_only=False).astype(str)
    out = np.zeros((len(arr), width), np.uint32)  # ASCII bytes are their code points: numpy's UCS4 layout
    if (lengths == width).all():
        out[:] = data.reshape(len(arr), width)
    else:  # character by character across the keys (memory: a few bytes per key, not per character)
        starts = offsets[:-1] - offsets[0]
        for j in range(width):
            have = np.flatnonzero(lengths > j)
            out[have, j] = data[starts[have] + j]
    return out.view(f"U{width}").reshape(-1)


def key_order(keys: np.ndarray) -> np.ndarray:
    """Row indices in ascending key order (the order every tie breaks in)."""
    keys = np.asarray(keys)
    return np.argsort(keys if keys.dtype.kind == "U" else keys.astype(str), kind="stable")


def duplicate_keys(keys: np.ndarray) -> np.ndarray:
    """The distinct keys that occur more than once (sorted). Unicode arrays are hashed (64-bit, over
    their code points) and only keys whose hashes collide are compared by value."""
    keys = np.asarray(keys)
    if len(keys) < 2:
        return keys[:0]
    if keys.dtype.kind != "U":
        uniq, counts = np.unique(keys, return_counts=True)
        return uniq[counts > 1]
    codes = np.ascontiguousarray(keys).view(np.uint32).reshape(len(keys), -1)
    h = np.full(len(keys), 0xCBF29CE484222325, np.uint64)
    with np.errstate(over="ignore"):
        for col in codes.T:  # FNV-1a style mixing, one code point column at a time
            h ^= col.astype(np.uint64)
            h *= np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    s = np.sort(h)
    clash = s[1:][s[1:] == s[:-1]]
    if len(clash) == 0:
        return keys[:0]
    suspects = keys[np.isin(h, clash)]
    uniq, counts = np.unique(suspects, return_counts=True)
    return uniq[counts > 1]
