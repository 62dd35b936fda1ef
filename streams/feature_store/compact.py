"""Compaction: an entity's logged clicks folded into its base, for all the due entities of a
batch at once. The bases hold what the first implementation wrote, in as many bytes
(docs/redis-keys.md)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import msgspec
import numpy as np
import numpy.typing as npt

from slidr.features import DISTINCT_CAP
from streams.feature_store.arrays import Ints, argsort2, rank, runs
from streams.feature_store.layout import Layout, Tables
from streams.feature_store.stored import EMPTY_LIST, FIXINT_END, PAIR, UINT32, Stored, frame_base

#: Newest click times the base keeps: a click up to this many places late still gets an exact
#: gap after its predecessors were compacted.
RING = 4
#: The log is folded into the base once it holds this many clicks, or once its oldest click
#: is this much older than its newest: the log stays short, the base refreshes the TTL.
COMPACT_RECORDS = 16
COMPACT_AGE_MS = 3_600_000
_encode = msgspec.msgpack.Encoder().encode
_accumulate = np.add.accumulate
_RING_BACK = np.arange(1, RING + 1)


@dataclass
class Sorted:
    """The batch's records, each click once, sorted by (entity, time): their times, entities
    and tiles per window, and each entity's range of them."""

    times: Ints
    ent: Ints
    starts: Ints
    ends: Ints
    tiles: Ints  # [window, record]


@dataclass
class Sightings:
    """The batch's distinct elements per group (n_windows + distinct count) * n_entities +
    entity: each one's key (group << 32 | element) and newest tile sighted; and the stored
    elements sighted (indices) with their place in ``key``."""

    key: Ints
    latest: Ints
    stored: Ints
    place: Ints


def _cut(values: list[int], sizes: Ints) -> list[list[int]]:
    """``values`` cut into consecutive lists of ``sizes``."""
    return [values[a:b] for a, b in pairwise([0, *_accumulate(sizes).tolist()])]


