"""CSV input for the ``streamlstm`` command line: records, header, typed blocks.

Standard library only at import time (numpy is imported by :meth:`Schema.parse`), so that
``streamlstm --help`` stays fast.

:class:`RecordReader` reads raw bytes from a file descriptor and yields CSV records with
their physical line numbers. It never waits for more input than it needs: every record
whose line is complete is handed out before the next blocking read, so a pipe fed one
line at a time (``tail -f``) gets one record at a time, and a regular file gets large
blocks. Accepted: quoted fields (with embedded commas, quotes and newlines), CRLF or CR
line ends, a UTF-8 byte-order mark, blank lines (skipped). Bytes that are not UTF-8 are
kept (``surrogateescape``) and written back unchanged; in a number they are a bad value.

:class:`Schema` maps the header onto the roles (target, features, key, time) and turns a
block of records into arrays, reporting each bad row as ``(position, message)``.

For a regular file the command line switches on the compiled path: the reader hands out
runs of plain lines (no quotes, no CR, not blank) as undecoded bytes
(:meth:`RecordReader.next_plain`), which :meth:`Schema.parse_plain` turns into arrays in
compiled code (:mod:`._fastcsv`). Anything else, and any block with a row that needs a
closer look, goes the Python way, with the same records, numbers and messages.

>>> import io
>>> r = RecordReader(io.BytesIO(b'\\xef\\xbb\\xbfa,"b, c"\\r\\n1,2\\r\\n\\r\\n3,"x\\ny"\\r\\n'))
>>> r.read_header()
['a', 'b, c']
>>> r.next_batch(10)
([2, 4], ['1,2', ['3', 'x\\ny']])
"""

from __future__ import annotations

import codecs
import csv
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where it is used: --help must answer without it
    import numpy as np

__all__ = ["DELIMITERS", "MISSING_POLICIES", "BadRecord", "Block", "CliError", "RecordReader", "Roles", "Schema",
           "column_roles", "detect_delimiter", "fields", "is_missing", "looks_like_data", "reading_guard"]

MAX_LINE = 1 << 20  # a "line" longer than this without a newline is refused (1 MiB)
LIMIT = 1e100       # larger magnitudes are refused: the core's running statistics would overflow
FILE_CHUNK = 1 << 20  # bytes per read from a regular file (a pipe: 64 KiB, what it holds)
csv.field_size_limit(MAX_LINE)
DELIMITERS = (",", ";", "\t", "|")  # what delimiter detection chooses from
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})  # cells meaning "no value" (any case)
MISSING_POLICIES = ("impute", "error")
# A longer line is one bad record, reported at its own line number; the rest of it is
# read past without being kept. The same words whatever read cut it: the message is part
# of the input's fingerprint (a resumed run must see the same records).
LONG_LINE = f"the line is longer than {MAX_LINE:,} characters (refused whole)"


