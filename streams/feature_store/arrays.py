"""Numpy building blocks of the feature store's counting: sorting by two keys, searches within
sorted groups, a join, runs and ranks. No Python loop over elements.

A batch of a few clicks makes every array here tiny, so a numpy call costs its fixed
microsecond or two, not its elements: these take few calls, and the cheaper of equivalent
ones (``add.accumulate`` for ``cumsum``, ``count_nonzero`` for ``any``, ``empty`` and ``fill``
for ``full``: the ``np.`` wrappers and ndarray reductions cost twice as much).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
_FIT = 2**62
_accumulate = np.add.accumulate
_min, _max = np.minimum.reduce, np.maximum.reduce


def filled(n: int, value: int) -> Ints:
    out = np.empty(n, dtype=np.int64)
    out.fill(value)
    return out


def argsort2(major: Ints, bound: int, minor: Ints) -> Ints:
    """``np.lexsort((minor, major))`` for ``0 <= major < bound``, stable: one argsort of a
    combined key where it fits."""
    if len(minor) < 2:
        return np.arange(len(minor))
    lo = int(_min(minor))
    width = int(_max(minor)) - lo + 1
    if bound * width >= _FIT:
        found: Ints = np.lexsort((minor, major))
        return found
    return (major * width + (minor - lo)).argsort(kind="stable")


class Search:
    """Finds (group, value) among pairs sorted by group, then value (``starts`` and ``ends``:
    each group's range): one searchsorted on a combined key.

    Queries in about ascending order cost little more than a scan; scattered ones a binary
    search each, which dominates a large batch. So, with many queries, those below or above
    all of their group's values are answered from the group's bounds (most are: a batch's
    records of an entity span a few tiles), and only the others searched.
    """

    #: From this many queries on, the bounds are checked first.
    MANY = 512

    def __init__(self, group: Ints, value: Ints, starts: Ints, ends: Ints) -> None:
        # Values map to 1 .. width - 2; queries are clipped to 0 .. width - 1, so a query below
        # or above all of a group's values lands at the group's start or end.
        self._value, self._starts, self._ends = value, starts, ends
        self._lo = int(_min(value)) - 1 if len(value) else 0
        self._width = (int(_max(value)) - self._lo + 2) if len(value) else 2
        self._ranks: Ints | None = None
        if (len(starts) + 1) * self._width >= _FIT:  # too far apart to combine: keep the order
            self._ranks = np.unique(value)
            self._lo, self._width = -1, len(self._ranks) + 2
            value = self._ranks.searchsorted(value)
        self._keys = group * self._width + (value - self._lo)

    def find(self, group: Ints, value: Ints, side: Literal["left", "right"] = "left") -> Ints:
        """Index of the first pair of ``group`` whose value is >= ``value`` (side "left") or
        > ``value`` (side "right"); the group's end when there is none."""
        if len(group) < self.MANY:
            return self._search(group, value, side)
        start, end = self._starts[group], self._ends[group]
        last = len(self._value) - 1
        low = self._value[np.minimum(start, last)]
        high = self._value[np.maximum(end - 1, 0)]
        before = (value <= low) if side == "left" else (value < low)
        after = (value > high) if side == "left" else (value >= high)
        found: Ints = np.where(before, start, end)
        inside = (~(before | after) & (start < end)).nonzero()[0]
        found[inside] = self._search(group[inside], value[inside], side)
        return found

    def _search(self, group: Ints, value: Ints, side: Literal["left", "right"]) -> Ints:
        if self._ranks is not None:
            value = self._ranks.searchsorted(value, side)
            side = "left"
        offset = (value - self._lo).clip(0, self._width - 1)
        found: Ints = self._keys.searchsorted(group * self._width + offset, side)
        return found


def join(keys: Ints, key_group: Ints, query: Ints, query_group: Ints, groups: int) -> Ints:
    """For each query, the index of the equal one of ``keys`` (unique, sorted by group), or -1.

    Queries compare with the keys of their own group only: a batch sights a few elements of an
    entity, which stores hundreds, so this is a few comparisons per stored element, not a
    search.
    """
    sizes = np.bincount(key_group, minlength=groups)
    per_query = sizes[query_group]
    which = np.arange(len(query)).repeat(per_query)
    candidate = (_accumulate(sizes) - sizes)[query_group].repeat(per_query) + within(per_query)
    hit = keys[candidate] == query[which]
    found = filled(len(query), -1)
    found[which[hit]] = candidate[hit]
    return found


def within(sizes: Ints) -> Ints:
    """0, 1, ... size - 1 for each size, concatenated."""
    ends = _accumulate(sizes)
    out: Ints = np.arange(ends[-1] if len(ends) else 0) - (ends - sizes).repeat(sizes)
    return out


def starts_of(keys: Ints) -> Bools:
    """For sorted ``keys``: True where a run of equal keys begins."""
    new = np.empty(len(keys), dtype=bool)
    new[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    return new


def ends_of(keys: Ints) -> Bools:
    """For sorted ``keys``: True where a run of equal keys ends."""
    last = np.empty(len(keys), dtype=bool)
    last[-1:] = True
    np.not_equal(keys[1:], keys[:-1], out=last[:-1])
    return last


def runs(*keys: Ints) -> Ints:
    """Indices where a run of equal ``keys`` begins."""
    new = starts_of(keys[0])
    for k in keys[1:]:
        new[1:] |= k[1:] != k[:-1]
    found: Ints = new.nonzero()[0]
    return found


def rank(group: Ints) -> Ints:
    """For entries sorted by group: each one's place in its group (0, 1, ...)."""
    index = np.arange(len(group))
    place: Ints = index - np.maximum.accumulate(index * starts_of(group))
    return place
