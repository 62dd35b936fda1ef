"""A batch of clicks as work per Redis node, and the features back as a matrix.

Pure functions and data: the store (``store.py``) sends what :func:`plan` builds. Key names
and the scripts' arguments are described in docs/redis-keys.md and the ``.lua`` files. The
clicks are read once, by attribute, in processing order; everything after that works on
per-click columns, one record per click and kind, and short per-row lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from operator import attrgetter
from typing import Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from slidr.events import Click
from slidr.features import (
    INDEX,
    N_FEATURES,
    SPEC,
    TIME_FEATURES,
    Categorical,
    bucket,
    category_text,
    time_features,
)
from streams.feature_store.arrays import Ints, ends_of, runs, starts_of
from streams.feature_store.layout import LAYOUT, Kind, Layout

_TIME_COLUMNS = np.array([INDEX[name] for name in TIME_FEATURES])
_LOGGED_IN = INDEX["logged_in"]
#: Separates the values of a multi-field entity in its key; never inside a value (replaced).
_JOIN = "\x1f"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_accumulate = np.add.accumulate
encode_row = msgspec.msgpack.Encoder().encode
decode_row = msgspec.msgpack.Decoder(list[int]).decode


def epoch_ms(t: datetime) -> int:
    """Milliseconds since the epoch, exact (float ``timestamp() * 1000`` can round down).

    >>> epoch_ms(datetime(1970, 1, 1, 0, 0, 1, 999_999, tzinfo=UTC))
    1999
    """
    return (t - _EPOCH) // _MS


def short_hash(value: str) -> int:
    """A 32-bit id of a click_id or a counted value, never 0 (0 means "no value").

    >>> short_hash("10.0.0.1") == short_hash("10.0.0.1") != short_hash("10.0.0.2")
    True
    """
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=4).digest(), "big") or 1


def _short_hashes(values: list[str]) -> Ints:
    """:func:`short_hash` of each value (its digests joined: a third quicker)."""
    b2 = hashlib.blake2b
    digests = b"".join([b2(v.encode(), digest_size=4).digest() for v in values])
    out: Ints = np.maximum(np.frombuffer(digests, dtype=">u4"), 1).astype(np.int64)
    return out


#: Element ids by value, across batches: the same IPs, user agents and sessions come back
#: click after click, and a BLAKE2b costs more than the rest of a click's planning.
_ELEMENTS: dict[object, int] = {}
_ELEMENTS_MAX = 1 << 18


def element_ids(values: list[object]) -> list[int]:
    """The element id of each value: its short hash, 0 for a missing or empty value."""
    known = _ELEMENTS
    if len(known) > _ELEMENTS_MAX:
        known.clear()
    ids = list(map(known.get, values))
    if None in ids:
        for i, v in enumerate(values):
            if ids[i] is None:
                ids[i] = known[v] = 0 if v is None or v == "" else short_hash(str(v))
    return ids  # type: ignore[return-value]  # no None left


def processing_order(click: Click) -> tuple[int, int]:
    """The order in which the store counts clicks: event time ms, then click hash."""
    return epoch_ms(click.event_time), short_hash(click.click_id)


def entity_value(click: Click, fields: tuple[str, ...]) -> str | None:
    """The entity's identity in the click, or None when a field is missing or empty."""
    if len(fields) == 1:
        value = getattr(click, fields[0])
        return str(value) if value not in (None, "") else None
    values = [getattr(click, f) for f in fields]
    if any(v in (None, "") for v in values):
        return None
    return _JOIN.join(str(v).replace(_JOIN, "\ufffd") for v in values)


def _entity_keys(clicks: Sequence[Click], kind: Kind, prefix: str) -> list[str | None]:
    """Each click's state key of the kind, None where the click has no such entity."""
    head = f"{prefix}e:{kind.digest}:{{{kind.entity.name}:"
    fields = kind.entity.fields
    if len(fields) > 1:
        values = [entity_value(c, fields) for c in clicks]
        return [None if v is None else f"{head}{v}}}" for v in values]
    name = fields[0]
    return [
        None if v is None or v == "" else f"{head}{v if type(v) is str else str(v)}}}"
        for v in (getattr(c, name) for c in clicks)
    ]


@dataclass
class NodeCall:
    """One node's part of a batch: its feature rows, and the entities and new records they
    touch.

    A row is one click's feature row on this node: the click's position (processing order)
    and a bit mask of the kinds of its entities that live here, labelled in ``fields``. Rows
    are in processing order, so a row hash's rows (one hash per event minute) are consecutive:
    ``groups`` maps each row hash to its range of rows. ``records``: plan record ids, grouped
    by entity; ``entities``: their plan entity ids, ascending, the order the scripts see."""

    node: Hashable
    tag: str
    rows: Ints
    masks: list[int]
    fields: list[str]
    groups: dict[str, tuple[int, int]]
    records: Ints
    entities: Ints


