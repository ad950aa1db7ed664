"""`streamlstm run` against hostile surroundings (issue 13): a full disk, overlong lines,
checkpoints used by two runs or aimed at pipes, another input on resume, bytes that are
not UTF-8 in JSON output, models and checkpoints the command cannot run.

Driven as real processes, like ``test_cli.py``, whose helpers this file uses.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("click")
pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import CMD, ENV, SMALL, assert_same_model, cli, consumed, make_csv, ok, read_line, start
from test_cli_fuzz import Trickle

from streamlstm import OnlineLSTM, persistence
from streamlstm.adapters import _csvio
from streamlstm.adapters._csvio import MAX_LINE
from streamlstm.adapters._runner import InputFingerprint

KEYED = ["--target", "temp", "--key", "sensor", "--time", "time", "--ahead", "2", "--model", "lstm", "--features", "hum", *SMALL,
         "--quiet"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A keyed forecasting run over 1,500 x 3 rows, start to end, to compare others with."""
    d = tmp_path_factory.mktemp("hostile")
    data = make_csv(d / "s.csv", 1500, keys=("a", "b", "c"), missing_every=11)
    r = ok(cli("run", data, *KEYED, "--save", d / "full.slstm"))
    return d, data, r.stdout


def fails(r: subprocess.CompletedProcess, code: int, *words: str) -> str:
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert "Traceback" not in err and "internal error" not in err, err
    for w in words:
        assert w in err, err
    return err


# ------------------------------------------------------------- 8. full disk
def _output_limit(nbytes: int):
    def limit() -> None:  # in the child: writes beyond nbytes are cut short, then fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


@pytest.mark.parametrize("via", ["pipe", "file"])
def test_a_full_disk_stops_the_run_and_resume_gives_exactly_the_uninterrupted_output(uninterrupted, tmp_path, via):
    """Output on a file that can take 60,000 bytes (RLIMIT_FSIZE: a short write, then EFBIG,
    as on a full disk), unbuffered. The checkpoint must count only rows whose output is in
    the file; --resume from it must then complete the output exactly."""
    d, data, full = uninterrupted
    ck = tmp_path / "ck.slstm"
    out_path = tmp_path / "out.csv"
    env = {**ENV, "PYTHONUNBUFFERED": "1"}
    src = [] if via == "pipe" else [str(data)]
    with open(out_path, "wb") as out, open(data, "rb") as inp:
        p = subprocess.run([*CMD, "run", *src, *KEYED, "--checkpoint", str(ck), "--checkpoint-every", "250"],
                           stdin=inp, stdout=out, stderr=subprocess.PIPE, env=env, timeout=300,
                           preexec_fn=_output_limit(60_000))
    err = fails(p, 1, "cannot write the output", "File too large", "run again with --resume")
    written = out_path.read_bytes()
    assert len(written) == 60_000  # every byte the file could take was written
    done = consumed(ck)
    assert done > 0 and done % 250 == 0 and f"counts the first {done:,} input rows" in err
    full_lines = full.splitlines(keepends=True)
    assert written.startswith(b"".join(full_lines[:1 + done]))  # every row the checkpoint counts is in the output
    r = ok(cli("run", data, *KEYED, "--checkpoint", ck, "--resume", "--save", tmp_path / "end.slstm"))
    assert r.stdout == b"".join(full_lines[1 + done:])
    assert_same_model(d / "full.slstm", tmp_path / "end.slstm")


