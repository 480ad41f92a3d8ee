"""Seeded draws by key: a 64-bit hash of each key and, from it, a uniform draw per (seed, stream, key);
the one FNV-1a / SplitMix64 code of the package (``utils/kmeans.py``'s seeded sample hash is made of it).

Whatever order rows come in, a row's draw is the same: seeded methods (``select --method random``,
``negclip-loss``'s batches) and the training order (``pretrain/order.py``) draw by key, never by
position. numpy uint64 arithmetic only (the same values on every platform and numpy version)."""

from __future__ import annotations

import numpy as np

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer (a bijection of uint64 with full avalanche), elementwise."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def fnv1a(codes: np.ndarray, lengths: np.ndarray, start) -> np.ndarray:
    """FNV-1a of every row of ``codes`` ((n, width) unsigned: code points or bytes) over its first
    ``lengths[i]`` entries, from the state ``start`` (FNV's offset basis, or a seeded one): uint64 (n,)."""
    h = np.full(len(codes), start, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(codes.shape[1]):
            live = lengths > j
            if live.all():  # the common case (keys of one length): no masked copies
                h = (h ^ codes[:, j].astype(np.uint64)) * _FNV_PRIME
            else:
                h[live] = (h[live] ^ codes[live, j].astype(np.uint64)) * _FNV_PRIME
    return h


def key_hashes(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of every key (uint64), a function of the key's characters alone: not of its
    position, nor of the other keys (the fixed-width array's padding is not hashed). FNV-1a over the
    code points, then SplitMix64's finalizer; numpy uint64 arithmetic, the same on every platform."""
    keys = np.asarray(keys)
    if keys.dtype.kind != "U":
        keys = keys.astype(str)
    n = len(keys)
    width = keys.dtype.itemsize // 4
    codes = np.ascontiguousarray(keys).view(np.uint32).reshape(n, width) if width else np.zeros((n, 0), np.uint32)
    lengths = np.char.str_len(keys) if n else np.zeros(0, np.int64)
    return mix64(fnv1a(codes, lengths, FNV_OFFSET) ^ lengths.astype(np.uint64))


def keyed_draws(hashes: np.ndarray, seed: int, stream: int = 0) -> np.ndarray:
    """Seeded draws by key: uint64 values, uniform and independent across keys, a function of (seed,
    stream, key) only (``hashes`` from :func:`key_hashes`). Sorting by them is a uniform random order."""
    salt = np.array([(int(seed) % 2**64)], np.uint64)
    with np.errstate(over="ignore"):
        salt = mix64(mix64(salt) + _GOLDEN * np.uint64((int(stream) + 1) % 2**64))
    return mix64(hashes ^ salt[0])

