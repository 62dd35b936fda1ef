"""The features of a batch's clicks from their entities' stored states, and the compactions
that are due: for all the entities of a batch at once, every kind and node together (numpy).

An entity (an IP, a session, an IP x advertiser pair...) is one Redis string: a 2-byte length,
then its **base**, then its **log**.

- The log: the clicks appended since the last compaction, exact, one fixed-size record each
  (event time ms, a 32-bit click hash, a 32-bit id per distinct-counted value).
- The base: what compaction kept of older clicks, bounded by the windows, never by the number
  of clicks: click counts per time tile of each window, the newest few click times (for exact
  gaps) and each distinct element with the tile it was last seen in (MessagePack).

Redis only appends and returns them (no arithmetic runs there, see ``read_append.lua``);
everything below runs on the worker. Definitions and error bounds: docs/redis-keys.md; the
per-click reference that this must equal is in tests/test_feature_counting.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, pairwise
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from slidr.features import DISTINCT_CAP
from streams.feature_store.layout import Kind

#: Newest click times the base keeps: a click up to this many places late still gets an exact
#: gap after its predecessors were compacted.
RING = 4
#: The log is folded into the base once it holds this many clicks, or once its oldest click
#: is this much older than its newest: the log stays short, the base refreshes the TTL.
COMPACT_RECORDS = 16
COMPACT_AGE_MS = 3_600_000

Ints = npt.NDArray[np.int64]
Records = npt.NDArray[np.void]
_encode = msgspec.msgpack.Encoder().encode
_ints = msgspec.msgpack.Decoder(list[int]).decode
#: A distinct element and its tile offset as MessagePack writes nearly all of them: a uint32
#: (the element, a 32-bit hash, is below 65536 once in 65536) and a positive fixint.
_PAIR = np.dtype([("tag", "u1"), ("element", ">u4"), ("offset", "u1")])
_UINT32, _FIXINT_END = 0xCE, 0x80
_EMPTY = msgspec.Raw(b"\x90")
#: Fibonacci hashing's multiplier (2**64 / golden ratio), for _lookup.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: Below any tile: "the element is not in the base".
_NONE = -(2**62)


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


@dataclass
class Part:
    """One kind's entities in a batch (their stored states, read before the batch was appended
    to them) and the batch's new clicks of them: each one's entity (an index into ``states``)
    and log record."""

    kind: Kind
    states: Sequence[bytes | None]
    entity: Ints
    records: Records


@dataclass
class Counted:
    """Per part: the features of each new click (a row of ``kind.width`` values, in the
    records' order), and the new length-prefixed base of each entity whose compaction is due
    (by index into the part's states)."""

    values: list[Ints]
    bases: list[dict[int, bytes]]


# --- vectorized helpers ---------------------------------------------------------------------


def _pack(*keys: Ints) -> Ints | None:
    """One int64 per entry that orders like ``keys`` (the last one first, as np.lexsort), or
    None when they do not fit in 63 bits together."""
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    if not len(packed):
        return packed
    bits = 0
    for k in keys:
        lo = int(k.min())
        width = (int(k.max()) - lo).bit_length()
        if bits + width > 62:
            return None
        if width:
            packed |= (k - lo) << bits
        bits += width
    return packed


def _order(*keys: Ints) -> Ints:
    """``np.lexsort(keys)``: one stable argsort of packed keys where they fit, far quicker."""
    packed = _pack(*keys)
    order: Ints = np.lexsort(keys) if packed is None else np.argsort(packed, kind="stable")
    return order


class _Search:
    """Finds (group, value) among pairs sorted by group, then value.

    A value below or above all of its group's values is answered from the group's bounds (most
    queries here are: a batch's records of an entity span a few tiles); the others take one
    searchsorted on a combined integer key, not a search per group. Random queries into a
    sorted array cost a binary search each, far more than any other step here.
    """

    def __init__(self, group: Ints, value: Ints, groups: int) -> None:
        everyone = np.arange(groups)
        self._starts = np.searchsorted(group, everyone)
        self._ends = np.searchsorted(group, everyone, "right")
        end = max(len(value) - 1, 0)
        self._low = value[np.minimum(self._starts, end)] if len(value) else self._starts
        self._high = value[np.maximum(self._ends - 1, 0)] if len(value) else self._ends
        lo = int(value.min()) - 1 if len(value) else 0
        hi = int(value.max()) + 1 if len(value) else 0
        self._ranks: Ints | None = None
        if (groups + 1) * (hi - lo + 1) < 2**62:
            self._lo, self._width = lo, hi - lo + 1
            offset = value - lo
        else:  # values too far apart to combine: their ranks keep the order
            self._ranks = np.unique(value)
            self._width = len(self._ranks) + 1
            offset = np.searchsorted(self._ranks, value)
        self._keys = group * self._width + offset

    def find(self, group: Ints, value: Ints, side: Any = "left") -> Ints:
        """Index of the first pair of ``group`` whose value is >= ``value`` (side "left") or
        > ``value`` (side "right"); the group's end when there is none."""
        start, end = self._starts[group], self._ends[group]
        low, high = self._low[group], self._high[group]
        if side == "left":
            before, after = value <= low, value > high
        else:
            before, after = value < low, value >= high
        found: Ints = np.where(before, start, end)
        inside = np.flatnonzero(~(before | after) & (start < end))
        if len(inside):
            group, value = group[inside], value[inside]
            if self._ranks is not None:
                offset = np.searchsorted(self._ranks, value, side)
                side = "left"
            else:  # values outside the pairs' range compare alike once clipped to just outside
                offset = np.clip(value, self._lo, self._lo + self._width - 1) - self._lo
            found[inside] = np.searchsorted(self._keys, group * self._width + offset, side)
        return found


def _lookup(keys: Ints, queries: Ints) -> Ints:
    """For each query, the index of the equal one of ``keys`` (unique), or -1: a hash join.

    A hash table over the few keys (sightings) and one probe per query (stored elements, many
    more) instead of a binary search per query.
    """
    found = np.full(len(queries), -1, dtype=np.int64)
    if not len(keys) or not len(queries):
        return found
    bits = max(4, (4 * len(keys) - 1).bit_length())
    shift = np.uint64(64 - bits)

    def bucket(k: Ints) -> Ints:
        h: Ints = ((k.astype(np.uint64) * _GOLDEN) >> shift).astype(np.int64)
        return h

    slots = bucket(keys)
    by_slot = np.argsort(slots.astype(np.uint16) if bits <= 16 else slots, kind="stable")
    sizes = np.bincount(slots, minlength=1 << bits)
    first = np.cumsum(sizes) - sizes
    probe = bucket(queries)
    start, size = first[probe], sizes[probe]
    todo = np.flatnonzero(size)
    step = 0
    while len(todo):
        candidate = by_slot[start[todo] + step]
        hit = keys[candidate] == queries[todo]
        found[todo[hit]] = candidate[hit]
        step += 1
        todo = todo[~hit & (size[todo] > step)]
    return found


def _within(sizes: Ints) -> Ints:
    """0, 1, ... size - 1 for each size, concatenated."""
    ends = np.cumsum(sizes)
    out: Ints = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - sizes, sizes)
    return out


def _runs(*keys: Ints) -> Ints:
    """Indices where a run of equal ``keys`` begins."""
    if not len(keys[0]):
        return np.zeros(0, dtype=np.int64)
    new = np.zeros(len(keys[0]), dtype=bool)
    new[0] = True
    for k in keys:
        new[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(new)


def _rank(group: Ints) -> Ints:
    """For entries sorted by group: each one's place in its group (0, 1, ...)."""
    if not len(group):
        return group
    first = np.ones(len(group), dtype=bool)
    first[1:] = group[1:] != group[:-1]
    index = np.arange(len(group))
    rank: Ints = index - np.maximum.accumulate(np.where(first, index, 0))
    return rank


# --- reading stored states ------------------------------------------------------------------


def _raw_ints(raws: Sequence[msgspec.Raw]) -> tuple[Ints, Ints]:
    """The items of MessagePack arrays of non-negative ints as stored: (items per array, all
    items in order). Read by numpy where an array holds only fixints (tiles: offsets, counts)
    or only uint32 and fixint pairs (distinct elements: a 32-bit hash is below 65536 once in
    65536), the few other arrays by msgspec."""
    sizes = np.fromiter(map(len, raws), np.int64, len(raws))
    if not len(raws):
        return sizes, sizes
    buf = np.frombuffer(b"".join(raws) + b"\0\0", dtype=np.uint8)  # padded: at + 2 is in it
    at = np.cumsum(sizes) - sizes
    head = buf[at].astype(np.int64)
    fixarray = (head & 0xF0) == 0x90  # up to 15 items; else array 16 (array 32: msgspec)
    items = np.where(fixarray, head & 0x0F, (buf[at + 1].astype(np.int64) << 8) | buf[at + 2])
    header = np.where(fixarray, 1, 3)
    body = sizes - header
    known = fixarray | (head == 0xDC)
    single = known & (body == items)
    pairs = known & ~single & (body == 3 * items) & (items % 2 == 0)
    slow = ~(single | pairs)
    items[~known] = 0  # an array 32 (never written here): msgspec reads it
    first = np.cumsum(items) - items  # where each array's items go
    out = np.empty(int(items.sum()), dtype=np.int64)
    if single.any():
        n = np.where(single, items, 0)
        step = _within(n)
        values = buf[np.repeat(at + header, n) + step]
        out[np.repeat(first, n) + step] = values
        bad = values >= _FIXINT_END
        if bad.any():
            slow[np.repeat(np.arange(len(raws)), n)[bad]] = True
    if pairs.any():
        n = np.where(pairs, items // 2, 0)
        step = _within(n)
        where = np.repeat(at + header, n) + 6 * step
        element = buf[where + 1].astype(np.int64) << 24
        element |= (buf[where + 2].astype(np.int64) << 16) | (buf[where + 3].astype(np.int64) << 8)
        element |= buf[where + 4]
        offset = buf[where + 5]
        slot = np.repeat(first, n) + 2 * step
        out[slot] = element
        out[slot + 1] = offset
        bad = (buf[where] != _UINT32) | (offset >= _FIXINT_END)
        if bad.any():
            slow[np.repeat(np.arange(len(raws)), n)[bad]] = True
    if slow.any():
        values_of = {i: _ints(raws[i]) for i in np.flatnonzero(slow).tolist()}
        if any(len(v) != items[i] for i, v in values_of.items()):  # an array 32: all by msgspec
            lists = [_ints(raw) for raw in raws]
            flat = np.fromiter(chain.from_iterable(lists), np.int64)
            return np.fromiter(map(len, lists), np.int64, len(lists)), flat
        for i, v in values_of.items():
            out[first[i] : first[i] + items[i]] = v
    return items, out


@dataclass
class _Stored:
    """What the entities' states hold (but their logs' records): their bases, decoded into
    flat arrays (each entry with its owner entity), in stored order."""

    newest: Ints  # per entity, -1 without a base
    ring_owner: Ints
    ring_t: Ints
    tile_owner: Ints
    tile_window: Ints
    tile: Ints
    clicks: Ints
    set_owner: Ints
    set_index: Ints
    element: Ints
    seen: Ints  # the tile the element was last seen in


@dataclass
class _Read:
    """One kind's stored states, split: logs decoded, bases decoded but for their lists of
    tiles and of distinct elements, still MessagePack (each with its owner and slot)."""

    log: Records
    log_owner: Ints
    newest: Ints
    ring_owner: Ints
    ring_t: Ints
    lists: list[msgspec.Raw]  # every base's tile lists, then every base's element lists
    list_owner: Ints
    list_slot: Ints  # the window, or the distinct count
    n_tile_lists: int


def _read(kind: Kind, states: Sequence[bytes | None]) -> _Read:
    size = kind.dtype.itemsize
    framed = [(e, raw, 2 + int.from_bytes(raw[:2], "big")) for e, raw in enumerate(states) if raw]
    owners = np.array([e for e, _, end in framed if end > 2], dtype=np.int64)
    bases = b"".join([raw[2:end] for _, raw, end in framed if end > 2])
    n_logged = [(len(raw) - end) // size for _, raw, end in framed]  # never a torn record
    logs = [raw[end : end + n * size] for (_, raw, end), n in zip(framed, n_logged, strict=True)]
    log = np.frombuffer(b"".join(logs), dtype=kind.dtype)
    log_owner = np.repeat(np.array([e for e, _, _ in framed], dtype=np.int64), n_logged)
    # One decode for all the bases: concatenated, they are the items of a MessagePack array.
    decoded: list[Any] = (
        kind.bases.decode(b"\xdd" + len(owners).to_bytes(4, "big") + bases) if len(owners) else []
    )
    newest = np.full(len(states), -1, dtype=np.int64)
    newest[owners] = [b[0] for b in decoded]
    rings = [b[1] for b in decoded]
    ring_owner = np.repeat(owners, np.fromiter(map(len, rings), np.int64, len(rings)))
    ring_t = newest[ring_owner] - np.fromiter(chain.from_iterable(rings), np.int64)
    n_windows, n_sets = len(kind.windows), len(kind.sets)
    lists = [x for b in decoded for x in b[2]] + [x for b in decoded for x in b[3]]
    list_owner = np.concatenate([np.repeat(owners, n_windows), np.repeat(owners, n_sets)])
    list_slot = np.concatenate(
        [np.tile(np.arange(n_windows), len(owners)), np.tile(np.arange(n_sets), len(owners))]
    )
    return _Read(
        log, log_owner, newest, ring_owner, ring_t, lists, list_owner, list_slot,
        n_windows * len(owners),
    )  # fmt: skip


def _stored(reads: Sequence[_Read], offsets: Sequence[int], params: _Params) -> _Stored:
    """The parts' stored states as one, entities numbered part after part; every stored list
    of the batch read at once."""
    shift = [np.int64(o) for o in offsets[: len(reads)]]
    lists = [x for r in reads for x in r.lists]
    n_items, values = _raw_ints(lists)
    if np.any(n_items % 2):
        raise ValueError("a stored base holds a list of odd length")
    pair_list = np.repeat(np.arange(len(lists)), n_items // 2)
    list_owner = np.concatenate([r.list_owner + o for r, o in zip(reads, shift, strict=True)])
    list_slot = np.concatenate([r.list_slot for r in reads])
    is_tile = (
        np.concatenate([np.arange(len(r.lists)) < r.n_tile_lists for r in reads])
        if lists
        else np.zeros(0, dtype=bool)
    )
    newest = np.concatenate([r.newest for r in reads])
    tiles = is_tile[pair_list]
    first, second = values[0::2], values[1::2]
    owner, slot = list_owner[pair_list], list_slot[pair_list]
    tile_owner, tile_window = owner[tiles], slot[tiles]
    set_owner, set_index = owner[~tiles], slot[~tiles]
    return _Stored(
        newest=newest,
        ring_owner=np.concatenate([r.ring_owner + o for r, o in zip(reads, shift, strict=True)]),
        ring_t=np.concatenate([r.ring_t for r in reads]),
        tile_owner=tile_owner,
        tile_window=tile_window,
        tile=newest[tile_owner] // params.tile_ms[tile_owner, tile_window] - first[tiles],
        clicks=second[tiles],
        set_owner=set_owner,
        set_index=set_index,
        element=first[~tiles],
        seen=newest[set_owner] // params.set_tile_ms[set_owner, set_index] - second[~tiles],
    )


# --- counting -------------------------------------------------------------------------------


@dataclass
class _Params:
    """Per entity, for each window slot of its kind: tile ms and tiles (1, 1 in the slots its
    kind lacks, whose values are never used), and the same for its distinct counts."""

    tile_ms: Ints  # [entity, window]
    tiles: Ints
    set_tile_ms: Ints  # [entity, set]
    set_tiles: Ints
    sets: Ints  # [entity]: how many distinct counts its kind has

    @staticmethod
    def of(kinds: Sequence[Kind], sizes: Sequence[int]) -> _Params:
        n_windows = max(len(k.windows) for k in kinds)
        n_sets = max(len(k.sets) for k in kinds)

        def padded(rows: list[Ints], width: int) -> Ints:
            out = np.ones((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                out[i, : len(row)] = row
            return np.repeat(out, sizes, axis=0)

        shapes = [k.shape for k in kinds]
        return _Params(
            padded([sh.tile_ms for sh in shapes], n_windows),
            padded([sh.tiles for sh in shapes], n_windows),
            padded([sh.set_tile_ms for sh in shapes], n_sets),
            padded([sh.set_tiles for sh in shapes], n_sets),
            np.repeat(np.array([len(k.sets) for k in kinds], dtype=np.int64), sizes),
        )


def count(parts: Sequence[Part]) -> Counted:
    """Features of each part's new clicks, and the compactions that are due.

    Clicks are ordered by (event time, click hash). A window of k tiles counts the click and
    the clicks of the entity ordered before it since the start of the tile k - 1 tiles before
    the click's. Logged and compacted clicks count alike, so when compaction happens (and so
    how the stream is cut into batches) never changes a feature. A click logged twice (a
    redelivery, a batch resent after a slot moved) counts once, where it was first logged.

    Every kind, window and distinct count of the batch is counted together, entities numbered
    part after part, windows as groups (entity, window) and distinct counts as entities of
    their own (set, entity): a batch costs a fixed number of numpy calls, whatever its size and
    the number of kinds (each call costs microseconds, far more than an element).
    """
    sizes = [len(p.states) for p in parts]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    n_entities = offsets[-1]
    kinds = [p.kind for p in parts]
    params = _Params.of(kinds, sizes)
    n_windows, n_sets = params.tile_ms.shape[1], params.set_tile_ms.shape[1]
    read = [_read(p.kind, p.states) for p in parts]
    stored = _stored(read, offsets, params)

    # Every part's records, logged ones first: (owner, time, click hash, elements per set).
    pieces = [(r.log, r.log_owner) for r in read] + [(p.records, p.entity) for p in parts]
    owner = np.concatenate([o + offsets[i % len(parts)] for i, (_, o) in enumerate(pieces)])
    t = np.concatenate([r["t"] for r, _ in pieces]).astype(np.int64)
    h = np.concatenate([r["h"] for r, _ in pieces]).astype(np.int64)
    elements = np.zeros((len(owner), n_sets), dtype=np.int64)
    at = 0
    for r, _ in pieces:
        for s in range(len(r.dtype.names or ()) - 2):
            elements[at : at + len(r), s] = r[f"e{s}"]
        at += len(r)
    n_new = sum(len(p.records) for p in parts)

    # np.unique keeps each click's first record, ordered by (entity, click hash); a stable
    # sort by (entity, time) then orders by (entity, time, click hash).
    _, first, inverse = np.unique((owner << 32) | h, return_index=True, return_inverse=True)
    order = _order(t[first], owner[first])
    rows = first[order]
    place = np.empty(len(rows), dtype=np.int64)
    place[order] = np.arange(len(rows))
    mine = place[inverse[len(owner) - n_new :]]  # each new click's place in ``rows``
    ent, times = owner[rows], t[rows]
    everyone = np.arange(n_entities)
    starts = np.searchsorted(ent, everyone)
    ends = np.searchsorted(ent, everyone, "right")
    me, my_t = ent[mine], times[mine]

    clicks = np.zeros((len(mine), n_windows), dtype=np.int64)
    if n_windows:
        tile_ms, n_tiles = params.tile_ms[me], params.tiles[me]  # [click, window]
        first_tile = my_t[:, None] // tile_ms - n_tiles + 1
        since = _Search(ent, times, n_entities).find(
            np.repeat(me, n_windows), (first_tile * tile_ms).ravel()
        )
        clicks = mine[:, None] + 1 - since.reshape(-1, n_windows)
        if len(stored.tile):  # and the compacted clicks from the first tile on
            group = stored.tile_owner * n_windows + stored.tile_window
            o = _order(stored.tile, group)
            group, total = group[o], np.concatenate([[0], np.cumsum(stored.clicks[o])])
            query = (me[:, None] * n_windows + np.arange(n_windows)).ravel()
            found = _Search(group, stored.tile[o], n_entities * n_windows).find(
                query, first_tile.ravel()
            )
            upto = np.searchsorted(group, query, "right")
            clicks += (total[upto] - total[found]).reshape(-1, n_windows)
    previous = np.where(mine > starts[me], times[mine - 1], -1)
    if len(stored.ring_t):
        # The newest compacted click at or before this one.
        o = _order(stored.ring_t, stored.ring_owner)
        ring_owner, ring_t = stored.ring_owner[o], stored.ring_t[o]
        i = _Search(ring_owner, ring_t, n_entities).find(me, my_t, "right") - 1
        j = np.maximum(i, 0)
        previous = np.maximum(previous, np.where((i >= 0) & (ring_owner[j] == me), ring_t[j], -1))
    gap = np.where(previous >= 0, my_t - previous, -1)
    distinct = np.zeros((len(mine), n_sets), dtype=np.int64)
    if n_sets:
        # Each set counts over its own copy of the records: entity s * n_entities + e.
        n, spread = len(rows), np.arange(n_sets)[:, None]
        inside = _distinct(
            ent=(spread * n_entities + ent).ravel(),
            tile=(times // params.set_tile_ms[ent].T).ravel(),
            elements=elements[rows].T.ravel(),
            starts=(spread * n + starts).ravel(),
            ends=(spread * n + ends).ravel(),
            base_owner=stored.set_index * n_entities + stored.set_owner,
            base_element=stored.element,
            base_seen=stored.seen,
            n_tiles=params.set_tiles.T.ravel(),
        )
        distinct = np.minimum(inside.reshape(n_sets, n)[:, mine].T, DISTINCT_CAP)

    size = ends - starts
    span = times[np.maximum(ends - 1, 0)] - times[np.minimum(starts, len(rows) - 1)]
    due = np.flatnonzero((size >= COMPACT_RECORDS) | ((size > 0) & (span >= COMPACT_AGE_MS)))
    bases: dict[int, bytes] = {}
    if len(due):
        part_of = np.repeat(np.arange(len(parts)), sizes)
        sorted_records = _Records(times, elements[rows], ent, starts, ends)
        bases = _compact(kinds, part_of, params, stored, due, sorted_records)

    values, out_bases, at = [], [], 0
    for p, part in enumerate(parts):
        kind, m = part.kind, len(part.records)
        columns = [clicks[at : at + m, : len(kind.windows)]]
        columns += [gap[at : at + m, None]] if kind.gap else []
        columns += [distinct[at : at + m, : len(kind.sets)]]
        values.append(np.hstack(columns))
        lo, hi = offsets[p], offsets[p + 1]
        out_bases.append({e - lo: b for e, b in bases.items() if lo <= e < hi})
        at += m
    return Counted(values, out_bases)


@dataclass
class _Records:
    """The batch's records, each click once, sorted by (entity, time): their times, elements
    per set and entities, and each entity's range of them."""

    times: Ints
    elements: Ints  # [record, set]
    ent: Ints
    starts: Ints
    ends: Ints


def _distinct(
    ent: Ints,
    tile: Ints,
    elements: Ints,
    starts: Ints,
    ends: Ints,
    base_owner: Ints,
    base_element: Ints,
    base_seen: Ints,
    n_tiles: Ints,
) -> Ints:
    """For each record (sorted by entity, then time): how many elements of its entity have
    their last sighting at or before it in its window of tiles ``(tile - n_tiles, tile]``.

    An element's last sighting, seen from a record p, is the later of its base tile and the
    tile of its latest record at or before p, so it changes only at the element's own records:
    between two of them (or before the first) it is one tile L, counted by the records p in that
    stretch with L <= tile(p) < L + n_tiles, a stretch of consecutive records, since tiles only
    grow. Each such stretch adds 1 to a difference array; its running sum is the count.
    """
    n = len(ent)
    present = np.flatnonzero(elements)
    key = (ent[present] << 32) | elements[present]
    o = np.argsort(key, kind="stable")
    seen, seen_key = present[o], key[o]  # sightings by (entity, element), then time
    is_first = np.ones(len(seen), dtype=bool)
    is_first[1:] = seen_key[1:] != seen_key[:-1]
    first, group = np.flatnonzero(is_first), np.cumsum(is_first) - 1
    following = ends[ent[seen]]  # the element's next sighting, else the entity's end
    again = ~is_first[1:]
    following[:-1][again] = seen[1:][again]

    # Join the stored elements (thousands per batch, never sorted) to the sighted ones.
    j = _lookup(seen_key[first], (base_owner << 32) | base_element)
    sighted = j >= 0
    group_base = np.full(len(first), _NONE, dtype=np.int64)
    group_base[j[sighted]] = base_seen[sighted]
    last = np.maximum(group_base[group], tile[seen])

    # Before its first sighting an element's base tile alone is its last sighting; elements
    # never sighted count alike per (entity, tile): one weighted stretch per run of them (the
    # stored order, most recently seen first, makes runs long).
    aside = np.flatnonzero(~sighted)
    run = _runs(base_owner[aside], base_seen[aside])
    run_owner, run_tile = base_owner[aside[run]], base_seen[aside[run]]
    weight = np.diff(np.append(run, len(aside)))
    owner = np.concatenate([ent[seen], base_owner[sighted], run_owner])
    start = np.concatenate([seen, starts[base_owner[sighted]], starts[run_owner]])
    stop = np.concatenate([following, seen[first[j[sighted]]], ends[run_owner]])
    last = np.concatenate([last, base_seen[sighted], run_tile])
    weights = np.concatenate([np.ones(len(seen) + np.count_nonzero(sighted)), weight])
    by_tile = _Search(ent, tile, len(starts))
    start = np.maximum(start, by_tile.find(owner, last))
    stop = np.minimum(stop, by_tile.find(owner, last + n_tiles[owner]))
    live = start < stop
    diff = np.bincount(start[live], weights[live], n + 1)
    diff -= np.bincount(stop[live], weights[live], n + 1)
    inside: Ints = np.cumsum(diff[:n]).astype(np.int64)
    return inside


# --- compaction -----------------------------------------------------------------------------


def _cut(values: list[int], sizes: Ints) -> list[list[int]]:
    """``values`` cut into consecutive lists of ``sizes``."""
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return [values[a:b] for a, b in pairwise(bounds)]


def _raw_lists(group: Ints, element: Ints, offset: Ints, groups: Ints) -> list[msgspec.Raw]:
    """For each of ``groups``: its entries' [element, offset, ...] as the MessagePack that
    msgspec writes (entries sorted by group), from one numpy buffer."""
    if not len(groups):
        return []
    sizes = np.bincount(group, minlength=int(groups.max()) + 1)[groups]
    pairs = np.empty(len(group), dtype=_PAIR)
    pairs["tag"] = _UINT32
    pairs["element"] = element
    pairs["offset"] = offset
    buf = pairs.tobytes()
    odd = set(group[(element < 0x10000) | (offset >= _FIXINT_END) | (offset < 0)].tolist())
    ends = np.cumsum(sizes)
    out = []
    for g, size, end in zip(groups.tolist(), sizes.tolist(), ends.tolist(), strict=True):
        start = end - size
        if not size:
            out.append(_EMPTY)
        elif g in odd:  # msgspec writes small ints shorter
            flat = np.stack([element[start:end], offset[start:end]], axis=1).ravel()
            out.append(msgspec.Raw(_encode(flat.tolist())))
        else:
            out.append(msgspec.Raw(_head(2 * size) + buf[6 * start : 6 * end]))
    return out


def _head(items: int) -> bytes:
    """A MessagePack array header."""
    if items < 16:
        return bytes((0x90 | items,))
    if items < 0x10000:
        return b"\xdc" + items.to_bytes(2, "big")
    return b"\xdd" + items.to_bytes(4, "big")


def _compact(
    kinds: Sequence[Kind],
    part_of: Ints,
    params: _Params,
    stored: _Stored,
    due: Ints,
    records: _Records,
) -> dict[int, bytes]:
    """The new bases of the entities ``due``: their records folded into their bases (tiles,
    newest click times, last sightings), keeping only what a later click can read."""
    n_entities = len(stored.newest)
    n_windows, n_sets = params.tile_ms.shape[1], params.set_tile_ms.shape[1]
    times, ent, starts, ends = records.times, records.ent, records.starts, records.ends
    is_due = np.zeros(n_entities, dtype=bool)
    is_due[due] = True
    newest = stored.newest.copy()
    newest[due] = np.maximum(newest[due], times[ends[due] - 1])

    # The ring: the newest RING distinct click times, stored and logged.
    kept = is_due[stored.ring_owner]
    take = np.minimum(ends[due] - starts[due], RING)
    last = np.repeat(ends[due] - take, take) + _within(take)
    owner = np.concatenate([stored.ring_owner[kept], ent[last]])
    clicked = np.concatenate([stored.ring_t[kept], times[last]])
    o = _order(-clicked, owner)  # newest first
    owner, clicked = owner[o], clicked[o]
    run = _runs(owner, clicked)
    owner, clicked = owner[run], clicked[run]
    keep = _rank(owner) < RING
    owner, clicked = owner[keep], clicked[keep]
    rings = _cut((newest[owner] - clicked).tolist(), np.bincount(owner, minlength=n_entities)[due])

    # Clicks per tile of every window: group (entity, window), newest tile first.
    mine = np.flatnonzero(is_due[ent])
    r_owner, r_times = ent[mine], times[mine]
    levels: list[list[int]] = []
    if n_windows:
        kept = is_due[stored.tile_owner]
        group = np.concatenate(
            [
                stored.tile_owner[kept] * n_windows + stored.tile_window[kept],
                (r_owner[:, None] * n_windows + np.arange(n_windows)).ravel(),
            ]
        )
        tile = np.concatenate(
            [stored.tile[kept], (r_times[:, None] // params.tile_ms[r_owner]).ravel()]
        )
        clicks = np.concatenate(
            [stored.clicks[kept], np.ones(n_windows * len(r_owner), dtype=np.int64)]
        )
        o = _order(-tile, group)
        group, tile, clicks = group[o], tile[o], clicks[o]
        run = _runs(group, tile)
        clicks = np.add.reduceat(clicks, run) if len(run) else clicks
        group, tile = group[run], tile[run]
        e, w = group // n_windows, group % n_windows
        top = newest[e] // params.tile_ms[e, w]
        keep = tile > top - params.tiles[e, w]
        flat = np.stack([top - tile, clicks], axis=1)[keep].ravel().tolist()
        per_group = np.bincount(group[keep], minlength=n_entities * n_windows)
        levels = _cut(flat, 2 * per_group.reshape(n_entities, n_windows)[due].ravel())
    sets: list[msgspec.Raw] = []
    if n_sets:
        sets = _compact_sets(params, stored, newest, is_due, due, records, mine)

    out = {}
    shapes = [(len(k.windows), len(k.sets)) for k in kinds]
    at = 0  # sets holds each due entity's own distinct counts only
    for i, (e, p, top_ms) in enumerate(
        zip(due.tolist(), part_of[due].tolist(), newest[due].tolist(), strict=True)
    ):
        windows, distinct = shapes[p]
        body = (
            top_ms,
            rings[i],
            levels[i * n_windows : i * n_windows + windows],
            sets[at : at + distinct],
        )
        out[e] = frame_base(_encode(body))
        at += distinct
    return out


def _compact_sets(
    params: _Params,
    stored: _Stored,
    newest: Ints,
    is_due: npt.NDArray[np.bool_],
    due: Ints,
    records: _Records,
    mine: Ints,
) -> list[msgspec.Raw]:
    """Each due entity's distinct elements per set with the tile each was last seen in,
    newest first, at most DISTINCT_CAP: its stored ones updated by its records' sightings."""
    n_sets = params.set_tile_ms.shape[1]
    kept = is_due[stored.set_owner]
    group = stored.set_owner[kept] * n_sets + stored.set_index[kept]  # (entity, set)
    element, seen = stored.element[kept], stored.seen[kept]
    # The records' latest sighting of each (entity, set, element)...
    r_owner = records.ent[mine]
    s_group = (r_owner[:, None] * n_sets + np.arange(n_sets)).ravel()
    s_element = records.elements[mine].ravel()
    s_tile = (records.times[mine][:, None] // params.set_tile_ms[r_owner]).ravel()
    present = s_element != 0
    key = (s_group[present] << 32) | s_element[present]
    o = _order(s_tile[present], key)
    key, s_tile = key[o], s_tile[present][o]
    latest = np.append(_runs(key)[1:] - 1, len(key) - 1) if len(key) else o
    key, s_tile = key[latest], s_tile[latest]
    # ... moves a stored element to a later tile, or adds it.
    j = _lookup(key, (group << 32) | element)
    hit = j >= 0
    seen = seen.copy()
    seen[hit] = np.maximum(seen[hit], s_tile[j[hit]])
    fresh = np.ones(len(key), dtype=bool)
    fresh[j[hit]] = False
    group = np.concatenate([group, key[fresh] >> 32])
    element = np.concatenate([element, key[fresh] & 0xFFFFFFFF])
    seen = np.concatenate([seen, s_tile[fresh]])

    e, s = group // n_sets, group % n_sets
    top = newest[e] // params.set_tile_ms[e, s]
    keep = seen > top - params.set_tiles[e, s]
    group, element, seen, top = group[keep], element[keep], seen[keep], top[keep]
    o = _order(-element, -seen, group)  # the most recently seen first
    group, element, seen, top = group[o], element[o], seen[o], top[o]
    keep = _rank(group) < DISTINCT_CAP
    groups = (due[:, None] * n_sets + np.arange(n_sets))[np.arange(n_sets) < params.sets[due, None]]
    return _raw_lists(group[keep], element[keep], (top - seen)[keep], groups)
