"""``python -m clipcov_cli.pretrain.stream SHARD.tar KEYS.txt``: write to stdout a tar of the
members of SHARD whose sample key is in KEYS (one per line), in SHARD's order.

`pretrain --no-copy` hands open_clip_train one ``pipe:`` URL of this command per source shard
(webdataset opens ``pipe:`` URLs itself), so a subset that was not exported trains on the selected
samples streamed from the source shards, with no filtered copy on disk."""

from __future__ import annotations

import shlex
import sys
import tarfile
from pathlib import Path

from clipcov_cli.export.keys import split_member


def stream_url(shard: Path, keys_file: Path) -> str:
    """The ``pipe:`` URL that streams ``shard``'s samples listed in ``keys_file``."""
    cmd = [sys.executable, "-m", "clipcov_cli.pretrain.stream", str(shard.resolve()), str(keys_file.resolve())]
    return "pipe:" + " ".join(shlex.quote(c) for c in cmd)


def filter_tar(shard: Path, keys: set[str], out) -> int:
    """Copy the members of ``shard`` whose key is in ``keys`` into the tar stream ``out``; return
    the number of members written."""
    n = 0
    with tarfile.open(shard, mode="r|*") as src, tarfile.open(fileobj=out, mode="w|") as dst:
        for member in src:
            if member.isfile() and split_member(member.name.rsplit("/", 1)[-1])[0] in keys:
                dst.addfile(member, src.extractfile(member))
                n += 1
    return n


def main(argv: list[str]) -> int:
    shard, keys_file = Path(argv[0]), Path(argv[1])
    keys = {line.strip() for line in keys_file.read_text().splitlines() if line.strip()}
    filter_tar(shard, keys, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
