"""The CSV files people have, and no silent surprises (issue 11), as real `streamlstm` processes.

Delimiters, missing cells, column roles, files without a header, output paths checked
before the first row, existing checkpoints, the summary's error, the progress line, the
keyed plot and `info`. Independent processes run side by side (``run_all``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from test_cli import CMD, ENV, SMALL, cli, make_csv, ok, rows_of, start

pytest.importorskip("click")


def run_all(jobs: dict[str, tuple[list, bytes | None]], timeout: float = 300) -> dict[str, tuple[int, str, str]]:
    """Run ``{name: (args, stdin bytes or None)}`` in parallel: ``{name: (exit code, stdout, stderr)}``."""
    procs = {name: start(*args, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL)
             for name, (args, data) in jobs.items()}
    out = {}
    for name, p in procs.items():
        o, e = p.communicate(jobs[name][1], timeout=timeout)
        out[name] = (p.returncode, o.decode(), e.decode())
        assert "Traceback" not in out[name][2], (name, out[name][2])
    return out


def good(res: tuple[int, str, str]) -> tuple[int, str, str]:
    assert res[0] == 0, res[2]
    return res


# ------------------------------------------------------------------ delimiters (point 5)
def test_semicolon_and_tab_files_give_the_comma_file_output(tmp_path):
    data = make_csv(tmp_path / "c.csv", 40, missing_every=9)
    text = data.read_text()
    (tmp_path / "s.csv").write_text(text.replace(",", ";"))
    (tmp_path / "t.tsv").write_text(text.replace(",", "\t"))
    (tmp_path / "q.csv").write_text("\n".join('"' + line.replace(",", '";"') + '"' if line else line
                                              for line in text.split("\n")))
    args = ["--target", "temp", "--key", "sensor", "--time", "time", *SMALL]
    res = run_all({
        "comma": (["run", data, *args], None),
        "semicolon": (["run", tmp_path / "s.csv", *args], None),
        "tab": (["run", tmp_path / "t.tsv", *args], None),
        "tab given": (["run", *args, "--delimiter", "tab", "-q"], (tmp_path / "t.tsv").read_bytes()),
        "quoted semicolon": (["run", tmp_path / "q.csv", *args, "-q"], None),
        "wrong delimiter": (["run", tmp_path / "s.csv", *args, "--delimiter", ","], None),
        "bad delimiter": (["run", data, *args, "--delimiter", ";;"], None),
    })
    want = good(res["comma"])[1]
    assert rows_of(want)[0]["sensor"] == "a"
    for name in ("semicolon", "tab", "tab given", "quoted semicolon"):
        assert good(res[name])[1] == want, name
    code, _, err = res["wrong delimiter"]
    assert code == 2 and "is not in the header" in err and "The header contains ';'" in err \
        and "--delimiter ';'" in err
    assert res["bad delimiter"][0] == 2 and "--delimiter ';;'" in res["bad delimiter"][2]


# ---------------------------------------------------------------- missing values (point 6)
NA_CSV = ("time,x,z,y\n"
          "1,0.5,1,1.0\n"
          "2,NA,2,2.0\n"        # feature missing: the mean of x so far (0.5)
          "3,1.5,,NA\n"         # z empty: mean of z (1.5); target NA: no label
          "4,nan,4,null\n"
          "5,2.0,NaN,5.0\n")


def test_missing_cells_impute_features_and_unlabel_targets(tmp_path):
    path = tmp_path / "na.csv"
    path.write_text(NA_CSV)
    args = ["--target", "y", "--time", "time", *SMALL]
    res = run_all({
        "file": (["run", path, *args, "--checkpoint", tmp_path / "ck.slstm"], None),
        "pipe": (["run", *args, "-q"], NA_CSV.encode()),
        "strict": (["run", path, *args, "--missing", "error"], None),
        "strict pipe": (["run", *args, "--missing", "error", "-q"], NA_CSV.encode()),
    })
    code, out, err = good(res["file"])
    assert out == good(res["pipe"])[1]  # one row at a time imputes exactly what a block does
    rows = rows_of(out)
    assert [r["y"] for r in rows] == ["1.0", "2.0", "NA", "null", "5.0"]
    assert [r["error"] == "" for r in rows] == [False, False, True, True, False]  # NA target: no label
    assert "2 without a target" in err and "3 learned" in err
    assert "4 missing feature values imputed with their column's running mean (x 2, z 2)" in err
    info = json.loads(ok(cli("info", tmp_path / "ck.slstm", "--json")).stdout)
    assert info["imputed_values"] == 4 and info["missing"] == "impute"
    for name in ("strict", "strict pipe"):
        code, out, err = res[name]
        assert code == 2 and "line 3, column 'x': 'NA' is not a number" in err, (name, err)
        assert len(rows_of(out)) == 1  # the row before it was answered


def test_imputation_uses_the_running_mean_of_the_rows_before(tmp_path):
    """The imputed value enters the model: a copy of the file with the means written in
    by hand gives the same predictions to the last digit."""
    path = tmp_path / "na.csv"
    path.write_text(NA_CSV)
    filled = (NA_CSV.replace("2,NA,2", "2,0.5,2").replace("3,1.5,,", "3,1.5,1.5,")
              .replace("4,nan,4", f"4,{(0.5 + 1.5) / 2!r},4").replace("5,2.0,NaN", f"5,2.0,{(1 + 2 + 4) / 3!r}"))
    (tmp_path / "filled.csv").write_text(filled)
    args = ["--target", "y", "--time", "time", "--features", "x,z", *SMALL, "-q"]
    res = run_all({"na": (["run", path, *args], None), "filled": (["run", tmp_path / "filled.csv", *args], None)})
    a, b = rows_of(good(res["na"])[1]), rows_of(good(res["filled"])[1])
    assert [r["pred_y"] for r in a] == [r["pred_y"] for r in b]


def test_resume_carries_the_imputation_means(tmp_path):
    lines = NA_CSV.strip().split("\n")
    path = tmp_path / "na.csv"
    path.write_text(NA_CSV)
    (tmp_path / "head.csv").write_text("\n".join(lines[:4]) + "\n")
    ck = tmp_path / "ck.slstm"
    args = ["--target", "y", "--time", "time", *SMALL, "-q"]
    whole = ok(cli("run", path, *args)).stdout.decode()
    first = ok(cli("run", tmp_path / "head.csv", *args, "--checkpoint", ck)).stdout.decode()
    rest = ok(cli("run", path, *args, "--checkpoint", ck, "--resume")).stdout.decode()
    assert first + rest == whole


# ------------------------------------------------- what the columns settle (no --target, no --ahead)
def test_a_timestamp_value_file_is_forecast_with_no_options(tmp_path):
    """The file most streams are: a time column and one value. Nothing to regress it on, one
    column to predict: `streamlstm run FILE` forecasts it one row ahead, and says why."""
    rng = np.random.default_rng(3)
    lines = ["timestamp,value"] + [f"2024-01-01 {t // 60:02d}:{t % 60:02d}:00,{10 + np.sin(t / 5) + rng.normal(0, 0.1):.4f}"
                                   for t in range(120)]
    plain = tmp_path / "ts.csv"
    plain.write_text("\n".join(lines) + "\n")
    keyed = tmp_path / "keyed.csv"
    keyed.write_text("time,sensor,level\n" + "".join(f"{t},{k},{t * (1 + (k == 'b'))}\n" for t in range(30)
                                                      for k in "ab"))
    two = tmp_path / "two.csv"
    two.write_text("time,a,b\n1,2,3\n2,3,4\n")
    text = tmp_path / "text.csv"
    text.write_text("name,city\nx,y\n")
    res = run_all({
        "none": (["run", plain], None),
        "stdin": (["run", "-q"], plain.read_bytes()),
        "given": (["run", plain, "--target", "value", "--ahead", "1", "-q"], None),
        "target only": (["run", plain, "--target", "value", "-q"], None),
        "regression asked": (["run", plain, "--ahead", "0"], None),
        "keyed": (["run", keyed, "--key", "sensor", "-q"], None),
        "two numeric": (["run", two], None),
        "no numeric": (["run", text], None),
        "checkpointed": (["run", plain, "-q", "--checkpoint", tmp_path / "ck.slstm"], None),
    })
    _, out, err = good(res["none"])
    assert list(rows_of(out)[0]) == ["timestamp", "value", "forecast_value_t", "error", "forecast_value_t+1"]
    assert "target 'value' (the only numeric column; --target COL to name another)" in err
    assert "1 row ahead (no column to regress the target on; --ahead H for another horizon)" in err
    assert "MAE" in err
    # the same job as the options spelled out, from a file or a pipe
    assert out == good(res["stdin"])[1] == good(res["given"])[1] == good(res["target only"])[1]
    code, _, err = res["regression asked"]
    assert code == 2 and "no numeric feature columns besides the target" in err
    rows = rows_of(good(res["keyed"])[1])
    assert list(rows[0]) == ["sensor", "time", "level", "forecast_level_t", "error", "forecast_level_t+1"]
    # each key forecast from its own history: a climbs by 1 a row, b by 2
    assert abs(float(rows[-2]["forecast_level_t"]) - 29) < 0.5 and abs(float(rows[-1]["forecast_level_t"]) - 58) < 1
    code, _, err = res["two numeric"]
    assert code == 2 and "--target COL is required (the column to predict): the numeric columns are a, b" in err
    code, _, err = res["no numeric"]
    assert code == 2 and "no column of the first rows is numeric (columns: name, city)" in err
    # the settled job is the checkpoint's: resuming needs no options either
    good(res["checkpointed"])
    again = good(run_all({"resume": (["run", plain, "-q", "--checkpoint", tmp_path / "ck.slstm", "--resume"], None)
                          })["resume"])
    assert again[1] == ""   # every row was consumed: nothing left to answer


# ------------------------------------------------------------------ column roles (point 7)
def test_column_roles_time_detection_text_columns_keep_and_no_features(tmp_path):
    rng = np.random.default_rng(1)
    lines = ["year,id,name,hum,temp"]
    for t in range(30):
        lines.append(f"{1990 + t},{100 + t},site{t % 3},{rng.normal():.3f},{rng.normal():.3f}")
    path = tmp_path / "roles.csv"
    path.write_text("\n".join(lines) + "\n")
    res = run_all({
        "auto": (["run", path, "--target", "temp", *SMALL], None),
        "keep": (["run", path, "--target", "temp", "--keep", "name,id", "--features", "hum", *SMALL], None),
        "keep feature": (["run", path, "--target", "temp", "--keep", "hum", "--features", "hum", *SMALL], None),
        "no features": (["run", path, "--target", "temp", "--features", "", *SMALL], None),
        "no features ahead": (["run", path, "--target", "temp", "--features", "", "--ahead", "1", "--model", "lstm",
                               *SMALL], None),
    })
    _, out, err = good(res["auto"])
    assert list(rows_of(out)[0]) == ["year", "temp", "pred_temp", "error"]  # year: time, copied, not an input
    assert ("regression of 'temp' on 2 feature(s) (id, hum; --features A,B,... to choose); time column 'year' "
            "(increasing integers in the first column; --time COL to name another); not features: 'name' "
            "(--keep copies them out)") in err
    assert err.count("feature(s)") == 1
    _, out, _ = good(res["keep"])
    rows = rows_of(out)
    assert list(rows[0]) == ["name", "id", "temp", "pred_temp", "error"] and rows[4]["name"] == "site1"
    assert res["keep feature"][0] == 2 and "--keep 'hum': the column is a feature" in res["keep feature"][2]
    assert res["no features"][0] == 2 and "no numeric feature columns" in res["no features"][2]
    _, _, err = good(res["no features ahead"])
    assert "forecasting 'temp' 1 row(s) ahead from its history;" in err  # no features, not all of them


def test_dates_in_the_first_column_are_the_time_axis(tmp_path):
    lines = ["date,x,y"] + [f"2024-01-{d:02d} 10:00,{d % 5},{d % 7}" for d in range(1, 21)]
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    _, out, err = good(run_all({"d": (["run", path, "--target", "y", *SMALL], None)})["d"])
    assert next(iter(rows_of(out)[0])) == "date" and "time column 'date' (dates or times in the first column" in err


# ------------------------------------------------------------- no header line (point 8)
def test_a_file_without_a_header(tmp_path):
    path = tmp_path / "nohead.csv"
    path.write_text("".join(f"{t},{np.sin(t):.4f},{np.cos(t):.4f}\n" for t in range(30)))
    res = run_all({
        "plain": (["run", path, "--target", "y", *SMALL], None),
        "numbered": (["run", path, "--no-header", "--target", "c3", *SMALL], None),
        "named": (["run", path, "--no-header", "--columns", "t,x,y", "--target", "y", "--time", "t", *SMALL], None),
        "count": (["run", path, "--no-header", "--columns", "x,y", "--target", "y", *SMALL], None),
        "no flag": (["run", path, "--columns", "t,x,y", "--target", "y", *SMALL], None),
    })
    code, _, err = res["plain"]
    assert code == 2 and "the first line looks like data, not a header" in err and "--no-header" in err \
        and "c1..c3" in err
    _, out, err = good(res["numbered"])
    rows = rows_of(out)
    assert len(rows) == 30 and list(rows[0]) == ["c1", "c3", "pred_c3", "error"]  # c1: time (increasing integers)
    _, out, _ = good(res["named"])
    rows = rows_of(out)
    assert len(rows) == 30 and list(rows[0]) == ["t", "y", "pred_y", "error"] and rows[0]["t"] == "0"
    assert res["count"][0] == 2 and "--columns gives 2 names, and the first line has 3 fields" in res["count"][2]
    assert res["no flag"][0] == 2 and "add --no-header" in res["no flag"][2]


# ------------------------------------------- output paths and checkpoints (points 9, 10)
def test_unwritable_outputs_are_refused_before_the_first_row(tmp_path):
    (tmp_path / "a_file").write_text("")
    args = ["run", "--target", "temp", *SMALL]
    cases = {
        "save": (["--save", "/nonexistent_dir/m.slstm"], ("--save /nonexistent_dir/m.slstm: the directory "
                                                          "/nonexistent_dir does not exist")),
        "checkpoint": (["--checkpoint", tmp_path / "a_file" / "ck.slstm"], "does not exist"),
        "directory": (["--save", tmp_path], "is a directory"),
        "plot": (["--plot", "/nonexistent_dir/p.png"], "--plot /nonexistent_dir/p.png: the directory"),
    }
    procs = {name: start(*args, *extra) for name, (extra, _) in cases.items()}  # stdin: a pipe never written
    for name, p in procs.items():
        try:
            _, err = p.communicate(timeout=60)  # answers without waiting for any input
        finally:
            p.kill()
        assert p.returncode == 2 and cases[name][1] in err.decode(), (name, err)


def test_an_existing_checkpoint_needs_resume_or_overwrite(tmp_path):
    data = make_csv(tmp_path / "s.csv", 20)
    ck = tmp_path / "ck.slstm"
    args = ["run", data, "--target", "temp", "--time", "time", *SMALL, "-q"]
    ok(cli(*args, "--checkpoint", ck))
    before = ck.read_bytes()
    res = run_all({
        "again": ([*args, "--checkpoint", ck], None),
        "both": ([*args, "--checkpoint", ck, "--resume", "--overwrite"], None),
        "alone": ([*args, "--overwrite"], None),
    })
    code, _, err = res["again"]
    assert code == 2 and f"--checkpoint {ck} exists: give --resume to continue from it, or --overwrite" in err
    assert ck.read_bytes() == before
    assert res["both"][0] == 2 and "give one of them" in res["both"][2]
    assert res["alone"][0] == 2 and "--overwrite goes with --checkpoint" in res["alone"][2]
    fresh = ok(cli(*args, "--checkpoint", ck, "--overwrite")).stdout
    assert fresh == ok(cli(*args)).stdout and ck.read_bytes() == before  # a fresh start, the same result


# ------------------------------------------------- the summary's error (point 12)
def test_summary_scores_real_forecasts_only_and_says_over_how_many(tmp_path):
    data = make_csv(tmp_path / "s.csv", 50, keys=("a",))
    res = run_all({
        "regression": (["run", data, "--target", "temp", "--time", "time", *SMALL], None),
        "forecast": (["run", data, "--target", "temp", "--time", "time", "--ahead", "2", "--model", "lstm",
                     *SMALL], None),
    })
    _, out, err = good(res["regression"])
    rows = rows_of(out)
    errors = [float(r["error"]) for r in rows]
    assert float(rows[0]["pred_temp"]) == 0.0  # the untrained model's first output: not a forecast
    mae = np.mean(np.abs(errors[1:]))
    assert f"MAE {mae:.6g}" in err
    assert "over 49 rows with a real forecast; 1 predicted before the model had any label left out" in err
    _, out, err = good(res["forecast"])
    rows = rows_of(out)
    errors = [float(r["error"]) for r in rows if r["error"]]
    # rows 2.. have the forecast made 2 rows earlier; the first label (row 2's value, for step 0)
    # is learned after step 1, so the forecasts of steps 0 and 1 (rows 2, 3) came before any label
    assert len(errors) == 48
    assert f"MAE {np.mean(np.abs(errors[2:])):.6g}" in err and "over 46 rows with a real forecast; 2 " in err


# ------------------------------------------------------------- progress (point 11)
def test_progress_on_a_terminal_shows_percent_and_eta(tmp_path):
    import pty

    path = tmp_path / "big.csv"
    path.write_text("x,y\n" + "".join(f"{t % 7},{t % 5}\n" for t in range(300_000)))
    master, slave = pty.openpty()
    p = subprocess.Popen([*CMD, "run", path, "--target", "y", *SMALL], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave, env=ENV)
    os.close(slave)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the process has ended
                break
            if not chunk:
                break
            seen += chunk
    finally:
        p.wait(timeout=300)
        os.close(master)
    text = seen.decode(errors="replace")
    assert p.returncode == 0, text
    assert "%  ETA " in text and "rows/s" in text, text


def test_progress_line_and_compile_note_units():
    from streamlstm.adapters._runner import Stats, progress_line
    from streamlstm.adapters.cli import _CompileNote

    line = progress_line(Stats(rows=900, scored=3, sum_abs=0.3), 100, 4.0, lambda: (500, 2000))
    assert line == " 25.0%  ETA 0:12  900 rows  200 rows/s  MAE 0.1"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    slow, quick = Tty(), Tty()
    with _CompileNote(True, after=0.05, stream=slow):
        time.sleep(0.5)
    with _CompileNote(True, after=5.0, stream=quick):
        pass
    assert slow.getvalue() == f"streamlstm: {_CompileNote.TEXT}\n" and "compiles the kernels, once" in slow.getvalue()
    assert quick.getvalue() == ""


# ---------------------------------------------------------- plot with --key (point 13)
def test_keyed_plot_draws_the_first_keys_against_time(tmp_path):
    pytest.importorskip("matplotlib")
    data = make_csv(tmp_path / "s.csv", 40, keys=("a", "b", "c", "d", "e", "f"))
    png = tmp_path / "k.png"
    _, _, err = good(run_all({"p": (["run", data, "--target", "temp", "--key", "sensor", "--time", "time",
                                     *SMALL, "--plot", png], None)})["p"])
    assert f"plot written to {png} (keys 'a', 'b', 'c', 'd': the first 4 of 6 keys)" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from streamlstm.adapters._runner import _time_axis

    assert _time_axis(["1", "2.5", ""]).tolist()[:2] == [1.0, 2.5]
    assert str(_time_axis(["2024-01-02 10:00", "2024-01-02T11:00:00Z"])[1]) == "2024-01-02T11:00:00"
    assert _time_axis(["mon", "tue"]) is None


# ---------------------------------------------------------------- info, digits (14, 15)
def test_info_leaves_out_what_does_not_apply_and_digits_is_in_the_help(tmp_path):
    data = make_csv(tmp_path / "s.csv", 20, keys=("a",))
    model = tmp_path / "m.slstm"
    ok(cli("run", data, "--target", "temp", "--features", "hum", *SMALL, "--save", model, "-q"))
    out = ok(cli("info", model)).stdout.decode()
    assert "features: hum" in out and "regression of 'temp'" in out
    names = [line.split(":")[0] for line in out.splitlines()]
    for absent in ("key", "time", "keys", "weights"):
        assert absent not in names, out
    assert not any(line.endswith((": None", ": -")) for line in out.splitlines()), out
    help_text = ok(cli("run", "--help")).stdout.decode()
    intro = help_text.split("Options:")[0]
    assert "--digits N" in intro and "-0.6799999999999997" in intro  # said before the option list
    digits = ok(cli("run", data, "--target", "temp", "--features", "hum", *SMALL, "--digits", "3", "-q")).stdout
    assert all(len(v.lstrip("-").replace(".", "").lstrip("0")) <= 3 for r in rows_of(digits)
               for v in (r["pred_temp"],) if "e" not in v)


def test_main_help_module_runs_without_numba():
    code = "import sys\nfrom streamlstm.adapters import cli\nprint('numba' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_reader_detects_the_delimiter_and_keeps_rows_of_empty_cells():
    from streamlstm.adapters._csvio import RecordReader

    r = RecordReader(io.BytesIO(b"a\tb\n1\t2\n\t\n  \n3\t\n"), delimiter=None)
    assert r.read_header() == ["a", "b"] and r.delimiter == "\t"
    assert r.next_batch(10) == ([2, 3, 5], [["1", "2"], ["", ""], ["3", ""]])  # line 4 is blank
    r = RecordReader(io.BytesIO(b'a;b\n"x;y";2\n'), delimiter=None)
    assert r.read_header() == ["a", "b"] and r.next_batch(10) == ([2], [["x;y", "2"]])
    r = RecordReader(io.BytesIO(b"a;b\n1;2\n"))  # the default stays the comma (no detection)
    assert r.read_header() == ["a;b"]
