"""The package's structure: no import cycles (late imports included), no module over the
size limit, and the worker package's face."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nbqueue"
# The notebook layer may import the public package (``import nbqueue``): it is the layer on
# top, loaded lazily by ``load_ipython_extension``/``dashboard``.
ALLOWED = {("nbqueue.notebook", "nbqueue")}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import at run time, at any depth (functions included), except under
    ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom,
             mods: dict[str, tuple[Path, bool]]) -> set[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            if not is_pkg:
                base.pop()
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        # ``from pkg import sub`` imports the submodule ``pkg.sub``
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target
                 for a in node.names]
    out = set()
    for name in names:
        if not name.startswith("nbqueue"):
            continue
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        if name != module:
            out.add(name)
        # importing a submodule runs the __init__ of every package above it (those above
        # the importing module itself have run already)
        parts = name.split(".")
        for i in range(1, len(parts)):
            pkg = ".".join(parts[:i])
            if pkg in mods and pkg != module and not module.startswith(pkg + "."):
                out.add(pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for module, (path, is_pkg) in mods.items():
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            edges |= _targets(module, is_pkg, node, mods)
        graph[module] = {t for t in edges
                         if not any(module.startswith(a) and t == b for a, b in ALLOWED)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package() -> None:
    graph = import_graph()
    assert "nbqueue.worker.engine" in graph  # the walk saw the package
    found = cycles(graph)
    detail = "\n".join(
        " <-> ".join(c) + "\n" + "\n".join(
            f"    {m} -> {sorted(graph[m] & set(c))}" for m in c) for c in found)
    assert not found, f"import cycles (function-level imports count):\n{detail}"



def test_the_checker_counts_late_imports(tmp_path: Path) -> None:
    """A function-level import (a "late import") is an edge like any other: a cycle
    dodged by importing inside a function is still found."""
    tree = ast.parse("def f():\n    from .b import x\n")
    found = _imports(tree)
    assert len(found) == 1 and isinstance(found[0], ast.ImportFrom)
    typing_only = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                            "    from .b import x\n")
    assert [n for n in _imports(typing_only) if isinstance(n, ast.ImportFrom)
            and n.module == "b"] == []


MAX_LINES = 600


def test_no_module_is_over_the_size_limit() -> None:
    """Modules stay under MAX_LINES lines: past that, split along a seam (HELPER-RULES)."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 40  # the walk saw the package
    big = {p: n for p, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_worker_package_face_is_the_worker_and_its_modes() -> None:
    import nbqueue.worker as worker

    assert sorted(worker.__all__) == ["AsyncRunner", "JobHook", "MODES", "ProcessRunner",
                                      "Runner", "ThreadRunner", "Worker", "WorkerBase"]
    assert worker.MODES == ("thread", "asyncio", "process")


def test_only_the_data_model_layer_builds_redis_calls() -> None:
    """``ops`` owns queue state: nothing in the client API, the worker or the notebook
    layer builds a ``Call``/``Batch`` of its own (the ops generators do), and nothing
    reaches into another object's private ``_ops``."""
    layer = {"nbqueue.ops", "nbqueue.flows", "nbqueue.follow", "nbqueue.dataplane",
             "nbqueue.scheduler",
             "nbqueue.metrics", "nbqueue.liveness", "nbqueue.reaper", "nbqueue.protocol",
             "nbqueue.direct"}
    found = []
    for module, (path, _) in _modules().items():
        if any(module == m or module.startswith(m + ".") for m in layer):
            continue
        text = path.read_text().replace("self._ops.", "")
        for bad in (r"(?<![\w.])Call(\.cmd)?\(", r"(?<![\w.])Batch\(", r"\._ops\."):
            if re.search(bad, text):
                found.append(f"{module}: {bad}")
    assert not found, found
