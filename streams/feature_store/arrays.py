"""Numpy building blocks of the feature store's counting: sorting by several keys at once,
searches within sorted groups, a hash join, runs and ranks. No Python loop over elements."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
#: Fibonacci hashing's multiplier (2**64 / golden ratio), for lookup.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


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


def lexsort(*keys: Ints) -> Ints:
    """``np.lexsort(keys)``: one stable argsort of packed keys where they fit, far quicker."""
    packed = _pack(*keys)
    found: Ints = np.lexsort(keys) if packed is None else np.argsort(packed, kind="stable")
    return found


class Search:
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


def lookup(keys: Ints, queries: Ints) -> Ints:
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


def within(sizes: Ints) -> Ints:
    """0, 1, ... size - 1 for each size, concatenated."""
    ends = np.cumsum(sizes)
    out: Ints = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - sizes, sizes)
    return out


def runs(*keys: Ints) -> Ints:
    """Indices where a run of equal ``keys`` begins."""
    if not len(keys[0]):
        return np.zeros(0, dtype=np.int64)
    new = np.zeros(len(keys[0]), dtype=bool)
    new[0] = True
    for k in keys:
        new[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(new)


def rank(group: Ints) -> Ints:
    """For entries sorted by group: each one's place in its group (0, 1, ...)."""
    if not len(group):
        return group
    first = np.ones(len(group), dtype=bool)
    first[1:] = group[1:] != group[:-1]
    index = np.arange(len(group))
    place: Ints = index - np.maximum.accumulate(np.where(first, index, 0))
    return place
