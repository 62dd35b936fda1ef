"""The store's Lua scripts, read once from this package and run by their SHA1, and the one
argument each of them takes."""

from __future__ import annotations

import hashlib
import struct
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


_encode = msgspec.msgpack.Encoder().encode
_str32 = struct.Struct(">BI").pack


class Args:
    """The scripts' argument: one MessagePack array, read by Redis's cmsgpack, which knows
    strings but not the newer bin type, so bytes go as (binary-safe) str. Built in runs:
    ints and strings by msgspec, many at a time.

    >>> args = Args()
    >>> args.add(1, "a")
    >>> args.blobs([b"\\0"])
    >>> args.packed() == b"\\xdd\\0\\0\\0\\x03\\x01\\xa1a\\xdb\\0\\0\\0\\x01\\0"
    True
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._items = 0

    def add(self, *values: int | str) -> None:
        self.extend(values)

    def extend(self, values: Sequence[int | str]) -> None:
        if values:
            encoded = _encode(values)
            # msgspec wrote an array: drop its header (fixarray, array 16 or array 32).
            head = encoded[0]
            self._parts.append(encoded[1 if head < 0xDC else 3 if head == 0xDC else 5 :])
            self._items += len(values)

    def blobs(self, values: Sequence[bytes]) -> None:
        parts = self._parts
        for v in values:
            parts.append(_str32(0xDB, len(v)))
            parts.append(v)
        self._items += len(values)

    def pairs(self, names: Sequence[str], values: Sequence[bytes]) -> None:
        """Strings and blobs, alternating (hash fields and their values)."""
        parts = self._parts
        for name, v in zip(names, values, strict=True):
            data = name.encode()
            parts.append(_str32(0xDB, len(data)))
            parts.append(data)
            parts.append(_str32(0xDB, len(v)))
            parts.append(v)
        self._items += 2 * len(values)

    def packed(self) -> bytes:
        return b"\xdd" + self._items.to_bytes(4, "big") + b"".join(self._parts)
