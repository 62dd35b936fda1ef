"""One entity's features for a batch, from its stored state and the batch's clicks.

An entity (an IP, a session, an IP x advertiser pair...) is one Redis string: a 2-byte length,
then its **base**, then its **log**.

- The log: the clicks appended since the last compaction, exact, one fixed-size record each
  (event time ms, a 32-bit click hash, a 32-bit id per distinct-counted value).
- The base: what compaction kept of older clicks, bounded by the windows, never by the number
  of clicks: click counts per time tile of each window, the newest few click times (for exact
  gaps) and each distinct element with the tile it was last seen in (MessagePack).

Redis only appends and returns them (no arithmetic runs there, see ``read_append.lua``);
everything below is plain Python on the worker. Definitions and error bounds:
docs/redis-keys.md.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from slidr.features import DISTINCT_CAP
from streams.feature_store.layout import Kind

#: Newest click times the base keeps: a click up to this many places late still gets an exact
#: gap after its predecessors were compacted.
RING = 4
#: The log is folded into the base once it holds this many clicks, or once its oldest click
#: is this much older than its newest: the log stays short, the base refreshes the TTL.
COMPACT_RECORDS = 16
COMPACT_AGE_MS = 3_600_000

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(tuple[int, list[int], list[list[int]], list[list[int]]]).decode

#: A click as logged: (event time ms, click hash, element id per set; 0 = no value).
Record = tuple[int, ...]


@dataclass
class Base:
    newest: int = -1
    ring: list[int] = field(default_factory=list)  # newest first
    tiles: list[dict[int, int]] = field(default_factory=list)  # per window: tile -> clicks
    sets: list[dict[int, int]] = field(default_factory=list)  # per set: element -> last tile


def empty_base(kind: Kind) -> Base:
    return Base(tiles=[{} for _ in kind.windows], sets=[{} for _ in kind.sets])


def decode_base(kind: Kind, raw: bytes) -> Base:
    """A length-prefixed base; tile offsets are relative to the newest click's, to stay small."""
    if len(raw) <= 2:
        return empty_base(kind)
    newest, ring, levels, sets = _decode(raw[2:])
    base = Base(newest=newest, ring=[newest - r for r in ring])
    for w, flat in zip(kind.windows, levels, strict=True):
        top = newest // w.tile_ms
        base.tiles.append({top - flat[j]: flat[j + 1] for j in range(0, len(flat), 2)})
    for d, flat in zip(kind.sets, sets, strict=True):
        top = newest // d.window.tile_ms
        base.sets.append({flat[j]: top - flat[j + 1] for j in range(0, len(flat), 2)})
    return base


def encode_base(kind: Kind, base: Base) -> bytes:
    newest = base.newest
    levels = []
    for w, tiles in zip(kind.windows, base.tiles, strict=True):
        top = newest // w.tile_ms
        levels.append([v for j, c in tiles.items() if j > top - w.tiles for v in (top - j, c)])
    sets = []
    for d, seen in zip(kind.sets, base.sets, strict=True):
        top = newest // d.window.tile_ms
        kept = sorted(((t, e) for e, t in seen.items() if t > top - d.window.tiles), reverse=True)
        sets.append([v for t, e in kept[:DISTINCT_CAP] for v in (e, top - t)])
    return frame_base(_encode((newest, [newest - r for r in base.ring], levels, sets)))


def split_state(raw: bytes | None) -> tuple[bytes, bytes]:
    """A stored state as (its length-prefixed base, its log)."""
    if not raw:
        return b"\0\0", b""
    end = 2 + int.from_bytes(raw[:2], "big")
    return raw[:end], raw[end:]


def frame_base(base: bytes) -> bytes:
    if len(base) > 0xFFFF:
        raise ValueError(f"a base of {len(base)} bytes; DISTINCT_CAP bounds it far below 64 KiB")
    return len(base).to_bytes(2, "big") + base


def decode_log(kind: Kind, raw: bytes | None) -> list[Record]:
    if not raw:
        return []
    usable = len(raw) - len(raw) % kind.record.size  # a torn record is never written
    return list(kind.record.iter_unpack(raw[:usable]))


def encode_log(kind: Kind, records: Sequence[Record]) -> bytes:
    pack = kind.record.pack
    return b"".join(pack(*r) for r in records)


@dataclass
class Counted:
    """The features of the batch's clicks (by click hash) and, when due, the new base."""

    values: dict[int, list[int]]
    base: bytes | None


