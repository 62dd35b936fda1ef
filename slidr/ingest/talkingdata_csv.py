"""Reading the TalkingData AdTracking train CSV, quirks and all, with exact line numbers.

The file is read in blocks of whole lines (bounded memory). Each block is parsed by pyarrow as
strings with quoting off and empty lines kept, so row ``i`` of a block is physical line
``first + i`` and every refusal can name its line and column; values are then checked and
converted column by column. What can be handled is: a BOM or stray non-printable bytes before
the header, stray characters glued to a header name (see :func:`repair_name`), empty lines
(skipped), blank ``attributed_time`` (no attribution), a truncated last line (skipped with a
warning), columns in any order. Anything else malformed raises :class:`TalkingDataError`
naming the file, line and column.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from slidr.errors import SlidrError

logger = logging.getLogger(__name__)

TRAIN_COLUMNS: tuple[str, ...] = (
    "ip",
    "app",
    "device",
    "os",
    "channel",
    "click_time",
    "attributed_time",
    "is_attributed",
)
ID_COLUMNS: tuple[str, ...] = ("ip", "app", "device", "os", "channel")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: The largest ip id that still maps into 10.0.0.0/8 (see ``slidr.ingest.talkingdata``).
MAX_IP_ID = (1 << 24) - 1
#: Bytes read at a time; a block is cut at its last line break.
BLOCK_BYTES = 16 << 20
#: Skipped lines remembered per reason in the import report.
EXAMPLES_KEPT = 10

TIMESTAMP_S = pa.timestamp("s", tz="UTC")
#: A validated block: one row per imported click, in file order.
RAW_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),
        *((name, pa.int64()) for name in ID_COLUMNS),
        ("click_time", TIMESTAMP_S),
        ("is_attributed", pa.bool_()),
        #: When the click was attributed (after repairs); null when it was not.
        ("attributed_time", TIMESTAMP_S),
    ]
)
_HEADER_LIMIT = 1 << 16
_ID_PATTERN = "^[0-9]{1,10}$"


class TalkingDataError(SlidrError):
    """The file cannot be imported as it is; the message names the file, line and column."""


@dataclass(frozen=True)
class Header:
    #: Column names in file order (the eight train columns, possibly permuted).
    columns: tuple[str, ...]
    #: Physical line number of the header (greater than 1 after leading empty lines).
    line: int
    #: Byte offset of the first data line.
    data_offset: int
    #: Names repaired by :func:`repair_name`: (1-based column, name as found, name used).
    repaired: tuple[tuple[int, str, str], ...] = ()

    def repairs(self) -> list[dict[str, Any]]:
        """The repaired names, for ``import.json``."""
        return [{"column": c, "found": found, "name": name} for c, found, name in self.repaired]


@dataclass
class ReadReport:
    """What the reader saw, for ``import.json``."""

    lines: int = 0
    rows: int = 0
    attributed: int = 0
    #: Skipped lines per reason: count and the first line numbers.
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)
    #: Rows kept with a documented repair, per kind of repair.
    repaired: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, lines: list[int]) -> None:
        self.skipped[reason] += len(lines)
        kept = self.skipped_lines.setdefault(reason, [])
        kept += lines[: EXAMPLES_KEPT - len(kept)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines_read": self.lines,
            "rows_read": self.rows,
            "rows_skipped": {
                reason: {"count": count, "first_lines": self.skipped_lines[reason]}
                for reason, count in sorted(self.skipped.items())
            },
            "rows_repaired": dict(sorted(self.repaired.items())),
        }


def _printable(byte: int) -> bool:
    return 0x21 <= byte <= 0x7E


def read_header(path: Path) -> Header:
    """The header of a train file, after a BOM and any stray bytes before it."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEADER_LIMIT)
    except OSError as exc:
        raise TalkingDataError(f"cannot read {path}: {exc.strerror}") from None
    start = 0
    while start < len(head) and not _printable(head[start]):
        start += 1
    if start == len(head):
        raise TalkingDataError(
            f"{path} is empty: expected the header {','.join(TRAIN_COLUMNS)} and data lines"
        )
    line = 1 + head.count(b"\n", 0, start)
    end = head.find(b"\n", start)
    if end < 0:
        end = len(head)
    text = head[start:end].decode("ascii", errors="replace")
    found = tuple(name.strip() for name in text.strip().split(","))
    repairs = [repair_name(name) for name in found]
    targets = Counter(repairs)
    # A repair that would repeat a name is not made: the header is refused as written.
    names = tuple(
        fixed if fixed and targets[fixed] == 1 and fixed not in found else name
        for name, fixed in zip(found, repairs, strict=True)
    )
    _check_header(path, line, names)
    repaired = tuple(
        (column, before, after)
        for column, (before, after) in enumerate(zip(found, names, strict=True), start=1)
        if before != after
    )
    for column, before, after in repaired:
        logger.warning(
            "%s, line %d, column %d: header name %r read as %r", path, line, column, before, after
        )
    return Header(columns=names, line=line, data_offset=end + 1, repaired=repaired)


