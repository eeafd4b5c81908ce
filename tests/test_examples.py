"""Every Python example of the README and the docs runs, as written, in the test suite.

One test per page (README.md, then docs/**/*.md): its ```python blocks are executed in order
in one namespace (as cells of one notebook) against the suite's private Redis
(``NBQUEUE_REDIS_URL``, set in conftest.py), on fresh ``queue_manager`` objects; the workers
a page started are stopped after it (``queue_manager.close()``).

Conventions, for whoever writes a page:

- A ```python block followed by a line ``prints`` and a plain ``` block must print exactly
  that (its stdout is compared).
- A block that cannot run here (it needs S3, Sentinel, a notebook kernel...) is skipped when
  the line right before its fence is ``<!-- norun -->``, or when its fence's info string
  has the word ``norun`` (```python title="..." norun). Use it sparingly.
- Anything else fenced (```bash, ```text, ```promql) is not run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import nbqueue
import nbqueue.aio

ROOT = Path(__file__).resolve().parent.parent
NORUN = "<!-- norun -->"
_FENCE = re.compile(r"^(`{3,})(.*)$")


@dataclass(frozen=True)
class Block:
    """One ```python block of a page."""

    path: Path
    line: int                 # 1-based line of the opening fence
    code: str
    prints: str | None        # the expected stdout, when a ``prints`` block follows
    norun: bool


def blocks(path: Path) -> list[Block]:
    """The ```python blocks of ``path`` in order (fences nested in other fences ignored)."""
    lines = path.read_text().splitlines(keepends=True)
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i].rstrip("\n"))
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).strip()
        end = i + 1
        while end < len(lines) and lines[end].rstrip("\n").strip() != fence:
            end += 1
        body = "".join(lines[i + 1:end])
        words = info.split()
        if words and words[0] == "python":
            prev = lines[i - 1].strip() if i else ""
            norun = prev == NORUN or "norun" in words[1:]
            prints, after = _prints_after(lines, end + 1)
            found.append(Block(path, i + 1, body, prints, norun))
            end = after - 1 if prints is not None else end
        i = end + 1
    return found


def _prints_after(lines: list[str], j: int) -> tuple[str | None, int]:
    """``prints`` + a plain fenced block right after line ``j``: (its text, next line)."""
    if j + 1 < len(lines) and lines[j].strip() == "prints" and lines[j + 1].strip() == "```":
        k = j + 2
        while k < len(lines) and lines[k].strip() != "```":
            k += 1
        return "".join(lines[j + 2:k]), k + 1
    return None, j


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


RUNNABLE = [p for p in pages() if any(not b.norun for b in blocks(p))]


@pytest.fixture
def fresh_managers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """New ``queue_manager`` / ``queue_service`` objects (sync and aio) for one page; every
    worker they started is stopped afterwards, so no page sees another's workers."""
    from nbqueue.predefined import AsyncQueueService, QueueService

    sync_mgr = nbqueue.QueueManager()
    aio_mgr = nbqueue.aio.QueueManager()
    monkeypatch.setattr(nbqueue, "queue_manager", sync_mgr)
    monkeypatch.setattr(nbqueue, "queue_service", QueueService(sync_mgr))
    monkeypatch.setattr(nbqueue.aio, "queue_manager", aio_mgr)
    monkeypatch.setattr(nbqueue.aio, "queue_service", AsyncQueueService(aio_mgr))
    try:
        yield
    finally:
        sync_mgr.close()
        aio_mgr.close()


def run_page(page: Path, capsys: pytest.CaptureFixture[str]) -> int:
    """Run the blocks of ``page`` in one namespace; returns how many ran."""
    namespace: dict[str, Any] = {"__name__": "__docs_example__"}
    capsys.readouterr()
    # as in a notebook kernel: logging not configured (pytest's capture handler set aside)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    ran = 0
    try:
        for block in blocks(page):
            if block.norun:
                continue
            where = f"{page.name}:{block.line}"
            code = "\n" * (block.line) + block.code  # tracebacks give the page's line numbers
            exec(compile(code, str(page), "exec"), namespace)
            ran += 1
            out = capsys.readouterr().out
            if block.prints is not None:
                assert out == block.prints, f"{where} printed:\n{out}\nexpected:\n{block.prints}"
    finally:
        root.handlers = saved
    return ran


@pytest.mark.timeout(180)
@pytest.mark.parametrize("page", RUNNABLE, ids=_page_id)
def test_page_examples_run(page: Path, r: Any, fresh_managers: None,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run_page(page, capsys) > 0


def test_a_wrong_prints_block_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The check is real: a block that prints something else fails, naming the line."""
    page = tmp_path / "p.md"
    page.write_text("```python\nx = 1\n```\n\n```python\nprint(x + 1)\n```\nprints\n```\n3\n```\n")
    with pytest.raises(AssertionError, match=r"p\.md:5 printed"):
        run_page(page, capsys)
    page.write_text("```python\nraise ValueError('boom')\n```\n")
    with pytest.raises(ValueError, match="boom"):
        run_page(page, capsys)


def test_conventions_are_parsed(tmp_path: Path) -> None:
    """The parser finds blocks, their ``prints``, and both norun markers."""
    page = tmp_path / "p.md"
    page.write_text(
        "text\n```python\nprint(1)\n```\nprints\n```\n1\n```\n\n"
        "<!-- norun -->\n```python\nimport s3fs\n```\n"
        '```python title="x" norun\nraise SystemExit\n```\n'
        "````markdown\n```python\nnot = a block\n```\n````\n"
        "```bash\nls\n```\n```python\nx = 2\n```\n")
    found = blocks(page)
    assert [(b.line, b.prints, b.norun) for b in found] == [
        (2, "1\n", False), (11, None, True), (14, None, True), (25, None, False)]


def test_every_page_with_examples_is_collected() -> None:
    """README and the docs pages that hold runnable examples are all in the run."""
    names = {_page_id(p) for p in RUNNABLE}
    assert "README.md" in names and "docs/index.md" in names
    total = sum(1 for p in RUNNABLE for b in blocks(p) if not b.norun)
    assert total >= 20, total
