"""The python blocks of the README's "Values, diagnostics, logs, cancel" section run as
written and print what the README says they print."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import nbqueue

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_exec_examples_run_and_print_what_they_say(r, capsys) -> None:
    text = README.read_text()
    section = text[text.index("<!-- exec-doc:start"):text.index("<!-- exec-doc:end -->")]
    pairs = re.findall(r"```python\n(.*?)```\nprints\n```\n(.*?)```", section, re.S)
    assert len(pairs) == 4
    nbqueue.queue_manager.close()
    namespace: dict = {"__name__": "exec_doc"}
    capsys.readouterr()
    # as in a notebook kernel: logging not configured (pytest's capture handler set aside)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    try:
        for code, expected in pairs:
            exec(compile(code, str(README), "exec"), namespace)
            assert capsys.readouterr().out == expected, code
    finally:
        root.handlers = saved
