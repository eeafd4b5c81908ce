"""JSON encoding of job data and results, with errors that name the offending key.

Nothing nbqueue reads from Redis is ever unpickled: data and results are JSON only.
"""

from __future__ import annotations

import datetime as _datetime
import json
import math
import re
import sys
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

from .errors import PayloadTooLargeError

SOFT_LIMIT = 100 * 1024
DEFAULT_HARD_LIMIT = 1024 * 1024


class LargePayloadWarning(UserWarning):
    """Job data above 100 KB: store a reference (an id, a path) instead of the data."""


# -- the conversion table (docs/services.md "Values a notebook passes") -------------------
# numpy bool/integer/floating scalars -> bool/int/float; numpy arrays, pandas Series and
# Index -> lists; datetime, date, pd.Timestamp -> ISO 8601 (offset kept); NaN, +-inf, NaT,
# pd.NA -> null; uuid.UUID -> str. Everything else: TypeError naming key, type and fix.
# Plain data never meets this code: the C encoder's fast path runs first and the table is
# only applied when it fails (the ``default`` hook below handles the common scalar cases
# inside the fast path without a second pass).

_FIX = ("convert it to a JSON type (str, int, float, bool, None, list, dict) first; "
        "see the table of the values nbqueue converts in docs/services.md")
_FIXES = {
    "set": "pass a list (sorted(...)) instead",
    "frozenset": "pass a list (sorted(...)) instead",
    "bytes": "decode it (value.decode()) or pass it base64-encoded",
    "bytearray": "decode it or pass it base64-encoded",
    "Decimal": "pass float(value) or str(value)",
    "complex": "pass [value.real, value.imag]",
    "Timedelta": "pass value.total_seconds()",
    "timedelta": "pass value.total_seconds()",
}


class _Refused(TypeError):
    """A value outside the table (raised by the converter; the walk names the key)."""


def _is_dataframe(obj: Any) -> bool:
    t = type(obj)
    return t.__name__ == "DataFrame" and t.__module__.startswith("pandas")


def _dataframe_message(where: str) -> str:
    return (f"{where} is a pandas DataFrame, which is not job data: split it into jobs "
            "with Queue.map(df, chunksize=...) (or queue_manager.map), or pass its rows "
            'as df.to_dict("records")')


def _convert_one(obj: Any) -> Any:
    """The table for one non-JSON value: its JSON stand-in, or ``_Refused``."""
    if isinstance(obj, _datetime.datetime):  # pd.Timestamp is a datetime too
        if obj != obj:  # pd.NaT is a datetime that compares unequal to itself
            return None
        return obj.isoformat()
    if isinstance(obj, _datetime.date):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, (np.bool_, np.integer, np.floating)):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    pd = sys.modules.get("pandas")
    if pd is not None:
        if isinstance(obj, (pd.Series, pd.Index)):
            return obj.tolist()
        if obj is pd.NA or obj is pd.NaT:
            return None
    raise _Refused(type(obj).__name__)


def _default(obj: Any) -> Any:
    # The C encoder's hook: converts what the table covers, refuses the rest (the slow
    # walk then names the key).
    if _is_dataframe(obj):
        raise _Refused("DataFrame")
    return _convert_one(obj)


def _type_error(what: str, where: str, obj: Any) -> TypeError:
    if _is_dataframe(obj):
        return TypeError(f"{what}: {_dataframe_message(where)}")
    tname = type(obj).__name__
    qual = f"{type(obj).__module__}.{tname}" if type(obj).__module__ != "builtins" else tname
    fix = _FIXES.get(tname, _FIX)
    return TypeError(f"{what} must be JSON-serialisable: {where} has type {qual}; {fix}")


def convert(value: Any, what: str = "job data", root: str = "data",
            strict: bool = True) -> Any:
    """``value`` with the table applied everywhere (a new structure; ``value`` is not
    changed), or ``TypeError`` naming the first key that cannot be stored, its type and
    the fix. ``strict`` also refuses non-str dict keys (json would turn them into strings,
    so the data read back would differ)."""
    seen: set[int] = set()

    def walk(obj: Any, where: str) -> Any:
        t = type(obj)
        if obj is None or t is str or t is bool or t is int:
            return obj
        if t is float or isinstance(obj, float):
            f = float(obj)
            return f if math.isfinite(f) else None
        if isinstance(obj, str):  # np.str_, StrEnum...
            return str(obj)
        if isinstance(obj, int):  # IntEnum... (numpy integers are not ints: table below)
            return int(obj)
        if isinstance(obj, Mapping):
            if id(obj) in seen:
                raise TypeError(f"{what} must be JSON-serialisable: {where} contains itself")
            seen.add(id(obj))
            out: dict[str, Any] = {}
            for k, v in obj.items():
                here = f"{where}[{k!r}]"
                if type(k) is not str:
                    # a str subclass (StrEnum...) is written as its text and reads back
                    # equal: kept; any other key would come back changed (strict) or not at all
                    if (strict and not isinstance(k, str)) or (
                            not isinstance(k, (str, int, float, bool)) and k is not None):
                        raise TypeError(
                            f"{what} must be JSON-serialisable: {here} has a key of type "
                            f"{type(k).__name__} (JSON keys must be str); use str keys")
                    k = _encode(k) if not isinstance(k, str) else str(k)
                out[k] = walk(v, here)
            seen.discard(id(obj))
            return out
        if isinstance(obj, (list, tuple)):
            if id(obj) in seen:
                raise TypeError(f"{what} must be JSON-serialisable: {where} contains itself")
            seen.add(id(obj))
            items = [walk(v, f"{where}[{i}]") for i, v in enumerate(obj)]
            seen.discard(id(obj))
            return items
        if _is_dataframe(obj):
            raise _type_error(what, where, obj)
        try:
            stand_in = _convert_one(obj)
        except _Refused:
            raise _type_error(what, where, obj) from None
        return walk(stand_in, where)

    try:
        return walk(value, root)
    except RecursionError:
        raise TypeError(f"{what} must be JSON-serialisable: it is nested too deeply") from None


