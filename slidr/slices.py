"""Traffic slices: the only place they are defined.

A slice is the values of a few click fields joined by "/" (``desktop/in``: device type and
logged-in status, the default). Each slice has its own threshold when calibration gives it one;
a slice without one takes its nearest ancestor's, dropping the last field at each step and
ending at ``ROOT_SLICE``. The worker, replays, training, calibration and the settings all read
slices from here.

Nothing from slidr is imported at module level: the settings read the default fields from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slidr.events import Click, DeviceType

#: Click fields a traffic slice may be defined by (``CalibrationSettings.slice_fields``).
SLICE_FIELDS: tuple[str, ...] = ("device_type", "logged_in", "platform", "marketplace")
DEFAULT_SLICE_FIELDS: tuple[str, ...] = ("device_type", "logged_in")
#: The parent of every slice: its threshold serves clicks of slices pooled all the way up.
ROOT_SLICE = "all"


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """``fields`` as a tuple, or a ValueError naming the ones a slice cannot be defined by.

    >>> check_fields(["device_type", "ip"])
    Traceback (most recent call last):
    ...
    ValueError: cannot slice by 'ip'; choose from device_type, logged_in, platform, marketplace
    """
    for name in fields:
        if name not in SLICE_FIELDS:
            raise ValueError(f"cannot slice by {name!r}; choose from {', '.join(SLICE_FIELDS)}")
    return tuple(fields)


def slice_name(values: Mapping[str, object], fields: Sequence[str] = DEFAULT_SLICE_FIELDS) -> str:
    """A slice's name: the values of ``fields`` joined by "/" (logged_in reads "in" or "out").

    >>> from slidr.events import DeviceType
    >>> slice_name({"device_type": DeviceType.APP, "logged_in": False})
    'app/out'
    >>> slice_name({"device_type": "desktop", "platform": "linux"}, ("device_type", "platform"))
    'desktop/linux'
    """
    parts = []
    for name in check_fields(fields):
        value = values[name]
        if name == "logged_in":
            parts.append("in" if value else "out")
        else:
            parts.append(str(value.value if isinstance(value, StrEnum) else value))
    return "/".join(parts)


def click_slice(click: Click, fields: Sequence[str]) -> str:
    """The click's slice under ``fields`` (the serving record's slice fields)."""
    return slice_name({name: getattr(click, name) for name in fields}, fields)


def slice_of(device_type: DeviceType | str, logged_in: bool) -> str:
    """The default traffic slice: device type x logged-in status (a bad device type raises).

    >>> slice_of("mobile_web", True)
    'mobile_web/in'
    """
    from slidr.events import DeviceType  # events imports the settings, which import this

    return slice_name({"device_type": DeviceType(device_type), "logged_in": logged_in})


def slice_ancestors(name: str) -> Iterator[str]:
    """``name``, then each parent (the last field dropped), then ``ROOT_SLICE``.

    >>> list(slice_ancestors("mobile_web/in/android"))
    ['mobile_web/in/android', 'mobile_web/in', 'mobile_web', 'all']
    >>> list(slice_ancestors("all"))
    ['all']
    """
    parts = name.split("/")
    for end in range(len(parts), 0, -1):
        yield "/".join(parts[:end])
    if name != ROOT_SLICE:
        yield ROOT_SLICE


def lookup_threshold(thresholds: Mapping[str, float], slice_name: str, default: float) -> float:
    """The threshold of the nearest of ``slice_name``'s ancestors that has one, else ``default``.

    >>> lookup_threshold({"desktop": 0.7, "all": 0.5}, "desktop/in", 0.9)
    0.7
    >>> lookup_threshold({}, "app/out", 0.9)
    0.9
    """
    for name in slice_ancestors(slice_name):
        if name in thresholds:
            return thresholds[name]
    return default
