"""`streamlstm` command line, driven as a real process (``python -m streamlstm.adapters.cli``).

Small hidden sizes and small files keep it quick; numba's on-disk cache makes every
process after the first start in about a second. Independent processes run side by side.
"""

from __future__ import annotations

import csv
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("click")

CMD = [sys.executable, "-m", "streamlstm.adapters.cli"]
SMALL = ["--hidden", "4", "--bptt", "4"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(*args: str, input: bytes | str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    if isinstance(input, str):
        input = input.encode()
    return subprocess.run([*CMD, *map(str, args)], input=input, capture_output=True, timeout=timeout, env=ENV)


def start(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([*CMD, *map(str, args)], stdin=kw.pop("stdin", subprocess.PIPE), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV, **kw)


def make_csv(path: Path, rows: int = 300, keys: tuple[str, ...] = ("a", "b"), seed: int = 0,
             missing_every: int = 0) -> Path:
    """time,sensor,hum,temp: temp follows hum with a lag, per sensor."""
    rng = np.random.default_rng(seed)
    lines = ["time,sensor,hum,temp"]
    for t in range(rows):
        for j, k in enumerate(keys):
            hum = 50 + 10 * np.sin(t / 9 + j) + rng.normal(0, 0.5)
            temp = 20 + 0.3 * (50 + 10 * np.sin((t - 2) / 9 + j)) + rng.normal(0, 0.1)
            cell = "" if missing_every and (t * len(keys) + j) % missing_every == 0 else f"{temp:.3f}"
            lines.append(f"{t},{k},{hum:.3f},{cell}")
    path.write_text("\n".join(lines) + "\n")
    return path


def rows_of(text: bytes | str) -> list[dict[str, str]]:
    if isinstance(text, bytes):
        text = text.decode()
    return list(csv.DictReader(io.StringIO(text)))


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr.decode()
    assert b"Traceback" not in r.stderr
    return r


def consumed(path: Path) -> int:
    r = ok(cli("info", path, "--json"))
    return json.loads(r.stdout)["input_rows_consumed"]


# ------------------------------------------------------------------ basics
def test_help_is_light_and_lists_the_commands():
    code = ("import sys, time; t = time.perf_counter(); from streamlstm.adapters.cli import main\n"
            "sys.argv = ['streamlstm', 'run', '--help']\n"
            "try: main()\nexcept SystemExit: pass\n"
            "print('RUNNER', 'streamlstm.adapters._runner' in sys.modules, 'matplotlib' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "--target" in out and "--checkpoint" in out and "--per-key-models" in out
    assert "RUNNER False False" in out  # the job machinery is imported by the command, not for help
    r = ok(cli("--help"))
    for word in (b"run", b"demo", b"info"):
        assert word in r.stdout


def test_regression_file_pipe_and_block_sizes_agree(tmp_path):
    """Keys with shared weights learn one block per optimizer step, so --block-size is part of
    a keyed learning job: with the same block size, a file, a pipe and a pipe fed a few lines
    at a time give the same bytes (blocks are counted in input rows, not in reads). Without
    keys the block size changes nothing."""
    data = make_csv(tmp_path / "s.csv", 150, missing_every=7)
    args = ["--target", "temp", "--key", "sensor", "--time", "time", *SMALL]
    unkeyed = ["--target", "temp", "--time", "time", "--keep", "sensor", *SMALL, "--quiet"]
    procs = {
        "file": start("run", data, *args, stdin=subprocess.DEVNULL),
        "pipe": start("run", *args, "--quiet"),
        "blocks": start("run", data, *args, "--block-size", "7", "--quiet", stdin=subprocess.DEVNULL),
        "pipe blocks": start("run", *args, "--block-size", "7", "--quiet"),
        "unkeyed": start("run", data, *unkeyed, stdin=subprocess.DEVNULL),
        "unkeyed blocks": start("run", data, *unkeyed, "--block-size", "7", stdin=subprocess.DEVNULL),
    }
    lines = data.read_bytes().splitlines(keepends=True)
    trickled = procs["pipe blocks"]
    for i in range(0, len(lines), 5):  # a few lines at a time: reads end inside blocks
        trickled.stdin.write(b"".join(lines[i:i + 5]))
        trickled.stdin.flush()
        time.sleep(0.002)
    outs = {name: p.communicate(data.read_bytes() if name == "pipe" else None, timeout=120) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outs[name][1].decode()
    assert outs["file"][0] == outs["pipe"][0]
    assert outs["blocks"][0] == outs["pipe blocks"][0] != outs["file"][0]
    assert outs["unkeyed"][0] == outs["unkeyed blocks"][0]
    rows = rows_of(outs["file"][0])
    assert list(rows[0]) == ["sensor", "time", "temp", "pred_temp", "error"]
    assert len(rows) == 300
    for r in rows:
        assert np.isfinite(float(r["pred_temp"]))
        if r["temp"]:
            assert float(r["error"]) == pytest.approx(float(r["temp"]) - float(r["pred_temp"]))
        else:
            assert r["error"] == ""
    err = outs["file"][1].decode()
    assert "300 rows" in err and "skipped" in err and "MAE" in err and "RMSE" in err and "rows/s" in err
    unlabelled = sum(1 for r in rows if not r["temp"])
    assert f"{300 - unlabelled} learned" in err and f"{unlabelled} without a target" in err


def test_forecasting_columns_and_alignment(tmp_path):
    data = make_csv(tmp_path / "s.csv", 60)
    r = ok(cli("run", data, "--target", "temp", "--key", "sensor", "--ahead", "3", "--features", "hum", "--model", "lstm",
               *SMALL))
    rows = rows_of(r.stdout)
    assert list(rows[0]) == ["sensor", "temp", "forecast_temp_t", "error", "forecast_temp_t+3"]
    for key in ("a", "b"):
        mine = [x for x in rows if x["sensor"] == key]
        assert all(x["forecast_temp_t"] == "" for x in mine[:3])
        for i in range(3, len(mine)):  # the forecast for row i was written at row i-3
            assert mine[i]["forecast_temp_t"] == mine[i - 3]["forecast_temp_t+3"]
            assert float(mine[i]["error"]) == pytest.approx(float(mine[i]["temp"]) - float(mine[i]["forecast_temp_t"]))
    assert f"{2 * (60 - 3)} learned" in r.stderr.decode()


def test_per_key_models_equal_separate_runs_and_shared_inference_keeps_keys_apart(tmp_path):
    data = make_csv(tmp_path / "s.csv", 80)
    only_a = tmp_path / "a.csv"
    lines = data.read_text().splitlines()
    only_a.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ",a," in ln]) + "\n")
    base = ["--target", "temp", "--time", "time", "--features", "hum", *SMALL, "--quiet"]
    # (no standardisation: the core's running statistics move even in inference, shared by all keys)
    ok(cli("run", data, *base, "--key", "sensor", "--save", tmp_path / "m.slstm", "--no-standardize",
           "--no-standardize-target"))
    procs = [
        start("run", data, *base, "--key", "sensor", "--per-key-models", stdin=subprocess.DEVNULL),
        start("run", only_a, *base, stdin=subprocess.DEVNULL),
        start("run", data, *base, "--load", tmp_path / "m.slstm", "--fresh-state", "--no-learn",
              stdin=subprocess.DEVNULL),
        start("run", only_a, "--load", tmp_path / "m.slstm", "--fresh-state", "--no-learn", "--quiet",
              stdin=subprocess.DEVNULL),
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    per_key, alone, shared_inf, alone_inf = (rows_of(o[0]) for o in outs)
    assert [r["pred_temp"] for r in per_key if r["sensor"] == "a"] == [r["pred_temp"] for r in alone]
    # frozen shared weights: a key's predictions do not depend on the other keys' rows
    assert [r["pred_temp"] for r in shared_inf if r["sensor"] == "a"] == [r["pred_temp"] for r in alone_inf]


def test_thousands_of_keys_with_checkpoint(tmp_path):
    n_keys = 3000
    lines = ["key,x,y"] + [f"k{i},{(i * 7 + t) % 11 / 10},{(i + t) % 5}" for t in range(2) for i in range(n_keys)]
    data = tmp_path / "k.csv"
    data.write_text("\n".join(lines) + "\n")
    ck = tmp_path / "ck.slstm"
    r = ok(cli("run", data, "--target", "y", "--key", "key", "--hidden", "2", "--bptt", "2", "--checkpoint", ck))
    assert f"{n_keys:,} keys" in r.stderr.decode()
    info = json.loads(ok(cli("info", ck, "--json")).stdout)
    assert info["keys"] == n_keys and info["input_rows_consumed"] == 2 * n_keys
    assert len(rows_of(r.stdout)) == 2 * n_keys


def test_inference_only_leaves_the_model_alone_and_needs_no_target(tmp_path):
    data = make_csv(tmp_path / "s.csv", 50)
    model = tmp_path / "m.slstm"
    ok(cli("run", data, "--target", "temp", "--time", "time", "--features", "hum", *SMALL, "--save", model))
    unlabelled = tmp_path / "new.csv"
    unlabelled.write_text("time,hum\n" + "".join(f"{t},{50 + t % 7}\n" for t in range(20)))
    r = ok(cli("run", "--load", model, "--no-learn", "--save", tmp_path / "after.slstm", input=unlabelled.read_bytes()))
    rows = rows_of(r.stdout)
    assert list(rows[0]) == ["time", "pred_temp"] and len(rows) == 20
    before = json.loads(ok(cli("info", model, "--json")).stdout)
    after = json.loads(ok(cli("info", tmp_path / "after.slstm", "--json")).stdout)
    assert after["updates"] == before["updates"] and after["steps"] == before["steps"] + 20


def test_jsonl_output(tmp_path):
    data = make_csv(tmp_path / "s.csv", 20, missing_every=5)
    r = ok(cli("run", data, "--target", "temp", "--key", "sensor", "--time", "time", *SMALL, "--format", "jsonl",
               "--digits", "6"))
    recs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(recs) == 40
    assert list(recs[0]) == ["sensor", "time", "temp", "pred_temp", "error"]
    missing = [x for x in recs if x["temp"] is None]
    assert missing and all(x["error"] is None and isinstance(x["pred_temp"], float) for x in missing)
    assert all(isinstance(x["time"], str) for x in recs)


# --------------------------------------------------------------- bad input
GOOD = "time,x,temp\n1,0.5,20.1\n"
BAD_CASES = {
    # name: (input text, extra args, message on stderr, good rows emitted before the stop)
    "not a number": (GOOD + "2,abc,20.3\n3,1,2\n", [], "line 3, column 'x': 'abc' is not a number", 1),
    "too many fields": (GOOD + "2,0.1,20.3,9\n", [], "line 3: 4 fields where the header has 3", 1),
    "too few fields": (GOOD + "2,0.1\n", [], "line 3: 2 fields where the header has 3 (no value for column 'temp')", 1),
    # missing values are imputed by default (tests/test_cli_input.py); --missing error keeps them bad rows
    "empty feature": (GOOD + "2,,20.3\n", ["--missing", "error"], "line 3, column 'x' is empty: a number is required",
                      1),
    "NaN": (GOOD + "2,nan,20.3\n", ["--missing", "error"],
            "line 3, column 'x': 'nan' is NaN: a finite number is required", 1),
    "inf target": (GOOD + "2,0.2,-inf\n", [], "line 3, column 'temp': '-inf' is not a finite number", 1),
    "out of range": (GOOD + "2,1e300,1\n", [], "line 3, column 'x': '1e300' is out of range", 1),
    "bad UTF-8": (GOOD.encode() + b"2,0.\xff,1\n", [], "line 3, column 'x': '0.\\udcff' is not a number", 1),
    "malformed quotes": (GOOD + '2,"0.1"x,20\n', [], "line 3: malformed CSV", 1),
    "unterminated quote": (GOOD + '2,"0.1,20\n3,1,2\n', [], "line 3: unterminated quoted field", 1),
    "missing column": (GOOD, ["--target", "nope"], "column 'nope' (--target) is not in the header", None),
    "missing feature column": (GOOD, ["--features", "x,y"], "column 'y' (feature) is not in the header", None),
    "empty input": ("", [], "the input is empty: expected a CSV header line", None),
    "header only, no features": ("time,temp\n1,2\n", ["--time", "time", "--ahead", "0"], "no numeric feature columns",
                                 None),
}


def test_each_bad_input_kind_stops_with_its_message_and_exit_code_2(tmp_path):
    procs = {}
    for name, (text, extra, _, _) in BAD_CASES.items():
        path = tmp_path / (name.replace(" ", "_") + ".csv")
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        args = ["run", path, *SMALL, *(extra or [])]
        if "--target" not in extra:
            args += ["--target", "temp"]
        if "--time" not in extra:
            args += ["--time", "time"]
        procs[name] = start(*args, stdin=subprocess.DEVNULL)
    procs["missing file"] = start("run", tmp_path / "missing.csv", "--target", "temp", stdin=subprocess.DEVNULL)
    procs["missing model"] = start("run", "--load", tmp_path / "nope.slstm", stdin=subprocess.DEVNULL)
    expected = {n: (m, k) for n, (_, _, m, k) in BAD_CASES.items()}
    expected["missing file"] = (f"input file '{tmp_path / 'missing.csv'}' not found", None)
    expected["missing model"] = ("nope.slstm: no such file", None)
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        err = err.decode()
        message, good_rows = expected[name]
        assert p.returncode == 2, (name, err)
        assert message in err, (name, err)
        assert "Traceback" not in err, name
        if good_rows is not None:
            assert len(rows_of(out)) == good_rows, (name, out)


def test_skip_and_warn_count_bad_rows(tmp_path):
    text = GOOD + "2,abc,1\n3,0.1,2\n4,0.2,3,4\n5,0.3,\n6,inf,1\n7,0.4,5\n"
    p_skip = start("run", "--target", "temp", "--time", "time", *SMALL, "--on-bad-row", "skip")
    p_warn = start("run", "--target", "temp", "--time", "time", *SMALL, "--on-bad-row", "warn")
    (o1, e1), (o2, e2) = (p.communicate(text.encode(), timeout=120) for p in (p_skip, p_warn))
    assert p_skip.returncode == p_warn.returncode == 0
    assert o1 == o2
    assert [r["time"] for r in rows_of(o1)] == ["1", "3", "5", "7"]
    for e in (e1.decode(), e2.decode()):
        assert "4 rows" in e and "3 skipped" in e and "1 without a target" in e and "3 learned" in e
    assert "warning" not in e1.decode()
    warnings = [ln for ln in e2.decode().splitlines() if "warning" in ln]
    assert len(warnings) == 3 and "line 3, column 'x': 'abc' is not a number (row skipped)" in warnings[0]


def test_bad_row_stop_saves_the_rows_before_it(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text(GOOD + "2,0.1,20.3\n3,x,1\n4,1,1\n")
    ck = tmp_path / "ck.slstm"
    r = cli("run", path, "--target", "temp", "--time", "time", *SMALL, "--checkpoint", ck)
    assert r.returncode == 2 and "line 4, column 'x': 'x' is not a number" in r.stderr.decode()
    assert len(rows_of(r.stdout)) == 2 and consumed(ck) == 2


# ----------------------------------------------------------------- streaming
def read_line(fd: int, buf: bytearray, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"no output line within {timeout} s (got {bytes(buf)!r})"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, "output closed early"
            buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def test_a_pipe_fed_one_line_at_a_time_answers_each_line_before_the_next(tmp_path):
    p = start("run", "--target", "temp", "--time", "time", *SMALL, "--quiet")
    fd = p.stdout.fileno()
    buf = bytearray()
    try:
        p.stdin.write(b"time,x,temp\n")
        p.stdin.flush()
        for t in range(6):
            p.stdin.write(f"{t},{t / 10},{20 + t}\n".encode())
            p.stdin.flush()
            if t == 0:
                assert read_line(fd, buf, 120) == b"time,temp,pred_temp,error"
            line = read_line(fd, buf, 30)  # before anything else is written
            assert line.startswith(f"{t},{20 + t},".encode()), line
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    finally:
        p.kill()


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """An uninterrupted run to compare interrupted ones with."""
    d = tmp_path_factory.mktemp("resume")
    data = make_csv(d / "s.csv", 1500, keys=("a", "b", "c"), missing_every=11)
    args = ["--target", "temp", "--key", "sensor", "--time", "time", "--ahead", "2", "--features", "hum", "--model",
            "lstm", *SMALL, "--quiet", "--interval", "0.9", "--anomaly"]  # calibrator and scorer states resume too
    r = ok(cli("run", data, *args, "--save", d / "full.slstm"))
    return d, data, args, r.stdout


def assert_same_model(a: Path, b: Path) -> None:
    from streamlstm import persistence

    _ka, ma, xa = persistence.read_file(a)
    _kb, mb, xb = persistence.read_file(b)
    assert ma["keys"] == mb["keys"] and ma["consumed"] == mb["consumed"] and ma["stats"] == mb["stats"]
    assert xa.keys() == xb.keys()
    for name in xa:
        np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)
    assert a.read_bytes() == b.read_bytes()


def kill_9_mid_pipe(data: Path, args: list, ck: Path, fed: int, every: int) -> None:
    """Pipe the first ``fed`` rows of ``data`` to a checkpointing run, read every answer, kill -9 it."""
    lines = data.read_bytes().splitlines(keepends=True)
    p = start("run", *args, "--checkpoint", ck, "--checkpoint-every", str(every))
    fd = p.stdout.fileno()
    buf = bytearray()
    try:
        p.stdin.write(b"".join(lines[:1 + fed]))
        p.stdin.flush()
        for _ in range(1 + fed):  # every fed row has been answered, so the checkpoints before it exist
            read_line(fd, buf, 120)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        p.kill()


def test_kill_9_mid_pipe_then_resume_matches_an_uninterrupted_run(long_run, tmp_path):
    d, data, args, full = long_run
    ck = tmp_path / "ck.slstm"
    kill_9_mid_pipe(data, args, ck, 1100, 250)
    assert consumed(ck) == 1000
    r = ok(cli("run", data, *args, "--checkpoint", ck, "--resume", "--save", tmp_path / "end.slstm"))
    full_lines = full.splitlines(keepends=True)
    assert r.stdout == b"".join(full_lines[1 + 1000:])
    assert_same_model(d / "full.slstm", tmp_path / "end.slstm")


def test_kill_9_at_a_random_instant_then_resume_matches(long_run, tmp_path):
    d, data, args, full = long_run
    ck = tmp_path / "ck.slstm"
    rng = np.random.default_rng(int(time.time()))
    p = start("run", data, *args, "--checkpoint", ck, "--checkpoint-every", "97", "--block-size", "40",
              stdin=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    buf = bytearray()
    try:
        read_line(fd, buf, 120)  # started: the header is out
        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        p.kill()
    done = consumed(ck) if ck.exists() else 0
    assert done % 97 == 0 or done == 4500
    r = ok(cli("run", data, *args, "--checkpoint", ck, "--resume", "--save", tmp_path / "end.slstm"))
    full_lines = full.splitlines(keepends=True)
    expected = b"".join(full_lines[1 + done:]) if done else full
    assert r.stdout == expected
    assert_same_model(d / "full.slstm", tmp_path / "end.slstm")


def test_sigterm_while_waiting_for_input_checkpoints_and_resume_continues_exactly(long_run, tmp_path):
    d, data, args, full = long_run
    ck = tmp_path / "ck.slstm"
    lines = data.read_bytes().splitlines(keepends=True)
    p = start("run", *args, "--checkpoint", ck)
    fd = p.stdout.fileno()
    buf = bytearray()
    try:
        p.stdin.write(b"".join(lines[:1 + 321]))
        p.stdin.flush()
        got = [read_line(fd, buf, 120) for _ in range(1 + 321)]
        p.send_signal(signal.SIGTERM)  # it is blocked reading stdin
        rest, _ = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGTERM
    assert rest == bytes(buf) == b""
    assert consumed(ck) == 321
    r = ok(cli("run", data, *args, "--checkpoint", ck, "--resume", "--save", tmp_path / "end.slstm"))
    assert b"\n".join(got) + b"\n" + r.stdout == full
    assert_same_model(d / "full.slstm", tmp_path / "end.slstm")


def test_checkpoint_of_a_prefix_then_resume_equals_one_run_per_key_models_difference(tmp_path):
    data = make_csv(tmp_path / "s.csv", 200, missing_every=13)
    prefix = tmp_path / "p.csv"
    prefix.write_text("".join(data.read_text().splitlines(keepends=True)[:1 + 151]))
    args = ["--target", "temp", "--key", "sensor", "--time", "time", "--ahead", "3", "--model", "lstm", "--difference",
            "--per-key-models", *SMALL, "--quiet"]
    ck = tmp_path / "ck.slstm"
    p_full = start("run", data, *args, "--save", tmp_path / "full.slstm", stdin=subprocess.DEVNULL)
    first = ok(cli("run", prefix, *args, "--checkpoint", ck))
    rest = ok(cli("run", data, *args, "--checkpoint", ck, "--resume", "--save", tmp_path / "end.slstm"))
    full, _ = p_full.communicate(timeout=120)
    assert p_full.returncode == 0
    assert first.stdout + rest.stdout == full
    assert_same_model(tmp_path / "full.slstm", tmp_path / "end.slstm")


def test_resume_refuses_another_input(long_run, tmp_path):
    _d, data, args, _ = long_run
    ck = tmp_path / "ck.slstm"
    ok(cli("run", data, *args, "--checkpoint", ck))
    other = tmp_path / "o.csv"
    other.write_text("time,sensor,hum,temp,extra\n1,a,2,3,4\n")
    r = cli("run", other, *args, "--checkpoint", ck, "--resume")
    assert r.returncode == 2 and "header differs" in r.stderr.decode()


# ------------------------------------------------------------- plot, demo, info
def test_plot_and_its_absence(tmp_path):
    pytest.importorskip("matplotlib")
    data = make_csv(tmp_path / "s.csv", 40)
    png = tmp_path / "p.png"
    p1 = start("run", data, "--target", "temp", "--time", "time", "--features", "hum", *SMALL, "--plot", png,
               stdin=subprocess.DEVNULL)
    code = ("import sys; sys.modules['matplotlib'] = None\nfrom streamlstm.adapters.cli import main\n"
            f"main(['run', {str(data)!r}, '--target', 'temp', '--plot', 'x.png'], prog_name='streamlstm')")
    p2 = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    (_, e1), (_, e2) = p1.communicate(timeout=120), p2.communicate(timeout=120)
    assert p1.returncode == 0, e1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert p2.returncode == 2 and b"pip install 'streamlstm[plot]'" in e2 and b"Traceback" not in e2


def test_demo_and_its_absence(tmp_path):
    pytest.importorskip("river")
    p1 = start("demo", stdin=subprocess.DEVNULL)
    code = ("import sys; sys.modules['river'] = None\nfrom streamlstm.adapters.cli import main\n"
            "main(['demo'], prog_name='streamlstm')")
    p2 = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    (o1, e1), (_, e2) = p1.communicate(timeout=300), p2.communicate(timeout=120)
    assert p1.returncode == 0, e1
    out = o1.decode()
    assert "WaterFlow" in out and "last value (baseline)" in out and "--difference" in out
    # the default forecast (the engine) beats the last value, and says by how much
    assert "streamlstm run (default)" in out and "season: 24 steps" in out
    ratio = float(out.split("the default forecast's MAE is ")[1].split("x")[0])
    assert ratio < 1.0, out
    assert p2.returncode == 2 and b"pip install 'streamlstm[river]'" in e2


def test_info_describes_a_model(tmp_path):
    data = make_csv(tmp_path / "s.csv", 30)
    model = tmp_path / "m.slstm"
    ok(cli("run", data, "--target", "temp", "--key", "sensor", "--time", "time", *SMALL, "--save", model, "-q"))
    out = ok(cli("info", model)).stdout.decode()
    assert "regression of 'temp'" in out and "features: hum" in out and "keys: 2" in out and "hidden=4" in out


# ------------------------------------------- regular files: compiled reader on its own thread
@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    """An uninterrupted unkeyed run of a file (the compiled, prefetching path)."""
    d = tmp_path_factory.mktemp("file")
    rng = np.random.default_rng(5)
    x = (np.sin(np.arange(60_000) / 7) + 0.1 * rng.normal(size=60_000)).tolist()
    lines = ["time,x,y"] + [f"{t},{x[t]!r},{'' if t % 13 == 0 else repr(2 * x[t - 1])}" for t in range(60_000)]
    data = d / "big.csv"
    data.write_text("\n".join(lines) + "\n")
    args = ["--target", "y", "--time", "time", *SMALL, "--quiet"]
    r = ok(cli("run", data, *args, "--save", d / "full.slstm"))
    pipe = ok(cli("run", *args, input=data.read_bytes()))
    assert r.stdout == pipe.stdout  # compiled file path == Python pipe path, byte for byte
    return d, data, args, r.stdout


def test_file_run_kill_9_at_a_random_instant_then_resume_matches(file_run, tmp_path):
    d, data, args, full = file_run
    ck = tmp_path / "ck.slstm"
    rng = np.random.default_rng(int(time.time()))
    p = start("run", data, *args, "--checkpoint", ck, "--checkpoint-every", "997", "--block-size", "300",
              stdin=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    buf = bytearray()
    try:
        read_line(fd, buf, 120)
        time.sleep(rng.uniform(0.0, 0.5))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        p.kill()
    done = consumed(ck) if ck.exists() else 0
    assert done % 997 == 0 or done == 60_000
    r = ok(cli("run", data, *args, "--checkpoint", ck, "--resume", "--save", tmp_path / "end.slstm"))
    full_lines = full.splitlines(keepends=True)
    assert r.stdout == (b"".join(full_lines[1 + done:]) if done else full)
    assert_same_model(d / "full.slstm", tmp_path / "end.slstm")


def test_file_run_sigterm_mid_file_checkpoints_what_was_written_and_resumes_exactly(file_run, tmp_path):
    d, data, args, full = file_run
    ck = tmp_path / "ck.slstm"
    p = start("run", data, *args, "--checkpoint", ck, "--block-size", "50", stdin=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    buf = bytearray()
    try:
        header = read_line(fd, buf, 120)
        row = read_line(fd, buf, 120)  # rows are coming out
        p.send_signal(signal.SIGTERM)
        rest, _ = p.communicate(timeout=60)
    finally:
        p.kill()
    head = header + b"\n" + row + b"\n" + bytes(buf) + rest
    assert p.returncode == 128 + signal.SIGTERM
    done = consumed(ck)
    assert len(head.splitlines()) == 1 + done  # the header, then exactly the rows the checkpoint counts
    r = ok(cli("run", data, *args, "--checkpoint", ck, "--resume", "--save", tmp_path / "end.slstm"))
    assert head + r.stdout == full
    assert_same_model(d / "full.slstm", tmp_path / "end.slstm")


def test_file_run_stops_at_the_first_bad_row_like_a_pipe_run(tmp_path):
    rows = ["x,y"] + [f"{i / 10},{i / 5}" for i in range(5000)]
    rows[3001] = "0.5,abc"
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(rows) + "\n")
    f = cli("run", data, "--target", "y", *SMALL)
    p = cli("run", "--target", "y", *SMALL, input=data.read_bytes())
    assert f.returncode == p.returncode == 2
    assert f.stdout == p.stdout and len(f.stdout.splitlines()) == 1 + 3000
    assert "line 3002, column 'y': 'abc' is not a number" in f.stderr.decode()


def test_ahead_with_learning_runs_in_blocks_and_equals_the_per_row_path(tmp_path, monkeypatch):
    """--ahead 3 --model lstm with learning: the core's block call with a label lag serves whole runs of
    rows (no per-row loop), and writes exactly what one-row blocks write."""
    from click.testing import CliRunner

    from streamlstm import OnlineLSTM
    from streamlstm.adapters import cli as cli_module

    data = make_csv(tmp_path / "d.csv", rows=150, keys=("a", "b"))
    calls: list[tuple[int, int]] = []
    block_call = OnlineLSTM.learn_many

    def spy(self, X, Y, mask=None, lag=0):
        calls.append((len(X), lag))
        return block_call(self, X, Y, mask, lag=lag)

    monkeypatch.setattr(OnlineLSTM, "learn_many", spy)
    args = ["run", str(data), "--target", "temp", "--time", "time", "--features", "hum", "--ahead", "3", "--model", "lstm", *SMALL]
    blocks = CliRunner().invoke(cli_module.main, args, catch_exceptions=False)
    assert blocks.exit_code == 0, blocks.output
    assert any(n > 1 and lag == 2 for n, lag in calls), calls  # whole runs went through one block call
    n_block_calls = len(calls)
    rows = CliRunner().invoke(cli_module.main, [*args, "--block-size", "1"], catch_exceptions=False)
    assert rows.exit_code == 0, rows.output
    assert not any(n > 1 and lag for n, lag in calls[n_block_calls:])  # one-row blocks: the per-row path
    assert blocks.stdout == rows.stdout
