"""Source lines for the tracebacks of notebook functions run in a child process.

cloudpickle gives every code object it pickles by value the file name ``<dynamic-code>``,
so a process-mode child's traceback of a function defined in a notebook cell names no file
and shows no line. At hand-over (the pipe to the child, never Redis) ``capture(processor)``
records, for each code object reachable from the processor (its own, nested functions,
the notebook functions it calls, closures, defaults, methods of notebook classes), its real
file name, and the lines of the files that exist only in the kernel's ``linecache`` (cells:
``/tmp/ipykernel_<pid>/<hash>.py``, ``<ipython-input-3-...>``). In the child
``restore(processor, sources)`` puts the names back on the code objects and registers the
lines with ``linecache``, so a remote traceback reads as it would in the kernel:
``File "/tmp/ipykernel_81/2731.py", line 4, in process`` followed by the line itself.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import os
import sys
import types
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

DYNAMIC = "<dynamic-code>"  # cloudpickle's file name for code pickled by value
MAX_DEPTH = 12
MAX_SOURCE_LINES = 20_000  # per file: a cell is never that long; a runaway one is left out

Key = tuple[str, int, int]  # (qualified name, first line, crc32 of the bytecode)


@dataclass
class Sources:
    """What ``capture`` found: real file names by code object, and in-memory files' lines."""

    names: dict[Key, str] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)


def _key(code: types.CodeType) -> Key:
    return (getattr(code, "co_qualname", code.co_name), code.co_firstlineno,
            zlib.crc32(code.co_code))


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _by_value(func: types.FunctionType) -> bool:
    """Whether cloudpickle sends ``func`` by value (a notebook function), not by reference."""
    try:
        from cloudpickle import cloudpickle as cp

        return not cp._should_pickle_by_reference(func)
    except (ImportError, AttributeError):  # pragma: no cover - another cloudpickle
        return func.__module__ == "__main__" or func.__module__ not in sys.modules


def _functions(obj: Any, keep: Callable[[types.FunctionType], bool]) -> list[types.FunctionType]:
    """The functions reachable from ``obj`` that ``keep`` accepts (walked through)."""
    found: list[types.FunctionType] = []
    seen: set[int] = set()

    def walk(o: Any, depth: int) -> None:
        if depth > MAX_DEPTH or id(o) in seen or isinstance(o, (types.ModuleType, str, bytes,
                                                                  int, float, type(None))):
            return
        seen.add(id(o))
        if isinstance(o, functools.partial):
            for x in (o.func, *o.args, *o.keywords.values()):
                walk(x, depth + 1)
        elif inspect.ismethod(o):
            walk(o.__func__, depth + 1)
        elif isinstance(o, types.FunctionType):
            if not keep(o):
                return
            found.append(o)
            names = {n for c in _codes(o.__code__) for n in c.co_names}
            for n in names:
                if n in o.__globals__:
                    walk(o.__globals__[n], depth + 1)
            for cell in o.__closure__ or ():
                try:
                    walk(cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell
                    pass
            for d in (*(o.__defaults__ or ()), *(o.__kwdefaults__ or {}).values()):
                walk(d, depth + 1)
        elif isinstance(o, type):
            module = sys.modules.get(o.__module__)
            if o.__module__ != "__main__" and (module is None or o.__module__ == "builtins"
                                               or getattr(module, "__file__", None)):
                return  # a class of an importable module travels by reference
            for v in vars(o).values():
                walk(v.__func__ if isinstance(v, (staticmethod, classmethod)) else v, depth + 1)
        elif isinstance(o, property):
            for f in (o.fget, o.fset, o.fdel):
                walk(f, depth + 1)
        elif callable(o) and not isinstance(o, types.BuiltinFunctionType):
            walk(type(o), depth + 1)

    walk(obj, 0)
    return found


def capture(processor: Any) -> Sources:
    """In the kernel, before the hand-over: file names and in-memory source lines."""
    out = Sources()
    for func in _functions(processor, _by_value):
        for code in _codes(func.__code__):
            name = code.co_filename
            out.names[_key(code)] = name
            if name in out.lines or os.path.exists(name):
                continue  # a file on disk: the child reads it itself
            lines = linecache.getlines(name)
            if lines and len(lines) <= MAX_SOURCE_LINES:
                out.lines[name] = list(lines)
    return out


def _renamed(code: types.CodeType, names: dict[Key, str]) -> types.CodeType:
    consts = tuple(_renamed(c, names) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    changes: dict[str, Any] = {}
    if code.co_filename == DYNAMIC and _key(code) in names:
        changes["co_filename"] = names[_key(code)]
    if any(a is not b for a, b in zip(consts, code.co_consts)):
        changes["co_consts"] = consts
    return code.replace(**changes) if changes else code


def restore(processor: Any, sources: Sources | None) -> None:
    """In the child, after unpickling: real file names back, cell lines in ``linecache``."""
    if not sources:
        return
    for name, lines in sources.lines.items():
        linecache.cache[name] = (sum(map(len, lines)), None, lines, name)
    if not sources.names:
        return

    def dynamic(func: types.FunctionType) -> bool:
        return func.__code__.co_filename == DYNAMIC

    for func in _functions(processor, dynamic):
        func.__code__ = _renamed(func.__code__, sources.names)
