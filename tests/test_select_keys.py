"""Key handling of `clipcov select`'s reader against the obvious (slow) versions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from clipcov_cli.select.keys import duplicate_keys, keys_to_numpy


def _slow(column) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False).astype(str)


@pytest.mark.parametrize("values,kind", [
    (["000000001", "000000002", "000000003"], pa.string()),  # fixed width (img2dataset keys)
    (["a", "bb", "", "ccc", "dddd"], pa.string()),  # variable width, an empty key
    (["k1", "k22", "k333"], pa.large_string()),
    (["é", "ascii", "日本"], pa.string()),  # not ASCII: through Python strings
    (["a\x00", "b"], pa.string()),  # a NUL byte: through Python strings
    (["a", None], pa.string()),  # a null
    (["", ""], pa.string()),  # every key empty: no data buffer
    ([f"shard/{i:05d}/" + "x" * (i % 97) + ".jpg" for i in range(300)], pa.string()),  # long, variable
    ([], pa.string()),
])
def test_keys_to_numpy_equals_the_python_conversion(values, kind):
    arr = pa.array(values, kind)
    got, want = keys_to_numpy(arr), _slow(arr)
    assert got.dtype == want.dtype and got.tolist() == want.tolist()


def test_keys_to_numpy_of_slices_and_chunks():
    arr = pa.array([f"key{i}" * (1 + i % 3) for i in range(100)])
    chunks = pa.chunked_array([arr.slice(0, 10), arr.slice(40, 30)])
    for piece in (arr.slice(7, 50), chunks, pa.chunked_array([], pa.string())):
        assert keys_to_numpy(piece).tolist() == _slow(piece).tolist()


def test_duplicate_keys_finds_exactly_the_repeated_keys():
    rng = np.random.default_rng(0)
    keys = np.array([f"{i:09d}" for i in rng.permutation(20000)])
    assert len(duplicate_keys(keys)) == 0
    keys[[5, 17, 900]] = keys[[100, 100, 901]]  # one key three times, another twice
    want = np.unique(keys, return_counts=True)
    assert duplicate_keys(keys).tolist() == want[0][want[1] > 1].tolist()
    assert duplicate_keys(np.array([3, 1, 3])).tolist() == [3]  # other dtypes: by sorting
    assert len(duplicate_keys(np.array(["x"]))) == 0
    near = np.array(["x" * 11 + "a", "x" * 11 + "b", "ab", "abc", "ba"])  # differ late, by length, by order
    assert len(duplicate_keys(near)) == 0


@pytest.mark.parametrize("values", [
    ["000000001", "000000002", "000000003"],
    ["a", "bb", "", "ccc", "dddd"],
    ["", "", ""],
    ["é", "ascii", "日本"],  # not ASCII: through Python strings
    [],
])
def test_keys_to_arrow_equals_pa_array(values):
    from clipcov_cli.select.keys import keys_to_arrow

    keys = np.array(values, dtype=str)
    got = keys_to_arrow(keys)
    assert got.type == pa.string()
    assert got.equals(pa.array(values, pa.string()))
    assert keys_to_arrow(keys[::-1]).to_pylist() == values[::-1]  # a non-contiguous view


def test_numbers_between_numpy_and_arrow_buffers():
    from clipcov_cli.select.keys import numbers_to_arrow, numbers_to_numpy

    rng = np.random.default_rng(0)
    for dtype in (np.int64, np.int32, np.uint16, np.float32, np.float64):
        x = rng.integers(-50, 50, 40).astype(dtype) if np.dtype(dtype).kind != "u" else rng.integers(0, 50, 40).astype(dtype)
        arr = numbers_to_arrow(x[::2])  # a strided view
        assert arr.type == pa.from_numpy_dtype(np.dtype(dtype)) and arr.to_pylist() == x[::2].tolist()
        chunked = pa.chunked_array([pa.array(x[:10]), pa.array(x[10:]).slice(5)])  # a sliced chunk
        got = numbers_to_numpy(chunked, np.float64)
        assert got.dtype == np.float64 and got.tolist() == np.concatenate([x[:10], x[15:]]).astype(np.float64).tolist()
    with_nulls = pa.chunked_array([pa.array([1.5, None, 3.0])])
    assert np.isnan(numbers_to_numpy(with_nulls, np.float32)[1])  # nulls go through to_numpy
    assert numbers_to_numpy(pa.chunked_array([], pa.int64()), np.int64).shape == (0,)
