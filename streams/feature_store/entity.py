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

import numpy as np

from slidr.features import DISTINCT_CAP
from streams.feature_store.arrays import (
    Floats,
    Ints,
    Search,
    argsort2,
    filled,
    join,
    runs,
    starts_of,
)
from streams.feature_store.compact import (
    COMPACT_AGE_MS,
    COMPACT_RECORDS,
    Sightings,
    Sorted,
    compact,
)
from streams.feature_store.layout import Layout
from streams.feature_store.stored import Stored, read_states

#: Below any tile: "not in the base".
_NONE = -(2**62)
_accumulate = np.add.accumulate


@dataclass
class Counted:
    """Per new record, its features as a slot row (``Tables``: the clicks in each window, the
    gap in ms or -1 for none, each distinct count), and the new length-prefixed base of each
    entity whose compaction is due."""

    values: Ints  # [record, slot]
    bases: dict[int, bytes]


def count(
    layout: Layout,
    kinds: Ints,
    states: Sequence[bytes | None],
    owner: Ints,
    t: Ints,
    h: Ints,
    elements: Ints,
) -> Counted:
    """Features of a batch's new records, and the compactions that are due.

    ``kinds`` and ``states``: per entity, its kind and its stored state as read before the batch
    was appended to it; a new record is its entity (``owner``), event time ms, click hash and
    element per distinct count of the layout (0: none, and in slots its kind lacks).

    Clicks are ordered by (event time, click hash). A window of k tiles counts the click and
    the clicks of the entity ordered before it since the start of the tile k - 1 tiles before
    the click's. Logged and compacted clicks count alike, so when compaction happens (and so
    how the stream is cut into batches) never changes a feature. A click logged twice (a
    redelivery, a batch resent after a slot moved) counts once, where it was first logged.

    Every kind and counter (window or distinct count) of the batch is counted in one pass: a
    counter of an entity is a group of its own, (counter, entity), holding a copy of the
    entity's records, sorted by time, each in the counter's tile. Whatever is counted (a
    record, a compacted tile, a distinct element while it is the element's last sighting)
    counts for a stretch of consecutive records of its group, bounded by tiles: one +w and one
    -w in a difference array, whose running sum is every count at once. A batch costs a fixed
    number of numpy calls, whatever its size, kinds and counters.
    """
    tables = layout.tables
    n_entities, n_windows = len(kinds), tables.windows
    stored = read_states(layout, kinds, states)
    n_new = len(owner)
    if len(stored.log_owner):  # logged records first: the first of a click hash counts
        owner = np.concatenate((stored.log_owner, owner))
        t = np.concatenate((stored.log_t, t))
        h = np.concatenate((stored.log_h, h))
        elements = np.concatenate((stored.log_elements, elements))

    # Each click once, its first record: a stable sort by (entity, click hash) keeps it first;
    # a stable sort of those by (entity, time) then orders by (entity, time, click hash).
    key = (owner << 32) | h
    by_hash = key.argsort(kind="stable")
    is_first = starts_of(key[by_hash])
    first = by_hash[is_first]
    order = argsort2(owner[first], n_entities, t[first])
    rows = first[order]
    n = len(rows)
    place = np.empty(n, dtype=np.int64)
    place[order] = np.arange(n)
    unique_of = np.empty(len(owner), dtype=np.int64)
    unique_of[by_hash] = _accumulate(is_first, dtype=np.int64) - 1
    mine = place[unique_of[len(owner) - n_new :]]  # each new record's place in ``rows``
    ent, times, elements = owner[rows], t[rows], elements[rows]
    sizes = np.bincount(ent, minlength=n_entities)
    ends = _accumulate(sizes)
    starts = ends - sizes

    # Counter c of entity e is group c * n_entities + e; its copy of record r is c * n + r.
    spread = tables.spread
    group_of = (spread * n_entities + ent).ravel()
    tile = (times[:, None] // tables.tile_ms[kinds[ent]]).T.ravel()
    group_start = (spread * n + starts).ravel()
    group_end = (spread * n + ends).ravel()

    # Stretches (group, first record, end, lowest tile, last tile, weight) of what counts, up
    # to the tile ``last + n_tiles`` of its group. A record counts in each window for itself and
    # the records after it; a compacted tile for all the entity's records (a late one too).
    windowed = n_windows * n
    tile_group = stored.tile_window * n_entities + stored.tile_owner
    velocity = group_of[:windowed]
    parts = [
        (velocity, np.arange(windowed), group_end[velocity], tile[:windowed]),
        (tile_group, group_start[tile_group], group_end[tile_group], stored.tile),
    ]
    weights = [np.ones(windowed), stored.clicks.astype(np.float64)]
    sightings = None
    if tables.sets:
        distinct, weight, sightings = _distinct(
            stored, n_entities, n_windows, elements, group_of, tile, group_start, group_end
        )
        parts.append(distinct)
        weights.append(weight)
    group, start, stop, last = (np.concatenate(column) for column in zip(*parts, strict=True))
    by_tile = Search(group_of, tile, group_start, group_end)
    # The distinct counts' stretches begin at their last sighting's tile at the earliest.
    counted = windowed + len(tile_group)
    start[counted:] = np.maximum(start[counted:], by_tile.find(group[counted:], last[counted:]))
    stop = np.minimum(stop, by_tile.find(group, last + tables.tiles[kinds].T.ravel()[group]))
    live = (start < stop).nonzero()[0]
    weight = np.concatenate(weights)[live]
    total = np.bincount(start[live], weight, len(tile) + 1)
    total -= np.bincount(stop[live], weight, len(tile) + 1)
    counts = _accumulate(total[:-1]).astype(np.int64).reshape(-1, n)[:, mine].T

    values = np.empty((n_new, tables.slots), dtype=np.int64)
    values[:, :n_windows] = counts[:, :n_windows]
    values[:, n_windows + 1 :] = np.minimum(counts[:, n_windows:], DISTINCT_CAP)
    # The gap: from the record before, else the newest compacted click at or before it.
    me, my_t = ent[mine], times[mine]
    previous = np.where(mine > starts[me], times[mine - 1], -1)
    ring = stored.ring[me]
    previous = np.maximum(previous, np.where(ring <= my_t[:, None], ring, -1).max(axis=1))
    values[:, n_windows] = np.where(previous >= 0, my_t - previous, -1)

    span = times[np.maximum(ends - 1, 0)] - times[np.minimum(starts, n - 1)]
    due = ((sizes >= COMPACT_RECORDS) | ((sizes > 0) & (span >= COMPACT_AGE_MS))).nonzero()[0]
    bases: dict[int, bytes] = {}
    if len(due):
        records = Sorted(times, ent, starts, ends, tile[:windowed].reshape(-1, n))
        bases = compact(layout, kinds, stored, due, records, sightings)
    return Counted(values, bases)


def _distinct(
    stored: Stored,
    n_entities: int,
    n_windows: int,
    elements: Ints,
    group_of: Ints,
    tile: Ints,
    group_start: Ints,
    group_end: Ints,
) -> tuple[tuple[Ints, Ints, Ints, Ints], Floats, Sightings]:
    """The stretches of the distinct counts (group, first record, end, last tile) and their
    weights, and the sightings, for compaction: an element counts for the records while its
    last sighting at or before them is in their window.

    An element's last sighting, seen from a record p, is the later of its base tile and the
    tile of its latest record at or before p, so it changes only at the element's own records:
    between two of them (or before the first) it is one tile L, counted by the records p in that
    stretch with L <= tile(p) < L + n_tiles. Stored elements never sighted in the batch count
    alike per (group, tile): one weighted stretch per run of them (the stored order, most
    recently seen first, makes runs long).
    """
    n = len(elements)
    flat = elements.T.ravel()  # distinct count s of record r: group copy (n_windows + s) * n + r
    present = flat.nonzero()[0]
    key = (group_of[present + n_windows * n] << 32) | flat[present]
    o = key.argsort(kind="stable")
    seen, key = present[o] + n_windows * n, key[o]  # sightings by (group, element), then time
    is_first = starts_of(key)
    first = is_first.nonzero()[0]
    group = key >> 32
    following = group_end[group]  # the element's next sighting, else the group's end
    again = ~is_first[1:]
    following[:-1][again] = seen[1:][again]

    # The stored elements sighted in the batch, and the others.
    base_group = (stored.set_index + n_windows) * n_entities + stored.set_owner
    j = join(
        key[first], group[first], (base_group << 32) | stored.element, base_group, len(group_end)
    )
    hit = j >= 0
    sighted, aside = hit.nonzero()[0], (~hit).nonzero()[0]
    j = j[sighted]
    base_tile = filled(len(first), _NONE)
    base_tile[j] = stored.seen[sighted]
    last = np.maximum(base_tile[_accumulate(is_first, dtype=np.int64) - 1], tile[seen])
    r = runs(base_group[aside], stored.seen[aside])
    run = aside[r]
    weight = np.empty(len(seen) + len(sighted) + len(run))
    weight.fill(1.0)
    weight[len(weight) - len(run) : -1] = r[1:] - r[:-1]
    weight[len(weight) - len(run) :][-1:] = len(aside) - r[-1:]
    stretches = (
        np.concatenate((group, base_group[sighted], base_group[run])),
        np.concatenate((seen, group_start[base_group[sighted]], group_start[base_group[run]])),
        np.concatenate((following, seen[first[j]], group_end[base_group[run]])),
        np.concatenate((last, stored.seen[sighted], stored.seen[run])),
    )
    newest = np.empty(len(first), dtype=np.int64)  # each (group, element)'s last sighting
    newest[:-1] = first[1:] - 1
    newest[-1:] = len(seen) - 1
    latest = tile[seen[newest]]
    return stretches, weight, Sightings(key[first], latest, sighted, j)
