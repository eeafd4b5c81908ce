"""DataFrames, Series and numpy arrays as Arrow IPC bytes, exactly (pyarrow; never pickle).

What a map chunk or a processor's frame result travels as (``nbqueue.artifacts`` stores the
bytes, the job holds their content hash). The round trip is exact: dtypes (nullable
ints/bools, categoricals with their categories and order, tz-aware timestamps, the string
dtypes, timedeltas), the index (named, non-default, a RangeIndex's start/stop/step, a
MultiIndex) and the column order; a Series keeps its name and index; an array its dtype and
shape. The bytes are an uncompressed Arrow IPC stream, readable by any Arrow
implementation; nbqueue's own metadata rides in the schema under the key ``nbqueue``
(kind, Series name, array dtype and shape).

An object column Arrow cannot type (arbitrary Python objects, or ints mixed with strings)
is a ``TypeError`` naming the column and suggesting a fix, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import arrowfast
from .errors import InvalidOptionError, MissingDependencyError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["KINDS", "Encoded", "FrameTable", "concat_frames", "content_hash", "decode",
           "decode_deferred", "encode", "frame_slices", "is_arrow_value", "kind_of",
           "materialize"]

#: The values that travel as Arrow: a pandas DataFrame, a pandas Series, a numpy ndarray.
KINDS = ("DataFrame", "Series", "ndarray")
META_KEY = b"nbqueue"
_SERIES_COLUMN = "__nbqueue_series__"
_ARRAY_COLUMN = "values"
THREADED_ROWS = 100_000  # frames this long convert to Arrow with pyarrow's thread pool


def _pa() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.ipc
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            "pyarrow", "DataFrames, Series and arrays as job data or results") from exc
    return pa


def content_hash(data: bytes | memoryview) -> str:
    """The reference of an artifact: the SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def kind_of(value: Any) -> str | None:
    """``"DataFrame"``, ``"Series"`` or ``"ndarray"`` for a value that travels as Arrow,
    else None (no import of pandas or numpy for other values)."""
    t = type(value)
    mod = t.__module__
    if mod.startswith("pandas"):
        pd = sys.modules.get("pandas")
        if pd is not None:
            if isinstance(value, pd.DataFrame):
                return "DataFrame"
            if isinstance(value, pd.Series):
                return "Series"
        return None
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return "ndarray"
    return None


def is_arrow_value(value: Any) -> bool:
    return kind_of(value) is not None


@dataclass(frozen=True)
class Encoded:
    """An encoded value: its kind, its IPC bytes, and their content hash."""

    kind: str
    data: bytes
    sha256: str
    rows: int

    @property
    def size(self) -> int:
        return len(self.data)


# -- encoding ------------------------------------------------------------------------------
def _fix_hint(col: str, where: str) -> str:
    return (f"convert it to a type Arrow stores first, e.g. {where}[{col!r}] = "
            f"{where}[{col!r}].astype(str) (or .astype('category'), pd.to_numeric(...), "
            f"pd.to_datetime(...)), or drop it: {where}.drop(columns=[{col!r}])")


def _untypable(df: Any, exc: BaseException, what: str) -> TypeError:
    """The clear error for a frame Arrow refused: which column, what is in it, the fix."""
    pa = _pa()
    bad = None
    for col in df.columns:
        if df[col].dtype != object:
            continue
        try:
            pa.array(df[col], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            bad = col
            break
    if bad is None:
        return TypeError(f"{what} cannot be stored as Arrow: {exc}")
    types = sorted({type(v).__name__ for v in df[bad].dropna().head(1000)})
    return TypeError(
        f"{what}: column {bad!r} (dtype object, holding {', '.join(types) or 'objects'}) "
        f"cannot be stored as Arrow: {_first_line(exc)}; {_fix_hint(str(bad), 'df')}")


def _first_line(exc: BaseException) -> str:
    return str(exc.args[0] if exc.args else exc).splitlines()[0]


def _frame_table(df: Any, what: str) -> pa.Table:
    pa = _pa()
    if not df.columns.is_unique:
        dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise InvalidOptionError(f"{what} has duplicate columns {dup}; rename them first "
                                 "(Arrow needs one column per name)")
    try:
        # One thread below ~100k rows: pyarrow's default starts a thread pool per call,
        # which costs more than it saves on a map chunk (1,000 rows x 6 columns: 1.37 ms
        # -> 0.35 ms); a large frame still converts its columns in parallel.
        if len(df) >= THREADED_ROWS:
            return pa.Table.from_pandas(df, preserve_index=None)
        return arrowfast.frame_table(df, _from_pandas_1)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise _untypable(df, exc, what) from None
    except ValueError as exc:  # e.g. a column name Arrow refuses
        raise TypeError(f"{what} cannot be stored as Arrow: {exc}") from None


def _from_pandas_1(df: Any) -> pa.Table:
    return _pa().Table.from_pandas(df, preserve_index=None, nthreads=1)


def _with_meta(table: pa.Table, meta: dict[str, Any]) -> pa.Table:
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta, separators=(",", ":")).encode()
    return table.replace_schema_metadata(schema_meta)


