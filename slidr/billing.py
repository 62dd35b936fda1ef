"""The billing side, for reference: one final verdict per click_id from what billing reads.

Billing reads the decisions topic (the live worker) and the replayed-decisions topic (replays).
A click may have several decisions there: a redelivery repeats its first decision byte for byte
(the worker's decision cache), a replay supersedes with a higher ``revision``. :class:`Ledger`
keeps, per click_id, the decision :func:`slidr.events.final_order` ranks highest, so the
verdict does not depend on which topic or message was read first. A production billing system
keeps the same fold in its own store (a compacted table keyed by click_id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from slidr.events import Decision, FinalOrder, Verdict, final_order
from slidr.settings import Settings
from slidr.topic_reader import read_to_end


@dataclass(frozen=True)
class BillingSummary:
    #: Decisions read, and the clicks they are about.
    decisions: int
    clicks: int
    #: Final verdicts: invalid (not billed), and degraded (fail-open: billed, to replay).
    invalid: int
    degraded: int
    #: Clicks decided more than once: every repeat identical (a redelivery given its first
    #: decision back), and clicks whose final decision is a replay's.
    repeated: int
    replayed: int
    #: Clicks with two different decisions of the same revision: the rule chose between them
    #: (a redelivery the decision cache did not cover, e.g. Redis was down).
    conflicting: int


class Ledger:
    """Decisions folded into the final one per click_id."""

    def __init__(self) -> None:
        self._best: dict[str, tuple[FinalOrder, Decision]] = {}
        self._seen: dict[str, int] = {}
        #: Per click and revision: a digest of the first decision read.
        self._digests: dict[tuple[str, int], bytes] = {}
        self._conflicting: set[str] = set()
        self.decisions = 0

    def add(self, payload: bytes) -> Decision:
        decision = Decision.model_validate_json(payload)
        order = final_order(decision, payload)
        click_id = decision.click_id
        self.decisions += 1
        self._seen[click_id] = self._seen.get(click_id, 0) + 1
        held = self._best.get(click_id)
        if held is None or order > held[0]:
            self._best[click_id] = (order, decision)
        digest = hashlib.blake2b(payload, digest_size=8).digest()
        if self._digests.setdefault((click_id, decision.revision), digest) != digest:
            self._conflicting.add(click_id)
        return decision

    def extend(self, payloads: Iterable[bytes]) -> Ledger:
        for payload in payloads:
            self.add(payload)
        return self

    def final(self) -> Iterator[Decision]:
        """One decision per click_id: the final one."""
        for _, decision in self._best.values():
            yield decision

    def __len__(self) -> int:
        return len(self._best)

    def summary(self) -> BillingSummary:
        finals = [d for _, d in self._best.values()]
        return BillingSummary(
            decisions=self.decisions,
            clicks=len(finals),
            invalid=sum(d.verdict == Verdict.INVALID for d in finals),
            degraded=sum(d.degraded for d in finals),
            repeated=sum(n > 1 for n in self._seen.values()),
            replayed=sum(d.revision > 0 for d in finals),
            conflicting=len(self._conflicting),
        )


def read_ledger(settings: Settings, *, idle_s: float = 3.0) -> Ledger:
    """Every decision billing reads, as they stand now, folded."""
    topics = [settings.topics.decisions, settings.topics.replayed_decisions]
    return Ledger().extend(read_to_end(settings, topics, idle_s=idle_s))