class CliError(Exception):
    """A user-facing failure: printed as ``streamlstm: <message>``, exit ``code``, no traceback."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class BadRecord:
    """A record that is not valid CSV (stands in the record list in place of its fields)."""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message

    def __len__(self) -> int:  # never the header's width: a bad record fails the width check
        return 0

    def __repr__(self) -> str:
        return f"BadRecord({self.message!r})"


def fields(rec: Any) -> Any:
    """The field list of a record from :meth:`RecordReader.next_batch` (a plain line is a str)."""
    return rec.split(",") if type(rec) is str else rec


class _Guard:
    """Whether the process is blocked in a read (signal handlers may then raise)."""

    reading = False


reading_guard = _Guard()


def _read_fn(source: Any) -> tuple[Callable[[int], bytes], bool]:
    """A ``read(n)`` returning what is available (at most one system call) and whether the
    source is a regular file."""
    if isinstance(source, int):
        fd = source
        return (lambda n: os.read(fd, n)), _is_regular(fd)
    regular = False
    try:
        regular = _is_regular(source.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    return getattr(source, "read1", None) or source.read, regular


def _is_regular(fd: int) -> bool:
    import stat

    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


class RecordReader:
    """CSV records from a byte source: a file descriptor (``int``) or a binary file object.

    ``next_batch(n)`` returns ``(line_numbers, records)``, at most ``n`` records, each a list
    of field strings, a str (a line without quotes: its fields are ``line.split(",")``, see
    :func:`fields`) or a :class:`BadRecord`; blank lines are not records. With
    ``fill=True`` (the default for regular files) it reads until it has ``n`` records or
    the input ends; otherwise it blocks only when no complete record is ready. An empty
    result means the input has ended.
    """

    def __init__(self, source: Any, chunk: int | None = None, fill: bool | None = None,
                 delimiter: str | None = ","):
        self._read, regular = _read_fn(source)
        # None: chosen by detect_delimiter from the first line. Only "," has the fast paths
        # (plain lines as str, the compiled reader); other delimiters give field lists.
        self.delimiter = delimiter
        self.regular = regular
        self.fill = regular if fill is None else fill
        self.chunk = chunk or (FILE_CHUNK if regular else (1 << 16))
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._tail = ""            # text after the last complete line
        self._started = False      # BOM handled
        self._eof = False
        self._next_line = 0        # number of the last physical line split off
        self._pending: list[str] = []   # lines of a quoted record still open
        self._pending_line = 0
        self._pending_size = 0
        self._lines: list[int] = []     # ready records
        self._recs: list[Any] = []
        self._head = 0
        self.records_read = 0      # records handed out by next_batch (not the header)
        self._raw = b""            # bytes read but not yet decoded (plain-line mode, see next_plain)
        self._raw_pos = 0
        self._raw_eof = False      # the source has ended after the bytes in _raw
        self.plain_mode = False    # next_plain is in use (set by the command line for regular files)
        self.guard_reads = True    # a signal may break a read (off when another thread reads)
        self._overlong = False     # dropping the rest of a line refused as too long

    # ------------------------------------------------------------------ reading
    def _fill_once(self, n_lines: int = 1) -> None:
        """One read; the complete records it brings are appended to the ready list.

        In plain-line mode, at most ``n_lines`` lines are decoded, so that the lines after
        them stay bytes for :meth:`next_plain`."""
        if self._eof:
            return
        if self.plain_mode:
            data = self._take_lines(n_lines)
        elif self._raw_pos < len(self._raw):  # bytes the plain-line mode read and left
            data = self._raw[self._raw_pos:]
            self._raw, self._raw_pos = b"", 0
        else:
            data = b"" if self._raw_eof else self._read_guarded()
        final = not data
        text = self._decoder.decode(data or b"", final=final)
        if not self._started and (text or final):
            if text.startswith("\ufeff"):
                text = text[1:]
            self._started = bool(text) or final
        text = self._tail + text
        hold = ""
        if not final and text.endswith("\r"):
            hold, text = "\r", text[:-1]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if self._overlong:  # the rest of a refused line, up to its end, is dropped
            end = text.find("\n")
            text = "" if end < 0 else text[end + 1:]
            self._overlong = end < 0
        parts = text.split("\n")
        self._tail = parts.pop() + hold
        long_tail = len(self._tail) > MAX_LINE
        if final:
            self._eof = True
            if self._tail and not long_tail:
                parts.append(self._tail)
            self._tail = ""
        elif long_tail:  # no end in sight: refuse the line now, drop the rest as it comes
            self._tail = ""
            self._overlong = True
        if parts:
            self._split(parts)
        if long_tail:
            self._split([None])
        if final and self._pending:
            self._emit(self._pending_line, BadRecord("unterminated quoted field (a '\"' is never closed)"))
            self._pending = []

    def _take_lines(self, k: int) -> bytes:
        """The next ``k`` lines of undecoded bytes; b"" at the end of the input. Of a line
        longer than ``MAX_LINE``, the bytes read so far: :meth:`_fill_once` refuses it."""
        while True:
            raw, start = self._raw, self._raw_pos
            pos = start
            for _ in range(k):
                j = raw.find(b"\n", pos)
                if j < 0:
                    break
                pos = j + 1
            if pos == start and (self._raw_eof or len(raw) - start > MAX_LINE):
                pos = len(raw)
            if pos > start or self._raw_eof:
                self._raw_pos = pos
                return raw[start:pos]
            data = self._read_guarded()
            if data:
                self._raw, self._raw_pos = raw[start:] + data, 0
            else:
                self._raw_eof = True

    def _read_guarded(self) -> bytes:
        if not self.guard_reads:
            return self._read(self.chunk)
        reading_guard.reading = True
        try:
            return self._read(self.chunk)
        finally:
            reading_guard.reading = False

    def next_plain(self, n: int) -> tuple[int, Any, int] | None:
        """Up to ``n`` plain lines as undecoded bytes: ``(first line number, uint8 array of
        the lines, each ending in \\n, count)``; None when the next record is not a plain
        line, or the input has ended (:meth:`next_batch` then takes over).

        Plain: no quotes, no CR, not blank, complete, at most ``MAX_LINE`` bytes (see
        :func:`._fastcsv.scan_plain`). Such a line is exactly one record whose fields are
        ``line.split(",")``, which is what the compiled parser reads. The two modes can
        alternate: what one has read and not handed out, the other picks up.
        """
        import numpy as np

        from ._fastcsv import scan_plain

        if not self._started or self._pending or self._ready() or self.delimiter != "," or self._overlong:
            return None
        if self._tail or self._decoder.getstate()[0]:  # text the Python mode decoded: back to bytes
            held = self._tail.encode("utf-8", "surrogateescape") + self._decoder.getstate()[0]
            self._raw, self._raw_pos = held + self._raw[self._raw_pos:], 0
            self._tail = ""
            self._decoder.reset()
        raw, start = self._raw, self._raw_pos
        count, scan_from = 0, start
        while True:
            buf = np.frombuffer(raw, dtype=np.uint8)
            got, end = scan_plain(buf, scan_from, n - count, MAX_LINE)
            count += got
            if count == n or raw.find(b"\n", end) >= 0 or len(raw) - end > MAX_LINE or self._raw_eof:
                break  # enough lines, or the next one is not plain, or the input has ended
            data = self._read_guarded()  # the next line is incomplete: read on
            if not data:
                self._raw_eof = True
                break
            raw = raw[start:] + data
            end -= start
            start, scan_from = 0, end
        self._raw = raw
        if count == 0:
            self._raw_pos = start
            return None
        self._raw_pos = end
        first = self._next_line + 1
        self._next_line += count
        self.records_read += count
        return first, buf[start:end], count

    def _emit(self, line: int, rec: Any) -> None:
        self._lines.append(line)
        self._recs.append(rec)

    def _split(self, lines: list[Any]) -> None:
        """Records from complete lines (``None``: a line too long to keep)."""
        first = self._next_line + 1
        self._next_line += len(lines)
        if self.delimiter is None:
            for s in lines:
                if s and not s.isspace():
                    self.delimiter = detect_delimiter(s)
                    break
        delim = self.delimiter
        if delim is not None and delim != ",":
            self._split_slowly(lines, first, delim)
            return
        joined = "\n".join(lines) if lines[-1] is not None else None
        if not self._pending and joined is not None and '"' not in joined and (
                len(joined) <= MAX_LINE or max(map(len, lines)) <= MAX_LINE):
            # fast path, no quotes anywhere: a record is its line (fields = line.split(","))
            if all(lines) and not any(map(str.isspace, lines)):
                self._lines.extend(range(first, first + len(lines)))
                self._recs.extend(lines)
                return
            for i, s in enumerate(lines):
                if s and not s.isspace():
                    self._lines.append(first + i)
                    self._recs.append(s)
            return
        self._split_slowly(lines, first, delim)

    def _split_slowly(self, lines: list[Any], first: int, delim: str | None) -> None:
        """Line by line: overlong lines, quoted records, and (delimiter other than ",") cells
        split here; a comma-separated record stays a line for the block parser."""
        for i, s in enumerate(lines):
            n = first + i
            if s is None or len(s) > MAX_LINE:  # a quoted record open in it is refused with it
                self._emit(self._pending_line if self._pending else n, BadRecord(LONG_LINE))
                self._pending = []
            elif self._pending or '"' in s:
                self._quoted_line(n, s)
            elif delim is not None and delim != ",":
                if s and (delim in s or not s.isspace()):  # "\t\t" is a row of empty cells, not blank
                    self._emit(n, s.split(delim))
            elif s and not s.isspace():
                self._emit(n, s)

    def _quoted_line(self, n: int, s: str) -> None:
        """Line ``n``, part of a record with quotes: parsed when the record is complete."""
        if self._pending:
            self._pending.append(s)
            self._pending_size += len(s) + 1
            if '"' in s:  # only a quote can close the open field
                self._quoted(self._pending_line)
            elif self._pending_size > MAX_LINE:
                self._pending = []
                self._emit(self._pending_line, BadRecord(
                    f"malformed CSV (a quoted field runs over {MAX_LINE} characters: is a '\"' never closed?)"))
        else:
            self._pending = [s]
            self._pending_size = len(s)
            self._pending_line = n
            self._quoted(n)

    def _quoted(self, line: int) -> None:
        """Parse the pending lines as one record, unless its quoted field is still open."""
        lines = self._pending
        starved = False

        def feed():
            nonlocal starved
            last = len(lines) - 1
            for i, s in enumerate(lines):
                yield s if i == last else s + "\n"
            starved = True

        try:
            rec = next(csv.reader(feed(), strict=True, delimiter=self.delimiter or ","), [])
        except csv.Error as exc:
            if starved and self._pending_size <= MAX_LINE:
                return  # the record goes on in the next line
            self._pending = []
            self._emit(line, BadRecord(f"malformed CSV ({exc})"))
            return
        if starved:
            return
        self._pending = []
        if rec:
            self._emit(line, rec)

    def _ready(self) -> int:
        return len(self._recs) - self._head

    def next_batch(self, n: int) -> tuple[list[int], list[Any]]:
        """Up to ``n`` records (see the class doc); ``([], [])`` at the end of the input."""
        if self.plain_mode:  # decode no further than needed: what follows may be plain lines
            while not self._eof and self._ready() == 0:
                self._fill_once(n)
        else:
            while not self._eof and (self._ready() == 0 or (self.fill and self._ready() < n)):
                self._fill_once()
        h = self._head
        end = min(len(self._recs), h + n)
        lines, recs = self._lines[h:end], self._recs[h:end]
        if end == len(self._recs):
            self._lines, self._recs, self._head = [], [], 0
        else:
            self._head = end
            if end > 4096 and end * 2 > len(self._recs):
                self._lines, self._recs, self._head = self._lines[end:], self._recs[end:], 0
        self.records_read += len(recs)
        return lines, recs

    def peek(self) -> tuple[int, Any] | None:
        """The next record without consuming it (reads if none is ready); None at the end."""
        while not self._eof and self._ready() == 0:
            self._fill_once()
        if self._ready() == 0:
            return None
        return self._lines[self._head], self._recs[self._head]

    def peek_many(self, k: int) -> list[tuple[int, Any]]:
        """Up to ``k`` next records ``(line, record)`` without consuming them. A regular file is
        read for them; a pipe is waited on for the first only (the rest: what has arrived)."""
        while not self._eof and self._ready() < (k if self.regular else 1):
            self._fill_once(k)
        h = self._head
        return list(zip(self._lines[h:h + k], self._recs[h:h + k]))

    def read_header(self) -> list[str]:
        """The first record, as column names (raises :class:`CliError` if there is none)."""
        lines, recs = self.next_batch(1)
        self.records_read = 0
        if not recs:
            raise CliError("the input is empty: expected a CSV header line (column names)")
        if isinstance(recs[0], BadRecord):
            raise CliError(f"line {lines[0]}: the header is not valid CSV: {recs[0].message}")
        return [s.strip() for s in fields(recs[0])]

    def skip(self, n: int, seen: Callable[[list[Any], int], None] | None = None) -> int:
        """Consume ``n`` records without parsing them (resume); returns how many there were.
        ``seen(records, count)`` is called with each batch (the resume's fingerprint)."""
        done = 0
        while done < n:
            _, recs = self.next_batch(min(n - done, 65536))
            if not recs:
                break
            if seen is not None:
                seen(recs, len(recs))
            done += len(recs)
        return done

    @property
    def line_no(self) -> int:
        """Physical lines read so far (for messages)."""
        return self._next_line


# ---------------------------------------------------------------------- values
def _show(s: str, limit: int = 40) -> str:
    text = repr(s if len(s) <= limit else s[:limit] + "...")
    return text


def _number_error(col: str, s: str) -> str:
    if not s.strip():
        return f"column {col!r} is empty: a number is required"
    try:
        v = float(s)
    except ValueError:
        return f"column {col!r}: {_show(s)} is not a number"
    if math.isnan(v):
        return f"column {col!r}: {_show(s)} is NaN: a finite number is required"
    if math.isinf(v):
        return f"column {col!r}: {_show(s)} is not a finite number"
    return f"column {col!r}: {_show(s)} is out of range (|value| > {LIMIT:g})"


def detect_delimiter(line: str) -> str:
    r"""The delimiter of a CSV line: the most frequent of ``, ; tab |`` outside quoted fields
    (a comma on a tie or when there is none).

    >>> detect_delimiter("time;temp;hum"), detect_delimiter("a\tb"), detect_delimiter('"a;b",c')
    (';', '\t', ',')
    """
    bare = re.sub(r'"[^"]*"', "", line)
    counts = [bare.count(d) for d in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))]