class Placement(Protocol):
    def node_of(self, key: str) -> Hashable:
        """The node that owns a key."""
        ...

    def row_tag(self, node: Hashable) -> str:
        """A hash tag whose keys live on ``node``."""
        ...


@dataclass
class Plan:
    """A batch in processing order (position = place in that order; ``order`` maps it back),
    its entities, one record per click and kind of entity it has (grouped by entity), and its
    work per node. Counts come back into ``values`` (per click, the values of every kind as
    its feature row stores them, see ``Tables``)."""

    layout: Layout
    prefix: str
    order: Ints
    clicks: list[Click]
    ids: list[str]
    ms: Ints
    minutes: Ints
    #: Per entity id: its state key, kind and node (an index into ``nodes``).
    keys: list[str]
    kinds: Ints
    node: Ints
    record_entity: Ints
    record_position: Ints
    record_kind: Ints
    record_t: Ints
    record_h: Ints
    record_elements: Ints  # [record, distinct count slot]
    #: Each record as its kind's log holds it, padded to the longest kind's (``Tables``).
    record_log: npt.NDArray[np.void]
    values: Ints
    #: A click again (same id, time and entities) -> its further positions: counted once.
    copies: dict[int, list[int]]
    nodes: list[Hashable] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    calls: dict[Hashable, NodeCall] = field(default_factory=dict)

    def place(self, entities: list[int], placement: Placement) -> None:
        """Where the entities live (again, after a slot moved)."""
        numbers = {node: i for i, node in enumerate(self.nodes)}
        keys, found = self.keys, []
        for e in entities:
            where = placement.node_of(keys[e])
            number = numbers.get(where)
            if number is None:
                number = numbers[where] = len(self.nodes)
                self.nodes.append(where)
                self.tags.append(placement.row_tag(where))
            found.append(number)
        self.node[entities] = found

    def build(self, records: Ints) -> dict[Hashable, NodeCall]:
        """Calls for records (plan record ids, ascending), split by the node of each entity."""
        if not len(records):
            return {}
        if len(self.nodes) == 1:
            return {self.nodes[0]: self._call(0, records)}
        node = self.node[self.record_entity[records]]
        calls = {}
        for j in np.unique(node).tolist():
            calls[self.nodes[j]] = self._call(j, records[node == j])
        return calls

    def _call(self, j: int, records: Ints) -> NodeCall:
        tables = self.layout.tables
        bits = np.bincount(
            self.record_position[records],
            weights=tables.bits[self.record_kind[records]],
            minlength=len(self.ids),
        )
        rows = bits.nonzero()[0]
        masks = bits[rows].astype(np.int64).tolist()
        labels, ids = tables.labels, self.ids
        fields = [labels[m] + ids[p] for p, m in zip(rows.tolist(), masks, strict=True)]
        minutes = self.minutes[rows]
        cuts = runs(minutes).tolist()
        head = f"{self.prefix}rows:{self.layout.feature_hash}:{{{self.tags[j]}}}:"
        ends = [*cuts[1:], len(rows)] if cuts else []
        groups = {
            f"{head}{minute}": (a, b)
            for a, b, minute in zip(cuts, ends, minutes[cuts].tolist(), strict=True)
        }
        entity = self.record_entity[records]
        entities = entity[starts_of(entity)]
        return NodeCall(self.nodes[j], self.tags[j], rows, masks, fields, groups, records, entities)

    def without(self, call: NodeCall, stored: Sequence[int]) -> NodeCall:
        """The call less the rows (indices) whose feature rows are stored already, and their
        records."""
        gone = np.zeros(len(self.ids), dtype=bool)
        gone[call.rows[list(stored)]] = True
        records = call.records[~gone[self.record_position[call.records]]]
        return self._call(self.nodes.index(call.node), records)

    def logs(self, call: NodeCall) -> list[bytes]:
        """The log records to append to each of the call's entities, encoded, in its order:
        each record's first bytes, as many as its kind's records have."""
        tables, records = self.layout.tables, call.records
        size = tables.record_size[self.record_kind[records]]
        padded = self.record_log[records].view(np.uint8).reshape(len(records), -1)
        raw = padded[tables.record_bytes < size[:, None]].tobytes()
        cuts = [0, *_accumulate(size)[ends_of(self.record_entity[records])].tolist()]
        return [raw[a:b] for a, b in pairwise(cuts)]

    def stored_row(self, call: NodeCall, row: int, values: Sequence[int]) -> None:
        """A row found in Redis (the click was seen before): its values, as they were."""
        columns = self.layout.tables.mask_columns[call.masks[row]]
        if len(values) != len(columns):
            raise ValueError(f"a stored row has {len(values)} values, expected {len(columns)}")
        self.values[call.rows[row], columns] = values

    def counted(self, records: Ints, values: Ints) -> None:
        """The counts of records (slot rows, ``Tables``) into their clicks' values."""
        tables = self.layout.tables
        columns = tables.value_columns[self.record_kind[records]]
        valid = columns >= 0
        at = self.record_position[records][:, None] * self.values.shape[1] + columns
        np.put(self.values, at[valid], values[valid])

    def encoded_rows(self, call: NodeCall) -> list[bytes]:
        """The feature row of each of the call's rows, in order, as stored."""
        row_of = self.layout.tables.row_of
        rows = self.values[call.rows].tolist()
        return [encode_row(row_of[m](r)) for m, r in zip(call.masks, rows, strict=True)]


