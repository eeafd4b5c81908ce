"""The fast pandas <-> Arrow path (nbqueue/arrowfast.py) gives exactly what pyarrow gives:
the same bytes when encoding, the same frame when decoding, for the first frame of a shape
(learnt, checked) and for the next ones (converted by the fast path); shapes it does not
take, or that do not check out, keep pyarrow's path. No Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from nbqueue import arrowcodec, arrowfast


def _pyarrow_bytes(df: pd.DataFrame) -> bytes:
    """What encode() wrote before the fast path: pyarrow's table, nbqueue's metadata."""
    table = pa.Table.from_pandas(df, preserve_index=None, nthreads=1)
    return arrowcodec._ipc(arrowcodec._with_meta(table, {"kind": "DataFrame"}))


def _pyarrow_frame(data: bytes) -> pd.DataFrame:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all().to_pandas(use_threads=False)


def _frames() -> dict[str, Callable[[int], pd.DataFrame]]:
    """Frames of one shape each; ``make(k)`` gives the k-th chunk of that shape."""
    rng = np.random.default_rng(3)

    def mixed(k: int) -> pd.DataFrame:
        n = 50 + k
        df = pd.DataFrame({
            "key": rng.integers(0, 9, n), "x": rng.normal(size=n),
            "f32": rng.normal(size=n).astype("float32"), "flag": rng.integers(0, 2, n) > 0,
            "u8": rng.integers(0, 200, n).astype("uint8"),
            "city": pd.array(rng.choice(["a", "bé", "c"], n), dtype="str")})
        df.index = pd.RangeIndex(100 * k, 100 * k + 2 * n, 2)
        return df

    def with_gaps(k: int) -> pd.DataFrame:
        return pd.DataFrame({"x": [1.5, np.nan, 3.0 + k], "s": pd.array(["a", None, "c"],
                                                                        dtype="str")})

    def named(k: int) -> pd.DataFrame:
        df = pd.DataFrame({"a": [k, 2, 3]})
        df.index = pd.RangeIndex(3, name="row")
        df.columns.name = "cols"
        return df

    def int_names(k: int) -> pd.DataFrame:
        return pd.DataFrame({0: [1.0 + k, 2.0], 7: [3, 4], 9: [5, 6]})  # an Index of ints

    def empty(k: int) -> pd.DataFrame:
        return pd.DataFrame({"x": pd.Series([], dtype="float64"),
                             "s": pd.Series([], dtype="str")})

    def nullable(k: int) -> pd.DataFrame:  # not a fast dtype: pyarrow's path
        return pd.DataFrame({"n": pd.array([1, None, k], dtype="Int64")})

    def objects(k: int) -> pd.DataFrame:  # object column: pyarrow's path
        return pd.DataFrame({"o": pd.Series([{"a": k}, {"a": 2}], dtype=object)})

    def labelled(k: int) -> pd.DataFrame:  # not a RangeIndex: pyarrow's path
        return pd.DataFrame({"x": [1.0, 2.0 + k]}, index=["p", "q"])

    return {"mixed": mixed, "with_gaps": with_gaps, "named": named, "int_names": int_names,
            "empty": empty, "nullable": nullable, "objects": objects, "labelled": labelled}


@pytest.mark.parametrize("shape", list(_frames()))
def test_fast_path_is_exactly_pyarrows(shape: str) -> None:
    arrowfast._encoders.clear()
    arrowfast._decoders.clear()
    make = _frames()[shape]
    for k in range(3):  # the first chunk is learnt, the next ones take the fast path
        df = make(k)
        enc = arrowcodec.encode(df)
        assert enc.data == _pyarrow_bytes(df), f"chunk {k}: bytes differ from pyarrow's"
        back = arrowcodec.decode(enc.data)
        want = _pyarrow_frame(enc.data)
        pd.testing.assert_frame_equal(back, want, check_exact=True, check_index_type=True,
                                      check_column_type=True)
        assert back.columns.dtype == want.columns.dtype
        pd.testing.assert_frame_equal(back, df, check_exact=True, check_index_type=True)
    fast = shape in ("mixed", "with_gaps", "named", "int_names", "empty")
    assert any(plan is not None for plan in arrowfast._encoders.values()) is fast
    assert any(plan is not None for plan in arrowfast._decoders.values()) is fast


def test_a_fast_frame_is_writable_and_owns_its_data() -> None:
    arrowfast._decoders.clear()
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "s": pd.array(["a", "b", "c"], dtype="str")})
    data = arrowcodec.encode(df).data
    arrowcodec.decode(data)  # learnt
    back = arrowcodec.decode(data)  # fast
    assert any(plan is not None for plan in arrowfast._decoders.values())
    back.loc[0, "x"] = 9.0
    back.loc[1, "s"] = "z"
    assert back["x"].tolist() == [9.0, 2.0, 3.0] and back["s"].tolist() == ["a", "z", "c"]
    assert arrowcodec.decode(data)["x"].tolist() == [1.0, 2.0, 3.0]


def test_a_shape_that_does_not_check_out_keeps_pyarrows_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is what makes the fast path safe: a fast result that differs from
    pyarrow's (here: made to differ) is never used for that shape."""
    arrowfast._encoders.clear()
    arrowfast._decoders.clear()
    real = arrowfast._build_table

    def wrong(df: Any, arrays: list[Any], *plan: Any) -> Any:
        return real(df, arrays[::-1], *plan)

    monkeypatch.setattr(arrowfast, "_build_table", wrong)
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    for _ in range(2):
        assert arrowcodec.encode(df).data == _pyarrow_bytes(df)
    assert list(arrowfast._encoders.values()) == [None]

    real_frame = arrowfast._build_frame

    def wrong_frame(table: Any, plan: Any, bounds: Any) -> Any:
        return real_frame(table, plan, bounds).iloc[::-1]

    monkeypatch.setattr(arrowfast, "_build_frame", wrong_frame)
    data = _pyarrow_bytes(df)
    for _ in range(2):
        pd.testing.assert_frame_equal(arrowcodec.decode(data), df, check_exact=True)
    assert list(arrowfast._decoders.values()) == [None]
