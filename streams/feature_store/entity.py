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
from streams.feature_store.arrays import Ints, Search, lexsort, lookup, runs
from streams.feature_store.compact import COMPACT_AGE_MS, COMPACT_RECORDS, Sorted, compact
from streams.feature_store.layout import Kind
from streams.feature_store.stored import Params, Records, read_states, stored_states

#: Below any tile: "the element is not in the base".
_NONE = -(2**62)


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
    params = Params.of(kinds, sizes)
    n_windows, n_sets = params.tile_ms.shape[1], params.set_tile_ms.shape[1]
    reads = [read_states(p.kind, p.states) for p in parts]
    stored = stored_states(reads, offsets, params)

    # Every part's records, logged ones first: (owner, time, click hash, elements per set).
    pieces = [(r.log, r.log_owner) for r in reads] + [(p.records, p.entity) for p in parts]
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
    order = lexsort(t[first], owner[first])
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
        since = Search(ent, times, n_entities).find(
            np.repeat(me, n_windows), (first_tile * tile_ms).ravel()
        )
        clicks = mine[:, None] + 1 - since.reshape(-1, n_windows)
        if len(stored.tile):  # and the compacted clicks from the first tile on
            group = stored.tile_owner * n_windows + stored.tile_window
            o = lexsort(stored.tile, group)
            group, total = group[o], np.concatenate([[0], np.cumsum(stored.clicks[o])])
            query = (me[:, None] * n_windows + np.arange(n_windows)).ravel()
            found = Search(group, stored.tile[o], n_entities * n_windows).find(
                query, first_tile.ravel()
            )
            upto = np.searchsorted(group, query, "right")
            clicks += (total[upto] - total[found]).reshape(-1, n_windows)
    previous = np.where(mine > starts[me], times[mine - 1], -1)
    if len(stored.ring_t):
        # The newest compacted click at or before this one.
        o = lexsort(stored.ring_t, stored.ring_owner)
        ring_owner, ring_t = stored.ring_owner[o], stored.ring_t[o]
        i = Search(ring_owner, ring_t, n_entities).find(me, my_t, "right") - 1
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
        sorted_records = Sorted(times, elements[rows], ent, starts, ends)
        bases = compact(kinds, part_of, params, stored, due, sorted_records)

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
    j = lookup(seen_key[first], (base_owner << 32) | base_element)
    sighted = j >= 0
    group_base = np.full(len(first), _NONE, dtype=np.int64)
    group_base[j[sighted]] = base_seen[sighted]
    last = np.maximum(group_base[group], tile[seen])

    # Before its first sighting an element's base tile alone is its last sighting; elements
    # never sighted count alike per (entity, tile): one weighted stretch per run of them (the
    # stored order, most recently seen first, makes runs long).
    aside = np.flatnonzero(~sighted)
    run = runs(base_owner[aside], base_seen[aside])
    run_owner, run_tile = base_owner[aside[run]], base_seen[aside[run]]
    weight = np.diff(np.append(run, len(aside)))
    owner = np.concatenate([ent[seen], base_owner[sighted], run_owner])
    start = np.concatenate([seen, starts[base_owner[sighted]], starts[run_owner]])
    stop = np.concatenate([following, seen[first[j[sighted]]], ends[run_owner]])
    last = np.concatenate([last, base_seen[sighted], run_tile])
    weights = np.concatenate([np.ones(len(seen) + np.count_nonzero(sighted)), weight])
    by_tile = Search(ent, tile, len(starts))
    start = np.maximum(start, by_tile.find(owner, last))
    stop = np.minimum(stop, by_tile.find(owner, last + n_tiles[owner]))
    live = start < stop
    diff = np.bincount(start[live], weights[live], n + 1)
    diff -= np.bincount(stop[live], weights[live], n + 1)
    inside: Ints = np.cumsum(diff[:n]).astype(np.int64)
    return inside