def is_missing(s: str) -> bool:
    """Whether a cell means "no value": empty, ``NA``, ``N/A``, ``nan``, ``null``, ``None`` (any case).

    >>> [is_missing(s) for s in ("", " NA ", "NaN", "null", "0", "-")]
    [True, True, True, True, False, False]
    """
    return s.strip().lower() in MISSING


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def looks_like_data(header: Sequence[str]) -> bool:
    """Whether a "header" is rather a row of data: every cell a number.

    >>> looks_like_data(["1.5", "2", "-3e2"]), looks_like_data(["time", "2"])
    (True, False)
    """
    return bool(header) and all(_is_number(c) for c in header)


_INTEGER = re.compile(r"[+-]?\d+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?"
                   r"|\d{4}/\d{2}/\d{2}( \d{2}:\d{2}(:\d{2})?)?|\d{2}:\d{2}(:\d{2})?")
_TIME_NAMES = frozenset({"time", "t", "date", "datetime", "timestamp", "ts", "year", "day", "step", "index", "id"})


@dataclass
class Roles:
    """Columns sorted by role from the first rows (see :func:`column_roles`)."""

    features: list[str]
    time: str | None = None
    time_reason: str = ""
    text: list[str] = field(default_factory=list)    # dropped: not numbers
    empty: list[str] = field(default_factory=list)   # dropped: no value in the rows looked at


