"""How the feature spec maps onto Redis: entity kinds, their keys, records and values.

Everything here is derived once from :data:`slidr.features.SPEC`; nothing talks to Redis.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from slidr.features import (
    SPEC,
    Distinct,
    Entity,
    FeatureSpec,
    Velocity,
    Window,
)


@dataclass(frozen=True)
class Shape:
    """Tile ms and tiles of a kind's velocity windows and of its distinct counts' windows."""

    tile_ms: npt.NDArray[np.int64]
    tiles: npt.NDArray[np.int64]
    set_tile_ms: npt.NDArray[np.int64]
    set_tiles: npt.NDArray[np.int64]


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
    def bases(self) -> msgspec.msgpack.Decoder[list[Any]]:
        """Decodes the bases of many entities in one call, as one MessagePack array of them
        (docs/redis-keys.md); a base with the wrong number of windows or sets is refused. The
        tiles and distinct elements, most of a base, stay raw MessagePack: numpy reads them."""
        levels: Any = tuple.__class_getitem__((msgspec.Raw,) * len(self.windows))
        sets: Any = tuple.__class_getitem__((msgspec.Raw,) * len(self.sets))
        return msgspec.msgpack.Decoder(list[tuple[int, list[int], levels, sets]])

    @cached_property
    def levels(self) -> tuple[tuple[int, int], ...]:
        """(tile ms, tiles) of each velocity window."""
        return tuple((w.tile_ms, w.tiles) for w in self.windows)

    @cached_property
    def shape(self) -> Shape:
        windows, sets = self.windows, [d.window for d in self.sets]
        return Shape(
            np.array([w.tile_ms for w in windows], dtype=np.int64),
            np.array([w.tiles for w in windows], dtype=np.int64),
            np.array([w.tile_ms for w in sets], dtype=np.int64),
            np.array([w.tiles for w in sets], dtype=np.int64),
        )

    @cached_property
    def digest(self) -> str:
        """In the state key: a change of what is kept for the kind never decodes old state."""
        text = repr(
            (self.entity, self.windows, self.gap, [(d.counted, d.window) for d in self.sets])
        )
        return hashlib.sha256(text.encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Layout:
    kinds: tuple[Kind, ...]
    #: Feature columns filled from Redis, and their value when the click has no such entity.
    redis_columns: npt.NDArray[np.intp]
    defaults: npt.NDArray[np.float64]
    gap_columns: npt.NDArray[np.intp]
    #: Part of every feature-row key: a spec change never serves a row of the old spec.
    feature_hash: str


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
        kinds.append(Kind(number, entity, windows, gap, sets, tuple(columns)))
    gaps = [index[f"{v.entity.name}_gap_s"] for v in spec.velocity if v.gap]
    redis_columns = sorted(c for k in kinds for c in k.columns)
    defaults = np.zeros(len(spec.names), dtype=np.float64)
    defaults[gaps] = -1.0  # "no previous click", as the script says it
    return Layout(
        kinds=tuple(kinds),
        redis_columns=np.array(redis_columns, dtype=np.intp),
        defaults=defaults,
        gap_columns=np.array(gaps, dtype=np.intp),
        feature_hash=spec.digest(),
    )


LAYOUT = build_layout()