def _ipc(table: pa.Table) -> bytes:
    pa = _pa()
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=_compression())
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _compression() -> str | None:
    # None: lz4 made a 1000-row slice 6x slower to write (0.23 vs 0.04 ms) for 22 % fewer
    # bytes; the bytes go over a local network or to a store, so speed wins.
    return None


def _json_name(name: Any) -> Any:
    """A Series name as JSON (str, int, float, bool, None; a tuple as a list)."""
    if name is None or isinstance(name, (str, bool, int, float)):
        return name
    if isinstance(name, tuple):
        return {"tuple": [_json_name(n) for n in name]}
    item = getattr(name, "item", None)  # a numpy scalar
    if callable(item):
        return _json_name(item())
    raise TypeError(f"a Series named {name!r} ({type(name).__name__}) cannot be stored: "
                    "give it a str name (series.rename('total'))")


def _py_name(name: Any) -> Any:
    if isinstance(name, dict) and "tuple" in name:
        return tuple(_py_name(n) for n in name["tuple"])
    return name


def encode(value: Any, what: str = "the value") -> Encoded:
    """``value`` (a DataFrame, Series or ndarray) as Arrow IPC bytes with its hash."""
    kind = kind_of(value)
    if kind == "DataFrame":
        table = _with_meta(_frame_table(value, what), {"kind": kind})
    elif kind == "Series":
        name = _json_name(value.name)
        frame = value.to_frame(name=_SERIES_COLUMN)
        table = _with_meta(_frame_table(frame, what), {"kind": kind, "name": name})
    elif kind == "ndarray":
        table = _array_table(value, what)
    else:
        raise TypeError(f"{what} is a {type(value).__name__}, not a DataFrame, Series or "
                        "numpy array")
    data = _ipc(table)
    return Encoded(kind, data, content_hash(data), table.num_rows)


def _array_table(arr: Any, what: str) -> pa.Table:
    pa = _pa()
    if arr.dtype.hasobject:
        raise TypeError(f"{what} is a numpy array of dtype object, which Arrow cannot store "
                        "exactly; convert it first (arr.astype(str), arr.astype(float)) or "
                        "return a DataFrame")
    flat = arr.reshape(-1)
    try:
        column = pa.array(flat)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise TypeError(f"{what}: a numpy array of dtype {arr.dtype} cannot be stored as "
                        f"Arrow ({_first_line(exc)}); convert it first (e.g. complex: "
                        "np.stack([a.real, a.imag]))") from None
    table = pa.table({_ARRAY_COLUMN: column})
    return _with_meta(table, {"kind": "ndarray", "dtype": arr.dtype.str,
                              "shape": list(arr.shape)})


def frame_slices(df: Any, size: int, what: str = "the DataFrame"
                 ) -> Iterator[tuple[int, int, Encoded]]:
    """``df`` in slices of ``size`` rows: (start, stop, encoded slice) each, as
    ``encode(df.iloc[start:stop])`` would give, at a fraction of the cost (the frame is
    converted to Arrow once; each slice is a zero-copy view of it). Raises before the first
    slice for a frame Arrow cannot store."""
    table = _frame_table(df, what)
    meta = dict(table.schema.metadata or {})
    pandas_meta = json.loads(meta[b"pandas"]) if b"pandas" in meta else None
    ranges = [i for i, c in enumerate(pandas_meta["index_columns"])
              if isinstance(c, dict) and c.get("kind") == "range"] if pandas_meta else []
    n = len(df)
    for start in range(0, n, size):
        stop = min(start + size, n)
        part = table.slice(start, stop - start)
        if ranges:  # a RangeIndex is metadata, not a column: give the slice its own range
            assert pandas_meta is not None
            pm = json.loads(json.dumps(pandas_meta))
            for i in ranges:
                spec = pm["index_columns"][i]
                step = spec["step"]
                spec["start"], spec["stop"] = (pandas_meta["index_columns"][i]["start"]
                                               + start * step, None)
                spec["stop"] = spec["start"] + (stop - start) * step
            part = part.replace_schema_metadata(
                {**meta, b"pandas": json.dumps(pm).encode()})
        part = _with_meta(part, {"kind": "DataFrame"})
        data = _ipc(part)
        yield start, stop, Encoded("DataFrame", data, content_hash(data), stop - start)