def column_roles(header: Sequence[str], records: Sequence[Sequence[str]], exclude: set[str],
                 find_time: bool = True, keyed: bool = False) -> Roles:
    """Which columns are features, which is time, which are text, from the first ``records``.

    A feature is a named column (not in ``exclude``) whose first value in ``records`` that is
    not missing (:func:`is_missing`) is a number; a later value that is not is a bad row. With ``find_time``, the first
    column is the time column, not a feature, when its values are dates or times, or when
    they are integers that increase (do not decrease with ``keyed``: several keys share a
    time) over two rows or more, or a single integer under a name such as ``time``, ``year``
    or ``id``. An unnamed column (most likely a row index) is never a feature.

    >>> r = column_roles(["year", "a", "name", "b", "y"], [["1990", "0.5", "x", "2e3", "3"],
    ...                  ["1991", "NA", "z", "1", "4"]], {"y"})
    >>> r.features, r.time, r.text
    (['a', 'b'], 'year', ['name'])
    """
    rows = [r for r in records if len(r) == len(header)]
    roles = Roles([])
    if find_time and header and header[0] and header[0] not in exclude and rows:
        first = [r[0].strip() for r in rows]
        if all(_DATE.fullmatch(v) for v in first):
            roles.time, roles.time_reason = header[0], "dates or times in the first column"
        elif all(_INTEGER.fullmatch(v) for v in first):
            ints = [int(v) for v in first]
            steps = [b - a for a, b in pairwise(ints)]
            if steps and all(d >= 0 if keyed else d > 0 for d in steps):
                roles.time, roles.time_reason = header[0], "increasing integers in the first column"
            elif not steps and header[0].strip().lower() in _TIME_NAMES:
                roles.time, roles.time_reason = header[0], f"an integer in a first column named {header[0]!r}"
    for j, name in enumerate(header):
        if name in exclude or not name or name == roles.time:
            continue
        present = [r[j] for r in rows if not is_missing(r[j])]
        if not rows or (present and _is_number(present[0])):  # a later bad cell is a bad row, not text
            roles.features.append(name)
        elif not present:
            roles.empty.append(name)
        else:
            roles.text.append(name)
    return roles


