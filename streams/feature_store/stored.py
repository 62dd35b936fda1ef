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
from operator import itemgetter
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from streams.feature_store.arrays import Ints, filled, within
from streams.feature_store.layout import Layout

Records = npt.NDArray[np.void]
_accumulate = np.add.accumulate
_ints = msgspec.msgpack.Decoder(list[int]).decode
#: Many entities' bases in one call, as one MessagePack array of them. The lists of tiles and
#: of distinct elements, most of a base, stay raw MessagePack: numpy reads them.
_bases = msgspec.msgpack.Decoder(
    list[tuple[int, list[int], list[msgspec.Raw], list[msgspec.Raw]]]
).decode
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


def raw_ints(raws: Sequence[msgspec.Raw], n_single: int) -> tuple[Ints, Ints]:
    """The items of MessagePack arrays of non-negative ints as stored: (items per array, all
    items in order). Read by numpy where an array holds what it nearly always does: only
    fixints (the first ``n_single`` arrays: tile offsets and counts) or only uint32, fixint
    pairs (the others: distinct elements and their tile offsets); any other array (a tile of
    128 clicks or more, an element below 65536, an array 32) by msgspec, alone.

    msgspec found where each array ends, so its header says how many items its body holds:
    a body of fixints, or of whole uint32, fixint pairs, is all there is to check.
    """
    n = len(raws)
    sizes = np.fromiter(map(len, raws), np.int64, n)
    if not n:
        return sizes, sizes
    buf = np.frombuffer(b"".join(raws), dtype=np.uint8)
    ends = _accumulate(sizes)
    head = buf[ends - sizes]
    body = sizes - 1 - 2 * (head >= 0xA0)  # fixarray: 0x90 + up to 15 items, else array 16
    slow = (head < 0x90) | ((head >= 0xA0) & (head != 0xDC))
    slow[n_single:] |= body[n_single:] % 6 != 0
    fast = (~slow).nonzero()[0]
    n_bytes = body[fast]
    data = buf[(ends[fast] - n_bytes).repeat(n_bytes) + within(n_bytes)]  # bodies only
    split = fast.searchsorted(n_single)
    at = int(np.add.reduce(n_bytes[:split]))
    single, pairs = data[:at], data[at:].view(PAIR)
    bad_single = single >= FIXINT_END
    bad_pair = (pairs["tag"] != UINT32) | (pairs["offset"] >= FIXINT_END)
    if np.count_nonzero(bad_single) or np.count_nonzero(bad_pair):  # those arrays: msgspec
        of_single, of_pair = fast[:split].repeat(n_bytes[:split]), fast[split:]
        of_pair = of_pair.repeat(n_bytes[split:] // 6)
        slow[of_single[bad_single]] = True
        slow[of_pair[bad_pair]] = True
        single, pairs = single[~slow[of_single]], pairs[~slow[of_pair]]
    items = body.copy()
    items[n_single:] //= 3
    values = np.empty(len(single) + 2 * len(pairs), dtype=np.int64)
    values[: len(single)] = single
    values[len(single) :: 2] = pairs["element"]
    values[len(single) + 1 :: 2] = pairs["offset"]
    if not np.count_nonzero(slow):
        return items, values
    decoded = {i: _ints(raws[i]) for i in slow.nonzero()[0].tolist()}
    items[list(decoded)] = [len(v) for v in decoded.values()]
    out = np.empty(int(np.add.reduce(items)), dtype=np.int64)
    out[(~slow).repeat(items)] = values
    first = (_accumulate(items) - items).tolist()
    for i, v in decoded.items():
        out[first[i] : first[i] + len(v)] = v
    return items, out


@dataclass
class Stored:
    """What a batch's entities' states hold, as flat arrays (each entry with its owner entity):
    their logs' records, and their bases, in stored order."""

    log_owner: Ints
    log_t: Ints
    log_h: Ints
    log_elements: Ints  # [record, distinct count]
    newest: Ints  # per entity, -1 without a base
    ring: Ints  # [entity, newest click times stored]: -1 in slots not stored
    tile_owner: Ints
    tile_window: Ints
    tile: Ints
    clicks: Ints
    set_owner: Ints
    set_index: Ints
    element: Ints
    seen: Ints  # the tile the element was last seen in


def read_states(layout: Layout, kinds: Ints, states: Sequence[bytes | None]) -> Stored:
    """The states of entities of ``kinds``, split and decoded: every base at once, the logs
    kind by kind (their records differ in size)."""
    tables, specs = layout.tables, layout.kinds
    record_size = tables.record_size.tolist()
    kind_of = kinds.tolist()
    base_owner, bases = [], []
    log_owner: list[int] = []
    logs: list[list[bytes]] = [[] for _ in specs]
    owners: list[list[int]] = [[] for _ in specs]
    for e, raw in enumerate(states):
        if not raw:
            continue
        end = 2 + (raw[0] << 8 | raw[1])
        if end > 2:
            base_owner.append(e)
            bases.append(raw[2:end])
        if len(raw) > end:
            k = kind_of[e]
            m = (len(raw) - end) // record_size[k]  # never a torn record
            logs[k].append(raw[end : end + m * record_size[k]])
            owners[k] += [e] * m
    for mine in owners:
        log_owner += mine
    owner = np.array(log_owner, dtype=np.int64)
    t, h = np.empty(len(owner), dtype=np.int64), np.empty(len(owner), dtype=np.int64)
    elements = np.zeros((len(owner), tables.sets), dtype=np.int64)
    at = 0
    for spec, chunks in zip(specs, logs, strict=True):
        if chunks:
            log = np.frombuffer(b"".join(chunks), dtype=spec.dtype)
            upto = at + len(log)
            t[at:upto], h[at:upto] = log["t"], log["h"]
            for s in range(len(spec.sets)):
                elements[at:upto, s] = log[f"e{s}"]
            at = upto

    n = len(states)
    newest = filled(n, -1)
    if not bases:
        empty = np.zeros(0, dtype=np.int64)
        return Stored(owner, t, h, elements, newest, filled(n, -1)[:, None], *(empty,) * 8)
    # One decode for all the bases: concatenated, they are the items of a MessagePack array.
    decoded: list[Any] = _bases(b"\xdd" + len(bases).to_bytes(4, "big") + b"".join(bases))
    based = np.array(base_owner, dtype=np.int64)
    newest[based] = [b[0] for b in decoded]
    rings = [b[1] for b in decoded]
    per_base = np.fromiter(map(len, rings), np.int64, len(rings))
    ring_owner = based.repeat(per_base)
    ring = filled(n * max(int(np.maximum.reduce(per_base)), 1), -1).reshape(n, -1)
    ring[ring_owner, within(per_base)] = newest[ring_owner] - np.fromiter(
        chain.from_iterable(rings), np.int64
    )
    # Every base's tile lists, then every base's element lists: one read for all.
    lists = [x for b in decoded for x in b[2]]
    n_single = len(lists)
    lists += [x for b in decoded for x in b[3]]
    base_kinds = kinds[based]
    counters = np.concatenate((tables.n_windows[base_kinds], tables.n_sets[base_kinds]))
    found = np.fromiter(
        chain(map(len, map(itemgetter(2), decoded)), map(len, map(itemgetter(3), decoded))),
        np.int64,
        len(counters),
    )
    if np.count_nonzero(found != counters):
        raise ValueError("a stored base has the wrong number of windows or distinct counts")
    items, values = raw_ints(lists, n_single)
    per_list = items >> 1
    if np.count_nonzero(items & 1):
        raise ValueError("a stored base holds a list of odd length")
    owner_of = np.concatenate((based, based)).repeat(counters).repeat(per_list)
    counter = within(counters)
    counter[n_single:] += tables.windows
    counter = counter.repeat(per_list)
    first, second = values[0::2], values[1::2]
    n_tiles = int(np.add.reduce(per_list[:n_single]))
    tile_owner, set_owner = owner_of[:n_tiles], owner_of[n_tiles:]
    top = newest[owner_of] // tables.tile_ms[kinds[owner_of], counter]
    return Stored(
        log_owner=owner,
        log_t=t,
        log_h=h,
        log_elements=elements,
        newest=newest,
        ring=ring,
        tile_owner=tile_owner,
        tile_window=counter[:n_tiles],
        tile=top[:n_tiles] - first[:n_tiles],
        clicks=second[:n_tiles],
        set_owner=set_owner,
        set_index=counter[n_tiles:] - tables.windows,
        element=first[n_tiles:],
        seen=top[n_tiles:] - second[n_tiles:],
    )
