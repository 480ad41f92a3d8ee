"""The parts' memory maps belong to one owner (``parts.PartMaps``): the scan's ``GroupedRows`` holds
its own and closes them, a gather without an owner drops its maps when it returns."""

from __future__ import annotations

import numpy as np

from clipcov_cli.select.clipcov.parts import NpyPart, PartMaps, gather_parts
from clipcov_cli.select.clipcov.scan import group_from_parts
from tests.select_helpers import clustered, write_embeddings_folder


def _parts(tmp_path, name: str):
    V, T, labels, _ = clustered(300, 8, 3, seed=2, spread=1.0)
    keys = np.array([f"{i:09d}" for i in range(300)])
    root = write_embeddings_folder(tmp_path / name, V, T, keys, labels, np.zeros(300), parts=2)
    bounds = np.linspace(0, 300, 3).astype(int)
    parts = [(NpyPart.open(root / "img_emb" / f"img_emb_{p:05d}.npy"),
              NpyPart.open(root / "text_emb" / f"text_emb_{p:05d}.npy"), int(bounds[p])) for p in range(2)]
    return parts, V, labels


def test_each_scan_owns_and_closes_its_maps(tmp_path):
    a_parts, V, labels = _parts(tmp_path, "a")
    b_parts, _, _ = _parts(tmp_path, "b")
    a = group_from_parts(a_parts, labels, 3, workers=2, copy=False)
    b = group_from_parts(b_parts, labels, 3, workers=2, copy=False)
    assert a.maps is not b.maps and len(a.maps.mapped()) == len(b.maps.mapped()) == 4  # img + txt of 2 parts
    a.cleanup()
    assert a.maps.mapped() == [] and len(b.maps.mapped()) == 4  # one owner's close leaves the other's maps
    rows = a.order[a.starts[1]: a.starts[2]]
    U, _ = a.block(1)  # read again after the close: mapped anew, by the same owner
    assert np.array_equal(U, V[rows].astype(np.float16).view(np.uint16)) and len(a.maps.mapped()) == 2 * 2
    a.cleanup()
    b.cleanup()
    assert a.maps.mapped() == b.maps.mapped() == []


def test_a_gather_without_an_owner_keeps_no_map(tmp_path):
    parts, V, _ = _parts(tmp_path, "a")
    rows = np.array([3, 149, 150, 299])
    maps = PartMaps()
    U, W = gather_parts(parts, rows, maps=maps)
    assert np.array_equal(U, V[rows].astype(np.float16).view(np.uint16)) and len(maps.mapped()) == 4
    assert all(np.array_equal(x, y) for x, y in zip(gather_parts(parts, rows), (U, W)))
    copied = group_from_parts(parts, np.zeros(300, np.int64), 1, workers=1, copy=True, tmpdir=str(tmp_path))
    assert copied.maps is None  # the class-major copy reads its file, never the parts
    copied.cleanup()
