"""The command line's compiled CSV path against Python's own ``float``, ``repr`` and reader.

The compiled path must be invisible: every number it parses is the double ``float()``
gives (to the bit), every number it prints is ``repr()`` (to the byte), the records and
line numbers of its plain-line reader are those of the Python reader, and a file run
(compiled) writes exactly what a pipe run (Python) writes.
"""

from __future__ import annotations

import io
import random
import struct
from decimal import Decimal

import numpy as np
import pytest

pytest.importorskip("click")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from numba import njit  # noqa: E402

from streamlstm.adapters import _fastcsv as F  # noqa: E402
from streamlstm.adapters._csvio import MAX_LINE, BadRecord, CliError, RecordReader, Schema, fields  # noqa: E402

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@njit  # not cached: a cached caller would keep stale copies of the kernels it calls
def _parse_many(buf, starts, ends, values, status):
    for i in range(len(starts)):
        values[i], status[i] = F.parse_decimal(buf, starts[i], ends[i])


@njit  # not cached: a cached caller would keep stale copies of the kernels it calls
def _repr_many(bits, out, ends):
    pos = 0
    for i in range(len(bits)):
        pos = F.write_repr(bits[i], out, pos)
        ends[i] = pos


def parse_many(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    enc = [t.encode("utf-8", "surrogateescape") for t in texts]
    lens = np.array([len(e) for e in enc], dtype=np.int64)
    ends = np.cumsum(lens)
    values = np.empty(len(texts))
    status = np.empty(len(texts), dtype=np.int64)
    _parse_many(np.frombuffer(b"".join(enc) or b"\0", dtype=np.uint8), ends - lens, ends, values, status)
    return values, status


def repr_many(x: np.ndarray) -> list[str]:
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty(len(x) * F.MAX_REPR + 1, dtype=np.uint8)
    ends = np.empty(len(x), dtype=np.int64)
    _repr_many(x.view(np.uint64), out, ends)
    text = out[:ends[-1] if len(x) else 0].tobytes().decode()
    starts = [0, *ends[:-1].tolist()]
    return [text[a:b] for a, b in zip(starts, ends.tolist())]


def bits(v: float) -> bytes:
    return struct.pack("<d", v)


def assert_parses_like_float(texts: list[str], max_fallback: float = 1.0) -> None:
    values, status = parse_many(texts)
    fallback = 0
    for t, v, s in zip(texts, values.tolist(), status.tolist()):
        if s == 2:
            fallback += 1
            continue
        assert s == 0, (t, s)
        assert bits(v) == bits(float(t)), (t, v, float(t))
    assert fallback <= max_fallback * len(texts)


# ----------------------------------------------------------------- parsing
HARD = ["0", "-0", "+0.0", "0e999999", "1e-400", "1e400", "5e-324", "4.9406564584124654e-324",
        "2.4703282292062327e-324", "2.4703282292062328e-324", "2.2250738585072011e-308",
        "2.2250738585072014e-308", "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308",
        "9007199254740993", "9007199254740992", "9007199254740991", "18446744073709551615", "1e22", "1e23",
        "8.988465674311579e307", "0.1", ".5", "5.", "+.5e-3", "1E5", "1e+05", "007", "0.000000000000000000001234",
        "123456789012345678e-30", "7.038531e-26", "9.5e-5", "2.2250738585072012e-308", "1.00000000000000011102230246251565404236316680908203125"]


def test_known_hard_cases_parse_like_float():
    assert_parses_like_float(HARD)
    _values, status = parse_many(HARD)
    assert (status == 0).sum() >= len(HARD) - 2  # only the over-long ones go back to Python


def test_other_syntax_goes_back_to_python_or_is_empty():
    texts = ["", " 1", "1 ", "1_000", "nan", "inf", "-Infinity", "0x10", "1e", "e5", ".", "-", "+", "1.2.3", "1e5.5",
             "١٢", "1,5", "--1", "1d5", "\x00"]
    _values, status = parse_many(texts)
    assert status[0] == 1
    assert (status[1:] == 2).all()


def test_random_doubles_and_printf_forms_parse_like_float():
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 2 ** 63, size=60_000, dtype=np.uint64)
    x = raw.view(np.float64)
    x = np.concatenate([x[np.isfinite(x)], rng.normal(size=20_000), rng.normal(size=5000) * 1e-310])
    texts = [repr(v) for v in x.tolist()]
    assert_parses_like_float(texts, max_fallback=0.0)
    pyrng = random.Random(7)
    forms = [f"%.{pyrng.randint(1, 19)}{pyrng.choice('eEg')}" % v for v in x[:20_000].tolist()]
    assert_parses_like_float(forms)


