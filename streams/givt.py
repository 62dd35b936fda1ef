"""General invalid traffic (GIVT): clicks invalid by lists, decided before the model.

Two lists, both matched in microseconds per click (``benchmarks/bench_givt.py``):

- declared bots and crawlers, by user agent: the patterns the ``crawler-user-agents`` package
  ships (upgrade the package to update them), each tried only when a multi-literal scan finds
  a literal it requires, with a bounded cache of user agents already seen (real traffic
  repeats a few thousand of them);
- known data-centre ranges, by IP: operator-supplied CIDR files (``givt.datacenter_cidr_files``),
  merged into sorted intervals per IP version and searched with ``bisect``.

No Kafka, Redis or model here: the pipeline asks :meth:`GivtFilter.reason` per click.
"""

from __future__ import annotations

import ipaddress
import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import ahocorasick

from slidr.errors import SlidrError
from slidr.events import Click, GivtReason
from slidr.settings import GivtSettings

#: The package (and data file) the declared-bot patterns come from.
CRAWLER_PACKAGE = "crawleruseragents"
CRAWLER_FILE = "crawler-user-agents.json"
#: User agents remembered with their verdict; the cache is emptied when full.
UA_CACHE_SIZE = 65_536


class GivtConfigError(SlidrError):
    """A GIVT list cannot be read: the message names the file, the line and the fix."""


def crawler_patterns() -> list[str]:
    """The declared-bot user-agent patterns (regular expressions) of ``crawler-user-agents``."""
    try:
        data = resources.files(CRAWLER_PACKAGE).joinpath(CRAWLER_FILE).read_text("utf-8")
    except ModuleNotFoundError:
        raise GivtConfigError(
            "the declared-bot list needs the crawler-user-agents package: "
            "pip install crawler-user-agents (or set SLIDR_GIVT__DECLARED_BOTS=false)"
        ) from None
    return [str(entry["pattern"]) for entry in json.loads(data)]


_META = set("^$.|?*+()[]{}")
_QUANTIFIERS = set("?*{")


def required_literal(pattern: str) -> str | None:
    """The longest run of plain characters every match of ``pattern`` must contain, or None.

    A conservative scan, no regex parser: a top-level ``|`` means no single run is required;
    groups and classes end a run; a character followed by a quantifier is not required.
    """
    if "(?" in pattern:  # inline flags (case-insensitive...) or look-arounds: no literal
        return None
    runs: list[str] = []
    run: list[str] = []
    depth = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            literal = None if nxt.isalnum() else nxt  # \d, \w, \b... are not literals
            i += 2
        elif c in "[{":  # a class, or a counted repeat: skip to its end
            end = pattern.find("]" if c == "[" else "}", i + 1)
            literal, i = None, (len(pattern) if end < 0 else end + 1)
        elif c in "()":
            depth += 1 if c == "(" else -1
            literal, i = None, i + 1
        elif c == "|" and depth == 0:
            return None
        else:
            literal, i = (None if c in _META else c), i + 1
        if i < len(pattern) and pattern[i] in _QUANTIFIERS:
            literal = None  # may occur zero times (or a counted number): not required as is
        if literal is not None and depth == 0:
            run.append(literal)
        else:
            runs.append("".join(run))
            run = []
    runs.append("".join(run))
    best = max(runs, key=len)
    return best if len(best) >= 3 else None


