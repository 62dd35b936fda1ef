"""How the feature spec maps onto Redis: entity kinds, their keys, records and values.

Everything here is derived once from :data:`slidr.features.SPEC`; nothing talks to Redis.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter

import numpy as np
import numpy.typing as npt

from slidr.features import (
    MAX_GAP_S,
    SPEC,
    Distinct,
    Entity,
    FeatureSpec,
    Velocity,
    Window,
)


@dataclass(frozen=True)
class Kind:
    """One entity of the spec with everything counted for it: one state key per entity value."""

    number: int  # 1-based, in row-field labels
    entity: Entity
    windows: tuple[Window, ...]
    gap: bool
    sets: tuple[Distinct, ...]
    #: Feature column of each value computed for one click of this kind, in order.
    columns: tuple[int, ...]
    #: The gap's cap, and how far back anything counted for the kind looks
    #: (``FeatureSpec.horizon_s``): its state's TTL is that plus ``TTL_SLACK_S``.
    gap_cap_s: float = MAX_GAP_S
    horizon_s: float = MAX_GAP_S

    @property
    def ttl_ms(self) -> int:
        """How long an idle state is kept: its horizon, plus slack for late clicks."""
        return int(self.horizon_s + TTL_SLACK_S) * 1000

    @property
    def refresh(self) -> bool:
        """A kind whose horizon is under a day refreshes its TTL at every append, not only at
        compaction: its state must outlive its newest click by the horizon, and a short TTL
        set at the last compaction would not (docs/redis-keys.md, "Keys")."""
        return self.horizon_s < MAX_GAP_S

    @property
    def width(self) -> int:
        return len(self.columns)

    @cached_property
    def record(self) -> struct.Struct:
        """One click in the entity's log: event time ms, click hash, an element id per set."""
        return struct.Struct(">qI" + "I" * len(self.sets))

    @cached_property
    def dtype(self) -> np.dtype[np.void]:
        """The same record for numpy: a log decodes, and a batch's records encode, at once."""
        return np.dtype(
            [("t", ">i8"), ("h", ">u4"), *((f"e{s}", ">u4") for s in range(len(self.sets)))]
        )

    @cached_property
    def levels(self) -> tuple[tuple[int, int], ...]:
        """(tile ms, tiles) of each velocity window."""
        return tuple((w.tile_ms, w.tiles) for w in self.windows)

    @cached_property
    def digest(self) -> str:
        """In the state key: a change of what is kept for the kind never decodes old state."""
        text = repr(
            (self.entity, self.windows, self.gap, [(d.counted, d.window) for d in self.sets])
        )
        return hashlib.sha256(text.encode()).hexdigest()[:6]


Ints = npt.NDArray[np.int64]
#: An idle state outlives its kind's horizon by this much: slack for late clicks.
TTL_SLACK_S = 3600


@dataclass(frozen=True)
class Tables:
    """The kinds' constants as arrays indexed by kind, built once per layout, so that a batch
    looks up every entity's windows at once instead of building them per kind and batch.

    A kind's counters are its velocity windows, then its distinct counts, padded to the most
    any kind has (``windows``, ``sets``); padding counters have tile ms and tiles 1 and are
    never read. A click's counts for one kind come out of the counting as one slot row:
    ``windows`` clicks, the gap, ``sets`` distinct counts; the values matrix of a batch holds
    per click every kind's values as its feature row stores them (kind after kind), and
    ``value_columns`` places a slot row there.
    """

    windows: int
    sets: int
    tile_ms: Ints  # [kind, counter]
    tiles: Ints
    n_windows: Ints  # [kind]
    n_sets: Ints
    #: [kind]: 1 << kind (as a bincount weight), and the size of its log records: the first
    #: bytes of ``record`` (time, click hash, an element per distinct count of the layout).
    bits: npt.NDArray[np.float64]
    record_size: Ints
    record: np.dtype[np.void]
    record_bytes: Ints  # 0 .. record.itemsize - 1
    #: [kind, slot]: the slot's column in the values matrix, -1 where the kind has none.
    value_columns: Ints
    #: Per values column: its feature column; the values columns holding gaps, and each
    #: one's cap in seconds; and a click's values before counting (no entity: counts 0,
    #: gaps -1 for "none").
    features: npt.NDArray[np.intp]
    gaps: npt.NDArray[np.intp]
    gap_caps: npt.NDArray[np.float64]
    blank: Ints
    #: [kind]: the TTL of its states in ms, negative where every append refreshes it
    #: (``Kind.refresh``; read_append.lua).
    ttl_ms: Ints
    #: Counted fields (click attributes), and [kind, distinct count]: the field's index, or
    #: len(counted) (no element) in padding slots.
    counted: tuple[str, ...]
    element_field: Ints
    #: Per mask of kinds (bit k: kind k): its feature-row field label ("1.3:"), the values
    #: columns of its row, and a getter of them (always a tuple) from a values row.
    labels: tuple[str, ...]
    mask_columns: tuple[npt.NDArray[np.intp], ...]
    row_of: tuple[Callable[[list[int]], tuple[int, ...]], ...]

    @property
    def slots(self) -> int:
        return self.windows + 1 + self.sets

    @cached_property
    def spread(self) -> Ints:
        """[counter, 1]: the counters' numbers, to number (counter, entity) groups."""
        return np.arange(self.windows + self.sets, dtype=np.int64)[:, None]


