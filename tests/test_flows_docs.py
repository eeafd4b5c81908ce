"""The README's "Map, gather and flows" examples run as written (against the test Redis)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import nbqueue
from nbqueue import QueueManager


def test_flows_readme_examples_run(r: Any, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    doc = Path(__file__).resolve().parent.parent / "README.md"
    text = doc.read_text()
    section = text[text.index("<!-- flows-doc:start"):text.index("<!-- flows-doc:end -->")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    mgr = QueueManager()
    monkeypatch.setattr(nbqueue, "queue_manager", mgr)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    try:
        for block in blocks:
            exec(compile(block, str(doc), "exec"), namespace)
    finally:
        mgr.close()
    out = capsys.readouterr().out
    sums = "{'Lyon': 1499500, 'Nice': 1500500, 'Paris': 1498500}"
    assert f"6 chunks; {sums}" in out
    assert f"report: {sums}" in out