def plan(
    clicks: Sequence[Click],
    prefix: str,
    placement: Placement,
    layout: Layout = LAYOUT,
) -> Plan:
    """Split a batch into work per node, clicks in (event time, click hash) order.

    A click's feature row on a node is kept on that node, in a hash per event minute, so a node
    alone can tell that it has seen a click before.
    """
    tables = layout.tables
    n = len(clicks)
    ids = [c.click_id for c in clicks]
    ms = np.array([(c.event_time - _EPOCH) // _MS for c in clicks], dtype=np.int64)
    hashes = _short_hashes(ids)
    order = np.lexsort((hashes, ms))
    ordered = order.tolist()
    clicks = [clicks[i] for i in ordered]
    ids = [ids[i] for i in ordered]
    ms, hashes = ms[order], hashes[order]
    # Entity ids: one per state key, kind after kind, each kind's in processing order.
    index: dict[str, int] = {}
    columns, kinds = [], []
    for k, kind in enumerate(layout.kinds):
        known, new = len(index), index.setdefault
        columns.append(
            [
                -1 if key is None else new(key, len(index))
                for key in _entity_keys(clicks, kind, prefix)
            ]
        )
        kinds += [k] * (len(index) - known)
    entity = np.array(columns, dtype=np.int64).reshape(len(layout.kinds), n)
    copies = {} if len(set(ids)) == n else _copies(ids, ms, entity)
    # Records: (kind, click) pairs with an entity, grouped by entity, in processing order.
    flat = entity.ravel()
    present = (flat >= 0).nonzero()[0]
    record = present[flat[present].argsort(kind="stable")]
    record_kind, position = np.divmod(record, n)
    # Elements per counted field, and a last row of none for the slots a kind lacks.
    elements = np.array(
        [*(element_ids([getattr(c, name) for c in clicks]) for name in tables.counted), [0] * n],
        dtype=np.int64,
    )
    log = np.empty(len(record), dtype=tables.record)
    log["t"] = record_t = ms[position]
    log["h"] = record_h = hashes[position]
    record_elements = elements[tables.element_field[record_kind], position[:, None]]
    if tables.sets:
        log["e"] = record_elements
    values = np.empty((n, len(tables.features)), dtype=np.int64)
    values[:] = tables.blank
    batch = Plan(
        layout=layout,
        prefix=prefix,
        order=order,
        clicks=clicks,
        ids=ids,
        ms=ms,
        minutes=ms // 60_000,
        keys=list(index),
        kinds=np.array(kinds, dtype=np.int64),
        node=np.zeros(len(index), dtype=np.int64),
        record_entity=flat[record],
        record_position=position,
        record_kind=record_kind,
        record_t=record_t,
        record_h=record_h,
        record_elements=record_elements,
        record_log=log,
        values=values,
        copies=copies,
    )
    batch.place(list(range(len(index))), placement)
    batch.calls = batch.build(np.arange(len(record)))
    return batch


def _copies(ids: list[str], ms: Ints, entity: Ints) -> dict[int, list[int]]:
    """A click more than once in a batch (a redelivery): its first position in processing
    order -> the others, whose entities are dropped here so that they have no records: they
    share the first one's feature row, as they would in Redis (a row is named by the click id,
    its event minute and the kinds of entities it has)."""
    first: dict[tuple[str, int, tuple[bool, ...]], int] = {}
    copies: dict[int, list[int]] = {}
    kinds = (entity >= 0).T.tolist()
    for p, (click_id, minute) in enumerate(zip(ids, (ms // 60_000).tolist(), strict=True)):
        q = first.setdefault((click_id, minute, tuple(kinds[p])), p)
        if q != p:
            copies.setdefault(q, []).append(p)
    for more in copies.values():
        entity[:, more] = -1
    return copies


def regroup(
    batch: Plan, failed: Iterable[NodeCall], placement: Placement
) -> dict[Hashable, NodeCall]:
    """The work of calls that a node refused after a slot moved, placed by the new slot map.

    An entity lives on one node, so its work (all its clicks of the batch) moves whole.
    """
    calls = list(failed)
    records = np.sort(np.concatenate([c.records for c in calls]))
    batch.place(np.unique(batch.record_entity[records]).tolist(), placement)
    return batch.build(records)


def features(batch: Plan) -> npt.NDArray[np.float32]:
    """float32 [clicks, N_FEATURES] in the batch's order: the Redis-filled columns from the
    counts (gaps from ms, -1: none, to capped seconds; a click without an entity of a kind has
    that kind's blank values: counts 0, no gap), and the ones computed here."""
    values = batch.values
    for p, more in batch.copies.items():
        values[more] = values[p]
    out = clicks_local_features(batch.clicks, batch.ms)
    tables = batch.layout.tables
    raw = values.astype(np.float64)
    gaps, caps = raw[:, tables.gaps], tables.gap_caps
    raw[:, tables.gaps] = np.where(gaps < 0, caps, np.minimum(gaps / 1000.0, caps))
    out[:, tables.features] = raw
    back = np.empty_like(out)
    back[batch.order] = out
    return back


def local_features(clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
    """float32 [n, N_FEATURES] with only the features computed without Redis filled in."""
    return clicks_local_features(clicks, np.array([epoch_ms(c.event_time) for c in clicks]))


#: time_features by event minute (it depends on the minute only): a batch spans few minutes.
_TIMES: dict[int, tuple[float, float, float, float]] = {}
_TIMES_MAX = 1 << 12


def clicks_local_features(clicks: Sequence[Click], ms: Ints) -> npt.NDArray[np.float32]:
    """:func:`local_features` of clicks whose event times in ms are known already."""
    out = np.zeros((len(clicks), N_FEATURES), dtype=np.float32)
    if not clicks:
        return out
    if len(_TIMES) > _TIMES_MAX:
        _TIMES.clear()
    times = []
    for c, minute in zip(clicks, (ms // 60_000).tolist(), strict=True):
        found = _TIMES.get(minute)
        if found is None:
            found = _TIMES[minute] = time_features(c.event_time)
        times.append(found)
    out[:, _TIME_COLUMNS] = times
    out[:, _LOGGED_IN] = [c.logged_in for c in clicks]
    if _CATEGORICAL:
        values = list(zip(*map(_CATEGORY_FIELDS, clicks), strict=True))
        ids = [lookup(values[field]) for field, lookup in _CATEGORICAL]
        out[:, _CATEGORICAL_COLUMNS] = np.array(ids, dtype=np.float32).T
    return out


class _BucketIds:
    """The bucket ids of one categorical feature for a batch of clicks, from the click alone.

    A bounded cache maps a field value to its id: most values repeat (a device type, an ad,
    a user agent), so a click costs a dict lookup, and parsing and hashing run once per value.
    """

    MAX = 1 << 16

    def __init__(self, categorical: Categorical) -> None:
        self.source = categorical.source
        self.buckets = categorical.buckets
        self.cache: dict[str | None, int] = {}

    def __call__(self, values: Sequence[str | None]) -> list[int]:
        cache = self.cache
        try:
            return [cache[v] for v in values]
        except KeyError:
            if len(cache) > self.MAX:
                cache.clear()
            for v in values:
                if v not in cache:
                    cache[v] = bucket(category_text(self.source, v), self.buckets)
            return [cache[v] for v in values]


#: The click fields the categorical features read, each once, and per feature its field's
#: position there and its bucket ids.
_FIELDS = tuple(dict.fromkeys(c.click_field for c in SPEC.categorical))
#: attrgetter of one name returns the value itself, not a 1-tuple.
_CATEGORY_FIELDS = (
    attrgetter(*_FIELDS) if len(_FIELDS) > 1 else lambda c: tuple(getattr(c, f) for f in _FIELDS)
)
_CATEGORICAL = [(_FIELDS.index(c.click_field), _BucketIds(c)) for c in SPEC.categorical]
_CATEGORICAL_COLUMNS = np.array([INDEX[c.name] for c in SPEC.categorical], dtype=np.int64)
