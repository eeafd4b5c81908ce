"""Values a notebook passes: the README's conversion table, at add time and for return
values, identical in thread, asyncio and process mode; clear refusals otherwise."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbqueue import JobFailedError, Queue, Worker, serialization

TS = pd.Timestamp("2024-03-01 12:30:00", tz="Europe/Berlin")
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def _table_values() -> dict:
    return {
        "np_int": np.int64(7), "np_i32": np.int32(-3), "np_float": np.float64(2.5),
        "np_f32": np.float32(0.5), "np_bool": np.bool_(True),
        "nan": float("nan"), "np_nan": np.float64("nan"), "inf": float("inf"),
        "ninf": -np.inf, "array": np.array([[1, 2], [3, 4]]),
        "series": pd.Series([1.5, np.nan, 3.0]), "ts": TS,
        "naive": dt.datetime(2024, 1, 2, 3, 4, 5),
        "date": dt.date(2024, 1, 2), "uuid": UID, "nat": pd.NaT, "tuple": (1, np.int8(2)),
        "sum": pd.Series([1, 2, 3]).sum(), "cell": pd.DataFrame({"a": [4]})["a"].iloc[0],
    }


EXPECTED = {
    "np_int": 7, "np_i32": -3, "np_float": 2.5, "np_f32": 0.5, "np_bool": True,
    "nan": None, "np_nan": None, "inf": None, "ninf": None, "array": [[1, 2], [3, 4]],
    "series": [1.5, None, 3.0], "ts": "2024-03-01T12:30:00+01:00",
    "naive": "2024-01-02T03:04:05", "date": "2024-01-02", "uuid": str(UID), "nat": None,
    "tuple": [1, 2], "sum": 6, "cell": 4,
}


def test_table_applies_to_job_data_at_add(conn, r) -> None:
    q = Queue("vals", conn)
    job = q.add({"type": "t", "payload": _table_values()})
    stored = json.loads(r.hget(f"nbq:{{vals}}:job:{job.id}", "data"))
    assert stored == {"type": "t", "payload": EXPECTED}
    assert q.get_job(job.id).data["payload"] == EXPECTED
    # a bulk add converts the same way
    jobs = q.add_bulk([{"type": "t", "payload": {"v": np.int64(i)}} for i in range(3)])
    assert [q.get_job(j.id).data["payload"]["v"] for j in jobs] == [0, 1, 2]


def test_plain_data_never_takes_the_conversion_path(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("conversion walk used for plain data")

    monkeypatch.setattr(serialization, "convert", boom)
    text = serialization.encode_data({"type": "t", "payload": {"a": [1, 2.5, "x", None, True]}})
    assert json.loads(text)["payload"]["a"] == [1, 2.5, "x", None, True]
    # numpy scalars inside otherwise plain data are handled inside the C encoder's pass too
    assert serialization.dumps({"v": np.int64(3), "t": TS}) == \
        '{"v":3,"t":"2024-03-01T12:30:00+01:00"}'


@pytest.mark.parametrize("value, kind, fix", [
    ({1, 2}, "set", "list"),
    (b"ab", "bytes", "decode"),
    (decimal.Decimal("1.5"), "decimal.Decimal", "float(value)"),
    (object(), "object", "JSON type"),
    (pd.Timedelta("1s"), "Timedelta", "total_seconds"),
    (1 + 2j, "complex", "real"),
])
def test_refusals_name_key_type_and_fix(conn, r, value, kind, fix) -> None:
    q = Queue("vals", conn)
    with pytest.raises(TypeError) as err:
        q.add({"type": "t", "payload": {"rows": [{"x": 1}, {"x": value}]}})
    msg = str(err.value)
    assert "data['payload']['rows'][1]['x']" in msg and kind in msg and fix in msg, msg
    assert r.dbsize() == 0  # nothing reached Redis


def test_dataframe_as_data_points_at_map(conn, r) -> None:
    q = Queue("vals", conn)
    df = pd.DataFrame({"a": [1, 2]})
    for data in (df, {"type": "t", "payload": df}):
        with pytest.raises(TypeError) as err:
            q.add(data)  # type: ignore[arg-type]
        assert "Queue.map" in str(err.value) and 'df.to_dict("records")' in str(err.value)
    with pytest.raises(TypeError, match=r"data\['payload'\] is a pandas DataFrame"):
        q.add({"type": "t", "payload": df})
    assert r.dbsize() == 0


def test_non_str_keys_refused_in_data_but_results_keep_jsons_rule() -> None:
    with pytest.raises(TypeError, match=r"data\['p'\]\[1\] has a key of type int"):
        serialization.dumps({"p": {1: np.int64(2)}})
    assert serialization.dumps({1: np.int64(2)}, "value", strict=False) == '{"1":2}'


def _has_changed_key(v: object) -> bool:
    """The rule ``dumps`` applies: a dict key that is not a str (json would bring it back
    as a different key)."""
    if isinstance(v, dict):
        return any(not isinstance(k, str) or _has_changed_key(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return any(_has_changed_key(x) for x in v)
    return False


_KEYS = st.one_of(st.text(max_size=6), st.sampled_from(["x1", "2024", "true", "null", "-5"]),
                  st.integers(-10**20, 10**20), st.floats(allow_nan=False, allow_infinity=False),
                  st.booleans(), st.none())
_JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_KEYS, _JSONISH, max_size=5))
def test_non_str_keys_are_found_wherever_they_are(value: dict) -> None:
    """The text search that spares the walk of the value (``_no_converted_key``) misses no
    changed key: data is refused exactly when some dict in it has a non-str key, and data
    that is stored reads back equal."""
    if _has_changed_key(value):
        # the search alone, whatever the size (dumps searches only texts over
        # SEARCH_FROM_CHARS and walks the others)
        assert not serialization._no_converted_key(serialization._encode(value))
        with pytest.raises(TypeError, match="JSON keys must be str"):
            serialization.dumps(value)
        big = {"pad": "p" * serialization.SEARCH_FROM_CHARS, "v": value}
        with pytest.raises(TypeError, match="JSON keys must be str"):
            serialization.dumps(big)
    else:
        assert json.loads(serialization.dumps(value)) == value


def test_str_only_keys_are_not_walked(monkeypatch) -> None:
    def boom(value: object) -> bool:
        raise AssertionError("walked")

    monkeypatch.setattr(serialization, "_str_keys_only", boom)
    items = [{"type": "w1", "payload": {"x": i, "name": 'a"1":'}} for i in range(50)]
    assert json.loads(serialization.dumps({"items": items}))["items"] == items
    with pytest.raises(AssertionError, match="walked"):  # a key ending in a digit: walked
        serialization.dumps({"x1": 1})


def test_a_str_subclass_key_is_stored_as_its_text() -> None:
    import enum

    class Col(enum.StrEnum):
        A = "a"

    for value in ({Col.A: 1}, {Col.A: 1, "t": dt.date(2024, 1, 2)}, {"p": {Col.A: "x1"}}):
        text = serialization.dumps(value)  # (the second takes the conversion path)
        assert json.loads(text) == {str(k): v if not isinstance(v, dt.date) else
                                    v.isoformat() for k, v in value.items()}


def test_self_containing_and_too_deep_data_are_clear_errors() -> None:
    d: dict = {"a": 1}
    d["self"] = d
    with pytest.raises(TypeError, match="contains itself"):
        serialization.dumps(d)
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(TypeError, match="nested too deeply"):
        serialization.dumps({"d": deep})


def _returns_table(job):
    values = _table_values()
    values["from_data"] = job.data["payload"]
    return values


async def _returns_table_async(job):
    return _returns_table(job)


@pytest.mark.parametrize("mode", ["thread", "asyncio", "process"])
def test_return_values_converted_identically_in_every_mode(conn, mode) -> None:
    q = Queue(f"ret-{mode}", conn)
    proc = _returns_table_async if mode == "asyncio" else _returns_table
    with Worker(q.name, proc, conn, mode=mode):
        job = q.add({"type": "t", "payload": {"n": np.int64(5)}})
        result = job.result(timeout=60)
    assert result == {**EXPECTED, "from_data": {"n": 5}}
    assert not any(isinstance(v, float) and math.isnan(v) for v in result.values())


def test_enqueue_magic_with_a_dataframe_points_at_chunks(r) -> None:
    from IPython.core.error import UsageError
    from IPython.core.getipython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    ip = get_ipython() or start_ipython()
    ip.run_line_magic("load_ext", "nbqueue")
    ip.user_ns["frame"] = pd.DataFrame({"a": [1, 2]})
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic("enqueue", "vals", "frame")
    assert "--chunks" in str(err.value) and "Queue.map" in str(err.value)
    assert r.dbsize() == 0
def _returns_unstorable(job):
    return {"ok": 1, "bad": {"handle": open}}


async def _returns_unstorable_async(job):
    return _returns_unstorable(job)


@pytest.mark.parametrize("mode", ["thread", "asyncio", "process"])
def test_unstorable_result_fails_the_attempt_naming_the_key(conn, mode) -> None:
    q = Queue(f"bad-{mode}", conn)
    proc = _returns_unstorable_async if mode == "asyncio" else _returns_unstorable
    with Worker(q.name, proc, conn, mode=mode):
        job = q.add({"type": "t"})
        with pytest.raises(JobFailedError) as err:
            job.result(timeout=60)
    assert err.value.error_type == "result_not_json"
    assert "value['bad']['handle']" in str(err.value.reason)
    assert "builtin_function_or_method" in str(err.value.reason)


