"""The store's Lua scripts, read once from this package and run by their SHA1, and the one
argument each of them takes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import msgspec


@dataclass(frozen=True)
class Script:
    source: str
    sha: str


@cache
def script(name: str) -> Script:
    source = Path(__file__).with_name(name).read_text(encoding="utf-8")
    return Script(source, hashlib.sha1(source.encode()).hexdigest())


_int = msgspec.msgpack.Encoder().encode


def pack_args(items: Sequence[str | int | bytes]) -> bytes:
    """The scripts' argument: one MessagePack array, read by Redis's cmsgpack, which knows
    strings but not the newer bin type, so bytes go as (binary-safe) str.

    >>> pack_args([1, "a"]) == b"\\xdd\\x00\\x00\\x00\\x02\\x01\\xdb\\x00\\x00\\x00\\x01a"
    True
    """
    out = [b"\xdd" + len(items).to_bytes(4, "big")]
    for v in items:
        if isinstance(v, int):
            out.append(_int(v))
        else:
            data = v.encode() if isinstance(v, str) else v
            out.append(b"\xdb" + len(data).to_bytes(4, "big") + data)
    return b"".join(out)
