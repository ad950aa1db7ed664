"""Property-based fuzzing of the CLI's CSV reader and of the whole `run` job, in-process.

Random bytes and mutated valid files must never raise anything but the CLI's own
user-facing error (exit code 2), and never leave a non-finite number in a model.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
click = pytest.importorskip("click")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from streamlstm.adapters import cli  # noqa: E402
from streamlstm.adapters._csvio import BadRecord, CliError, RecordReader, Schema, fields  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Trickle(io.RawIOBase):
    """A byte source returning at most ``chunk`` bytes per read, like a pipe fed slowly."""

    def __init__(self, data: bytes, chunk: int):
        self.data, self.chunk = data, chunk

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out, self.data = self.data[:min(n, self.chunk)], self.data[min(n, self.chunk):]
        return out


def read_all(data: bytes, chunk: int, batch: int = 7):
    reader = RecordReader(Trickle(data, chunk), fill=False)
    try:
        header = reader.read_header()
    except CliError as exc:
        return ("error", str(exc)), []
    out = []
    while True:
        lines, recs = reader.next_batch(batch)
        if not recs:
            break
        out += [(ln, r.message if isinstance(r, BadRecord) else tuple(fields(r))) for ln, r in zip(lines, recs)]
    return header, out


# a valid CSV and ways to break it
def valid_csv(rows: int, seed: int, keys: bool = True) -> str:
    rng = np.random.default_rng(seed)
    lines = ["time,key,x1,x2,y" if keys else "time,x1,x2,y"]
    for t in range(rows):
        x1, x2 = rng.normal(size=2).tolist()
        y = "" if rng.random() < 0.1 else repr(float(x1 - 0.5 * x2))
        k = f"{'k' + str(rng.integers(3))}," if keys else ""
        lines.append(f"{t},{k}{x1!r},{x2!r},{y}")
    return "\r\n".join(lines) + "\r\n" if seed % 2 else "\n".join(lines) + "\n"


PIECES = ['"', ",", "\n", "\r", "\r\n", "", " ", "nan", "inf", "-inf", "1e308", "1e-320", "abc", "\x00",
          "\ufeff", "\udcff", '""', '"a,b"', "0", "-", "1e100", "9" * 400]


@st.composite
def mutated(draw):
    text = valid_csv(draw(st.integers(0, 60)), draw(st.integers(0, 10 ** 6)), keys=draw(st.booleans()))
    body = draw(st.integers(0, 9)) > 0  # mostly the rows; sometimes the header too
    for _ in range(draw(st.integers(1, 8))):
        start = text.find("\n") + 1 if body else 0
        if len(text) <= start:
            break
        i = draw(st.integers(start, len(text) - 1))
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "dup_line"]))
        piece = draw(st.sampled_from(PIECES))
        if op == "replace":
            text = text[:i] + piece + text[i + 1:]
        elif op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 20)):]
        elif op == "truncate":
            text = text[:i]
        else:
            j = text.rfind("\n", 0, i) + 1
            k = text.find("\n", i)
            k = len(text) if k < 0 else k + 1
            text = text[:k] + text[j:k] + text[k:]
    return text.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------- reader
@FUZZ
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_reader_random_bytes_never_raise_and_do_not_depend_on_chunking(data, chunk):
    whole = read_all(data, 1 << 20)
    assert read_all(data, chunk) == whole  # a trickling pipe reads exactly what a file does
    _header, recs = whole
    lines = [ln for ln, _ in recs]
    assert lines == sorted(lines) and len(set(lines)) == len(lines)
    for _, r in recs:
        assert isinstance(r, (str, tuple))


@FUZZ
@given(mutated(), st.integers(1, 50))
def test_reader_mutated_files_do_not_depend_on_chunking(data, chunk):
    assert read_all(data, chunk) == read_all(data, 1 << 20)


@FUZZ
@given(st.binary(max_size=2000))
def test_schema_parse_never_raises(data):
    reader = RecordReader(io.BytesIO(data))
    try:
        header = reader.read_header()
    except CliError:
        return
    if not header:
        return
    try:
        schema = Schema(header, header[-1], header[:-1][:3], target_optional=True)
    except CliError:
        return
    lines, recs = reader.next_batch(1000)
    block, bad = schema.parse(lines, recs)
    assert len(block) + len(bad) == len(recs)
    assert np.isfinite(block.X).all()
    assert np.isfinite(block.y[block.known]).all()
    assert not np.isfinite(block.y[~block.known]).any()


# ------------------------------------------------------------ the whole job
def run_inprocess(data: bytes, *args: str):
    """`streamlstm run` on ``data`` in this process: (exit code, stdout, outcome)."""
    with cli.run.make_context("run", ["-", "--hidden", "2", "--bptt", "4", "--quiet", *args]) as ctx:
        opts = dict(ctx.params)
    opts["input"] = io.BytesIO(data)
    out = io.StringIO()
    try:
        outcome = cli._run(opts, set(), stream=out)
    except CliError as exc:
        assert exc.code == 2, str(exc)
        assert "internal" not in str(exc)
        return 2, out.getvalue(), None
    return 0, out.getvalue(), outcome


def assert_finite_models(outcome) -> None:
    eng = outcome.engine
    if hasattr(eng, "season_line"):  # the forecasting engine: its forecasts for every key it has seen
        for key in eng.model.keys:
            assert np.isfinite(eng.model.forecast(key)).all(), key
        return
    models = ([eng.model] if eng.model is not None else []) + list(eng.models.values())
    for m in models:
        for name, w in m.weights().items():
            assert np.isfinite(w).all(), name
    for st_ in eng.key_states().values():  # every key's state (the keyed store's included)
        assert np.isfinite(st_.buffer).all()
    for m in models:
        assert np.isfinite(m.state.buffer).all()


@FUZZ
@given(mutated(), st.sampled_from([[], ["--ahead", "2"], ["--ahead", "2", "--model", "lstm"], ["--key", "key"],
                                 ["--key", "key", "--per-key-models"], ["--ahead", "2", "--key", "key"]]))
def test_job_on_mutated_files(data, extra):
    head = data.split(b"\n", 1)[0]
    if "--key" in extra and b"key" not in head:
        extra = []
    if b"x1" in head and b"x2" in head and len(data) % 2:
        extra = [*extra, "--features", "x1,x2"]
    code, text, outcome = run_inprocess(data, "--target", "y", "--time", "time", "--on-bad-row", "skip", *extra)
    if outcome is not None:
        assert_finite_models(outcome)
        assert outcome.stats.rows + outcome.stats.skipped == outcome.stats.consumed
    code2, text2, _ = run_inprocess(data, "--target", "y", "--time", "time", *extra)  # stop at the first bad row
    assert code2 in (0, 2)
    if code == 0 and code2 == 0:
        assert text2 == text
    elif code == 0:  # the stopping run printed a prefix of the skipping one
        assert text.startswith(text2.rsplit("\n", 1)[0])


@FUZZ
@given(st.binary(max_size=1500))
def test_job_on_random_bytes(data):
    _code, _, outcome = run_inprocess(b"a,b,y\n" + data, "--target", "y", "--on-bad-row", "skip")
    if outcome is not None:
        assert_finite_models(outcome)


def test_reader_doctests():
    import doctest

    from streamlstm.adapters import _csvio

    assert doctest.testmod(_csvio).failed == 0