class Block:
    """Typed rows of one batch: ``X`` (n, features), ``y`` (NaN = no label), ``known``,
    pass-through strings, key strings, line numbers and positions in the batch.

    A block parsed by the compiled reader also holds its text (``raw``, UTF-8 bytes) and
    the offsets of its pass-through and target cells (``spans``, (n, cells, 2)); its
    ``passthrough`` and ``target_text`` strings are then only made when asked for.
    """

    __slots__ = ("X", "_keys", "_passthrough", "_target_text", "key_cell", "known", "lines", "n_pass", "pos", "quoted",
                 "raw", "spans", "y")

    def __init__(self, X, y, known, keys, passthrough, target_text, lines, pos, quoted, raw=None, spans=None,
                 n_pass=0):
        self.X, self.y, self.known, self._keys = X, y, known, keys
        self.key_cell = False  # the keys are the first cell of ``spans``, made into strings when asked for
        self._passthrough, self._target_text, self.lines, self.pos, self.quoted = (
            passthrough, target_text, lines, pos, quoted)
        self.raw, self.spans, self.n_pass = raw, spans, n_pass

    def __len__(self) -> int:
        return len(self.lines)

    def _cells(self, s: int) -> list[str]:
        raw = self.raw.tobytes()
        starts, ends = self.spans[:, s, 0].tolist(), self.spans[:, s, 1].tolist()
        if raw.isascii():  # byte offsets are character offsets: decode once, slice the text
            text = raw.decode("ascii")
            return [text[a:b] for a, b in zip(starts, ends)]
        return [raw[a:b].decode("utf-8", "surrogateescape") for a, b in zip(starts, ends)]

    @property
    def keys(self) -> list[str] | None:
        """The key of each row (None without --key). Of a compiled block, made when first asked
        for, by the thread that asks (the model's, not the reader's)."""
        if self._keys is None and self.key_cell:
            self._keys = self._cells(0)
        return self._keys

    @property
    def passthrough(self) -> list[list[str]]:
        if self._passthrough is None:
            self._passthrough = [self._cells(s) for s in range(self.n_pass)]
        return self._passthrough

    @property
    def target_text(self) -> list[str] | None:
        if self._target_text is None and self.spans is not None and self.spans.shape[1] > self.n_pass:
            self._target_text = self._cells(self.n_pass)
        return self._target_text

    def head(self, k: int) -> Block:
        """The first ``k`` rows."""
        keys = self.keys
        return Block(self.X[:k], self.y[:k], self.known[:k], None if keys is None else keys[:k],
                     None if self._passthrough is None else [c[:k] for c in self._passthrough],
                     None if self._target_text is None else self._target_text[:k], self.lines[:k], self.pos[:k],
                     self.quoted, self.raw, None if self.spans is None else self.spans[:k], self.n_pass)


