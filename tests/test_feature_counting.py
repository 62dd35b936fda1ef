"""The batch counting of the feature store (``streams/feature_store/entity.py``, numpy over all
of a node's entities at once) against the store's first implementation, kept here as the
oracle: plain Python, one entity and one click at a time, straight from the definitions of
docs/redis-keys.md.

Random click streams per entity, cut into batches, each batch counted by both from the same
stored states: late and out-of-order clicks, clicks redelivered (in the log already, or twice
in one batch), clicks of the same hash with other contents, compactions by size and by age,
more distinct elements than the cap, bases written by either implementation. No Redis.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from slidr.features import (
    DISTINCT_CAP,
    HOUR,
    MINUTE,
    SPEC,
    TEN_MINUTES,
    Distinct,
    Entity,
    FeatureSpec,
    Velocity,
)
from streams.feature_store.arrays import Search
from streams.feature_store.compact import COMPACT_AGE_MS, COMPACT_RECORDS, RING
from streams.feature_store.entity import count
from streams.feature_store.layout import LAYOUT, Kind, Layout, build_layout
from streams.feature_store.stored import split_state

KINDS = {k.entity.name: k for k in LAYOUT.kinds}
Record = tuple[int, ...]


@dataclass
class Part:
    """One kind's entities (their stored states) and new clicks: each one's entity (an index
    into ``states``) and log record."""

    kind: Kind
    states: Sequence[bytes | None]
    entity: npt.NDArray[np.int64]
    records: npt.NDArray[np.void]


@dataclass
class PartsCounted:
    values: list[npt.NDArray[np.int64]]  # per part: [record, kind.width], as rows store them
    bases: list[dict[int, bytes]]  # per part: by index into its states


def count_parts(parts: Sequence[Part], layout: Layout = LAYOUT) -> PartsCounted:
    """:func:`count` over parts of kinds of ``layout``, entities numbered part after part."""
    tables = layout.tables
    kinds: list[int] = []
    states: list[bytes | None] = []
    owner, elements = [], []
    for part in parts:
        kinds += [layout.kinds.index(part.kind)] * len(part.states)
        owner.append(part.entity + len(states))
        states += part.states
        mine = np.zeros((len(part.records), tables.sets), dtype=np.int64)
        for s in range(len(part.kind.sets)):
            mine[:, s] = part.records[f"e{s}"]
        elements.append(mine)
    got = count(
        layout,
        np.array(kinds, dtype=np.int64),
        states,
        np.concatenate(owner),
        np.concatenate([p.records["t"] for p in parts]).astype(np.int64),
        np.concatenate([p.records["h"] for p in parts]).astype(np.int64),
        np.concatenate(elements),
    )
    out = PartsCounted([], [])
    at = lo = 0
    for part in parts:
        k, n = layout.kinds.index(part.kind), len(part.records)
        out.values.append(got.values[at : at + n][:, tables.value_columns[k] >= 0])
        hi = lo + len(part.states)
        out.bases.append({e - lo: b for e, b in got.bases.items() if lo <= e < hi})
        at, lo = at + n, hi
    return out


# --- the oracle: the first implementation, one entity at a time ----------------------------

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(tuple[int, list[int], list[list[int]], list[list[int]]]).decode


@dataclass
class Base:
    newest: int = -1
    ring: list[int] = field(default_factory=list)  # newest first
    tiles: list[dict[int, int]] = field(default_factory=list)  # per window: tile -> clicks
    sets: list[dict[int, int]] = field(default_factory=list)  # per set: element -> last tile


def decode_base(kind: Kind, raw: bytes) -> Base:
    if len(raw) <= 2:
        return Base(tiles=[{} for _ in kind.windows], sets=[{} for _ in kind.sets])
    newest, ring, levels, sets = _decode(raw[2:])
    base = Base(newest=newest, ring=[newest - r for r in ring])
    for w, flat in zip(kind.windows, levels, strict=True):
        top = newest // w.tile_ms
        base.tiles.append({top - flat[j]: flat[j + 1] for j in range(0, len(flat), 2)})
    for d, flat in zip(kind.sets, sets, strict=True):
        top = newest // d.window.tile_ms
        base.sets.append({flat[j]: top - flat[j + 1] for j in range(0, len(flat), 2)})
    return base


def encode_base(kind: Kind, base: Base) -> bytes:
    newest = base.newest
    levels = []
    for w, tiles in zip(kind.windows, base.tiles, strict=True):
        top = newest // w.tile_ms
        levels.append([v for j, c in tiles.items() if j > top - w.tiles for v in (top - j, c)])
    sets = []
    for d, seen in zip(kind.sets, base.sets, strict=True):
        top = newest // d.window.tile_ms
        kept = sorted(((t, e) for e, t in seen.items() if t > top - d.window.tiles), reverse=True)
        sets.append([v for t, e in kept[:DISTINCT_CAP] for v in (e, top - t)])
    body = _encode((newest, [newest - r for r in base.ring], levels, sets))
    return len(body).to_bytes(2, "big") + body


def oracle_count(
    kind: Kind, base: Base, logged: Sequence[Record], batch: Sequence[Record]
) -> tuple[dict[int, list[int]], bytes | None]:
    """Features by click hash and, when due, the new base."""
    events: dict[int, Record] = {}
    for r in (*logged, *batch):
        events.setdefault(r[1], r)
    ordered = sorted(events.values())
    times = [r[0] for r in ordered]
    position = {r[1]: i for i, r in enumerate(ordered)}
    mine = {r[1] for r in batch}
    values: dict[int, list[int]] = {h: [] for h in mine}
    for (tile_ms, n_tiles), tiles in zip(kind.levels, base.tiles, strict=True):
        for h in mine:
            p = position[h]
            first = ordered[p][0] // tile_ms - n_tiles + 1
            n = p + 1 - bisect_left(times, first * tile_ms)
            values[h].append(n + sum(c for j, c in tiles.items() if j >= first))
    if kind.gap:
        for h in mine:
            p = position[h]
            t = ordered[p][0]
            previous = times[p - 1] if p > 0 else -1
            for ring_t in base.ring:  # newest first
                if ring_t <= t:
                    previous = max(previous, ring_t)
                    break
            values[h].append(t - previous if previous >= 0 else -1)
    for s, (d, seen) in enumerate(zip(kind.sets, base.sets, strict=True)):
        n_tiles, last = d.window.tiles, dict(seen)
        for r in ordered:
            element, tile = r[s + 2], r[0] // d.window.tile_ms
            if element and tile > last.get(element, tile - 1):
                last[element] = tile
            if r[1] in mine:
                inside = sum(tile - n_tiles < j <= tile for j in last.values())
                values[r[1]].append(min(inside, DISTINCT_CAP))
    due = len(ordered) >= COMPACT_RECORDS or times[-1] - times[0] >= COMPACT_AGE_MS
    return values, encode_base(kind, oracle_compact(kind, base, ordered)) if due else None


def oracle_compact(kind: Kind, base: Base, ordered: Sequence[Record]) -> Base:
    newest = max(base.newest, ordered[-1][0])
    ring = sorted({*base.ring, *(r[0] for r in ordered[-RING:])}, reverse=True)[:RING]
    out = Base(newest=newest, ring=ring)
    for w, tiles in zip(kind.windows, base.tiles, strict=True):
        merged = dict(tiles)
        for r in ordered:
            j = r[0] // w.tile_ms
            merged[j] = merged.get(j, 0) + 1
        out.tiles.append(merged)
    for s, (d, seen) in enumerate(zip(kind.sets, base.sets, strict=True)):
        merged = dict(seen)
        for r in ordered:
            element, tile = r[s + 2], r[0] // d.window.tile_ms
            if element and tile > merged.get(element, tile - 1):
                merged[element] = tile
        out.sets.append(merged)
    return out


# --- random streams -------------------------------------------------------------------------

T0 = 1_772_445_600_000  # 2026-03-02 10:00 UTC, ms
STEPS_MS = [0, 0, 1, 250, 4_999, 5_000, 60_000, 600_000, 3_600_000, 5_400_000, 86_400_000]


@dataclass
class History:
    base: bytes = b"\0\0"
    log: list[Record] = field(default_factory=list)
    sent: list[Record] = field(default_factory=list)
    clock: int = T0

    def state(self, kind: Kind) -> bytes | None:
        if not self.sent:
            return None
        return self.base + b"".join(kind.record.pack(*r) for r in self.log)


def next_click(
    rng: random.Random, kind: Kind, e: History, pool: Sequence[int], steps: Sequence[int]
) -> Record:
    roll = rng.random()
    if e.sent and roll < 0.08:  # redelivered, after the horizon: the same record again
        return rng.choice(e.sent)
    if e.sent and roll < 0.1:  # another click with the same hash
        t, h, *elements = rng.choice(e.sent)
        return (t + rng.randrange(-5000, 5000), h, *(rng.choice(pool) for _ in elements))
    e.clock += rng.choice(steps)
    t = e.clock
    if roll > 0.85:  # late: before clicks already seen, perhaps before a compaction
        t -= rng.choice([1, 4_000, 60_000, 3_000_000, 7_200_000, 90_000_000])
    h = rng.randrange(1, 2**32)
    return (t, h, *(rng.choice(pool) * (rng.random() > 0.1) for _ in kind.sets))


def decoded(
    kind: Kind, base: bytes
) -> tuple[int, list[int], list[dict[int, int]], list[dict[int, int]]]:
    b = decode_base(kind, base)
    return b.newest, b.ring, b.tiles, b.sets


def run_stream(
    layout: Layout,
    kinds: Sequence[Kind],
    seed: int,
    batches: int,
    entities: int,
    pool: int,
    bursts: Sequence[int],
    steps: Sequence[int] = STEPS_MS,
) -> tuple[int, int]:
    """Both implementations over random streams of entities of each kind, counted together:
    the compactions checked and the largest distinct count seen."""
    rng = random.Random(seed)
    worlds = [[History() for _ in range(entities)] for _ in kinds]
    # Element ids are 32-bit hashes; a few small ones, which MessagePack writes shorter.
    elements = [rng.randrange(1, 2**32) for _ in range(pool)] + [1, 200, 60_000]
    compactions = 0
    largest = 0
    for _ in range(batches):
        parts, works, chosen_of = [], [], []
        for kind, world in zip(kinds, worlds, strict=True):
            chosen = rng.sample(range(entities), rng.randint(1, entities))
            work: list[tuple[int, Record]] = []
            for i in chosen:
                burst = rng.choice(bursts)
                clicks = [next_click(rng, kind, world[i], elements, steps) for _ in range(burst)]
                clicks += rng.sample(clicks, min(len(clicks), rng.choice([0, 0, 1])))  # twice
                work += [(i, r) for r in clicks]
            rng.shuffle(work)  # how the batch interleaves entities is irrelevant
            local = {i: n for n, i in enumerate(chosen)}
            parts.append(
                Part(
                    kind,
                    [world[i].state(kind) for i in chosen],
                    np.array([local[i] for i, _ in work], dtype=np.int64),
                    np.array([r for _, r in work], dtype=kind.dtype),
                )
            )
            works.append(work)
            chosen_of.append(chosen)
        got = count_parts(parts, layout)
        for p, (kind, world, part, work, chosen) in enumerate(
            zip(kinds, worlds, parts, works, chosen_of, strict=True)
        ):
            values, bases = got.values[p].tolist(), got.bases[p]
            if kind.sets:
                largest = max(largest, max(max(row[-len(kind.sets) :]) for row in values))
            for n, i in enumerate(chosen):
                e = world[i]
                batch = [r for j, r in work if j == i]
                base_raw, _ = split_state(part.states[n])
                want, want_base = oracle_count(kind, decode_base(kind, base_raw), e.log, batch)
                for row, (j, r) in zip(values, work, strict=True):
                    if j == i:
                        assert row == want[r[1]], (seed, kind.entity.name, i, r)
                assert (n in bases) == (want_base is not None), (seed, i)
                e.sent += batch
                e.log += batch
                if want_base is not None:
                    mine = bases[n]
                    assert decoded(kind, mine) == decoded(kind, want_base), (seed, i)
                    assert len(mine) == len(want_base)  # the same content: no byte more in Redis
                    e.base = rng.choice([mine, want_base])  # either writer's base reads alike
                    e.log = []
                    compactions += 1
    return compactions, largest


#: Kinds unlike the served spec's (other windows, no gap, a distinct count alone), counted
#: with the served IP's.
AD = Entity("ad", ("ad_id",))
IP = next(v for v in SPEC.velocity if v.entity.name == "ip")
ODD = build_layout(
    FeatureSpec(
        velocity=(Velocity(AD, (MINUTE, HOUR), gap=False), IP),
        distinct=(
            Distinct("ad_distinct_ips", AD, "ip", HOUR),
            Distinct(
                "campaign_sessions",
                Entity("campaign", ("campaign_id",)),
                "session_id",
                TEN_MINUTES,
            ),
            *(d for d in SPEC.distinct if d.entity == IP.entity),
        ),
    )
)
GROUPS = {
    **{name: (LAYOUT, [kind]) for name, kind in KINDS.items()},
    "served": (LAYOUT, list(LAYOUT.kinds)),
    "odd": (ODD, list(ODD.kinds)),
}


@pytest.fixture(params=["bounds first", "search all"])
def searches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways a search answers (small batches search every query, large ones check the
    groups' bounds first), whatever the batch's size."""
    monkeypatch.setattr(Search, "MANY", 0 if request.param == "bounds first" else 2**62)


