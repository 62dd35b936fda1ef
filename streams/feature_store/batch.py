"""A batch of clicks as work per Redis node, and the features back as rows.

Pure functions and data: the store (``store.py``) sends what :func:`plan` builds. Key names
and the scripts' arguments are described in docs/redis-keys.md and the ``.lua`` files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from slidr.events import Click
from slidr.features import INDEX, MAX_GAP_S, N_FEATURES, TIME_FEATURES, time_features
from streams.feature_store.entity import Record
from streams.feature_store.layout import LAYOUT, Kind, Layout

_TIME_COLUMNS = np.array([INDEX[name] for name in TIME_FEATURES])
_LOGGED_IN = INDEX["logged_in"]
#: Separates the values of a multi-field entity in its key; never inside a value (replaced).
_JOIN = "\x1f"
encode_row = msgspec.msgpack.Encoder().encode
decode_row = msgspec.msgpack.Decoder(list[int]).decode


def epoch_ms(t: datetime) -> int:
    """Milliseconds since the epoch, exact (float ``timestamp() * 1000`` can round down).

    >>> from datetime import UTC
    >>> epoch_ms(datetime(1970, 1, 1, 0, 0, 1, 999_999, tzinfo=UTC))
    1999
    """
    return int(t.timestamp()) * 1000 + t.microsecond // 1000


def short_hash(value: str) -> int:
    """A 32-bit id of a click_id or a counted value, never 0 (0 means "no value").

    >>> short_hash("10.0.0.1") == short_hash("10.0.0.1") != short_hash("10.0.0.2")
    True
    """
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=4).digest(), "big") or 1


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


@dataclass
class EntityWork:
    """One entity's part of a batch: its state key and the batch's new clicks, in order."""

    kind: Kind
    key: str
    records: list[Record] = field(default_factory=list)


@dataclass
class RowWork:
    """One click's part on one node: batch positions (a duplicate shares the row), its click
    hash, and its entities there, in spec order. Its feature row is field ``field`` of the
    node's row hash for the click's event minute, ``group``."""

    positions: list[int]
    click_hash: int
    entities: list[EntityWork]
    group: str
    field: str
    click_id: str
    minute: int


@dataclass
class NodeCall:
    entities: dict[str, EntityWork] = field(default_factory=dict)
    rows: dict[tuple[str, str], RowWork] = field(default_factory=dict)

    def groups(self) -> dict[str, list[str]]:
        """Row fields per row hash."""
        out: dict[str, list[str]] = {}
        for group, name in self.rows:
            out.setdefault(group, []).append(name)
        return out

    def without(self, stored: Iterable[tuple[str, str]]) -> NodeCall:
        """The same work less the clicks whose rows are already stored."""
        gone = set(stored)
        gone_hashes = {self.rows[k].click_hash for k in gone}
        out = NodeCall()
        for key, row in self.rows.items():
            if key in gone:
                continue
            entities = []
            for e in row.entities:
                mine = out.entities.get(e.key)
                if mine is None:
                    records = [r for r in e.records if r[1] not in gone_hashes]
                    mine = out.entities[e.key] = EntityWork(e.kind, e.key, records)
                entities.append(mine)
            out.rows[key] = RowWork(
                row.positions, row.click_hash, entities, *key, row.click_id, row.minute
            )
        return out


@dataclass
class Plan:
    calls: dict[Hashable, NodeCall]
    layout: Layout


class Placement(Protocol):
    def node_of(self, key: str) -> Hashable:
        """The node that owns a key."""
        ...

    def row_tag(self, node: Hashable) -> str:
        """A hash tag whose keys live on ``node``."""
        ...


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
    hashes = [short_hash(c.click_id) for c in clicks]
    ms = [epoch_ms(c.event_time) for c in clicks]
    order = sorted(range(len(clicks)), key=lambda i: (ms[i], hashes[i]))
    # Loop invariants, hoisted: this runs for every click of every batch.
    kinds = [
        (kind, f"{prefix}e:{kind.digest}:{{{kind.entity.name}:", [d.counted for d in kind.sets])
        for kind in layout.kinds
    ]
    ids: dict[object, int] = {None: 0, "": 0}
    tags: dict[Hashable, str] = {}
    labels: dict[tuple[int, ...], str] = {}
    calls: dict[Hashable, NodeCall] = {}
    for pos in order:
        click, h, t = clicks[pos], hashes[pos], ms[pos]
        by_node: dict[Hashable, list[tuple[EntityWork, Record]]] = {}
        for kind, key_prefix, counted in kinds:
            value = entity_value(click, kind.entity.fields)
            if value is None:
                continue
            key = key_prefix + value + "}"
            node = placement.node_of(key)
            call = calls.get(node)
            if call is None:
                call = calls[node] = NodeCall()
            work = call.entities.get(key)
            if work is None:
                work = call.entities[key] = EntityWork(kind, key)
            elements = []
            for name in counted:
                v = getattr(click, name)
                eid = ids.get(v)
                if eid is None:
                    eid = ids[v] = short_hash(str(v))
                elements.append(eid)
            by_node.setdefault(node, []).append((work, (t, h, *elements)))
        for node, ops in by_node.items():
            tag = tags.get(node)
            if tag is None:
                tag = tags[node] = placement.row_tag(node)
            works = [w for w, _ in ops]
            row = RowWork([pos], h, works, "", "", click.click_id, t // 60_000)
            if _add_row(calls[node], row, prefix, tag, layout, labels):
                for work, record in ops:
                    work.records.append(record)
    return Plan(calls, layout)


def _add_row(
    call: NodeCall,
    row: RowWork,
    prefix: str,
    tag: str,
    layout: Layout,
    labels: dict[tuple[int, ...], str],
) -> bool:
    """Name the row's place on the node and add it; False when the click is there already (the
    same click twice in one batch: it shares the row)."""
    numbers = tuple(w.kind.number for w in row.entities)
    label = labels.get(numbers)
    if label is None:
        label = labels[numbers] = ".".join(map(str, numbers)) + ":"
    row.group = f"{prefix}rows:{layout.feature_hash}:{{{tag}}}:{row.minute}"
    row.field = label + row.click_id
    known = call.rows.get((row.group, row.field))
    if known is not None:
        known.positions += row.positions
        return False
    call.rows[(row.group, row.field)] = row
    return True


def regroup(
    failed: Iterable[NodeCall], prefix: str, placement: Placement, layout: Layout = LAYOUT
) -> dict[Hashable, NodeCall]:
    """The work of calls that a node refused after a slot moved, placed by the new slot map.

    An entity lives on one node, so its work (all its clicks of the batch) moves whole.
    """
    calls: dict[Hashable, NodeCall] = {}
    labels: dict[tuple[int, ...], str] = {}
    for old in failed:
        for row in old.rows.values():
            by_node: dict[Hashable, list[EntityWork]] = {}
            for work in row.entities:
                by_node.setdefault(placement.node_of(work.key), []).append(work)
            for node, works in by_node.items():
                call = calls.setdefault(node, NodeCall())
                for work in works:
                    call.entities.setdefault(work.key, work)
                moved = RowWork(
                    list(row.positions), row.click_hash, works, "", "", row.click_id, row.minute
                )
                _add_row(call, moved, prefix, placement.row_tag(node), layout, labels)
    return calls


def fill_features(
    out: npt.NDArray[np.float32],
    rows: Iterable[tuple[RowWork, Sequence[int]]],
    layout: Layout = LAYOUT,
) -> None:
    """Write the Redis-filled columns of ``out`` from each row's values, in place: counts as
    they are, gaps from ms (-1: none) to capped seconds, defaults where a click has no such
    entity."""
    raw = np.broadcast_to(layout.defaults, (len(out), len(layout.defaults))).copy()
    at: list[int] = []
    columns: list[int] = []
    flat: list[int] = []
    for row, values in rows:
        cols = [c for e in row.entities for c in e.kind.columns]
        if len(values) != len(cols):
            raise ValueError(f"a stored row has {len(values)} values, expected {len(cols)}")
        for pos in row.positions:
            at += [pos] * len(cols)
            columns += cols
            flat += values
    raw[at, columns] = flat
    gaps = raw[:, layout.gap_columns]
    raw[:, layout.gap_columns] = np.where(gaps < 0, MAX_GAP_S, np.minimum(gaps / 1000.0, MAX_GAP_S))
    out[:, layout.redis_columns] = raw[:, layout.redis_columns]


def local_features(clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
    """float32 [n, N_FEATURES] with only the features computed without Redis filled in."""
    out = np.zeros((len(clicks), N_FEATURES), dtype=np.float32)
    by_minute: dict[int, tuple[float, float, float, float]] = {}
    times = np.empty((len(clicks), len(TIME_FEATURES)), dtype=np.float32)
    for i, click in enumerate(clicks):
        # time_features depends on the minute only; a batch spans few minutes.
        minute = int(click.event_time.timestamp()) // 60
        tf = by_minute.get(minute)
        if tf is None:
            tf = by_minute[minute] = time_features(click.event_time)
        times[i] = tf
    out[:, _TIME_COLUMNS] = times
    out[:, _LOGGED_IN] = [c.logged_in for c in clicks]
    return out
