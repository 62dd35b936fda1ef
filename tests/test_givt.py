"""GIVT lists: declared bots by user agent, data-centre ranges by IP, and their decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from slidr.events import Click, DegradedReason, GivtReason, IvtCategory, Verdict
from slidr.features import N_FEATURES
from slidr.model_record import ModelRecord
from slidr.settings import PROJECT_ROOT, GivtSettings
from streams.decide import DecisionColumns, Stamp, decide, fail_open
from streams.givt import (
    DataCentreRanges,
    DeclaredBots,
    GivtConfigError,
    GivtFilter,
    crawler_patterns,
    read_cidr_file,
    required_literal,
)
from tests.decisions import validated
from tests.factories import make_click

CRAWLERS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "python-requests/2.31.0",
]
BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "ShopApp/24.9.0 (iPhone15,2; iOS 17.4.1; Scale/3.00)",
]


@pytest.fixture(scope="module")
def bots() -> DeclaredBots:
    return DeclaredBots(crawler_patterns())


@pytest.mark.parametrize("user_agent", CRAWLERS)
def test_real_crawler_user_agents_are_declared_bots(bots: DeclaredBots, user_agent: str) -> None:
    assert bots.matches(user_agent)
    assert bots.matches(user_agent)  # the cached verdict too


@pytest.mark.parametrize("user_agent", BROWSERS)
def test_ordinary_browsers_are_not(bots: DeclaredBots, user_agent: str) -> None:
    assert not bots.matches(user_agent)
    assert not bots.matches(user_agent)


def test_every_instance_the_package_lists_matches(bots: DeclaredBots) -> None:
    """The one compiled regex agrees with the list's own examples (the list's contract)."""
    import json
    from importlib import resources

    entries = json.loads(
        resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text()
    )
    instances = [i for e in entries for i in e.get("instances", [])]
    assert len(instances) > 1000
    missed = [i for i in instances if not bots.matches_uncached(i)]
    assert missed == []


def test_the_literal_prefilter_agrees_with_the_whole_list(bots: DeclaredBots) -> None:
    """Each pattern is tried only when a literal it requires is present: on the list's own
    examples, browsers and per-pattern near misses, the verdict equals one big alternation."""
    import json
    import re
    from importlib import resources

    entries = json.loads(
        resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text()
    )
    whole = re.compile("|".join(f"(?:{p})" for p in bots.patterns))
    probes = [i for e in entries for i in e.get("instances", [])] + BROWSERS
    # Near misses: each example with one character dropped, and lower-cased.
    probes += [i[:5] + i[6:] for i in probes] + [i.lower() for i in probes]
    disagree = [p for p in probes if bots.matches_uncached(p) != bool(whole.search(p))]
    assert disagree == []


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("Googlebot\\/", "Googlebot/"),
        ("AdsBot-Google([^-]|$)", "AdsBot-Google"),
        ("S[eE][mM]rushBot", "rushBot"),
        ("(sistrix|SISTRIX) [cC]rawler", "rawler"),
        ("abcd?e", "abc"),  # d may be absent
        ("a{2,3}bcd", "bcd"),  # nothing inside a counted repeat is a literal
        ("Chirp|gotosocial", None),  # either side may match
        ("(?i)googlebot", None),  # case-insensitive: no case-sensitive literal
    ],
)
def test_required_literals_are_conservative(pattern: str, literal: str | None) -> None:
    assert required_literal(pattern) == literal


def test_the_cache_is_bounded() -> None:
    bots = DeclaredBots(["Googlebot"], cache_size=3)
    for n in range(10):
        bots.matches(f"agent {n}")
    assert len(bots._cache) <= 3
    assert bots.matches("x Googlebot/2.1")


def _ranges(tmp_path: Path, text: str) -> DataCentreRanges:
    path = tmp_path / "dc.txt"
    path.write_text(text)
    return DataCentreRanges.from_files([path])


def test_cidr_edges_ipv4_and_ipv6(tmp_path: Path) -> None:
    ranges = _ranges(
        tmp_path,
        "# comment\n\n10.0.0.0/24   # a data centre\n10.0.1.0/24\n10.0.0.128/25\n"
        "192.0.2.7\n2001:db8:dc::/48\n",
    )
    assert len(ranges.v4[0]) == 2  # 10.0.0.0-10.0.1.255 merged, and 192.0.2.7
    for ip in ("10.0.0.0", "10.0.0.255", "10.0.1.255", "192.0.2.7", "2001:db8:dc::1",
               "2001:db8:dc:ffff:ffff:ffff:ffff:ffff", "::ffff:10.0.0.5"):  # fmt: skip
        assert ip in ranges, ip
    for ip in ("9.255.255.255", "10.0.2.0", "192.0.2.6", "192.0.2.8", "2001:db8:dd::",
               "2001:db8:db:ffff::1", "0.0.0.0", "::", "not an ip"):  # fmt: skip
        assert ip not in ranges, ip


def test_adjacent_and_overlapping_ranges_merge(tmp_path: Path) -> None:
    ranges = _ranges(tmp_path, "10.0.0.0/25\n10.0.0.128/25\n10.0.0.0/30\n")
    assert len(ranges.v4[0]) == 1


def test_no_ranges_match_nothing() -> None:
    assert "10.0.0.1" not in DataCentreRanges()
    assert "::1" not in DataCentreRanges()


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("10.0.0.300/24", "is not a CIDR range"),
        ("10.0.0.1/24", "did you mean 10.0.0.0/24"),
        ("2001:db8::/129", "is not a CIDR range"),
        ("data centre", "is not a CIDR range"),
    ],
)
def test_a_bad_line_names_file_and_line(tmp_path: Path, line: str, says: str) -> None:
    path = tmp_path / "dc.txt"
    path.write_text(f"# ranges\n10.0.0.0/8\n{line}\n")
    with pytest.raises(GivtConfigError, match=f"{path}:3: .*{says}"):
        read_cidr_file(path)


def test_a_missing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(GivtConfigError, match="SLIDR_GIVT__DATACENTER_CIDR_FILES"):
        GivtFilter.from_settings(GivtSettings(datacenter_cidr_files=(tmp_path / "none.txt",)))


def test_the_shipped_example_file_reads() -> None:
    example = PROJECT_ROOT / "ops" / "givt" / "datacenter-example.txt"
    givt = GivtFilter.from_settings(GivtSettings(datacenter_cidr_files=(example,)))
    assert givt.reason(make_click(1, ip="192.0.2.10")) is GivtReason.DATACENTER
    assert givt.reason(make_click(1, ip="2001:db8:dc::5")) is GivtReason.DATACENTER
    assert givt.reason(make_click(1, ip="198.51.100.1")) is None
    assert givt.reason(make_click(1, ip="192.0.2.10", user_agent=CRAWLERS[0])) is (
        GivtReason.DECLARED_BOT
    )


def test_filter_off_by_settings() -> None:
    givt = GivtFilter.from_settings(GivtSettings(declared_bots=False))
    assert not givt.active
    assert givt.reasons([make_click(1, user_agent=CRAWLERS[0])]) == [None]


RECORD = ModelRecord(name="slidr", version=3, feature_hash="x", kind="mlp", default_threshold=0.5)


def _columns(
    clicks: list[Click], features: npt.NDArray[np.float32] | None, givt: list[GivtReason | None]
) -> DecisionColumns:
    offsets: list[tuple[int | None, int | None]] = [(0, i) for i in range(len(clicks))]
    return DecisionColumns.of(clicks, RECORD.slice_fields, offsets, features, givt)


def test_decisions_carry_their_category() -> None:
    clicks = [make_click(0), make_click(1, user_agent=CRAWLERS[0]), make_click(2, ip="192.0.2.1")]
    givt = [None, GivtReason.DECLARED_BOT, GivtReason.DATACENTER]
    features = np.zeros((3, N_FEATURES), dtype=np.float32)
    scores = np.asarray([0.1, 0.0, 0.0], dtype=np.float32)
    decided = decide(_columns(clicks, features, givt), scores, Stamp(RECORD, datetime.now(UTC)))
    model, bot, dc = validated(decided)
    assert (model.verdict, model.ivt_category, model.reason_codes) == (
        Verdict.VALID, IvtCategory.SIVT, [],
    )  # fmt: skip
    assert (bot.verdict, bot.ivt_category, bot.reason_codes) == (
        Verdict.INVALID, IvtCategory.GIVT, ["givt:declared_bot"],
    )  # fmt: skip
    assert dc.reason_codes == ["givt:datacenter"] and dc.model_version == 3
    assert len(bot.features) == N_FEATURES


def test_fail_open_still_decides_givt_clicks() -> None:
    clicks = [make_click(0), make_click(1, user_agent=CRAWLERS[2])]
    givt = [None, GivtReason.DECLARED_BOT]
    decided = fail_open(
        _columns(clicks, None, givt),
        DegradedReason.REDIS_UNAVAILABLE,
        Stamp(RECORD, datetime.now(UTC)),
    )
    plain, bot = validated(decided)
    assert plain.degraded and plain.ivt_category is None and plain.verdict is Verdict.VALID
    assert plain.reason_codes == ["degraded:redis_unavailable"]
    assert not bot.degraded and bot.ivt_category is IvtCategory.GIVT
    assert bot.verdict is Verdict.INVALID