def test_nineteen_digit_strings_next_to_half_way_points_parse_like_float():
    rng = np.random.default_rng(3)
    texts = []
    for v in (rng.normal(size=3000) * 10.0 ** rng.integers(-300, 300, size=3000)).tolist():
        if not np.isfinite(v) or v == 0:
            continue
        mid = (Decimal(v) + Decimal(float(np.nextafter(v, np.inf)))) / 2
        mant, exp = (f"{mid:.18e}").split("e")
        for d in (-1, 0, 1):
            last = int(mant[-1]) + d
            if 0 <= last <= 9:
                texts.append(f"{mant[:-1]}{last}e{exp}")
    assert_parses_like_float(texts, max_fallback=0.0)


@PROPS
@given(st.integers(0, 10 ** 19 - 1), st.integers(-360, 330), st.integers(0, 19), st.booleans())
def test_any_decimal_of_up_to_19_digits_parses_like_float(mantissa, exp, point, negative):
    digits = str(mantissa)
    point = min(point, len(digits))
    text = ("-" if negative else "") + digits[:len(digits) - point] + "." + digits[len(digits) - point:] + f"e{exp}"
    values, status = parse_many([text])
    assert status[0] == 0
    assert bits(values[0]) == bits(float(text))


@PROPS
@given(st.text(alphabet="0123456789+-.eE_ x", max_size=30))
def test_any_short_text_parses_like_float_or_goes_back(text):
    values, status = parse_many([text])
    if status[0] == 0:
        assert bits(values[0]) == bits(float(text))
    elif status[0] == 1:
        assert text == ""


# ---------------------------------------------------------------- printing
def test_repr_of_special_and_boundary_values():
    vals = [0.0, -0.0, float("inf"), float("-inf"), 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
            0.1, 0.3, 2 / 3, 1e16, 1e15, 9999999999999998.0, 1234567890123456.0, 12345678901234567.0, 0.0001,
            0.00001, 1e-5, 123.0, 100.0, 1e22, 1e21, 1.5e300, 123456.789, 2.0 ** 63, 2.0 ** -1074 * 3]
    assert repr_many(np.array(vals)) == [repr(v) for v in vals]
    assert repr_many(np.array([float("nan")])) == ["nan"]


def test_repr_of_random_bit_patterns_and_everyday_values():
    rng = np.random.default_rng(11)
    raw = rng.integers(0, 2 ** 64 - 1, size=200_000, dtype=np.uint64)
    x = raw.view(np.float64)
    x = np.concatenate([x[np.isfinite(x)], rng.normal(size=50_000), np.round(rng.normal(size=20_000) * 1e6, 3),
                        rng.integers(0, 2 ** 52, size=20_000, dtype=np.uint64).view(np.float64),
                        10.0 ** rng.integers(-330, 309, size=20_000)])
    assert repr_many(x) == [repr(v) for v in x.tolist()]


@PROPS
@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=50))
def test_repr_of_any_double(xs):
    assert repr_many(np.array(xs)) == [repr(v) for v in xs]


# ------------------------------------------------------- plain-line reader
def read_records(data: bytes, plain: bool, n: int = 5, chunk: int | None = None):
    """(header, [(line, fields or message)]) read the Python way or through next_plain."""
    reader = RecordReader(io.BytesIO(data), chunk=chunk, fill=True)
    reader.plain_mode = plain
    try:
        header = reader.read_header()
    except CliError as exc:
        return ("error", str(exc)), []
    out = []
    while True:
        got = reader.next_plain(n) if plain else None
        if got is not None:
            first, raw, count = got
            assert raw[-1] == 10 and count <= n
            lines = raw.tobytes().decode("utf-8", "surrogateescape").split("\n")[:-1]
            assert len(lines) == count
            out += [(first + i, tuple(s.split(","))) for i, s in enumerate(lines)]
            continue
        lines, recs = reader.next_batch(n)
        if not recs:
            break
        out += [(ln, r.message if isinstance(r, BadRecord) else tuple(fields(r))) for ln, r in zip(lines, recs)]
    return header, out