class DeclaredBots:
    """Is this user agent a declared bot or crawler?

    One alternation of 1,500 patterns costs ~0.5 ms per unseen user agent in Python's regex
    engine, so each pattern is tried only when an Aho-Corasick scan (``pyahocorasick``) finds a
    literal the pattern requires; the few patterns without one form a small alternation. Plus
    a bounded cache of verdicts (real traffic repeats a few thousand user agents).
    """

    def __init__(self, patterns: Iterable[str], cache_size: int = UA_CACHE_SIZE) -> None:
        self.patterns = list(patterns)
        self._automaton = ahocorasick.Automaton()
        by_literal: dict[str, list[re.Pattern[str]]] = {}
        unkeyed: list[str] = []
        for pattern in self.patterns:
            literal = required_literal(pattern)
            if literal is None:
                unkeyed.append(pattern)
            else:
                by_literal.setdefault(literal, []).append(re.compile(pattern))
        for literal, compiled in by_literal.items():
            self._automaton.add_word(literal, compiled)
        self._automaton.make_automaton()
        self._keyed = bool(by_literal)
        self._rest = re.compile("|".join(f"(?:{p})" for p in unkeyed)) if unkeyed else None
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size

    def matches(self, user_agent: str) -> bool:
        hit = self._cache.get(user_agent)
        if hit is not None:
            return hit
        found = self.matches_uncached(user_agent)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[user_agent] = found
        return found

    def matches_uncached(self, user_agent: str) -> bool:
        if self._keyed:
            for _, candidates in self._automaton.iter(user_agent):
                if any(c.search(user_agent) for c in candidates):
                    return True
        return self._rest is not None and self._rest.search(user_agent) is not None


def _network(text: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        hint = ""
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(text, strict=False)
            hint = f"; did you mean {fixed}?"
        raise GivtConfigError(f"{where}: {text!r} is not a CIDR range ({exc}){hint}") from None


def read_cidr_file(path: Path) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The ranges of one CIDR file: one per line, ``#`` comments and blank lines ignored."""
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GivtConfigError(
            f"cannot read the data-centre CIDR file {path} ({exc}); fix the path in "
            "givt.datacenter_cidr_files (SLIDR_GIVT__DATACENTER_CIDR_FILES)"
        ) from None
    networks = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            networks.append(_network(text, f"{path}:{number}"))
    return networks


def _merged(
    networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> tuple[list[int], list[int]]:
    """Sorted, non-overlapping [start, end] intervals as two lists (starts, ends)."""
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in networks)
    starts: list[int] = []
    ends: list[int] = []
    for start, end in spans:
        if ends and start <= ends[-1] + 1:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


class DataCentreRanges:
    """Membership of an IP in a set of CIDR ranges, by binary search over merged intervals."""

    def __init__(
        self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
    ) -> None:
        networks = list(networks)
        self.v4 = _merged(n for n in networks if n.version == 4)
        self.v6 = _merged(n for n in networks if n.version == 6)
        self.count = len(networks)

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> DataCentreRanges:
        return cls(n for path in paths for n in read_cidr_file(path))

    def __contains__(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        starts, ends = self.v4 if address.version == 4 else self.v6
        value = int(address)
        i = bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]


class GivtFilter:
    """The GIVT reason of a click, or None when the model should judge it."""

    def __init__(
        self, declared_bots: DeclaredBots | None, datacentres: DataCentreRanges | None
    ) -> None:
        self.declared_bots = declared_bots
        self.datacentres = datacentres if datacentres is not None and datacentres.count else None

    @classmethod
    def from_settings(cls, settings: GivtSettings) -> GivtFilter:
        """Read every list once (files are checked here: a bad line stops start-up)."""
        bots = DeclaredBots(crawler_patterns()) if settings.declared_bots else None
        ranges = DataCentreRanges.from_files(settings.datacenter_cidr_files)
        return cls(bots, ranges)

    @property
    def active(self) -> bool:
        return self.declared_bots is not None or self.datacentres is not None

    def reason(self, click: Click) -> GivtReason | None:
        return self.reason_of(click.user_agent, click.ip)

    def reason_of(self, user_agent: str, ip: str) -> GivtReason | None:
        """Declared bot first (the more specific reason), then data-centre IP."""
        if self.declared_bots is not None and self.declared_bots.matches(user_agent):
            return GivtReason.DECLARED_BOT
        if self.datacentres is not None and ip in self.datacentres:
            return GivtReason.DATACENTER
        return None

    def reasons(self, clicks: Sequence[Click]) -> list[GivtReason | None]:
        if not self.active:
            return [None] * len(clicks)
        return [self.reason(click) for click in clicks]