def repair_name(found: str) -> str | None:
    """The train column a header name stands for once stray characters glued to it are cut.

    Real exports carry junk before the first name (a mis-decoded BOM, a quote, a stray ``#``
    or letters) and sometimes stray punctuation after a name. A name is repaired when it ends
    with a train column followed only by characters no column name has (anything but letters,
    digits and ``_``); the longest such column wins. Letters after a name are not cut (``oss``
    stays ``oss``). ``None``: nothing to repair, or nothing a train column can be read from.

    >>> repair_name('"ip"'), repair_name("xx~ip"), repair_name("app;"), repair_name("oss")
    ('ip', 'ip', 'app', None)
    >>> repair_name("ip") is None, repair_name("label") is None
    (True, True)
    """
    if found in TRAIN_COLUMNS:
        return None
    end = len(found)
    while end > 0 and not _name_char(found[end - 1]):
        end -= 1
    body = found[:end]
    matches = [name for name in TRAIN_COLUMNS if body.endswith(name)]
    return max(matches, key=len) if matches else None


def _name_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


def _check_header(path: Path, line: int, names: tuple[str, ...]) -> None:
    expected = ",".join(TRAIN_COLUMNS)
    if names and names[0] == "click_id" and "is_attributed" not in names:
        raise TalkingDataError(
            f"{path} is a TalkingData test file (click_id first, no is_attributed): only the "
            f"train format, with labels, can be imported ({expected})"
        )
    for column, name in enumerate(names, start=1):
        if name not in TRAIN_COLUMNS or names.index(name) != column - 1:
            what = "repeats" if name in TRAIN_COLUMNS else "is not a TalkingData train column"
            raise TalkingDataError(
                f"{path}, line {line}, column {column}: header name {name[:40]!r} {what}; "
                f"expected the header {expected}"
            )
    missing = [name for name in TRAIN_COLUMNS if name not in names]
    if missing:
        raise TalkingDataError(
            f"{path}, line {line}: header lacks {', '.join(missing)}; expected {expected}"
        )


@dataclass(frozen=True)
class _Block:
    first_line: int
    data: bytes
    #: The file's last line, without a line break: it may have been cut off.
    unterminated: bool