@pytest.mark.parametrize("group", sorted(GROUPS))
@pytest.mark.parametrize("seed", range(8))
def test_batch_counting_equals_the_per_click_definition(
    group: str, seed: int, searches: None
) -> None:
    compactions, _ = run_stream(
        *GROUPS[group], seed, batches=25, entities=8, pool=12, bursts=[1, 1, 2, 3, 5, 17, 40]
    )
    assert compactions > 0


@pytest.mark.parametrize("seed", range(3))
def test_the_distinct_cap_and_what_compaction_keeps_of_many_elements(seed: int) -> None:
    # Thousands of distinct elements per entity: counts stop at the cap, bases keep the newest.
    compactions, largest = run_stream(
        LAYOUT,
        [KINDS["ip"]],
        seed,
        batches=8,
        entities=2,
        pool=100_000,
        bursts=[10, 300, 700],
        steps=[0, 1, 250, 5_000, 60_000],
    )
    assert compactions > 0 and largest == DISTINCT_CAP


def test_no_stored_state_and_one_click() -> None:
    kind = KINDS["ip"]
    # Elements 1, none (an anonymous click has no customer), 2, 3...: one per distinct count.
    elements = [1, 0, *range(2, len(kind.sets))]
    record = np.array([(T0, 7, *elements)], kind.dtype)
    got = count_parts([Part(kind, [None], np.zeros(1, dtype=np.int64), record)])
    distinct = [int(e > 0) for e in elements]
    assert got.values[0].tolist() == [[1, 1, 1, 1, -1, *distinct]] and not got.bases[0]