PLAIN_PIECES = [b"1,2\n", b"3.5,-4e-3\n", b"\n", b"  \n", b'"a,b",1\n', b'"multi\nline",2\n', b"x,y\r\n", b"5,6\r",
                b"\xef\xbb\xbf", b"\xc2\xa0\n", b"\xff,1\n", b"\xe2\x82", b"\xac,2\n", b"7,8", b'"open,1\n', b"9,10\n" * 3]


@PROPS
@given(st.lists(st.sampled_from(PLAIN_PIECES), max_size=40), st.integers(1, 9), st.sampled_from([None, 7, 64]))
def test_plain_line_mode_reads_the_same_records_as_the_python_reader(pieces, n, chunk):
    data = b"a,b\n" + b"".join(pieces)
    assert read_records(data, plain=True, n=n, chunk=chunk) == read_records(data, plain=False, n=n)


def test_plain_line_mode_hands_over_long_lines_to_python():
    data = b"a,b\n1,2\n" + b"9" * (MAX_LINE + 10) + b",1\n3,4\n"
    assert read_records(data, plain=True, n=4) == read_records(data, plain=False, n=4)


# ------------------------------------------------------------ typed blocks
def blocks_equal(a, b) -> None:
    assert np.array_equal(a.X, b.X) and a.X.dtype == b.X.dtype
    assert np.array_equal(a.y, b.y, equal_nan=True)
    assert np.array_equal(a.known, b.known)
    assert a.passthrough == b.passthrough
    assert a.target_text == b.target_text
    assert list(a.lines) == list(b.lines)


@PROPS
@given(st.lists(st.tuples(st.sampled_from(["1", "-2.5", "3e-7", "", " 4", "nan", "1e200", "x", "0.1", "17.25"]),
                          st.sampled_from(["0.5", "", "-1e-3", "2", "inf", " 1", "abc", "1e99"]),
                          st.sampled_from(["t1", "2024-01-01", "", "é"])), min_size=1, max_size=30),
       st.booleans())
def test_compiled_blocks_equal_python_blocks(rows, with_target):
    header = ["x", "y", "time"] if with_target else ["x", "other", "time"]
    lines = [",".join(r) for r in rows]
    python = Schema(header, "y", ["x"], time="time", target_optional=True)
    compiled = Schema(header, "y", ["x"], time="time", target_optional=True)
    compiled.enable_compiled()
    assert compiled.compiled
    numbers = list(range(2, 2 + len(lines)))
    want, want_bad = python.parse(numbers, lines)
    raw = np.frombuffer(("\n".join(lines) + "\n").encode(), dtype=np.uint8)
    got, got_bad = compiled.parse_plain(2, raw, len(lines))
    assert got_bad == want_bad
    blocks_equal(got, want)
    got2, got2_bad = compiled.parse(numbers, lines)
    assert got2_bad == want_bad
    blocks_equal(got2, want)


