"""ClipCov's row sources (``clipcov/sources.py``): a caller's arrays, the scan's class-major file and
the parts through memory maps give the same rows; each is chosen by ``row_source`` and closed by
one owner (the ``GroupedRows``: ``close``, ``with``, or the reader's owner list). The parts' memory
maps belong to that owner (``parts.PartMaps``); a gather without an owner drops its maps when it returns."""

from __future__ import annotations

import numpy as np

from clipcov_cli.select.clipcov.parts import NpyPart, PartMaps, gather_parts
from clipcov_cli.select.clipcov.scan import group_from_arrays, group_from_parts
from clipcov_cli.select.clipcov.sources import ArrayRows, ClassMajorFile, MappedParts, row_source
from tests.select_helpers import clustered, write_embeddings_folder


def _parts(tmp_path, name: str, V=None, T=None, labels=None):
    if V is None:
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
    am, bm = a.source.maps, b.source.maps
    assert am is not bm and len(am.mapped()) == len(bm.mapped()) == 4  # img + txt of 2 parts
    a.cleanup()
    assert am.mapped() == [] and len(bm.mapped()) == 4  # one owner's close leaves the other's maps
    rows = a.order[a.starts[1]: a.starts[2]]
    U, _ = a.block(1)  # read again after the close: mapped anew, by the same owner
    assert np.array_equal(U, V[rows].astype(np.float16).view(np.uint16)) and len(am.mapped()) == 2 * 2
    a.cleanup()
    b.cleanup()
    assert am.mapped() == bm.mapped() == []


def test_a_gather_without_an_owner_keeps_no_map(tmp_path):
    parts, V, _ = _parts(tmp_path, "a")
    rows = np.array([3, 149, 150, 299])
    maps = PartMaps()
    U, W = gather_parts(parts, rows, maps=maps)
    assert np.array_equal(U, V[rows].astype(np.float16).view(np.uint16)) and len(maps.mapped()) == 4
    assert all(np.array_equal(x, y) for x, y in zip(gather_parts(parts, rows), (U, W)))


def test_the_three_row_sources_give_the_same_rows_and_close_with_their_owner(tmp_path):
    """Every class, all of its rows and only its valid ones (NaN and zero rows make the masks
    partial): the same bytes from the arrays, the class-major file and the mapped parts. Leaving
    the ``with`` removes the file and drops the maps."""
    V, T, labels, _ = clustered(300, 8, 3, seed=5, spread=1.0)
    V[[4, 150, 151]] = np.nan
    T[[7, 299]] = 0
    parts, _, _ = _parts(tmp_path, "a", V, T, labels)
    (tmp_path / "t").mkdir()
    with group_from_arrays(V, T, labels, 3, workers=2) as arrays, \
            group_from_parts(parts, labels, 3, workers=2, copy=True, tmpdir=str(tmp_path / "t")) as copied, \
            group_from_parts(parts, labels, 3, workers=2, copy=False) as mapped:
        assert isinstance(arrays.source, ArrayRows) and arrays.source.parts == ()
        assert isinstance(copied.source, ClassMajorFile) and copied.source.parts == tuple(parts)
        assert isinstance(mapped.source, MappedParts) and mapped.source.parts == tuple(parts)
        assert any((tmp_path / "t").rglob("grouped.u16"))
        for g in (copied, mapped):
            assert np.array_equal(g.order, arrays.order) and np.array_equal(g.valid, arrays.valid)
            assert g.nan == arrays.nan == 3 and g.zero == arrays.zero == 2
        partial = 0
        for k in range(3):
            rows = arrays.order[arrays.starts[k]: arrays.starts[k + 1]]
            for keep in (None, arrays.valid[rows]):
                partial += keep is not None and not keep.all()
                want = rows if keep is None else rows[keep]
                for g in (arrays, copied, mapped):
                    U, W = g.block(k, keep)
                    assert np.array_equal(U, V[want].view(np.uint16)) and np.array_equal(W, T[want].view(np.uint16))
        assert partial >= 2
    assert not any((tmp_path / "t").iterdir()) and mapped.source.maps.mapped() == []
    copied.close()  # a second close does nothing


def test_row_source_picks_by_what_it_is_given(tmp_path):
    parts, _, _ = _parts(tmp_path, "a")
    arrays = (np.zeros((2, 8), np.uint16), np.ones((2, 8), np.uint16))
    assert isinstance(row_source(parts, arrays=arrays), ArrayRows)
    maps = PartMaps()
    source = row_source(parts, maps=maps)
    assert isinstance(source, MappedParts) and source.maps is maps


def test_clipcov_reads_through_the_owners_source_and_leaves_closing_to_it(tmp_path):
    """Rows a method's ``prepare`` made belong to the reader's caller: ClipCov's select reads through
    them and leaves them open (the caller's owner list closes them, once, when the output is written)."""
    from clipcov_cli.select.methods import ClipCovSelector
    from clipcov_cli.select.reader import open_embeddings

    _parts(tmp_path, "e")
    owner: list = []
    emb, _ = open_embeddings(tmp_path / "e", owner, prepare=ClipCovSelector(workers=2).prepare)
    assert owner == [emb.prepared] and isinstance(emb.prepared.source, MappedParts)
    maps = emb.prepared.source.maps
    sel = ClipCovSelector(workers=2).select(emb, 60)
    assert len(sel.indices) == 60 and len(maps.mapped()) == 4
    for item in owner:
        item.cleanup()
    assert maps.mapped() == []
