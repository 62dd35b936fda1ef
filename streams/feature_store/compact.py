"""Compaction: an entity's logged clicks folded into its base, for all the due entities of a
batch at once. The bases hold what the first implementation wrote, in as many bytes
(docs/redis-keys.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import msgspec
import numpy as np
import numpy.typing as npt

from slidr.features import DISTINCT_CAP
from streams.feature_store.arrays import Ints, lexsort, lookup, rank, runs, within
from streams.feature_store.layout import Kind
from streams.feature_store.stored import (
    EMPTY_LIST,
    FIXINT_END,
    PAIR,
    UINT32,
    Params,
    Stored,
    frame_base,
)

#: Newest click times the base keeps: a click up to this many places late still gets an exact
#: gap after its predecessors were compacted.
RING = 4
#: The log is folded into the base once it holds this many clicks, or once its oldest click
#: is this much older than its newest: the log stays short, the base refreshes the TTL.
COMPACT_RECORDS = 16
COMPACT_AGE_MS = 3_600_000
_encode = msgspec.msgpack.Encoder().encode


@dataclass
class Sorted:
    """The batch's records, each click once, sorted by (entity, time): their times, elements
    per set and entities, and each entity's range of them."""

    times: Ints
    elements: Ints  # [record, set]
    ent: Ints
    starts: Ints
    ends: Ints


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
    pairs = np.empty(len(group), dtype=PAIR)
    pairs["tag"] = UINT32
    pairs["element"] = element
    pairs["offset"] = offset
    buf = pairs.tobytes()
    odd = set(group[(element < 0x10000) | (offset >= FIXINT_END) | (offset < 0)].tolist())
    ends = np.cumsum(sizes)
    out = []
    for g, size, end in zip(groups.tolist(), sizes.tolist(), ends.tolist(), strict=True):
        start = end - size
        if not size:
            out.append(EMPTY_LIST)
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


def compact(
    kinds: Sequence[Kind],
    part_of: Ints,
    params: Params,
    stored: Stored,
    due: Ints,
    records: Sorted,
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
    last = np.repeat(ends[due] - take, take) + within(take)
    owner = np.concatenate([stored.ring_owner[kept], ent[last]])
    clicked = np.concatenate([stored.ring_t[kept], times[last]])
    o = lexsort(-clicked, owner)  # newest first
    owner, clicked = owner[o], clicked[o]
    run = runs(owner, clicked)
    owner, clicked = owner[run], clicked[run]
    keep = rank(owner) < RING
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
        o = lexsort(-tile, group)
        group, tile, clicks = group[o], tile[o], clicks[o]
        run = runs(group, tile)
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
    params: Params,
    stored: Stored,
    newest: Ints,
    is_due: npt.NDArray[np.bool_],
    due: Ints,
    records: Sorted,
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
    o = lexsort(s_tile[present], key)
    key, s_tile = key[o], s_tile[present][o]
    latest = np.append(runs(key)[1:] - 1, len(key) - 1) if len(key) else o
    key, s_tile = key[latest], s_tile[latest]
    # ... moves a stored element to a later tile, or adds it.
    j = lookup(key, (group << 32) | element)
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
    o = lexsort(-element, -seen, group)  # the most recently seen first
    group, element, seen, top = group[o], element[o], seen[o], top[o]
    keep = rank(group) < DISTINCT_CAP
    groups = (due[:, None] * n_sets + np.arange(n_sets))[np.arange(n_sets) < params.sets[due, None]]
    return _raw_lists(group[keep], element[keep], (top - seen)[keep], groups)