def _tables(kinds: tuple[Kind, ...]) -> Tables:
    n_windows, n_sets = max(len(k.windows) for k in kinds), max(len(k.sets) for k in kinds)

    def padded(rows: list[list[int]], width: int) -> Ints:
        out = np.ones((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    counted = tuple(sorted({d.counted for k in kinds for d in k.sets}))
    element_field = np.full((len(kinds), n_sets), len(counted), dtype=np.int64)
    value_columns = np.full((len(kinds), n_windows + 1 + n_sets), -1, dtype=np.int64)
    features: list[int] = []
    gaps: list[int] = []
    gap_caps: list[float] = []
    for k, kind in enumerate(kinds):
        for s, d in enumerate(kind.sets):
            element_field[k, s] = counted.index(d.counted)
        slots = [*range(len(kind.windows))]
        slots += [n_windows] if kind.gap else []
        slots += [n_windows + 1 + s for s in range(len(kind.sets))]
        value_columns[k, slots] = np.arange(len(features), len(features) + kind.width)
        if kind.gap:
            gaps.append(len(features) + len(kind.windows))
            gap_caps.append(kind.gap_cap_s)
        features += kind.columns
    offsets = np.cumsum([0, *(k.width for k in kinds)])
    record = np.dtype([("t", ">i8"), ("h", ">u4"), *([("e", ">u4", (n_sets,))] if n_sets else [])])
    labels, mask_columns, row_of = [], [], []
    for mask in range(1 << len(kinds)):
        mine = [k for k in range(len(kinds)) if mask >> k & 1]
        labels.append(".".join(str(kinds[k].number) for k in mine) + ":")
        columns = [c for k in mine for c in range(offsets[k], offsets[k + 1])]
        mask_columns.append(np.array(columns, dtype=np.intp))
        row_of.append(_getter(columns))
    return Tables(
        windows=n_windows,
        sets=n_sets,
        tile_ms=np.hstack(
            (
                padded([[w.tile_ms for w in k.windows] for k in kinds], n_windows),
                padded([[d.window.tile_ms for d in k.sets] for k in kinds], n_sets),
            )
        ),
        tiles=np.hstack(
            (
                padded([[w.tiles for w in k.windows] for k in kinds], n_windows),
                padded([[d.window.tiles for d in k.sets] for k in kinds], n_sets),
            )
        ),
        n_windows=np.array([len(k.windows) for k in kinds], dtype=np.int64),
        n_sets=np.array([len(k.sets) for k in kinds], dtype=np.int64),
        bits=np.array([1 << k for k in range(len(kinds))], dtype=np.float64),
        record_size=np.array([k.dtype.itemsize for k in kinds], dtype=np.int64),
        record=record,
        record_bytes=np.arange(record.itemsize, dtype=np.int64),
        value_columns=value_columns,
        features=np.array(features, dtype=np.intp),
        gaps=np.array(gaps, dtype=np.intp),
        gap_caps=np.array(gap_caps, dtype=np.float64),
        blank=np.where(np.isin(np.arange(len(features)), gaps), -1, 0),
        ttl_ms=np.array([-k.ttl_ms if k.refresh else k.ttl_ms for k in kinds], dtype=np.int64),
        counted=counted,
        element_field=element_field,
        labels=tuple(labels),
        mask_columns=tuple(mask_columns),
        row_of=tuple(row_of),
    )


def _getter(columns: list[int]) -> Callable[[list[int]], tuple[int, ...]]:
    """itemgetter of the columns that returns a tuple even for one column, or none."""
    if not columns:
        return lambda row: ()
    if len(columns) == 1:
        (c,) = columns
        return lambda row: (row[c],)
    get: Callable[[list[int]], tuple[int, ...]] = itemgetter(*columns)
    return get


@dataclass(frozen=True)
class Layout:
    kinds: tuple[Kind, ...]
    #: Feature columns filled from Redis.
    redis_columns: npt.NDArray[np.intp]
    #: Part of every feature-row key: a spec change never serves a row of the old spec.
    feature_hash: str
    tables: Tables


def build_layout(spec: FeatureSpec = SPEC) -> Layout:
    index = {name: i for i, name in enumerate(spec.names)}
    kinds: list[Kind] = []
    velocity: dict[str, Velocity] = {}
    for v in spec.velocity:
        if velocity.setdefault(v.entity.name, v) is not v:
            raise ValueError(f"entity {v.entity.name} has two velocity counters; merge them")
    for number, entity in enumerate(spec.entities, start=1):
        v_spec = velocity.get(entity.name)
        windows = v_spec.windows if v_spec else ()
        gap = bool(v_spec and v_spec.gap)
        sets = tuple(d for d in spec.distinct if d.entity.name == entity.name)
        columns = [index[f"{entity.name}_clicks_{w.name}"] for w in windows]
        columns += [index[f"{entity.name}_gap_s"]] if gap else []
        columns += [index[d.name] for d in sets]
        kinds.append(
            Kind(
                number,
                entity,
                windows,
                gap,
                sets,
                tuple(columns),
                gap_cap_s=spec.gap_cap_s(entity),
                horizon_s=spec.horizon_s(entity),
            )
        )
    redis_columns = sorted(c for k in kinds for c in k.columns)
    return Layout(
        kinds=tuple(kinds),
        redis_columns=np.array(redis_columns, dtype=np.intp),
        feature_hash=spec.digest(),
        tables=_tables(tuple(kinds)),
    )


LAYOUT = build_layout()
