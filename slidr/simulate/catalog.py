"""Fixed vocabularies of simulated traffic: devices, platforms, user agents, markets, IP ranges.

Columns are generated as small integer codes into these tables and turned into strings only when
a batch is emitted, which keeps generation vectorised.
"""

from __future__ import annotations

from typing import NamedTuple

DEVICES: tuple[str, ...] = ("desktop", "mobile_web", "app")
DESKTOP, MOBILE_WEB, APP = 0, 1, 2
PLATFORMS: tuple[str, ...] = ("windows", "macos", "linux", "ios", "android")
WINDOWS, MACOS, LINUX, IOS, ANDROID = 0, 1, 2, 3, 4

#: Platform shares per device; app -> ios/android, desktop -> windows/macos/linux.
PLATFORM_SHARES: dict[int, dict[int, float]] = {
    DESKTOP: {WINDOWS: 0.70, MACOS: 0.22, LINUX: 0.08},
    MOBILE_WEB: {IOS: 0.45, ANDROID: 0.55},
    APP: {IOS: 0.50, ANDROID: 0.50},
}
#: Where automation that does not hide itself runs, per device.
ODD_PLATFORM: tuple[int, ...] = (LINUX, ANDROID, ANDROID)  # by device code


class UserAgent(NamedTuple):
    text: str
    device: int
    platform: int
    #: Headless browsers, HTTP libraries, stale strings: almost never seen from humans.
    odd: bool


_CHROME = "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v} Safari/537.36"
USER_AGENTS: tuple[UserAgent, ...] = (
    UserAgent(
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_CHROME.format(v='124.0.0.0')}", 0, 0, False
    ),
    UserAgent(
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_CHROME.format(v='123.0.0.0')}", 0, 0, False
    ),
    UserAgent(
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_CHROME.format(v='124.0.0.0')} "
        "Edg/124.0.2478.80",
        0,
        0,
        False,
    ),
    UserAgent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        0,
        0,
        False,
    ),
    UserAgent(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Safari/605.1.15",
        0,
        1,
        False,
    ),
    UserAgent(
        f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {_CHROME.format(v='124.0.0.0')}",
        0,
        1,
        False,
    ),
    UserAgent(
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        0,
        2,
        False,
    ),
    UserAgent(f"Mozilla/5.0 (X11; Linux x86_64) {_CHROME.format(v='124.0.0.0')}", 0, 2, False),
    UserAgent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
        1,
        3,
        False,
    ),
    UserAgent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_7_8 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
        1,
        3,
        False,
    ),
    UserAgent(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36",
        1,
        4,
        False,
    ),
    UserAgent(
        "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36",
        1,
        4,
        False,
    ),
    UserAgent("ShopApp/24.9.0 (iPhone15,2; iOS 17.4.1; Scale/3.00)", 2, 3, False),
    UserAgent("ShopApp/24.8.2 (iPhone14,5; iOS 16.7.8; Scale/3.00)", 2, 3, False),
    UserAgent("ShopApp/24.9.0 (Linux; Android 14; Pixel 8 Build/UD1A.230803.041)", 2, 4, False),
    UserAgent("ShopApp/24.7.1 (Linux; Android 13; SM-A536B Build/TP1A.220624.014)", 2, 4, False),
    # Automation.
    UserAgent(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/124.0.0.0 Safari/537.36",
        0,
        2,
        True,
    ),
    UserAgent("python-requests/2.31.0", 0, 2, True),
    UserAgent("Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)", 0, 2, True),
    UserAgent("Go-http-client/1.1", 0, 2, True),
    UserAgent(
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.0.0 Mobile Safari/537.36",
        1,
        4,
        True,
    ),
    UserAgent("okhttp/4.9.3", 2, 4, True),
    UserAgent(
        "Dalvik/2.1.0 (Linux; U; Android 9; SDK built for x86 Build/PSR1.180720.075)", 2, 4, True
    ),
)

MARKETPLACES: tuple[str, ...] = ("US", "UK", "DE")
MARKETPLACE_SHARES: tuple[float, ...] = (0.6, 0.2, 0.2)
CURRENCIES: tuple[str, ...] = ("USD", "GBP", "EUR")

#: Search queries an ad was shown for on the site; a share of clicks has no placement.
SEARCH_PLACEMENTS: tuple[str, ...] = (
    "running shoes", "wireless earbuds", "coffee maker", "usb c cable", "yoga mat",
    "phone case", "air fryer", "desk lamp", "backpack", "gaming mouse", "water bottle",
    "kindle", "lego", "vitamin d", "dog food", "printer ink", "office chair", "sunscreen",
    "bluetooth speaker", "protein powder",
)  # fmt: skip
#: Off-site publishers (sites and apps) that show the ads, each in two slots. A few of them
#: are fraudulent, chosen per seed; the names do not say which.
PUBLISHERS: tuple[str, ...] = (
    "dealhunter", "recipebox", "weathernow", "torchlight", "puzzlequest", "newsdigest",
    "couponclub", "stepcounter",
)  # fmt: skip
PUBLISHER_SLOTS: tuple[str, ...] = ("banner", "feed")
#: Every placement, search queries first; publisher p's slot s is at
#: ``len(SEARCH_PLACEMENTS) + p * len(PUBLISHER_SLOTS) + s``.
PLACEMENTS: tuple[str, ...] = SEARCH_PLACEMENTS + tuple(
    f"pub:{name}/{slot}" for name in PUBLISHERS for slot in PUBLISHER_SLOTS
)

#: First octets typical of consumer broadband, hosting providers and mobile carriers.
RESIDENTIAL_OCTETS: tuple[int, ...] = (24, 67, 68, 71, 73, 76, 86, 92, 98, 174, 2, 31, 84, 90)
DATACENTER_OCTETS: tuple[int, ...] = (34, 35, 52, 54, 104, 138, 139, 159, 167, 45)
CARRIER_OCTETS: tuple[int, ...] = (166, 172, 174, 107, 80, 62)
CORPORATE_OCTETS: tuple[int, ...] = (12, 63, 64, 199, 204, 208)