# One C encoder made once: json.dumps builds a new one on every call, which is two thirds
# of the cost of encoding a small job (0.75 vs 2.2 µs). No circular-reference markers:
# such data fails with RecursionError, caught below like any unencodable value.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                            default=_default)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = None if _c_make_encoder is None else _c_make_encoder(
    None, _default, json.encoder.encode_basestring, None, ":", ",", False, False,
    False)  # allow_nan=False: NaN/inf take the slow path, which stores them as null


def _encode(value: Any) -> str:
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


_CONTAINERS = (dict, list, tuple)


def _str_keys_only(obj: Any) -> bool:
    """True if no dict inside ``obj`` has a non-str key (json would silently turn an int
    key into a string, so the data read back would differ). Exact types only: anything
    else (a Mapping that is not a dict, a set...) makes json fail and is named below."""
    if type(obj) is dict:
        for k, v in obj.items():
            if type(k) is not str:
                return False
            if type(v) in _CONTAINERS and not _str_keys_only(v):
                return False
    else:
        for v in obj:
            if type(v) in _CONTAINERS and not _str_keys_only(v):
                return False
    return True


# json writes a key that is not a str (int, float, bool, None) as a key string that ends
# in a digit or is true/false/null. A text without such a key came from str keys only; a
# text with one (or with a str key that looks like it: "x1", "2024") is checked by walking
# the value. A key is the only string the encoder follows with ':' (a quote inside a
# string is escaped), so a search of the text misses none. Digits are made one (a C-level
# table) so that one search finds them all: on a 1,000-item map chunk the whole check
# costs about a quarter of the walk.
_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"000000000")
SEARCH_FROM_CHARS = 256  # a shorter text is walked: the search's fixed cost (~1.3 µs) is more


def _no_converted_key(text: str) -> bool:
    marked = text.encode("utf-8", "surrogatepass").translate(_DIGITS_TO_0)
    # (four tests written out: a generator over them costs a small job's add more than they do)
    return (b'0":' not in marked and b'"true":' not in marked and b'"false":' not in marked
            and b'"null":' not in marked)


def _keys_kept(value: Any, text: str) -> bool:
    """No dict in ``value`` (encoded as ``text``) has a non-str key: the text search for a
    large value, the walk for a small one or when the search finds a candidate."""
    if len(text) > SEARCH_FROM_CHARS and _no_converted_key(text):
        return True
    return _str_keys_only(value)


def dumps(value: Any, what: str = "job data", strict: bool = True) -> str:
    """Encode ``value`` as JSON, applying the conversion table, or raise ``TypeError``
    naming the key that cannot be stored, its type and the fix.

    ``strict`` also refuses non-str dict keys (json would turn them into strings, so the
    data read back would differ); results use ``strict=False``."""
    try:
        text = _encode(value)
        if not strict or type(value) not in _CONTAINERS or _keys_kept(value, text):
            return text
    except (TypeError, ValueError, RecursionError):
        pass  # the slow path: apply the table, or name the offending key
    return _encode(convert(value, what, "data" if what == "job data" else "value", strict))


def encode_data(data: Any, hard_limit: int = DEFAULT_HARD_LIMIT) -> str:
    """Validate and encode job data: a dict of JSON values within the size limits."""
    if type(data) is not dict and not isinstance(data, Mapping):
        if _is_dataframe(data):
            raise TypeError(_dataframe_message("job data"))
        raise TypeError(f"job data must be a dict, not {type(data).__name__}")
    text = dumps(data)
    size = len(text.encode("utf-8")) if len(text) * 4 > SOFT_LIMIT else len(text)
    if size > hard_limit:
        raise PayloadTooLargeError(
            f"job data is {size} bytes, over the {hard_limit}-byte limit; store the data "
            "elsewhere and enqueue a reference to it")
    if size > SOFT_LIMIT:
        warnings.warn(f"job data is {size} bytes (> 100 KB); prefer passing a reference",
                      LargePayloadWarning, stacklevel=4)
    return text


def loads(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    return json.loads(text)


# -- text on the wire ------------------------------------------------------------------------
LOG_LINE_CHARS = 10_000  # a longer job-log line is cut (its end is kept)
_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def wire_text(text: str) -> str:
    """``text`` made sendable as UTF-8: lone surrogates become ``\\uXXXX`` escapes.

    In JSON text they can only occur inside strings, where that escape is exact; in a
    failure reason it is a readable stand-in. Without this a processor returning (or an
    error message holding) such a str made the worker's finish call raise
    UnicodeEncodeError, which killed the worker.
    """
    if text.isascii() or encodable(text):
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def utf8_safe(text: str, data: Any, name: str) -> tuple[str, str]:
    """Lone surrogates cannot be sent to Redis as UTF-8: JSON-escape them (``\\ud800``),
    which round-trips exactly, instead of failing deep in the client with UnicodeEncodeError."""
    if not encodable(text):
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    if not encodable(name):
        name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return text, name


def log_line(line: Any) -> str:
    """One job-log line as sent: cut to ``LOG_LINE_CHARS`` (the end kept), wire-safe."""
    text = line if isinstance(line, str) else str(line)
    if len(text) > LOG_LINE_CHARS:
        text = f"[{len(text) - LOG_LINE_CHARS} chars cut] " + text[-LOG_LINE_CHARS:]
    return wire_text(text)
