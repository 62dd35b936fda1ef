"""An entity's stored state: a 2-byte length, the base (MessagePack), then the log (fixed-size
records). Framing, and reading the states of a batch's entities into flat arrays.

The base is (newest click ms, [newest - t of the newest click times], [per window: tile offset,
clicks, ...], [per distinct count: element, tile offset, ...]), offsets from the newest click's
tile; docs/redis-keys.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from streams.feature_store.arrays import Ints, within
from streams.feature_store.layout import Kind

Records = npt.NDArray[np.void]
_ints = msgspec.msgpack.Decoder(list[int]).decode
#: A distinct element and its tile offset as MessagePack writes nearly all of them: a uint32
#: (the element, a 32-bit hash, is below 65536 once in 65536) and a positive fixint.
PAIR = np.dtype([("tag", "u1"), ("element", ">u4"), ("offset", "u1")])
UINT32, FIXINT_END = 0xCE, 0x80
EMPTY_LIST = msgspec.Raw(b"\x90")


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
class Params:
    """Per entity, for each window slot of its kind: tile ms and tiles (1, 1 in the slots its
    kind lacks, whose values are never used), and the same for its distinct counts."""

    tile_ms: Ints  # [entity, window]
    tiles: Ints
    set_tile_ms: Ints  # [entity, set]
    set_tiles: Ints
    sets: Ints  # [entity]: how many distinct counts its kind has

    @staticmethod
    def of(kinds: Sequence[Kind], sizes: Sequence[int]) -> Params:
        n_windows = max(len(k.windows) for k in kinds)
        n_sets = max(len(k.sets) for k in kinds)

        def padded(rows: list[Ints], width: int) -> Ints:
            out = np.ones((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                out[i, : len(row)] = row
            return np.repeat(out, sizes, axis=0)

        shapes = [k.shape for k in kinds]
        return Params(
            padded([sh.tile_ms for sh in shapes], n_windows),
            padded([sh.tiles for sh in shapes], n_windows),
            padded([sh.set_tile_ms for sh in shapes], n_sets),
            padded([sh.set_tiles for sh in shapes], n_sets),
            np.repeat(np.array([len(k.sets) for k in kinds], dtype=np.int64), sizes),
        )


def raw_ints(raws: Sequence[msgspec.Raw]) -> tuple[Ints, Ints]:
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
        step = within(n)
        values = buf[np.repeat(at + header, n) + step]
        out[np.repeat(first, n) + step] = values
        bad = values >= FIXINT_END
        if bad.any():
            slow[np.repeat(np.arange(len(raws)), n)[bad]] = True
    if pairs.any():
        n = np.where(pairs, items // 2, 0)
        step = within(n)
        where = np.repeat(at + header, n) + 6 * step
        element = buf[where + 1].astype(np.int64) << 24
        element |= (buf[where + 2].astype(np.int64) << 16) | (buf[where + 3].astype(np.int64) << 8)
        element |= buf[where + 4]
        offset = buf[where + 5]
        slot = np.repeat(first, n) + 2 * step
        out[slot] = element
        out[slot + 1] = offset
        bad = (buf[where] != UINT32) | (offset >= FIXINT_END)
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
class Stored:
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
class Read:
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


def read_states(kind: Kind, states: Sequence[bytes | None]) -> Read:
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
    return Read(
        log, log_owner, newest, ring_owner, ring_t, lists, list_owner, list_slot,
        n_windows * len(owners),
    )  # fmt: skip


def stored_states(reads: Sequence[Read], offsets: Sequence[int], params: Params) -> Stored:
    """The parts' stored states as one, entities numbered part after part; every stored list
    of the batch read at once."""
    shift = [np.int64(o) for o in offsets[: len(reads)]]
    lists = [x for r in reads for x in r.lists]
    n_items, values = raw_ints(lists)
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
    return Stored(
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
