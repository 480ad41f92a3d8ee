"""Training order fixed by the seed and the keys, not by the input's file order or the clock.

open_clip_train's WebDataset pipeline shuffles shards with its seed (``detshuffle2``) but shuffles
samples with ``webdataset.shuffle``, whose generator is seeded from the process id and the time: two
runs of one command read their samples in different orders, and the order also follows the order of
the samples inside each tar (img2dataset's download order). While clipcov runs open_clip_train, that
sample shuffle is replaced by :class:`KeyedShuffle`: samples are gathered in blocks of whole shards
(at least ``bufsize`` samples, open_clip_train's 5,000) and each block is emitted in the order of a
seeded draw per key (``utils.keyed``; stream: the loader worker and its pass over the data, i.e. the
epoch), ties by key. A block's order is a function of the seed, the epoch and its keys only; the
blocks follow open_clip_train's seeded shard order. An input of at most ``bufsize`` samples per
loader worker is one block: its order does not depend on the files at all."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

from clipcov_cli.utils.keyed import key_hashes, keyed_draws


class KeyedShuffle:
    """A WebDataset pipeline stage (``stage(samples) -> samples``): seeded, by key, in whole-shard blocks."""

    def __init__(self, bufsize: int, seed: int) -> None:
        self.bufsize, self.seed = max(1, int(bufsize)), int(seed)
        self.passes = 0  # passes over the data in this process (a persistent loader worker: one per epoch)

    def __call__(self, samples: Iterator[dict]) -> Iterator[dict]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        stream = ((info.id if info is not None else 0) << 32) + self.passes
        self.passes += 1
        block: list[dict] = []
        url = None
        for sample in samples:
            if len(block) >= self.bufsize and sample.get("__url__") != url:  # a block ends with a shard
                yield from self._ordered(block, stream)
                block = []
            block.append(sample)
            url = sample.get("__url__")
        yield from self._ordered(block, stream)

    def _ordered(self, block: list[dict], stream: int) -> Iterator[dict]:
        if not block:
            return
        keys = np.array([str(s.get("__key__", "")) for s in block])
        draws = keyed_draws(key_hashes(keys), self.seed, stream)
        for i in np.lexsort((keys, draws)):
            yield block[int(i)]


def _argv_seed(argv: list[str]) -> int:
    """open_clip_train's --seed in ``argv`` (the last one wins, as in argparse; default 0)."""
    seed = 0
    for i, arg in enumerate(argv):
        if arg == "--seed" and i + 1 < len(argv):
            seed = int(argv[i + 1])
        elif arg.startswith("--seed="):
            seed = int(arg.split("=", 1)[1])
    return seed


@contextlib.contextmanager
def seeded_sample_order(argv: list[str]) -> Iterator[None]:
    """While open_clip_train runs with ``argv``: its sample shuffle is :class:`KeyedShuffle` with its seed."""
    import webdataset

    seed = _argv_seed(argv)
    saved = webdataset.shuffle
    webdataset.shuffle = lambda bufsize=1000, initial=100, **_: KeyedShuffle(bufsize, seed)
    try:
        yield
    finally:
        webdataset.shuffle = saved
