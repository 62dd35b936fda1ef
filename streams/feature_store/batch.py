"""One batch of clicks as script calls (one per Redis node), and the replies as feature rows.

Pure functions: the store (``store.py``) sends what :func:`plan` builds and hands the replies
to :meth:`Plan.scatter`. Key names and the argument layout are described in
docs/redis-keys.md and ``features.lua``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
import numpy as np
import numpy.typing as npt

from slidr.events import Click
from slidr.features import DISTINCT_CAP, INDEX, MAX_GAP_S, N_FEATURES, TIME_FEATURES, time_features
from streams.feature_store.layout import LAYOUT, Kind, Layout

_TIME_COLUMNS = np.array([INDEX[name] for name in TIME_FEATURES])
_LOGGED_IN = INDEX["logged_in"]
#: Separates the values of a multi-field entity in its key; never inside a value (replaced).
_JOIN = "\x1f"
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[float]).decode


def epoch_ms(t: datetime) -> int:
    """Milliseconds since the epoch, exact (float ``timestamp() * 1000`` can round down).

    >>> from datetime import UTC
    >>> epoch_ms(datetime(1970, 1, 1, 0, 0, 1, 999_999, tzinfo=UTC))
    1999
    """
    return int(t.timestamp()) * 1000 + t.microsecond // 1000


def element_id(value: str) -> int:
    """A 48-bit id of a counted value: exact in Lua's doubles, never 0 (0 means "none").

    Keyless but cryptographic, so no one can craft many values that count as one.
    """
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=6).digest(), "big") or 1


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
class NodeCall:
    """The work of one Redis node for a batch: its keys, the script's input, and where each
    value of its reply goes (row in the batch, feature column)."""

    entity_keys: dict[str, int] = field(default_factory=dict)
    row_keys: dict[str, int] = field(default_factory=dict)
    work: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    columns: list[int] = field(default_factory=list)

    def script_input(
        self, layout: Layout, entity_ttl_ms: int, row_ttl_ms: int
    ) -> tuple[list[str], list[str | int | bytes]]:
        keys = [*self.entity_keys, *self.row_keys]
        args: list[str | int | bytes] = [
            layout.lua_spec,
            entity_ttl_ms,
            row_ttl_ms,
            len(self.entity_keys),
            _encode(self.work),
            DISTINCT_CAP,
        ]
        return keys, args


@dataclass
class Plan:
    """A batch split into node calls; ``scatter`` turns their replies into Redis features."""

    n: int
    calls: dict[Hashable, NodeCall]
    layout: Layout

    def scatter(self, replies: dict[Hashable, bytes]) -> npt.NDArray[np.float32]:
        """float32 [n, N_FEATURES]: the Redis-filled columns (others 0), gaps in capped s."""
        raw = np.broadcast_to(self.layout.defaults, (self.n, len(self.layout.defaults))).copy()
        for node, call in self.calls.items():
            values = _decode(replies[node])
            if len(values) != len(call.rows):
                raise ValueError(f"script replied {len(values)} values, expected {len(call.rows)}")
            raw[call.rows, call.columns] = values
        gaps = raw[:, self.layout.gap_columns]
        raw[:, self.layout.gap_columns] = np.where(
            gaps < 0, MAX_GAP_S, np.minimum(gaps / 1000.0, MAX_GAP_S)
        )
        out = np.zeros((self.n, N_FEATURES), dtype=np.float32)
        cols = self.layout.redis_columns
        out[:, cols] = raw[:, cols]
        return out


def plan(
    clicks: Sequence[Click],
    prefix: str,
    node_of: Callable[[str], Hashable],
    layout: Layout = LAYOUT,
) -> Plan:
    """Split a batch into one call per node, clicks in (event time, click_id) order.

    ``node_of`` names the node that owns a key (one node: always the same). A click's entities
    on one node are counted in that node's call, and its feature row there is kept under a key
    beside its first entity, so the row and the counters it guards live on the same node.
    """
    ms = [epoch_ms(c.event_time) for c in clicks]
    order = sorted(range(len(clicks)), key=lambda i: (ms[i], clicks[i].click_id))
    calls: dict[Hashable, NodeCall] = {}
    ids: dict[str, int] = {}
    for pos in order:
        click = clicks[pos]
        by_node: dict[Hashable, list[tuple[Kind, str, str]]] = {}
        for kind in layout.kinds:
            value = entity_value(click, kind.entity.fields)
            if value is None:
                continue
            tag = f"{kind.entity.name}:{value}"
            key = f"{prefix}e:{kind.digest}:{{{tag}}}"
            by_node.setdefault(node_of(key), []).append((kind, tag, key))
        for node, ops in by_node.items():
            call = calls.get(node)
            if call is None:
                call = calls[node] = NodeCall()
            kinds = ".".join(str(kind.number) for kind, _, _ in ops)
            row_key = f"{prefix}r:{layout.feature_hash}:{{{ops[0][1]}}}:{kinds}:{click.click_id}"
            row = call.row_keys.setdefault(row_key, len(call.row_keys) + 1)
            call.work += (ms[pos], row, len(ops))
            for kind, _, key in ops:
                call.work += (
                    kind.number,
                    call.entity_keys.setdefault(key, len(call.entity_keys) + 1),
                )
                for d in kind.sets:
                    counted = getattr(click, d.counted)
                    if counted in (None, ""):
                        call.work.append(0)
                    else:
                        text = str(counted)
                        eid = ids.get(text)
                        if eid is None:
                            eid = ids[text] = element_id(text)
                        call.work.append(eid)
                call.rows += [pos] * kind.width
                call.columns += kind.columns
    return Plan(len(clicks), calls, layout)


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
