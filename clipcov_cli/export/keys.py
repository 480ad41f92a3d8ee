"""Pure helpers about sample keys: which keys are safe file names, how a tar member name splits
into key and extension (webdataset's rule), and the fingerprint of an export request."""

from __future__ import annotations

import hashlib
import json
import re

from clipcov_cli.errors import ClipcovError

# A key becomes the stem of member names ({key}.jpg) that tools may extract to disk: one plain
# name, no separator, no '..', no dot (webdataset splits a member name at the first dot of its
# base name, so a key with a dot would not read back as the same key), no control characters.
_SAFE_KEY = re.compile(r"[\w\-]+")


def is_safe_key(key: str) -> bool:
    return bool(_SAFE_KEY.fullmatch(key)) and key.isprintable()


def check_keys(keys: list[str]) -> None:
    """Refuse keys that could escape the output folder or could not round-trip; refuse repeats."""
    bad = [k for k in keys if not is_safe_key(k)]
    if bad:
        shown = ", ".join(repr(k) for k in bad[:3])
        raise ClipcovError(f"refusing {len(bad)} unsafe key(s) in the selection (path separators, '..', absolute "
                           f"paths, dots or empty keys): {shown}{' ...' if len(bad) > 3 else ''}")
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        twice = next(k for k in keys if k in seen or seen.add(k))
        raise ClipcovError(f"the selection lists key {twice!r} more than once")


def split_member(name: str) -> tuple[str, str]:
    """``'dir/000012.jpg'`` -> ``('000012', 'jpg')``: the base name split at its first dot."""
    base = name.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    return key, ext


def fingerprint(keys: list[str], shard_size: int, source: str = "") -> str:
    """Identifies the request: the same exported keys in the same order, shard size and source
    dataset (its resolved path) give the same shards, byte for byte. A different source never
    reuses a finished or interrupted export's work."""
    h = hashlib.sha256()
    h.update(json.dumps({"format_version": 1, "shard_size": shard_size, "source": source}).encode())
    for k in keys:
        h.update(k.encode())
        h.update(b"\n")
    return h.hexdigest()