class Schema:
    """Where the target, features, key and time columns are in the header.

    ``target`` may be absent from the header only when ``target_optional`` (inference on
    unlabelled data); ``passthrough`` columns (key, time, then ``keep``) are copied to the
    output. ``missing``: ``"error"`` makes a missing feature value (:func:`is_missing`, or a
    NaN) a bad row and only an empty target "no label"; ``"impute"`` lets a missing feature
    through as NaN (the job fills it in) and makes any missing target "no label".
    ``delimiter`` only serves the messages.
    """

    def __init__(self, header: Sequence[str], target: str, features: Sequence[str], key: str | None = None,
                 time: str | None = None, target_optional: bool = False, keep: Sequence[str] = (),
                 missing: str = "error", delimiter: str = ","):
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing={missing!r}: expected one of {MISSING_POLICIES}")
        self.impute = missing == "impute"
        self.header = list(header)
        self.ncol = len(header)
        seen: dict[str, int] = {}
        dup: set[str] = set()
        for j, name in enumerate(header):
            if name in seen:
                dup.add(name)
            seen.setdefault(name, j)

        def where(name: str, role: str) -> int:
            """The column of ``name``; CliError when it is absent or appears twice."""
            if name in dup:
                raise CliError(f"column {name!r} ({role}) appears more than once in the header")
            if name not in seen:
                raise CliError(_not_in_header(header, name, role, delimiter))
            return seen[name]

        roles = [(n, r) for n, r in ((target, "--target"), (key, "--key"), (time, "--time")) if n]
        for i, (n, r) in enumerate(roles):
            for n2, r2 in roles[i + 1:]:
                if n == n2:
                    raise CliError(f"{r} and {r2} name the same column {n!r}")
        self.target = target
        self.features = list(features)
        self.key = key
        self.time = time
        self.t_idx = None if target_optional and target not in seen else where(target, "--target")
        self.f_idx = [where(f, "feature") for f in self.features]
        for f in self.features:
            if f in (target, key, time):
                raise CliError(f"column {f!r} cannot be a feature and the target, key or time column")
        self.k_idx = where(key, "--key") if key else None
        self.time_idx = where(time, "--time") if time else None
        self.keep = list(keep)
        for c in self.keep:
            if c in (target, key, time) or c in self.features:
                what = "a feature" if c in self.features else "already in the output (target, key or time)"
                raise CliError(f"--keep {c!r}: the column is {what}; --keep copies other columns to the output")
        keep_idx = [where(c, "--keep") for c in self.keep]
        self.pass_names = [c for c in (key, time) if c] + self.keep
        self.pass_idx = [i for i in (self.k_idx, self.time_idx) if i is not None] + keep_idx
        self._getters = [itemgetter(j) for j in self.f_idx]
        self.compiled = False  # parse blocks of plain lines with the compiled reader (see enable_compiled)
        self._roles: np.ndarray | None = None

    def enable_compiled(self) -> None:
        """Parse blocks of plain lines (no quotes) with :mod:`._fastcsv`: the same arrays and
        cells as the Python reader, several times faster. Worth it for large blocks (a
        regular file); it loads numba kernels, so a pipe read line by line does without."""
        import numpy as np

        roles = np.full(self.ncol, -1, dtype=np.int64)
        for k, j in enumerate(self.f_idx):
            roles[j] = k
        for s, j in enumerate(self.pass_idx):
            roles[j] = -3 - s
        if self.t_idx is not None:
            roles[self.t_idx] = -2
        self._roles = roles
        self.compiled = True

    @property
    def has_target(self) -> bool:
        return self.t_idx is not None

    def parse(self, lines: list[int], recs: list[Any]) -> tuple[Block, list[tuple[int, str]]]:
        """Typed rows and the bad ones ``(position in recs, message)`` in input order."""
        if self.compiled and recs:
            blk = self._parse_compiled(lines, recs)
            if blk is not None:
                return blk, []
        return self._parse_python(lines, recs)

    def _parse_python(self, lines: list[int], recs: list[Any]) -> tuple[Block, list[tuple[int, str]]]:
        import numpy as np

        n = len(recs)
        ncol = self.ncol
        if not n:
            return self._parse_slow(lines, recs)
        column = None
        if set(map(type, recs)) == {str}:  # plain lines: one split for the whole block
            if set(map(str.count, recs, repeat(","))) == {ncol - 1}:
                flat = ",".join(recs).split(",")

                def column(j: int) -> list[str]:
                    return flat[j::ncol]
        else:
            recs = [r.split(",") if type(r) is str else r for r in recs]
            if set(map(len, recs)) == {ncol}:
                def column(j: int) -> list[str]:
                    return list(map(itemgetter(j), recs))
        if column is None:
            return self._parse_slow(lines, recs)
        X = np.empty((n, len(self.f_idx)), dtype=np.float64)
        try:
            for k, j in enumerate(self.f_idx):
                X[:, k] = list(map(float, column(j)))
        except ValueError:
            return self._parse_slow(lines, recs)
        if not (np.abs(X) <= LIMIT).all():  # also catches NaN and inf
            return self._parse_slow(lines, recs)
        if self.t_idx is not None:
            t_text = column(self.t_idx)
            try:
                y = np.array(list(map(float, t_text)), dtype=np.float64)
                known = np.ones(n, dtype=bool)
            except ValueError:  # empty cells (no label), or a bad value
                if not all(_floatish(s) for s in t_text):
                    return self._parse_slow(lines, recs)
                known = np.array([bool(s.strip()) for s in t_text], dtype=bool)
                y = np.array([float(s) if k else math.nan for s, k in zip(t_text, known.tolist())],
                             dtype=np.float64)
            if not (np.abs(y[known]) <= LIMIT).all():
                return self._parse_slow(lines, recs)
        else:
            t_text = None
            y = np.full(n, np.nan)
            known = np.zeros(n, dtype=bool)
        passthrough = [column(j) for j in self.pass_idx]
        keys = column(self.k_idx) if self.k_idx is not None else None
        return Block(X, y, known, keys, passthrough, t_text, list(lines), np.arange(n),
                     _needs_quoting(passthrough)), []

    def parse_plain(self, first_line: int, raw: Any, count: int) -> tuple[Block, list[tuple[int, str]]]:
        """:meth:`parse` for ``count`` plain lines given as bytes (:meth:`RecordReader.next_plain`)."""
        blk = self._compiled_block(raw, count)
        if blk is not None:
            blk.lines = list(range(first_line, first_line + count))
            return blk, []
        recs = raw.tobytes().decode("utf-8", "surrogateescape").split("\n")
        recs.pop()  # after the last line's \n
        return self._parse_python(list(range(first_line, first_line + count)), recs)  # Python finds the bad row

    def _compiled_block(self, raw: Any, n: int) -> Block | None:
        import numpy as np

        from ._fastcsv import parse_block

        n_pass = len(self.pass_idx)
        n_spans = n_pass + (1 if self.t_idx is not None else 0)
        X = np.empty((n, len(self.f_idx)), dtype=np.float64)
        y = np.empty(n, dtype=np.float64)
        known = np.empty(n, dtype=bool)
        spans = np.empty((n, n_spans, 2), dtype=np.int64)
        if parse_block(raw, n, self.ncol, self._roles, n_spans, LIMIT, X, y, known, spans) < n:
            return None
        if self.t_idx is None:
            y.fill(np.nan)
            known.fill(False)
        blk = Block(X, y, known, None, None, None, [], np.arange(n), False, raw, spans, n_pass)
        blk.key_cell = self.k_idx is not None  # the key is the first pass-through cell
        return blk

    def _parse_compiled(self, lines: list[int], recs: list[Any]) -> Block | None:
        """The block through :func:`._fastcsv.parse_block`, or None when a row needs Python
        (a quoted record, a bad row, a number outside the simple syntax): the caller then
        parses the whole block the Python way."""
        import numpy as np

        try:
            text = "\n".join(recs)
        except TypeError:  # a record with quotes (a field list) or a BadRecord
            return None
        raw = np.frombuffer((text + "\n").encode("utf-8", "surrogateescape"), dtype=np.uint8)
        blk = self._compiled_block(raw, len(recs))
        if blk is not None:
            blk.lines = list(lines)
        return blk

    def _parse_slow(self, lines: list[int], recs: list[Any]) -> tuple[Block, list[tuple[int, str]]]:
        import numpy as np

        bad: list[tuple[int, str]] = []
        rows_x: list[list[float]] = []
        ys: list[float] = []
        kn: list[bool] = []
        good: list[int] = []
        recs = [r.split(",") if type(r) is str else r for r in recs]
        for p, (ln, r) in enumerate(zip(lines, recs)):
            if isinstance(r, BadRecord):
                bad.append((p, f"line {ln}: {r.message}"))
                continue
            if len(r) != self.ncol:
                missing = self.header[len(r)] if len(r) < self.ncol else None
                what = f" (no value for column {missing!r})" if missing is not None else ""
                bad.append((p, f"line {ln}: {len(r)} fields where the header has {self.ncol}{what}"))
                continue
            x = []
            err = None
            impute = self.impute
            for name, j in zip(self.features, self.f_idx):
                s = r[j]
                try:
                    v = float(s)
                except ValueError:
                    if not (impute and is_missing(s)):
                        err = _number_error(name, s)
                        break
                    v = math.nan
                if not abs(v) <= LIMIT and not (impute and v != v):
                    err = _number_error(name, s)
                    break
                x.append(v)
            yv, k = math.nan, False
            if err is None and self.t_idx is not None:
                s = r[self.t_idx]
                if s.strip() and not (impute and is_missing(s)):
                    try:
                        yv = float(s)
                    except ValueError:
                        err = _number_error(self.target, s)
                    else:
                        if abs(yv) <= LIMIT:
                            k = True
                        elif impute and yv != yv:
                            yv = math.nan
                        else:
                            err = _number_error(self.target, s)
            if err is not None:
                bad.append((p, f"line {ln}, {err}"))
                continue
            rows_x.append(x)
            ys.append(yv)
            kn.append(k)
            good.append(p)
        m = len(good)
        X = np.array(rows_x, dtype=np.float64).reshape(m, len(self.f_idx))
        kept = [recs[p] for p in good]
        t_text = [r[self.t_idx] for r in kept] if self.t_idx is not None else None
        keys = [r[self.k_idx] for r in kept] if self.k_idx is not None else None
        passthrough = [[r[j] for r in kept] for j in self.pass_idx]
        block = Block(X, np.array(ys, dtype=np.float64), np.array(kn, dtype=bool), keys, passthrough, t_text,
                      [lines[p] for p in good], np.array(good, dtype=np.int64), _needs_quoting(passthrough))
        return block, bad