def test_keyed_schemas_parse_compiled_with_the_python_parsers_keys():
    """Keyed rows go through the compiled parser too; their key strings (made from the key
    cells' bytes when asked for) are the Python parser's, bytes that are not UTF-8 included."""
    header = ["k", "x", "y"]
    s = Schema(header, "y", ["x"], key="k")
    s.enable_compiled()
    assert s.compiled
    lines = ["a,1.5,2", "b\udcff,2.5,", "a,3,4", " c ,0,1"]
    raw = np.frombuffer(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"), dtype=np.uint8)
    blk, bad = s.parse_plain(1, raw, len(lines))
    py, _ = Schema(header, "y", ["x"], key="k")._parse_python([1, 2, 3, 4], lines)
    assert not bad and blk.spans is not None and py.spans is None
    assert blk.keys == py.keys == ["a", "b\udcff", "a", " c "]
    assert blk.head(2).keys == ["a", "b\udcff"]
    assert np.array_equal(blk.X, py.X) and np.array_equal(blk.known, py.known)
    assert np.array_equal(blk.y, py.y, equal_nan=True)


# ------------------------------------------------------------- whole runs
def run(source, *args: str) -> tuple[int, str, str]:
    """`streamlstm run` in this process on a path (a regular file: compiled path) or a
    binary file object (the Python path): (exit code, stdout, error message)."""
    from streamlstm.adapters import cli

    with cli.run.make_context("run", ["-", "--hidden", "3", "--bptt", "4", "--quiet", *args]) as ctx:
        opts = dict(ctx.params)
    opts["input"] = source
    out = io.StringIO()
    try:
        cli._run(opts, set(), stream=out)
    except CliError as exc:
        return exc.code, out.getvalue(), str(exc)
    return 0, out.getvalue(), ""


def sensor_csv(rows: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    out = ["time,x1,x2,y"]
    for t in range(rows):
        x1, x2 = rng.normal(size=2).tolist()
        y = "" if rng.random() < 0.1 else repr(round(x1 - 0.5 * x2, int(rng.integers(1, 17))))
        out.append(f"t{t},{x1!r},{x2:.4f},{y}")
    return "\n".join(out) + "\n"


RUN_PIECES = ["", "\n", '"q,1",2,3,4\n', "a,b\n", "nan", "1e300", "\r\n", " 1", "x", "\xff"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10 ** 6), st.lists(st.tuples(st.integers(0, 10 ** 6), st.sampled_from(RUN_PIECES)), max_size=4),
       st.sampled_from([[], ["--ahead", "2"], ["--ahead", "1", "--model", "lstm", "--difference"],
                        ["--ahead", "3", "--model", "lstm"], ["--format", "jsonl"],
                        ["--digits", "5"], ["--block-size", "7"]]),
       st.sampled_from(["skip", "error"]))
def test_a_file_run_writes_exactly_what_a_pipe_run_writes(tmp_path, seed, edits, extra, policy):
    text = sensor_csv(40, seed)
    for at, piece in edits:  # damage a few places after the header
        start = text.index("\n") + 1
        i = start + at % max(len(text) - start, 1)
        text = text[:i] + piece + text[i:]
    data = text.encode("utf-8", "surrogateescape")
    path = tmp_path / f"in{seed}.csv"
    path.write_bytes(data)
    args = ["--target", "y", "--time", "time", "--on-bad-row", policy, *extra]
    assert run(str(path), *args) == run(io.BytesIO(data), *args)


def test_inference_without_a_target_column_and_reads_that_end_inside_lines(tmp_path, monkeypatch):
    from streamlstm.adapters import _csvio

    calls = []
    plain = Schema.parse_plain
    monkeypatch.setattr(Schema, "parse_plain", lambda self, *a: calls.append(a[2]) or plain(self, *a))
    monkeypatch.setattr(_csvio, "FILE_CHUNK", 997)  # reads end inside lines and inside numbers
    text = sensor_csv(3000, 1)
    path = tmp_path / "big.csv"
    path.write_text(text)
    model = tmp_path / "m.slstm"
    args = ["--target", "y", "--time", "time"]
    got = run(str(path), *args, "--save", str(model))
    assert got[0] == 0 and got == run(io.BytesIO(text.encode()), *args)
    assert sum(calls) >= 2900  # the compiled path did the work
    calls.clear()
    no_target = "\n".join(",".join(line.split(",")[:3]) for line in text.splitlines())  # no final newline
    path2 = tmp_path / "nt.csv"
    path2.write_text(no_target)
    args = ["--target", "y", "--load", str(model), "--no-learn"]
    got = run(str(path2), *args)
    assert got[0] == 0 and got == run(io.BytesIO(no_target.encode()), *args)
    assert got[1].splitlines()[0] == "time,pred_y" and len(got[1].splitlines()) == 3001
    assert sum(calls) >= 2900