class TrainFileReader:
    """Validated rows of a TalkingData train file, block by block (see :data:`RAW_SCHEMA`)."""

    def __init__(self, path: Path, limit: int | None = None) -> None:
        self.path = path
        self.limit = limit
        self.header = read_header(path)
        self.report = ReadReport()
        self._options = (
            pacsv.ReadOptions(column_names=list(self.header.columns)),
            pacsv.ConvertOptions(column_types=dict.fromkeys(self.header.columns, pa.string())),
        )

    def tables(self, on_bytes: Callable[[int], None] | None = None) -> Iterator[pa.Table]:
        """One validated table per block, in file order; ``on_bytes`` gets the bytes consumed."""
        self.report = ReadReport()
        for block in self._blocks(on_bytes):
            try:
                table = self._parse(block)
            except TalkingDataError as exc:
                if not block.unterminated:
                    raise
                logger.warning("skipped a truncated last line: %s", exc)
                self.report.lines += 1
                self.report.skip("truncated_last_line", [block.first_line])
                continue
            self.report.lines += block.data.count(b"\n") + block.unterminated
            self.report.rows += table.num_rows
            self.report.attributed += pc.sum(table["is_attributed"]).as_py() or 0
            if table.num_rows:
                yield table

    def _blocks(self, on_bytes: Callable[[int], None] | None) -> Iterator[_Block]:
        line = self.header.line + 1
        remaining = self.limit
        carry = b""
        with self.path.open("rb") as f:
            f.seek(self.header.data_offset)
            while remaining is None or remaining > 0:
                chunk = f.read(BLOCK_BYTES)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                if not chunk:
                    break
                data = carry + chunk
                cut = data.rfind(b"\n") + 1
                if cut == 0 and len(data) > BLOCK_BYTES:
                    raise TalkingDataError(
                        f"{self.path}, line {line}: no line break in {len(data) >> 20} MiB; "
                        "expected one row per line"
                    )
                data, carry = data[:cut], data[cut:]
                lines = data.count(b"\n")
                if remaining is not None:
                    if lines >= remaining:
                        breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
                        data, lines, carry = data[: breaks[remaining - 1] + 1], remaining, b""
                    remaining -= lines
                if lines:
                    yield _Block(line, data, unterminated=False)
                line += lines
        if carry.strip() and (remaining is None or remaining > 0):
            yield _Block(line, carry, unterminated=True)

    def _parse(self, block: _Block) -> pa.Table:
        invalid = 0

        def on_invalid(row: Any) -> str:
            nonlocal invalid
            invalid += 1
            return "skip"  # located, with its line number, by _first_bad_line

        read_options, convert_options = self._options
        parse_options = pacsv.ParseOptions(
            quote_char=False, ignore_empty_lines=False, invalid_row_handler=on_invalid
        )
        table = pacsv.read_csv(
            pa.py_buffer(block.data),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
        expected_rows = block.data.count(b"\n") + block.unterminated
        if invalid or table.num_rows != expected_rows:
            raise self._first_bad_line(block)
        lines = pa.array(np.arange(block.first_line, block.first_line + table.num_rows))
        empty = functools.reduce(pc.and_, (pc.equal(table[name], "") for name in TRAIN_COLUMNS))
        if pc.any(empty).as_py():
            self.report.skip("empty_line", lines.filter(empty).to_pylist())
            keep = pc.invert(empty)
            table, lines = table.filter(keep), lines.filter(keep)
        return self._convert(table, lines)

    def _first_bad_line(self, block: _Block) -> TalkingDataError:
        """Why a block did not split into rows of eight values, found the slow way."""
        width = len(self.header.columns)
        for offset, raw in enumerate(block.data.split(b"\n")):
            text = raw.removesuffix(b"\r")
            found = text.count(b",") + 1
            if b"\r" in text:
                problem = "a carriage return inside the line"
            elif found != width and text.strip():
                problem = f"{found} comma-separated values, expected {width}"
            else:
                continue
            shown = text[:80].decode("utf-8", errors="replace")
            return TalkingDataError(
                f"{self.path}, line {block.first_line + offset}: {problem}: {shown!r}"
            )
        return TalkingDataError(
            f"{self.path}, lines {block.first_line}..: rows do not match lines; "
            "is this a CSV with one row per line?"
        )

    def _refuse(self, table: pa.Table, lines: pa.Array, bad: pa.Array, name: str, why: str) -> None:
        """Raise for the first row where ``bad`` is true, naming its line and column."""
        if not pc.any(bad).as_py():
            return
        i = int(pc.index(bad, True).as_py())
        column = self.header.columns.index(name) + 1
        value = table[name][i].as_py()
        raise TalkingDataError(
            f"{self.path}, line {lines[i].as_py()}, column {column} ({name}): {value[:40]!r} {why}"
        )

    def _convert(self, table: pa.Table, lines: pa.Array) -> pa.Table:
        columns: dict[str, pa.Array | pa.ChunkedArray] = {"line": lines}
        for name in ID_COLUMNS:
            text = table[name]
            ok = pc.match_substring_regex(text, _ID_PATTERN)
            self._refuse(table, lines, pc.invert(ok), name, "is not a non-negative integer id")
            columns[name] = pc.cast(text, pa.int64())
        self._refuse(
            table,
            lines,
            pc.greater(columns["ip"], MAX_IP_ID),
            "ip",
            f"is above {MAX_IP_ID}, the largest ip id that maps to an IPv4 address in 10.0.0.0/8",
        )
        click_time = self._times(table, lines, "click_time", table["click_time"])
        flag = table["is_attributed"]
        self._refuse(table, lines, pc.invert(pc.is_in(flag, pa.array(["0", "1"]))),
                     "is_attributed", "is not 0 or 1")  # fmt: skip
        attributed = pc.equal(flag, "1")
        given = table["attributed_time"]
        blank = pc.equal(given, "")
        attributed_time = self._times(
            table, lines, "attributed_time", pc.if_else(blank, None, given)
        )
        columns["click_time"] = click_time
        columns["is_attributed"] = attributed
        columns["attributed_time"] = self._repair(click_time, attributed, blank, attributed_time)
        return pa.table(columns, schema=RAW_SCHEMA)

    def _times(
        self, table: pa.Table, lines: pa.Array, name: str, text: pa.ChunkedArray
    ) -> pa.ChunkedArray:
        """Parse ``YYYY-MM-DD HH:MM:SS`` as UTC; nulls in ``text`` stay null."""
        parsed = pc.strptime(text, format=TIME_FORMAT, unit="s", error_is_null=True)
        bad = pc.and_(pc.is_null(parsed), pc.is_valid(text))
        self._refuse(table, lines, bad, name, f"is not a time in the form {TIME_FORMAT}")
        return pc.cast(parsed, TIMESTAMP_S)

    def _repair(
        self,
        click_time: pa.ChunkedArray,
        attributed: pa.ChunkedArray,
        blank: pa.ChunkedArray,
        attributed_time: pa.ChunkedArray,
    ) -> pa.ChunkedArray:
        """Decisions on inconsistent rows; ``docs/talkingdata.md`` gives the reasons."""
        no_time = pc.and_(attributed, blank)
        early = pc.and_(attributed, pc.less(attributed_time, click_time))
        stray = pc.and_(pc.invert(attributed), pc.invert(blank))
        for kind, mask in (
            ("attributed_without_time", no_time),
            ("attributed_before_click", early),
            ("attributed_time_without_flag", stray),
        ):
            count = pc.sum(mask).as_py() or 0
            if count:
                self.report.repaired[kind] += count
        # An attribution without a time (or before its click) counts as at the click.
        repaired = pc.if_else(pc.or_(no_time, pc.fill_null(early, False)), click_time,
                              attributed_time)  # fmt: skip
        return pc.if_else(attributed, repaired, pa.scalar(None, TIMESTAMP_S))