def _not_in_header(header: Sequence[str], name: str, role: str, delimiter: str) -> str:
    """Why ``name`` is not found, with what the header suggests: no header, another delimiter."""
    cols = ", ".join(repr(c) for c in header[:20]) + (", ..." if len(header) > 20 else "")
    msg = f"column {name!r} ({role}) is not in the header; the columns are: {cols}"
    if looks_like_data(header):
        return (f"column {name!r} ({role}) is not in the header, and the first line looks like data, not a "
                f"header (its {len(header)} fields are numbers: {cols}): for a file without a header, give "
                f"--no-header (the columns are then named c1..c{len(header)}) or --no-header --columns NAME,NAME,...")
    others = [d for d in DELIMITERS if d != delimiter and any(d in c for c in header)]
    if others:
        shown = {"\t": "tab"}.get(others[0], others[0])
        msg += (f". The header contains {shown!r}: is that the delimiter? Give --delimiter "
                f"{shown if shown == 'tab' else repr(shown)}")
    return msg


def _floatish(s: str) -> bool:
    if not s.strip():
        return True
    try:
        float(s)
    except ValueError:
        return False
    return True


def _needs_quoting(columns: list[list[str]]) -> bool:
    """Could a pass-through field hold a comma, quote or line break (it came from a quoted field)?"""
    for col in columns:
        joined = "\x00".join(col)
        if '"' in joined or "," in joined or "\n" in joined:
            return True
    return False