# -- decoding ------------------------------------------------------------------------------
def _read(data: bytes | memoryview) -> tuple[pa.Table, dict[str, Any]]:
    pa = _pa()
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    meta_raw = (table.schema.metadata or {}).get(META_KEY)
    return table, (json.loads(meta_raw) if meta_raw else {"kind": "DataFrame"})


def decode(data: bytes | memoryview) -> Any:
    """The DataFrame, Series or ndarray that ``encode`` made these bytes from."""
    return _from_table(*_read(data))


def _from_table(table: pa.Table, meta: dict[str, Any]) -> Any:
    kind = meta.get("kind")
    if kind == "ndarray":
        import numpy as np

        column = table.column(_ARRAY_COLUMN)
        dtype = np.dtype(meta["dtype"])
        flat = column.to_numpy(zero_copy_only=False)
        if flat.dtype != dtype:
            flat = flat.astype(dtype)
        return flat.reshape(tuple(meta["shape"])).copy()
    frame = _to_pandas(table)
    if kind == "Series":
        series = frame[_SERIES_COLUMN]
        series.name = _py_name(meta.get("name"))
        return series
    return frame


def _to_pandas(table: pa.Table) -> Any:
    # (Arrow's threads cost more than they save on a small table: 0.44 -> 0.19 ms on a
    # 1,000-row map chunk)
    if table.num_rows >= THREADED_ROWS:
        return table.to_pandas()
    return arrowfast.table_frame(table, _to_pandas_1)


def _to_pandas_1(table: pa.Table) -> Any:
    return table.to_pandas(use_threads=False)


class FrameTable:
    """A DataFrame result still in Arrow form. ``JobBatch.results_frame`` joins many of
    them on the Arrow side and converts once (``concat_frames``): a ``to_pandas`` per
    chunk was most of the waiting notebook's CPU in the fan-out benchmark (W2: 200
    chunks, 0.12 s against 0.01 s); everything else gets ``to_pandas()``."""

    __slots__ = ("table",)

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def to_pandas(self) -> Any:
        return _to_pandas(self.table)


def decode_deferred(data: bytes | memoryview) -> Any:
    """``decode``, except that a DataFrame stays a ``FrameTable`` (see there)."""
    table, meta = _read(data)
    if meta.get("kind", "DataFrame") == "DataFrame":
        return FrameTable(table)
    return _from_table(table, meta)


def materialize(value: Any) -> Any:
    """A ``FrameTable`` as its DataFrame; any other value as it is."""
    return value.to_pandas() if type(value) is FrameTable else value


def concat_frames(frames: list[FrameTable]) -> Any:
    """``pd.concat`` of the frames' DataFrames, in order. Joined as Arrow and converted
    once when every table has the same columns, types and pandas metadata (their
    RangeIndex bounds aside) and no dictionary (categorical) column; the index is then
    rebuilt as ``pd.concat`` builds it (``Index.append``). Else frame by frame."""
    import pandas as pd

    joined = _concat_tables([f.table for f in frames])
    if joined is None:
        return pd.concat([f.to_pandas() for f in frames])
    table, ranges = joined
    frame = _to_pandas(table)
    if ranges:
        frame.index = ranges[0].append(ranges[1:])
    return frame


def _concat_tables(tables: list[pa.Table]) -> tuple[pa.Table, list[Any]] | None:
    """The tables joined, with pandas metadata that names no index, and each table's
    RangeIndex; or None when they cannot be joined exactly (see ``concat_frames``)."""
    pa = _pa()
    import pandas as pd

    first = tables[0]
    schema = first.schema.remove_metadata()
    if any(pa.types.is_dictionary(f.type) for f in schema):
        return None
    metas, ranges = [], []
    for t in tables:
        raw = (t.schema.metadata or {}).get(b"pandas")
        if raw is None or not t.schema.remove_metadata().equals(schema):
            return None
        pm = json.loads(raw)
        index = pm.get("index_columns") or []
        if len(index) == 1 and isinstance(index[0], dict) and index[0].get("kind") == "range":
            spec = index[0]
            ranges.append(pd.RangeIndex(spec["start"], spec["stop"], spec["step"],
                                        name=spec.get("name")))
            pm["index_columns"] = []  # (the bounds differ from table to table)
        elif any(not isinstance(i, str) for i in index):
            return None  # a range level of a MultiIndex, say: frame by frame
        metas.append(pm)
    if any(m != metas[0] for m in metas[1:]) or (ranges and len(ranges) != len(tables)):
        return None
    meta = {**(first.schema.metadata or {}), b"pandas": json.dumps(metas[0]).encode()}
    joined = pa.concat_tables([t.replace_schema_metadata(meta) for t in tables])
    return joined, ranges
