"""The store's Lua scripts, read once from this package and run by their SHA1."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class Script:
    source: str
    sha: str


@cache
def script(name: str) -> Script:
    source = Path(__file__).with_name(name).read_text(encoding="utf-8")
    return Script(source, hashlib.sha1(source.encode()).hexdigest())
