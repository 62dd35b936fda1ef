"""A batch of clicks as work per Redis node, and the features back as a matrix.

Pure functions and data: the store (``store.py``) sends what :func:`plan` builds. Key names
and the scripts' arguments are described in docs/redis-keys.md and the ``.lua`` files. The
clicks are read once, by attribute, into per-click columns; everything after that works on
those columns and on small per-entity and per-row lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from slidr.events import Click
from slidr.features import INDEX, MAX_GAP_S, N_FEATURES, TIME_FEATURES, time_features
from streams.feature_store.layout import LAYOUT, Kind, Layout

_TIME_COLUMNS = np.array([INDEX[name] for name in TIME_FEATURES])
_LOGGED_IN = INDEX["logged_in"]
#: Separates the values of a multi-field entity in its key; never inside a value (replaced).
_JOIN = "\x1f"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
encode_row = msgspec.msgpack.Encoder().encode
decode_row = msgspec.msgpack.Decoder(list[int]).decode
Ints = npt.NDArray[np.int64]


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
    out = np.frombuffer(digests, dtype=">u4").astype(np.int64)
    out[out == 0] = 1
    return out


#: Element ids by value, across batches: the same IPs, user agents and sessions come back
#: click after click, and a BLAKE2b costs more than the rest of a click's planning.
_ELEMENTS: dict[object, int] = {}
_ELEMENTS_MAX = 1 << 18


def element_ids(values: list[object]) -> Ints:
    """The element id of each value: its short hash, 0 for a missing or empty value."""
    known = _ELEMENTS
    if len(known) > _ELEMENTS_MAX:
        known.clear()
    ids = list(map(known.get, values))
    if None in ids:
        for i, v in enumerate(values):
            if ids[i] is None:
                ids[i] = known[v] = 0 if v is None or v == "" else short_hash(str(v))
    return np.array(ids, dtype=np.int64)


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
    """One node's part of a batch: its feature rows and the entities they touch.

    A row is one click's feature row on this node: the click's batch position (the first one
    of that click, in processing order) and a bit mask of the kinds of its entities that live
    here. ``names``: each row's (row hash, field); ``entities``: plan entity ids, in the order
    the scripts see them; ``shared``: a row's first position -> the further positions of the
    same click (it came twice in the batch: it shares the row)."""

    tag: str
    rows: Ints
    masks: Ints
    names: list[tuple[str, str]]
    entities: Ints
    shared: dict[int, list[int]] = field(default_factory=dict)
    #: Click hashes whose records are not sent again (their rows were stored already).
    dropped: frozenset[int] = frozenset()

    @cached_property
    def by_group(self) -> dict[str, list[int]]:
        """The rows of each row hash, in row order."""
        out: dict[str, list[int]] = {}
        for i, (group, _) in enumerate(self.names):
            out.setdefault(group, []).append(i)
        return out

    def groups(self) -> dict[str, list[str]]:
        """Row fields per row hash, in row order."""
        names = self.names
        return {group: [names[i][1] for i in rows] for group, rows in self.by_group.items()}


class Placement(Protocol):
    def node_of(self, key: str) -> Hashable:
        """The node that owns a key."""
        ...

    def row_tag(self, node: Hashable) -> str:
        """A hash tag whose keys live on ``node``."""
        ...


@dataclass
class Plan:
    """A batch as per-click columns (position = index in the batch), its entities, and its
    work per node; the counts come back into ``values`` (per kind: one row per click,
    ``kind.width`` values)."""

    layout: Layout
    prefix: str
    ids: list[str]
    ms: Ints
    hashes: Ints
    #: Each click's place in processing order.
    rank: Ints
    elements: dict[str, Ints]
    #: [kind, click]: the plan id of the click's entity of that kind, -1 where it has none.
    entity: Ints
    #: Per entity id: its state key, kind and node (an index into ``nodes``).
    keys: list[str]
    kinds: Ints
    node: Ints
    nodes: list[Hashable]
    tags: list[str]
    values: list[Ints]
    unique_ids: bool
    calls: dict[Hashable, NodeCall] = field(default_factory=dict)
    _groups: dict[tuple[str, int], str] = field(default_factory=dict)

    def place(self, entities: Ints, placement: Placement) -> None:
        """Where the entities live (again, after a slot moved)."""
        numbers = {node: i for i, node in enumerate(self.nodes)}
        for e in entities.tolist():
            node = placement.node_of(self.keys[e])
            number = numbers.get(node)
            if number is None:
                number = numbers[node] = len(self.nodes)
                self.nodes.append(node)
                self.tags.append(placement.row_tag(node))
            self.node[e] = number

    def build(
        self, positions: Ints, masks: Ints, shared: dict[int, list[int]]
    ) -> dict[Hashable, NodeCall]:
        """Calls for rows (clicks in processing order, with the kinds to count for each),
        split by the node of each entity. A row that another row of the node already names
        (the same click twice in a batch) is shared, not sent."""
        bits = 1 << np.arange(len(self.layout.kinds))
        entity = self.entity[:, positions]
        on = np.where((masks & bits[:, None]) != 0, self.node[np.maximum(entity, 0)], -1)
        calls: dict[Hashable, NodeCall] = {}
        for j in np.unique(on[on >= 0]).tolist():
            here = on == j
            mask = (here * bits[:, None]).sum(axis=0)
            picked = np.flatnonzero(mask)
            rows, mask = positions[picked], mask[picked]
            tag = self.tags[j]
            names = self._names(tag, rows, mask)
            mine = {p: shared[p] for p in rows.tolist() if p in shared} if shared else {}
            if not self.unique_ids:
                rows, mask, names, mine = _share(rows, mask, names, mine)
            entities = np.unique(self.entity[:, rows][(mask & bits[:, None]) != 0])
            calls[self.nodes[j]] = NodeCall(tag, rows, mask, names, entities, mine)
        return calls

    def _names(self, tag: str, rows: Ints, masks: Ints) -> list[tuple[str, str]]:
        minutes = self.ms[rows] // 60_000
        groups = {}
        for minute in np.unique(minutes).tolist():
            group = self._groups.get((tag, minute))
            if group is None:
                group = f"{self.prefix}rows:{self.layout.feature_hash}:{{{tag}}}:{minute}"
                self._groups[(tag, minute)] = group
            groups[minute] = group
        labels = {}
        for mask in np.unique(masks).tolist():
            numbers = [kind.number for k, kind in enumerate(self.layout.kinds) if mask >> k & 1]
            labels[mask] = ".".join(map(str, numbers)) + ":"
        ids = self.ids
        return [
            (groups[minute], labels[mask] + ids[p])
            for p, mask, minute in zip(rows.tolist(), masks.tolist(), minutes.tolist(), strict=True)
        ]

    def without(self, call: NodeCall, stored: Iterable[int]) -> NodeCall:
        """The call less the rows (indices) whose feature rows are stored already."""
        keep = np.ones(len(call.rows), dtype=bool)
        keep[list(stored)] = False
        gone = frozenset(self.hashes[call.rows[~keep]].tolist()) | call.dropped
        rows, masks = call.rows[keep], call.masks[keep]
        bits = 1 << np.arange(len(self.layout.kinds))
        entities = np.unique(self.entity[:, rows][(masks & bits[:, None]) != 0])
        names = [n for n, k in zip(call.names, keep.tolist(), strict=True) if k]
        shared = {p: more for p, more in call.shared.items() if p in set(rows.tolist())}
        return NodeCall(call.tag, rows, masks, names, entities, shared, gone)

    def records(self, call: NodeCall, kind: int) -> tuple[Ints, Ints, Ints, npt.NDArray[np.void]]:
        """The call's new clicks of entities of a kind: those entities (plan ids), and for
        each click its entity (an index into them), batch position and log record, grouped by
        entity in processing order."""
        positions = call.rows[(call.masks >> kind & 1) != 0]
        if call.dropped:  # a click hash whose row is stored already is not counted again
            positions = positions[~np.isin(self.hashes[positions], list(call.dropped))]
        entities, owner = np.unique(self.entity[kind, positions], return_inverse=True)
        grouped = np.argsort(owner, kind="stable")
        positions, owner = positions[grouped], owner[grouped]
        spec = self.layout.kinds[kind]
        records = np.empty(len(positions), dtype=spec.dtype)
        records["t"] = self.ms[positions]
        records["h"] = self.hashes[positions]
        for s, d in enumerate(spec.sets):
            records[f"e{s}"] = self.elements[d.counted][positions]
        return entities, owner, positions, records

    def stored_row(self, call: NodeCall, row: int, values: Sequence[int]) -> None:
        """A row found in Redis (the click was seen before): its values, as they were."""
        p, mask, at = int(call.rows[row]), int(call.masks[row]), 0
        for k, kind in enumerate(self.layout.kinds):
            if mask >> k & 1:
                self.values[k][p] = values[at : at + kind.width]
                at += kind.width
        if at != len(values):
            raise ValueError(f"a stored row has {len(values)} values, expected {at}")

    def encoded_rows(self, call: NodeCall) -> list[bytes]:
        """The feature row of each of the call's rows, in order, as stored."""
        out = [b""] * len(call.rows)
        for mask in np.unique(call.masks).tolist():
            which = np.flatnonzero(call.masks == mask)
            first = call.rows[which]
            kinds = [k for k in range(len(self.layout.kinds)) if mask >> k & 1]
            matrix = np.hstack([self.values[k][first] for k in kinds]).tolist()
            for i, values in zip(which.tolist(), matrix, strict=True):
                out[i] = encode_row(values)
        return out