def _raw_lists(group: Ints, element: Ints, offset: Ints, groups: Ints) -> list[msgspec.Raw]:
    """For each of ``groups``: its entries' [element, offset, ...] as the MessagePack that
    msgspec writes (entries sorted by group), from one numpy buffer."""
    if not len(groups):
        return []
    sizes = np.bincount(group, minlength=int(groups[-1]) + 1)[groups]
    pairs = np.empty(len(group), dtype=PAIR)
    pairs["tag"] = UINT32
    pairs["element"] = element
    pairs["offset"] = offset
    buf = pairs.tobytes()
    odd = set(group[(element < 0x10000) | (offset >= FIXINT_END) | (offset < 0)].tolist())
    ends = _accumulate(sizes)
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
    layout: Layout,
    kinds: Ints,
    stored: Stored,
    due: Ints,
    records: Sorted,
    sightings: Sightings | None,
) -> dict[int, bytes]:
    """The new bases of the entities ``due``: their records folded into their bases (tiles,
    newest click times, last sightings), keeping only what a later click can read."""
    tables = layout.tables
    n_entities = len(kinds)
    n_windows = tables.windows
    times, ent, starts, ends = records.times, records.ent, records.starts, records.ends
    is_due = np.zeros(n_entities, dtype=bool)
    is_due[due] = True
    newest = stored.newest.copy()
    newest[due] = np.maximum(newest[due], times[ends[due] - 1])

    # The ring: the newest RING distinct click times, stored and logged (the entity's last
    # RING records), -1 where there are fewer; one row per due entity.
    ring = stored.ring[due]
    back = ends[due][:, None] - _RING_BACK
    candidates = np.hstack(
        (ring, np.where(back >= starts[due][:, None], times[np.maximum(back, 0)], -1))
    )
    candidates.sort(axis=1)
    candidates[:, :-1][candidates[:, :-1] == candidates[:, 1:]] = -1  # each time once
    candidates.sort(axis=1)
    newest_first = candidates[:, : -RING - 1 : -1]
    kept = np.add.reduce(newest_first >= 0, axis=1).tolist()
    offsets = (newest[due][:, None] - newest_first).tolist()
    rings = [row[:k] for row, k in zip(offsets, kept, strict=True)]

    # Clicks per tile of every window: group (entity, window), newest tile first.
    mine = is_due[ent].nonzero()[0]
    r_owner = ent[mine]
    levels: list[list[int]] = []
    if n_windows:
        kept_tiles = is_due[stored.tile_owner].nonzero()[0]
        group = np.concatenate(
            (
                stored.tile_owner[kept_tiles] * n_windows + stored.tile_window[kept_tiles],
                (r_owner[:, None] * n_windows + np.arange(n_windows)).ravel(),
            )
        )
        tile = np.concatenate((stored.tile[kept_tiles], records.tiles[:, mine].T.ravel()))
        clicks = np.concatenate(
            (stored.clicks[kept_tiles], np.ones(n_windows * len(r_owner), dtype=np.int64))
        )
        o = argsort2(group, n_entities * n_windows, -tile)
        group, tile, clicks = group[o], tile[o], clicks[o]
        run = runs(group, tile)
        clicks = np.add.reduceat(clicks, run) if len(run) else clicks
        group, tile = group[run], tile[run]
        e, w = group // n_windows, group % n_windows
        e_kinds = kinds[e]
        top = newest[e] // tables.tile_ms[e_kinds, w]
        keep = tile > top - tables.tiles[e_kinds, w]
        keep = keep.nonzero()[0]
        flat = np.empty(2 * len(keep), dtype=np.int64)  # offset, clicks, offset, ...
        flat[0::2] = (top - tile)[keep]
        flat[1::2] = clicks[keep]
        per_group = np.bincount(group[keep], minlength=n_entities * n_windows)
        levels = _cut(flat.tolist(), 2 * per_group.reshape(n_entities, n_windows)[due].ravel())
    sets: list[msgspec.Raw] = []
    if sightings is not None and np.count_nonzero(tables.n_sets[kinds[due]]):
        sets = _compact_sets(tables, kinds, stored, newest, is_due, due, sightings)

    out = {}
    shapes = [(len(k.windows), len(k.sets)) for k in layout.kinds]
    at = 0  # sets holds each due entity's own distinct counts only
    for i, (e, k, top_ms) in enumerate(
        zip(due.tolist(), kinds[due].tolist(), newest[due].tolist(), strict=True)
    ):
        windows, distinct = shapes[k]
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
    tables: Tables,
    kinds: Ints,
    stored: Stored,
    newest: Ints,
    is_due: npt.NDArray[np.bool_],
    due: Ints,
    sightings: Sightings,
) -> list[msgspec.Raw]:
    """Each due entity's distinct elements per set with the tile each was last seen in,
    newest first, at most DISTINCT_CAP: its stored ones, moved to a later tile where the batch
    sighted them, and those the batch sighted first."""
    n_entities, n_windows, n_sets = len(kinds), tables.windows, tables.sets
    sighted = sightings.stored
    seen = stored.seen.copy()
    seen[sighted] = np.maximum(seen[sighted], sightings.latest[sightings.place])
    kept = is_due[stored.set_owner].nonzero()[0]
    counter, e = np.divmod(sightings.key >> 32, n_entities)
    fresh = is_due[e]
    fresh[sightings.place] = False
    fresh = fresh.nonzero()[0]
    group = np.concatenate(
        (
            stored.set_owner[kept] * n_sets + stored.set_index[kept],  # (entity, set)
            e[fresh] * n_sets + counter[fresh] - n_windows,
        )
    )
    element = np.concatenate((stored.element[kept], sightings.key[fresh] & 0xFFFFFFFF))
    seen = np.concatenate((seen[kept], sightings.latest[fresh]))

    e, s = np.divmod(group, n_sets)
    e_kinds, s = kinds[e], s + n_windows
    top = newest[e] // tables.tile_ms[e_kinds, s]
    keep = (seen > top - tables.tiles[e_kinds, s]).nonzero()[0]
    group, element, seen, top = group[keep], element[keep], seen[keep], top[keep]
    o = np.lexsort((-element, -seen, group))  # the most recently seen first
    group, element, seen, top = group[o], element[o], seen[o], top[o]
    keep = (rank(group) < DISTINCT_CAP).nonzero()[0]
    n_own = tables.n_sets[kinds[due]]
    groups = (due[:, None] * n_sets + np.arange(n_sets))[np.arange(n_sets) < n_own[:, None]]
    return _raw_lists(group[keep], element[keep], (top - seen)[keep], groups)
