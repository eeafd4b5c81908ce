"""Fast, self-checked pandas <-> Arrow conversion for the common small frame.

``pa.Table.from_pandas`` and ``Table.to_pandas`` spend most of their time on a map chunk
(1,000 rows, a handful of numeric and string columns) in Python: building and reading the
pandas metadata, inspecting each column. For frames with a RangeIndex and columns of numpy
numeric/bool dtypes or pyarrow-backed strings, the columns themselves convert without copies
and the metadata is the same from one chunk to the next but for the range bounds. So the
first frame of each *shape* (column names and dtypes, or the table's schema) is converted
both ways, the slow one by pyarrow and the fast one here, and the fast one is kept for that
shape only if it gave an identical result (the table with its metadata; the frame with its
dtypes, index and column index). Every other frame takes pyarrow's path as before.
Measured on W2 chunks (1,000 rows, 4 and 6 columns), best of 7: encode of a result 0.38 -> 0.13
ms, decode of a chunk 0.21 -> 0.10 ms. ``arrowcodec`` calls these; nothing else should.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_CACHE_MAX = 256  # shapes remembered (each way); past that the cache starts again

# frame shape -> (schema, pandas metadata of pyarrow's own table, that metadata as JSON after
# its "index_columns" entry); None: no fast path
_encoders: dict[tuple[Any, ...], tuple[Any, dict[str, Any], str] | None] = {}
# table shape -> the frame's column dtypes, its columns (an Index: immutable, shared) and
# its index's name; None: no fast path
_decoders: dict[tuple[Any, ...], tuple[list[Any], Any, Any] | None] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def _fast_dtype(dtype: Any) -> bool:
    import numpy as np
    import pandas as pd

    if isinstance(dtype, np.dtype):
        return dtype.kind in "biuf"
    return isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"


# -- pandas -> Arrow -----------------------------------------------------------------------
def frame_table(df: Any, slow: Callable[[Any], Any]) -> Any:
    """``slow(df)`` (pyarrow's ``Table.from_pandas``), from columns directly when a frame
    of this shape was checked to convert identically."""
    import pandas as pd

    index, columns = df.index, df.columns
    getcol = getattr(df, "_get_column_array", None)
    if type(index) is not pd.RangeIndex or type(columns) is not pd.Index or getcol is None:
        return slow(df)
    arrays = [getcol(i) for i in range(len(columns))]
    try:
        key = (tuple(columns.tolist()), tuple(a.dtype for a in arrays), index.name,
               columns.name, columns.dtype)
        plan = _encoders[key]
    except TypeError:  # an unhashable name
        return slow(df)
    except KeyError:
        return _learn_encoder(df, arrays, key, slow)
    if plan is None:
        return slow(df)
    return _build_table(df, arrays, *plan)


def _build_table(df: Any, arrays: list[Any], schema: Any, pandas_meta: dict[str, Any],
                 tail: str) -> Any:
    import pyarrow as pa

    cols = [pa.array(a, type=schema.field(i).type, from_pandas=True)
            for i, a in enumerate(arrays)]
    index = df.index
    spec = {**pandas_meta["index_columns"][0], "start": index.start, "stop": index.stop,
            "step": index.step}
    # json.dumps(pandas_meta) with this frame's range, the rest serialised once (the
    # check at learning compares the bytes)
    text = '{"index_columns": [' + json.dumps(spec) + "]" + tail
    meta = {**schema.metadata, b"pandas": text.encode()}
    return pa.Table.from_arrays(cols, schema=schema.with_metadata(meta))


def _learn_encoder(df: Any, arrays: list[Any], key: tuple[Any, ...],
                   slow: Callable[[Any], Any]) -> Any:
    table = slow(df)
    plan: tuple[Any, dict[str, Any], str] | None = None
    raw = (table.schema.metadata or {}).get(b"pandas")
    if raw is not None and all(_fast_dtype(a.dtype) for a in arrays):
        pandas_meta = json.loads(raw)
        index = pandas_meta.get("index_columns") or []
        if len(index) == 1 and isinstance(index[0], dict) and index[0].get("kind") == "range" \
                and next(iter(pandas_meta)) == "index_columns":
            rest = json.dumps({k: v for k, v in pandas_meta.items() if k != "index_columns"})
            tail = ", " + rest[1:] if rest != "{}" else "}"
            try:
                fast = _build_table(df, arrays, table.schema, pandas_meta, tail)
                if fast.equals(table, check_metadata=True):
                    plan = (table.schema, pandas_meta, tail)
            except Exception:  # any doubt: pyarrow's path for this shape
                plan = None
    _remember(_encoders, key, plan)
    return table


# -- Arrow -> pandas -----------------------------------------------------------------------
def table_frame(table: Any, slow: Callable[[Any], Any]) -> Any:
    """``slow(table)`` (pyarrow's ``to_pandas``), from columns directly when a table of
    this shape was checked to convert identically."""
    raw = (table.schema.metadata or {}).get(b"pandas")
    if raw is None:
        return slow(table)
    pandas_meta = json.loads(raw)
    index = pandas_meta.get("index_columns") or []
    if len(index) != 1 or not isinstance(index[0], dict) or index[0].get("kind") != "range":
        return slow(table)
    spec = index[0]
    bounds = (spec.get("start"), spec.get("stop"), spec.get("step"))
    shape = {**pandas_meta, "index_columns": [{**spec, "start": 0, "stop": 0, "step": 0}]}
    # a null in an int or bool column makes pandas pick another dtype: its own shape
    nulls = tuple(c.null_count > 0 for c in table.columns)
    key = (json.dumps(shape, sort_keys=True), tuple(table.schema.types), nulls)
    try:
        plan = _decoders[key]
    except KeyError:
        return _learn_decoder(table, key, bounds, slow)
    if plan is None:
        return slow(table)
    return _build_frame(table, plan, bounds)


def _build_frame(table: Any, plan: tuple[list[Any], Any, Any],
                 bounds: tuple[Any, Any, Any]) -> Any:
    import numpy as np
    import pandas as pd

    dtypes, columns, index_name = plan
    arrays = []
    for dtype, col in zip(dtypes, table.columns):
        if isinstance(dtype, np.dtype):
            # writable and its own, as to_pandas makes (a view of one Arrow chunk is
            # read-only and shares the IPC buffer)
            arrays.append(col.to_numpy(zero_copy_only=False).astype(dtype, copy=True))
        else:
            arrays.append(dtype.__from_arrow__(col))
    index = pd.RangeIndex(*bounds, name=index_name)
    from_arrays = getattr(pd.DataFrame, "_from_arrays", None)
    if from_arrays is not None:  # (a dict costs 3x more: it infers the columns again)
        return from_arrays(arrays, columns=columns, index=index, verify_integrity=False)
    frame = pd.DataFrame(dict(zip(columns, arrays)), index=index, copy=False)
    frame.columns = columns
    return frame


def _learn_decoder(table: Any, key: tuple[Any, ...], bounds: tuple[Any, Any, Any],
                   slow: Callable[[Any], Any]) -> Any:
    import pandas as pd

    frame = slow(table)
    plan: tuple[list[Any], Any, Any] | None = None
    if (type(frame.index) is pd.RangeIndex and type(frame.columns) is pd.Index
            and frame.columns.is_unique and len(frame.columns) == table.num_columns
            and all(_fast_dtype(dt) for dt in frame.dtypes)):
        candidate = (list(frame.dtypes), frame.columns, frame.index.name)
        try:
            fast = _build_frame(table, candidate, bounds)
            pd.testing.assert_frame_equal(fast, frame, check_exact=True,
                                          check_index_type=True, check_column_type=True,
                                          check_flags=True)
            if fast.columns.dtype == frame.columns.dtype:
                plan = candidate
        except Exception:  # any difference: pyarrow's path for this shape
            plan = None
    _remember(_decoders, key, plan)
    return frame