def count(kind: Kind, base: Base, logged: Sequence[Record], batch: Sequence[Record]) -> Counted:
    """Features of each click of ``batch`` (already appended after ``logged``).

    Clicks are ordered by (event time, click hash). A window of k tiles counts the click and
    the clicks of the entity ordered before it since the start of the tile k - 1 tiles before
    the click's. Logged and compacted clicks count alike, so when compaction happens (and so
    how the stream is cut into batches) never changes a feature. A batch click already in the
    log (a redelivery whose first delivery was appended) counts once, where it was logged.
    """
    if not logged and base.newest < 0 and len(batch) == 1:
        return _first_click(kind, batch[0])
    events: dict[int, Record] = {}
    for r in (*logged, *batch):
        events.setdefault(r[1], r)
    ordered = sorted(events.values())
    times = [r[0] for r in ordered]
    position = {r[1]: i for i, r in enumerate(ordered)}
    mine = {r[1] for r in batch}
    values: dict[int, list[int]] = {h: [] for h in mine}

    for (tile_ms, n_tiles), tiles in zip(kind.levels, base.tiles, strict=True):
        older: dict[int, int] = {}  # compacted clicks from a first tile on
        for h in mine:
            p = position[h]
            first = ordered[p][0] // tile_ms - n_tiles + 1  # the window's first tile
            n = p + 1 - bisect_left(times, first * tile_ms)
            if tiles:
                n_older = older.get(first)
                if n_older is None:
                    n_older = older[first] = sum(c for j, c in tiles.items() if j >= first)
                n += n_older
            values[h].append(n)
    if kind.gap:
        ring = base.ring
        for h in mine:
            p = position[h]
            t = ordered[p][0]
            previous = times[p - 1] if p > 0 else -1
            for ring_t in ring:  # newest first
                if ring_t <= t:
                    previous = max(previous, ring_t)
                    break
            values[h].append(t - previous if previous >= 0 else -1)
    for s, (d, seen) in enumerate(zip(kind.sets, base.sets, strict=True)):
        _distinct(s + 2, d.window.tile_ms, d.window.tiles, dict(seen), ordered, mine, values)

    due = len(ordered) >= COMPACT_RECORDS or (
        bool(ordered) and times[-1] - times[0] >= COMPACT_AGE_MS
    )
    return Counted(values, encode_base(kind, compact(kind, base, ordered)) if due else None)


def _first_click(kind: Kind, record: Record) -> Counted:
    """An entity's very first click (about half the entities of a batch): itself, no gap, and
    its own values."""
    values = [1] * len(kind.windows) + ([-1] if kind.gap else [])
    values += [int(record[2 + s] != 0) for s in range(len(kind.sets))]
    return Counted({record[1]: values}, None)


def _distinct(
    column: int,
    tile_ms: int,
    n_tiles: int,
    last: dict[int, int],
    ordered: Sequence[Record],
    mine: set[int],
    values: dict[int, list[int]],
) -> None:
    """Distinct elements whose last sighting (at or before each click) is in the window.

    Clicks come in time order, so the window only moves forward: ``inside`` follows it.
    """
    per_tile: dict[int, int] = {}
    for tile in last.values():
        per_tile[tile] = per_tile.get(tile, 0) + 1
    anchor: int | None = None
    inside = 0
    for r in ordered:
        element, tile = r[column], r[0] // tile_ms
        if anchor is None or tile - anchor >= n_tiles:
            inside = sum(n for j, n in per_tile.items() if tile - n_tiles < j <= tile)
        elif tile > anchor:
            for j in range(anchor + 1, tile + 1):
                inside += per_tile.get(j, 0) - per_tile.get(j - n_tiles, 0)
        anchor = tile
        if element:
            old = last.get(element)
            if old is None or tile > old:
                if old is not None:
                    per_tile[old] -= 1
                    inside -= tile - n_tiles < old <= tile
                per_tile[tile] = per_tile.get(tile, 0) + 1
                inside += 1
                last[element] = tile
        if r[1] in mine:
            values[r[1]].append(min(inside, DISTINCT_CAP))


def compact(kind: Kind, base: Base, ordered: Sequence[Record]) -> Base:
    """The base with the logged clicks folded in (tiles, newest times, last sightings)."""
    if not ordered:
        return base
    newest = max(base.newest, ordered[-1][0])
    ring = sorted({*base.ring, *(r[0] for r in ordered[-RING:])}, reverse=True)[:RING]
    out = Base(newest=newest, ring=ring)
    for w, tiles in zip(kind.windows, base.tiles, strict=True):
        merged = dict(tiles)
        for r in ordered:
            j = r[0] // w.tile_ms
            merged[j] = merged.get(j, 0) + 1
        out.tiles.append(merged)
    for s, (d, seen) in enumerate(zip(kind.sets, base.sets, strict=True)):
        merged = dict(seen)
        for r in ordered:
            element, tile = r[s + 2], r[0] // d.window.tile_ms
            if element and tile > merged.get(element, tile - 1):
                merged[element] = tile
        out.sets.append(merged)
    return out
