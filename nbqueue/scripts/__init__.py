"""The Lua scripts, one state transition each, loaded from the ``.lua`` files beside this.

A line ``-- @include NAME`` pulls in ``includes/NAME.lua`` so that shared pieces (the
fetch step that several transitions end with) are written once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_INCLUDE = re.compile(r"^--\s*@include\s+(\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


_CACHE: dict[str, Script] = {}


def _read(rel: str) -> str:
    return resources.files(__name__).joinpath(rel).read_text("utf-8")


def _expand(source: str, seen: frozenset[str] = frozenset()) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in seen:
            return ""
        return _expand(_read(f"includes/{name}.lua"), seen | {name})

    return _INCLUDE.sub(repl, source)


def get(name: str) -> Script:
    """The script ``name`` (file ``name.lua``), read and expanded once per process."""
    script = _CACHE.get(name)
    if script is None:
        source = _expand(_read(f"{name}.lua"))
        script = Script(name, source, hashlib.sha1(source.encode()).hexdigest())
        _CACHE[name] = script
    return script
