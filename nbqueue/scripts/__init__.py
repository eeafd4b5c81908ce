"""The Lua scripts, one state transition each, loaded from the ``.lua`` files beside this."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


_CACHE: dict[str, Script] = {}


def get(name: str) -> Script:
    """The script ``name`` (file ``name.lua``), read once per process."""
    script = _CACHE.get(name)
    if script is None:
        source = resources.files(__name__).joinpath(f"{name}.lua").read_text("utf-8")
        script = Script(name, source, hashlib.sha1(source.encode()).hexdigest())
        _CACHE[name] = script
    return script