def test_output_to_a_full_device_fails_at_once_and_writes_no_checkpoint(uninterrupted, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    _, data, _ = uninterrupted
    ck = tmp_path / "ck.slstm"
    with open("/dev/full", "wb") as out, open(data, "rb") as inp:
        p = subprocess.run([*CMD, "run", *KEYED, "--checkpoint", str(ck), "--checkpoint-every", "100"], stdin=inp,
                           stdout=out, stderr=subprocess.PIPE, env={**ENV, "PYTHONUNBUFFERED": "1"}, timeout=300)
    fails(p, 1, "cannot write the output: No space left on device", f"no checkpoint was written to {ck}")
    assert not ck.exists()


# ------------------------------------------------------- 9. overlong lines
def _long_file(path: Path, long_rows: dict[int, str]) -> tuple[Path, Path]:
    """A CSV (a,b,y) of 200 rows with some replaced by overlong lines, and the same without them."""
    rows = [f"{i},{i % 7},{(i * 3) % 11}" for i in range(1, 201)]
    clean = [r for i, r in enumerate(rows, start=2) if i not in long_rows]
    for line_no, text in long_rows.items():
        rows[line_no - 2] = text
    path.write_text("a,b,y\n" + "\n".join(rows) + "\n")
    other = path.with_name("clean.csv")
    other.write_text("a,b,y\n" + "\n".join(clean) + "\n")
    return path, other


@pytest.mark.parametrize("via", ["pipe", "file"])
def test_an_overlong_line_is_refused_whole_at_its_own_line_number(tmp_path, via):
    # Line 51 is ~2.4 MiB of "1,1,...": cut at read boundaries, its last piece used to be
    # learned as a row. Line 121 ends exactly where a 1 MiB read would.
    data, clean = _long_file(tmp_path / "long.csv", {51: ",".join(["1"] * 1_250_000),
                                                      121: "7," * (MAX_LINE // 2) + "7"})
    args = ["--target", "y", "--features", "a,b", *SMALL, "--quiet"]
    src = [] if via == "pipe" else [data]
    feed = data.read_bytes() if via == "pipe" else None
    r = cli("run", *src, *args, input=feed)
    fails(r, 2, "line 51: the line is longer than 1,048,576 characters (refused whole)")
    assert len(r.stdout.splitlines()) == 1 + 49  # the rows before it
    r = cli("run", *src, *args, "--on-bad-row", "warn", input=feed)
    err = fails(r, 0, "line 51: the line is longer", "line 121: the line is longer")
    assert err.count("longer than") == 2
    assert r.stdout == ok(cli("run", clean, *args)).stdout  # nothing of them was learned, nothing else lost


@pytest.mark.parametrize("via", ["pipe", "file"])
def test_a_line_just_under_the_limit_is_kept_whole(tmp_path, via):
    name = "n" * (MAX_LINE - 20)
    data = tmp_path / "wide.csv"
    data.write_text("t,a,y\n" + "".join(f"{name if i == 3 else i},{i},{i % 3}\n" for i in range(6)))
    src = [] if via == "pipe" else [data]
    r = ok(cli("run", *src, "--target", "y", "--time", "t", "--features", "a", *SMALL, "--quiet",
               input=data.read_bytes() if via == "pipe" else None))
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 7 and lines[4].split(",")[:2] == [name, "0"]


def test_a_header_of_a_million_columns_is_refused_not_cut(tmp_path):
    data = tmp_path / "wide.csv"
    data.write_text(",".join(f"c{i}" for i in range(1_000_000)) + "\n" + ",".join(["1"] * 3) + "\n")
    fails(cli("run", data, "--target", "c1"), 2, "line 1: the header is not valid CSV: the line is longer than")


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # MAX_LINE is set alike
@given(lengths=st.lists(st.integers(1, 100), min_size=1, max_size=25), chunk=st.integers(1, 70),
       batch=st.integers(1, 9), plain=st.booleans(), quoted_at=st.integers(-1, 30))
def test_the_reader_refuses_long_lines_whole_at_any_read_boundary(monkeypatch, lengths, chunk, batch, plain,
                                                                  quoted_at):
    """Lines over the limit (40 characters here) are one bad record each, at their own
    line number, whichever read cut them and whether the Python or the plain-line reader
    meets them; every other line is a record, whole."""
    monkeypatch.setattr(_csvio, "MAX_LINE", 40)
    lines = [("q,\"" + "z" * (n - 4) + "\"") if i == quoted_at and n >= 4 else (str(i % 10) * n)
             for i, n in enumerate(lengths)]
    reader = _csvio.RecordReader(Trickle(("h\n" + "\n".join(lines) + "\n").encode(), chunk), fill=False)
    reader.plain_mode = plain
    assert reader.read_header() == ["h"]
    got = []
    while True:
        found = reader.next_plain(batch) if plain else None
        if found is not None:
            first, raw, count = found
            got += zip(range(first, first + count), raw.tobytes().decode().split("\n")[:count])
            continue
        numbers, recs = reader.next_batch(batch)
        if not recs:
            break
        got += [(n, r.message if isinstance(r, _csvio.BadRecord) else r if isinstance(r, str) else ",".join(r))
                for n, r in zip(numbers, recs)]
    want = [(i + 2, _csvio.LONG_LINE if len(s) > 40 else s.replace('"', "")) for i, s in enumerate(lines)]
    assert got == want


# ----------------------------------------------- 11. checkpoints and context
def test_resume_refuses_another_input_with_the_same_header(uninterrupted, tmp_path):
    _, data, _ = uninterrupted
    ck = tmp_path / "ck.slstm"
    prefix = tmp_path / "prefix.csv"
    prefix.write_bytes(b"".join(data.read_bytes().splitlines(keepends=True)[:1 + 300]))
    ok(cli("run", prefix, *KEYED, "--checkpoint", ck))
    other = make_csv(tmp_path / "other.csv", 1500, keys=("a", "b", "c"), seed=1)
    fails(cli("run", other, *KEYED, "--checkpoint", ck, "--resume"), 2,
          "the input's first 300 rows differ from the 300 that", "--resume needs the same input")
    # the same input, by pipe, is accepted: the fingerprint does not depend on how it is read
    ok(cli("run", *KEYED, "--checkpoint", ck, "--resume", input=data.read_bytes()))


def test_the_input_fingerprint_is_the_same_for_a_pipe_and_a_file_and_any_records(tmp_path):
    text = ('t,k,x,y\r\n1,a,0.5,1\r\n\r\n2,"b,c",0.25,\r\n3,a,"1e1",2\r\n4,a,bad,3\r\n5,\xe9,1,1\r\n'
            + "".join(f"{i},z,{i / 7},{i % 5}\n" for i in range(6, 400)))
    data = tmp_path / "mixed.csv"
    data.write_bytes(text.encode("latin-1"))
    args = ["--target", "y", "--time", "t", "--features", "x", *SMALL, "--quiet", "--on-bad-row", "skip"]
    digests = []
    for via in ("file", "pipe"):
        ck = tmp_path / f"{via}.slstm"
        src = [data] if via == "file" else []
        ok(cli("run", *src, *args, "--checkpoint", ck, input=None if via == "file" else data.read_bytes()))
        digests.append(persistence.read_file(ck)[1]["input_sha256"])
    assert digests[0] == digests[1]
    fp = InputFingerprint()
    fp.add(["1,a"], 1)
    assert fp.hexdigest() != digests[0]


def test_two_runs_cannot_share_a_checkpoint(uninterrupted, tmp_path):
    _, data, _ = uninterrupted
    ck = tmp_path / "ck.slstm"
    lines = data.read_bytes().splitlines(keepends=True)
    p = start("run", *KEYED, "--checkpoint", ck)
    try:
        p.stdin.write(b"".join(lines[:1 + 10]))
        p.stdin.flush()
        buf = bytearray()
        for _ in range(1 + 10):  # the first run is going: it holds the lock
            read_line(p.stdout.fileno(), buf, 120)
        err = fails(cli("run", data, *KEYED, "--checkpoint", ck), 2, f"the checkpoint {ck} is in use by another "
                    f"streamlstm run (process {p.pid}")
        assert "two runs must not write one checkpoint" in err
        p.stdin.close()
        p.wait(timeout=120)
        assert p.returncode == 0
    finally:
        p.kill()
    assert consumed(ck) == 10
    ok(cli("run", data, *KEYED, "--checkpoint", ck, "--resume"))  # the lock went with the first run
    assert consumed(ck) == 4500


def test_checkpoint_through_a_symlink_and_refused_on_a_fifo(uninterrupted, tmp_path):
    _, data, _ = uninterrupted
    real = tmp_path / "real.slstm"
    link = tmp_path / "link.slstm"
    link.symlink_to(real.name)
    ok(cli("run", data, *KEYED, "--checkpoint", link))
    assert link.is_symlink() and consumed(real) == 4500
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for opt in ("--checkpoint", "--save"):
        fails(cli("run", data, *KEYED, opt, fifo), 2, f"{opt} {fifo} is a named pipe (FIFO), not a regular file")
    assert fifo.is_fifo()


def test_write_atomic_keeps_links_refuses_special_files_and_removes_stale_temporaries(tmp_path, monkeypatch):
    target = tmp_path / "m.slstm"
    monkeypatch.setattr(persistence, "_last_sweep", {})
    dead = 2 ** 22 + 12345  # above Linux's largest process id
    names = {  # name: (age in seconds, removed?)
        f".m.slstm.{dead}.abcdefgh.tmp": (120, True),     # its writer is gone
        f".m.slstm.{dead}.recent_1.tmp": (5, False),      # gone, but touched a moment ago
        f".m.slstm.{os.getpid()}.a1b2c3d4.tmp": (7200, False),  # its writer lives
        ".m.slstm.x1y2z3w4.tmp": (7200, True),            # 0.1.0's naming, hours old
        ".m.slstm.x1y2z3w5.tmp": (600, False),            # 0.1.0's naming, minutes old
        f".m.slstm.{dead}.toolong12.tmp": (7200, False),  # not our pattern
        f".other.{dead}.abcdefgh.tmp": (7200, False),     # another file's
    }
    now = time.time()
    for name, (age, _) in names.items():
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (now - age, now - age))
    persistence.write_atomic(target, b"one")
    for name, (_, removed) in names.items():
        assert (tmp_path / name).exists() != removed, name
    assert target.read_bytes() == b"one"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.slstm.") and str(os.getpid()) in p.name
                and p.name.endswith(".tmp") and p.name not in names]  # its own temporary is gone

    dangling = tmp_path / "dangling"
    dangling.symlink_to("made-by-the-write")
    persistence.write_atomic(dangling, b"two")
    assert dangling.is_symlink() and (tmp_path / "made-by-the-write").read_bytes() == b"two"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="named pipe"):
        persistence.write_atomic(fifo, b"x")
    with pytest.raises(IsADirectoryError):
        persistence.write_atomic(tmp_path, b"x")
    assert fifo.is_fifo()


def test_a_writer_killed_mid_write_leaves_a_temporary_the_next_run_removes(uninterrupted, tmp_path):
    _, data, _ = uninterrupted
    ck = tmp_path / "ck.slstm"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    child.wait()
    leftover = tmp_path / f".ck.slstm.{child.pid}.q1w2e3r4.tmp"  # what a kill -9 during a write leaves
    leftover.write_bytes(b"half a checkpoint")
    os.utime(leftover, (time.time() - 300, time.time() - 300))
    ok(cli("run", data, *KEYED, "--checkpoint", ck))
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ck.slstm.lock", "ck.slstm"]


# ------------------------------------------------------------- 12. smaller
def test_jsonl_with_bytes_that_are_not_utf8_is_valid_json(tmp_path):
    data = tmp_path / "k.csv"
    rows = [b"time,sensor\xff,hum,temp"]
    for t in range(30):
        key = [b"caf\xe9", b"caf\xe8", b"plain"][t % 3]
        rows.append(b"%d\xfe,%s,%d,%.2f" % (t, key, t % 5, 20 + t / 10))
    data.write_bytes(b"\n".join(rows) + b"\n")
    for extra in (["--key", "sensor\udcff"], []):  # keyed: the Python writer; unkeyed: the compiled reader
        r = ok(subprocess.run([*CMD, "run", str(data), "--target", "temp", "--time", "time", "--features", "hum",
                               *extra, *SMALL, "--quiet", "--format", "jsonl"], capture_output=True, env=ENV,
                              timeout=120))
        recs = [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]  # strict UTF-8, then JSON
        assert len(recs) == 30
        assert recs[1]["time"] == "1\\xfe"
        if extra:
            assert list(recs[0])[:2] == ["sensor\\xff", "time"]
            assert [x["sensor\\xff"] for x in recs[:3]] == ["caf\\xe9", "caf\\xe8", "plain"]


def test_a_classifier_or_a_multi_output_model_is_refused_by_run(tmp_path):
    data = make_csv(tmp_path / "s.csv", 20)
    for kw, word in ((dict(n_outputs=3, loss="cross_entropy"), "is a classifier (loss 'cross_entropy', 3 classes)"),
                     (dict(n_outputs=2), "predicts 2 values per step")):
        path = tmp_path / "m.slstm"
        OnlineLSTM(n_inputs=1, hidden=4, bptt=4, **kw).save(path)
        fails(cli("run", data, "--target", "temp", "--features", "hum", "--load", path), 2, word)


# ------------------------------------------- 5/6. corrupt files, bad settings
def _rewrite(src: Path, dst: Path, change) -> Path:
    kind, meta, arrays = persistence.read_file(src)
    change(meta, arrays)
    dst.write_bytes(persistence.dumps(kind, meta, arrays))  # a valid CRC: the check must look inside
    return dst


def test_a_corrupt_checkpoint_is_a_clear_error_with_exit_2(uninterrupted, tmp_path):
    d, data, _ = uninterrupted
    ck = tmp_path / "ck.slstm"
    blob = (d / "full.slstm").read_bytes()
    cases = {
        "truncated": (lambda p: p.write_bytes(blob[:len(blob) // 2]), "truncated streamlstm file"),
        "no job": (lambda p: _rewrite(d / "full.slstm", p, lambda m, a: m.pop("job")), "'job' is missing"),
        "job.ahead text": (lambda p: _rewrite(d / "full.slstm", p, lambda m, a: m["job"].update(ahead="2")),
                           "job.ahead is '2', expected an integer >= 0"),
        "keys twice": (lambda p: _rewrite(d / "full.slstm", p, lambda m, a: m.update(keys=["a", "a", "b"])),
                       "'keys' is not a list of distinct key strings"),
        "ring shape": (lambda p: _rewrite(d / "full.slstm", p, lambda m, a: a.update(ring=a["ring"][:, :1])),
                       "the array 'ring' is float64 of shape (3, 1)"),
        "state width": (lambda p: _rewrite(d / "full.slstm", p, lambda m, a: a.update(states=a["states"][:, :5])),
                        "corrupt checkpoint: array 'states' is float64 (3, 5)"),
        "model bytes": (lambda p: _rewrite(d / "full.slstm", p, lambda m, a: a.update(model=a["model"][:100])),
                        "the model:"),
    }
    for name, (make, word) in cases.items():
        make(ck)
        for cmd in (["--checkpoint", ck, "--resume"], ["--load", ck]):
            fails(cli("run", data, *KEYED, *cmd), 2, word, str(ck))
        if name != "state width":  # `info` reads no per-key state
            fails(cli("info", ck), 2, str(ck) if name != "model bytes" else "truncated")


def test_settings_the_core_refuses_exit_2_naming_the_setting(tmp_path):
    data = make_csv(tmp_path / "s.csv", 20)
    fails(cli("run", data, "--target", "temp", "--features", "hum", "--bptt", "4", "--update-every", "5"), 2,
          "bad model settings: update_every (5) must not exceed bptt (4)")
