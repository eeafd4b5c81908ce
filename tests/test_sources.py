"""A notebook function's remote traceback shows its source lines (issue 19 item 7).

cloudpickle names every function it sends by value ``<dynamic-code>``; a process-mode
child's traceback of a notebook function had neither its cell nor its lines. The functions
here are compiled as IPython compiles cells: a file name that exists only in ``linecache``.
"""

from __future__ import annotations

import linecache
import types
from typing import Any

import cloudpickle
import pytest

from nbqueue import JobFailedError, Queue, Worker
from nbqueue.sources import DYNAMIC, capture, restore

CELL_A = "/tmp/ipykernel_4242/1234567.py"  # no such file: only the kernel's linecache has it
CELL_B = "<ipython-input-7-3f2a>"

SRC_A = '''def scale(value):
    factor = 3
    return check(value * factor)
'''
SRC_B = '''import math


def check(x):
    if x > 10:
        raise ValueError(f"chunk too big: {x}")
    return math.sqrt(x)


def process(job):
    total = 0
    for v in job.payload:
        total += scale(v)
    return total
'''


def _cells() -> dict[str, Any]:
    """Two "cells": ``process`` (cell B) calls ``scale`` (cell A), which calls ``check``."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    for name, src in ((CELL_A, SRC_A), (CELL_B, SRC_B)):
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        exec(compile(src, name, "exec"), ns)
    return ns


@pytest.fixture
def cells() -> Any:
    ns = _cells()
    yield ns
    for name in (CELL_A, CELL_B):
        linecache.cache.pop(name, None)


def test_process_mode_traceback_shows_the_cells_lines(conn, cells) -> None:
    q = Queue("tb_lines", conn)
    job = q.add({"type": "chunk", "payload": [1, 2, 5]})
    with Worker(q.name, cells["process"], conn, mode="process", concurrency=1), \
            pytest.raises(JobFailedError) as info:
        job.result(timeout=60)
    trace = info.value.remote_traceback or ""
    assert DYNAMIC not in trace
    assert f'File "{CELL_B}", line 13, in process' in trace
    assert "total += scale(v)" in trace
    assert f'File "{CELL_A}", line 3, in scale' in trace
    assert "return check(value * factor)" in trace
    assert f'File "{CELL_B}", line 6, in check' in trace
    assert 'raise ValueError(f"chunk too big: {x}")' in trace
    assert trace.rstrip().endswith("ValueError: chunk too big: 15")


def test_restore_names_nested_code_closures_and_methods(cells) -> None:
    src = '''class Cleaner:
    def __call__(self, job):
        def inner(v):
            return [w for w in v if w > threshold]
        return inner(job)


threshold = 1


def make():
    limit = 2
    def closure(job):
        return Cleaner()(job) + [limit]
    return closure
'''
    name = "/tmp/ipykernel_4242/999.py"
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(src, name, "exec"), ns)
    try:
        proc = ns["make"]()
        sent = capture(proc)
        assert sent.lines == {name: src.splitlines(True)}
        linecache.cache.pop(name)  # the child has none of it
        back = cloudpickle.loads(cloudpickle.dumps(proc))
        files = {c.co_filename for c in _all_codes(back)}
        assert files == {DYNAMIC}  # what cloudpickle does
        restore(back, sent)
        assert {c.co_filename for c in _all_codes(back)} == {name}
        assert linecache.getline(name, 4).strip() == "return [w for w in v if w > threshold]"
        assert back([0, 1, 5]) == [5, 2]
    finally:
        linecache.cache.pop(name, None)


def _all_codes(func: Any) -> list[types.CodeType]:
    """Code objects of ``func``, its closure's functions and classes' methods, nested."""
    out: list[types.CodeType] = []
    todo: list[Any] = [func]
    seen: set[int] = set()
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, types.FunctionType):
            stack = [o.__code__]
            while stack:
                c = stack.pop()
                out.append(c)
                stack += [k for k in c.co_consts if isinstance(k, types.CodeType)]
            todo += [cell.cell_contents for cell in o.__closure__ or ()]
            todo += [o.__globals__[n] for n in o.__code__.co_names if n in o.__globals__]
        elif isinstance(o, type) and o.__module__ == "__main__":
            todo += list(vars(o).values())
    return out


def test_nothing_to_send_for_functions_in_files(tmp_path) -> None:
    """A function from a file on disk: the child reads the file itself; only its name
    travels (cloudpickle sends importable functions by reference: nothing at all)."""
    assert capture(test_nothing_to_send_for_functions_in_files).lines == {}
    assert capture(len).names == {}