def _share(
    rows: Ints, masks: Ints, names: list[tuple[str, str]], shared: dict[int, list[int]]
) -> tuple[Ints, Ints, list[tuple[str, str]], dict[int, list[int]]]:
    """Rows of the same name (the same click twice in a batch) as one row, the first."""
    first: dict[tuple[str, str], int] = {}
    keep = []
    positions = rows.tolist()
    for i, name in enumerate(names):
        j = first.setdefault(name, i)
        if j == i:
            keep.append(i)
            continue
        more = shared.setdefault(positions[j], [])
        more += [positions[i], *shared.pop(positions[i], [])]
    return rows[keep], masks[keep], [names[i] for i in keep], shared


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
    n = len(clicks)
    ids = [c.click_id for c in clicks]
    ms = np.array([(c.event_time - _EPOCH) // _MS for c in clicks], dtype=np.int64)
    hashes = _short_hashes(ids)
    order = np.lexsort((hashes, ms))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    # Entity ids: one per state key, in processing order.
    index: dict[str, int] = {}
    entity = np.full((len(layout.kinds), n), -1, dtype=np.int64)
    kinds = []
    for k, kind in enumerate(layout.kinds):
        keys = _entity_keys(clicks, kind, prefix)
        known = len(index)
        new = index.setdefault
        ordered = [keys[p] for p in order.tolist()]
        entity[k, order] = [-1 if key is None else new(key, len(index)) for key in ordered]
        kinds += [k] * (len(index) - known)
    counted = sorted({d.counted for kind in layout.kinds for d in kind.sets})
    batch = Plan(
        layout=layout,
        prefix=prefix,
        ids=ids,
        ms=ms,
        hashes=hashes,
        rank=rank,
        elements={name: element_ids([getattr(c, name) for c in clicks]) for name in counted},
        entity=entity,
        keys=list(index),
        kinds=np.array(kinds, dtype=np.int64),
        node=np.zeros(len(index), dtype=np.int64),
        nodes=[],
        tags=[],
        values=[np.zeros((n, kind.width), dtype=np.int64) for kind in layout.kinds],
        unique_ids=len(set(ids)) == n,
    )
    batch.place(np.arange(len(index)), placement)
    masks = ((entity >= 0) << np.arange(len(layout.kinds))[:, None]).sum(axis=0)
    batch.calls = batch.build(order, masks[order], {})
    return batch


def regroup(
    batch: Plan, failed: Iterable[NodeCall], placement: Placement
) -> dict[Hashable, NodeCall]:
    """The work of calls that a node refused after a slot moved, placed by the new slot map.

    An entity lives on one node, so its work (all its clicks of the batch) moves whole.
    """
    calls = list(failed)
    batch.place(np.unique(np.concatenate([c.entities for c in calls])), placement)
    rows = np.concatenate([c.rows for c in calls])
    masks = np.concatenate([c.masks for c in calls])
    shared: dict[int, list[int]] = {}
    for c in calls:
        for p, more in c.shared.items():
            shared.setdefault(p, []).extend(more)
    order = np.argsort(batch.rank[rows], kind="stable")
    return batch.build(rows[order], masks[order], shared)


def fill_features(out: npt.NDArray[np.float32], batch: Plan) -> None:
    """Write the Redis-filled columns of ``out`` from the batch's counts, in place: counts as
    they are, gaps from ms (-1: none) to capped seconds, defaults where a click has no such
    entity."""
    layout = batch.layout
    n = len(out)
    raw = np.broadcast_to(layout.defaults, (n, len(layout.defaults))).copy()
    source = [np.arange(n) for _ in layout.kinds]
    for call in batch.calls.values():
        if call.shared:  # the same click again: its first row's values
            masks = dict(zip(call.rows.tolist(), call.masks.tolist(), strict=True))
            for p, more in call.shared.items():
                for k in range(len(layout.kinds)):
                    if masks[p] >> k & 1:
                        source[k][more] = p
    for k, kind in enumerate(layout.kinds):
        present = np.flatnonzero(batch.entity[k] >= 0)
        raw[np.ix_(present, np.array(kind.columns))] = batch.values[k][source[k][present]]
    gaps = raw[:, layout.gap_columns]
    raw[:, layout.gap_columns] = np.where(gaps < 0, MAX_GAP_S, np.minimum(gaps / 1000.0, MAX_GAP_S))
    out[:, layout.redis_columns] = raw[:, layout.redis_columns]


def local_features(clicks: Sequence[Click]) -> npt.NDArray[np.float32]:
    """float32 [n, N_FEATURES] with only the features computed without Redis filled in."""
    return clicks_local_features(clicks, np.array([epoch_ms(c.event_time) for c in clicks]))


def clicks_local_features(clicks: Sequence[Click], ms: Ints) -> npt.NDArray[np.float32]:
    """:func:`local_features` of clicks whose event times in ms are known already."""
    out = np.zeros((len(clicks), N_FEATURES), dtype=np.float32)
    if not clicks:
        return out
    # time_features depends on the minute only; a batch spans few minutes.
    _, first, inverse = np.unique(ms // 60_000, return_index=True, return_inverse=True)
    times = [time_features(clicks[i].event_time) for i in first.tolist()]
    out[:, _TIME_COLUMNS] = np.array(times, dtype=np.float32)[inverse]
    out[:, _LOGGED_IN] = [c.logged_in for c in clicks]
    return out
