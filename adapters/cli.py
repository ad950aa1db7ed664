"""``streamlstm``: predict and learn a CSV stream row by row from the shell.

::

    cat sensors.csv | streamlstm run --target temp --key sensor_id --save model.slstm > preds.csv
    tail -n +1 -f live.csv | streamlstm run --target load --ahead 1 --checkpoint state.slstm --resume
    streamlstm run new.csv --load model.slstm --no-learn         # inference only
    streamlstm demo                                               # River's WaterFlow series
    streamlstm info model.slstm                                   # what a saved model is

Only click and the standard library are imported at start-up; numpy, numba and the core
are imported inside the commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ._csvio import MISSING_POLICIES, BadRecord, CliError, RecordReader, Roles, Schema, column_roles, fields

__all__ = ["main"]

#: ``streamlstm.anomaly.DEFAULT_THRESHOLD`` (not imported: --help must not load numba; a test checks it)
ANOMALY_THRESHOLD = 0.5

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# name, default, click type, help  (the OnlineLSTM settings exposed as options; names, order,
# defaults and ranges are pinned to streamlstm.settings by tests/test_settings_schema.py)
_MODEL_OPTIONS: list[tuple[list[str], dict[str, Any]]] = [
    (["--hidden"], dict(default=32, show_default=True, type=click.IntRange(1), help="LSTM units per layer.")),
    (["--layers"], dict(default=1, show_default=True, type=click.IntRange(1), help="Stacked layers.")),
    (["--cell"], dict(default="lstm", show_default=True, type=click.Choice(["lstm", "rnn"]), help="Cell type.")),
    (["--bptt"], dict(default=None, type=click.IntRange(1),
                      help="Steps a gradient travels back (TBPTT k2). Default 16; with --ahead H, H+15.")),
    (["--update-every"], dict(default=1, show_default=True, type=click.IntRange(1),
                              help="An update every N labelled rows (TBPTT k1).")),
    (["--optimizer"], dict(default="adam", show_default=True, type=click.Choice(["adam", "sgd", "rmsprop"]))),
    (["--lr"], dict(default=1e-3, show_default=True, type=click.FloatRange(0), help="Learning rate.")),
    (["--momentum"], dict(default=0.9, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="SGD momentum.")),
    (["--beta1"], dict(default=0.9, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Adam beta1.")),
    (["--beta2"], dict(default=0.999, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Adam beta2.")),
    (["--rho"], dict(default=0.99, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="RMSprop decay.")),
    (["--eps"], dict(default=1e-8, show_default=True, type=click.FloatRange(0, min_open=True), help="Optimizer epsilon.")),
    (["--clip"], dict(default=1.0, show_default=True, type=click.FloatRange(0),
                      help="Clip the gradient's global norm to this (0: no clipping).")),
    (["--l2"], dict(default=0.0, show_default=True, type=click.FloatRange(0), help="L2 penalty.")),
    (["--loss"], dict(default="squared", show_default=True, type=click.Choice(["squared", "huber"]))),
    (["--huber-delta"], dict(default=1.0, show_default=True, type=click.FloatRange(0, min_open=True))),
    (["--standardize/--no-standardize"], dict(default=True, show_default=True,
                                              help="Online standardisation of the inputs.")),
    (["--standardize-target/--no-standardize-target"], dict(default=True, show_default=True,
                                                            help="Online standardisation of the target.")),
    (["--dtype"], dict(default="float64", show_default=True, type=click.Choice(["float64", "float32"]))),
    (["--seed"], dict(default=0, show_default=True, type=click.IntRange(0), help="Seed of the initial weights.")),
]
# the parameter names click gives those options ("--huber-delta" -> huber_delta)
_MODEL_NAMES = [decls[0].split("/")[0].lstrip("-").replace("-", "_") for decls, _ in _MODEL_OPTIONS]


# The settings of the forecasting engine (``--ahead H``, the default model) exposed as options:
# option -> :class:`streamlstm.Forecaster` parameter, with the engine's own defaults (a test
# checks each name and default against the Forecaster's signature; the core is not imported
# here so that --help answers at once). ``--seed`` is shared with the LSTM path.
_ENGINE_OPTIONS: list[tuple[list[str], str, dict[str, Any]]] = [
    (["--season"], "season", dict(default="auto", show_default=True, metavar="auto|none|N",
                                  help="Engine: the season in rows (of a key), 'none', or 'auto': found online "
                                       "in the recent values (said in the summary).")),
    (["--max-season"], "max_season", dict(default=288, show_default=True, type=click.IntRange(2, 1 << 20),
                                          help="Engine: the longest season that --season auto looks for.")),
    (["--lstm-expert/--no-lstm-expert"], "lstm", dict(default=True, show_default=True,
                                                      help="Engine: include the LSTM expert (on the residual of "
                                                           "the last value) among the experts.")),
    (["--lstm-hidden"], "lstm_hidden", dict(default=16, show_default=True, type=click.IntRange(1),
                                            help="Engine: units of the LSTM expert.")),
    (["--lstm-lr"], "lstm_lr", dict(default=3e-3, show_default=True, type=click.FloatRange(0, min_open=True),
                                    help="Engine: learning rate of the LSTM expert.")),
]
ENGINE_PARAMS = {decls[0].split("/")[0].lstrip("-").replace("-", "_"): param for decls, param, _ in _ENGINE_OPTIONS}


def _model_options(fn: Any) -> Any:
    for decls, kw in reversed(_MODEL_OPTIONS):
        fn = click.option(*decls, **kw)(fn)
    for decls, _param, kw in reversed(_ENGINE_OPTIONS):
        fn = click.option(*decls, **kw)(fn)
    return fn


def _echo(msg: str) -> None:
    click.echo(f"streamlstm: {msg}", err=True)


def _guard(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a command: user errors become one line on stderr and an exit code, never a traceback."""
    try:
        return fn(*args, **kwargs)
    except CliError as exc:
        _echo(str(exc))
        sys.exit(exc.code)
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        sys.exit(141)
    except KeyboardInterrupt:
        sys.exit(130)
    except MemoryError:
        _echo("out of memory")
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        persistence = sys.modules.get("streamlstm.persistence")  # loaded whenever a file was read
        if persistence is not None and isinstance(exc, persistence.FormatError):
            _echo(str(exc))  # a corrupt model or checkpoint is the user's input, not our bug
            sys.exit(2)
        if os.environ.get("STREAMLSTM_DEBUG"):
            raise
        _echo(f"internal error: {type(exc).__name__}: {exc} (set STREAMLSTM_DEBUG=1 for the traceback)")
        sys.exit(1)


@click.group(context_settings=_CONTEXT)
@click.version_option(package_name="streamlstm", prog_name="streamlstm")
def main() -> None:
    """Stateful LSTMs that predict and learn one CSV row at a time.

    \b
      streamlstm run series.csv > forecasts.csv             a time column and one value: forecast it a row ahead
      streamlstm run data.csv --target temp > preds.csv     regression: predict temp from the other columns
      streamlstm run --target load --ahead 3 < data.csv     forecasting: the load 3 rows ahead
      streamlstm demo                                       forecast River's WaterFlow series
      streamlstm info model.slstm                           describe a saved model

    `streamlstm run --help` lists every option.
    """


# ---------------------------------------------------------------------------- run
@main.command(context_settings=_CONTEXT)
@click.argument("input", default="-", metavar="[INPUT]")
@click.option("-t", "--target", metavar="COL", help="Column to predict (regression) or forecast (--ahead). Default: "
              "the only numeric column other than the key, time and --keep columns (a timestamp,value file).")
@click.option("--features", metavar="A,B,...", help="Comma-separated input columns (\"\" for none). Default: every "
              "numeric column of the first rows other than the target, key, time and --keep columns; a first column "
              "of dates or increasing integers is taken as --time. Which columns became features is said on stderr.")
@click.option("-k", "--key", metavar="COL", help="Column naming independent streams (sensor, user...): each key keeps its own "
                                  "state; keys share one set of weights unless --per-key-models.")
@click.option("--time", "time_col", metavar="COL", help="Time column: copied to the output, never an input; the "
              "plot's horizontal axis.")
@click.option("--keep", metavar="A,B,...", help="Copy these columns to the output too (to join the rows back), "
                                                "after the key and time columns.")
@click.option("-d", "--delimiter", metavar="CHAR", help="The input's field delimiter: ',', ';', 'tab' (or '\\t'), '|', "
              "any one character. Default: detected from the first line (the most frequent of , ; tab |).")
@click.option("--no-header", is_flag=True, help="The input has no header line: the columns are named c1, c2, ... "
                                               "(or by --columns).")
@click.option("--columns", metavar="A,B,...", help="With --no-header: the column names, in order.")
@click.option("--missing", type=click.Choice(list(MISSING_POLICIES)), default="impute", show_default=True,
              help="Missing cells (empty, NA, N/A, nan, null, None): 'impute' takes a missing target as no "
                   "label and a missing feature as its column's running mean (counted in the summary); "
                   "'error' makes a missing feature a bad row (an empty target is still no label).")
@click.option("--ahead", default=0, type=click.IntRange(0), metavar="H",
              help="Forecast the target H rows (of the same key) ahead, from its own history plus the "
                   "features; learn when the true value arrives. 0: regression (the default when other numeric "
                   "columns exist or --features is given; with none, the default is 1).")
@click.option("--model", "model_kind", type=click.Choice(["engine", "lstm"]), default=None,
              help="With --ahead: 'engine' (the default) is the core's forecasting engine (streamlstm.Forecaster: "
                   "simple experts, online autoregressions, an LSTM expert, online aggregation; --season...); "
                   "'lstm' is a bare LSTM on the target's history (--hidden, --lr, ... --difference). "
                   "Regression always uses the bare LSTM.")
@click.option("--difference", is_flag=True,
              help="With --ahead --model lstm: learn the change y[t+H] - y[t] and write y[t] + that change as the "
                   "forecast (often much better on level series that wander, like a random walk).")
@click.option("--interval", "interval", multiple=True, metavar="LEVEL",
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Add a calibrated prediction interval at this coverage level (repeatable): columns lo_LEVEL and "
                   "hi_LEVEL around each row's prediction (with --ahead H: its H-step forecast), per key, from the "
                   "core's online conformal calibrator (docs/calibration.md).")
@click.option("--anomaly", is_flag=True,
              help=f"Add a column anomaly_score in [0, 1] per row (per key): the calibrated evidence that the row's "
                   f"value is unusual given its forecast; one threshold serves every stream: "
                   f"score >= {ANOMALY_THRESHOLD} (a tail probability of 1e-5) is an alert.")
@click.option("--per-key-models", is_flag=True, help="Give every key its own weights (memory grows per key).")
@click.option("--no-learn", is_flag=True, help="Inference only: states advance, weights stay.")
@click.option("--load", type=click.Path(dir_okay=False), help="Start from a model saved with --save/--checkpoint "
                                                               "(or OnlineLSTM.save); its settings and columns apply.")
@click.option("--fresh-state", is_flag=True, help="With --load: start every key's recurrent state at zero.")
@click.option("--save", type=click.Path(dir_okay=False), help="Save the model(s) here at the end of the input.")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Keep a resumable checkpoint here: at the end, on SIGINT/SIGTERM, at a bad row, and per "
                   "--checkpoint-every/--checkpoint-seconds. Written atomically.")
@click.option("--checkpoint-every", type=click.IntRange(1), metavar="N",
              help="Checkpoint every N input rows (a keyed job learning with shared weights: at the first end "
                   "of a block after each N).")
@click.option("--checkpoint-seconds", type=click.FloatRange(0, min_open=True), metavar="S",
              help="Checkpoint at least every S seconds (checked after each row or block).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --checkpoint file with a fresh start "
                                                "(without it, an existing checkpoint needs --resume).")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint if it exists: the same input's rows "
                                             "already consumed are skipped (a fresh start otherwise). After a "
                                             "kill -9, rows answered after the last checkpoint are answered again.")
@click.option("--on-bad-row", type=click.Choice(["error", "skip", "warn"]), default="error", show_default=True,
              help="A row that does not parse: stop (exit 2), skip it silently, or skip it with a warning.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True,
              help="CSV copies kept cells byte for byte; JSON lines are UTF-8, a byte that is not becomes \\xNN.")
@click.option("--digits", type=click.IntRange(1, 17), metavar="N", help="Round the numbers written to N significant "
              "digits (e.g. --digits 6 writes -0.68, not -0.6799999999999997). Default: the shortest text that "
              "reads back as exactly the same number.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write actual vs predicted (and error) to this "
                                                              "PNG at the end (needs matplotlib).")
@click.option("--block-size", default=4096, show_default=True, type=click.IntRange(1), metavar="N",
              help="Most rows per core call; a pipe is read as lines arrive whatever this is. With --key and "
                   "shared weights, learning: the rows of each learning step (one optimizer step per block, "
                   "blocks counted from the first row, a pipe waits for whole blocks; 1: learn per row).")
@click.option("--reader-thread/--no-reader-thread", default=True, show_default=True,
              help="Read and parse a regular file's next blocks on a second thread while the model works.")
@click.option("-q", "--quiet", is_flag=True, help="No progress line and no summary on stderr.")
@_model_options
@click.pass_context
def run(ctx: click.Context, **o: Any) -> None:
    """Predict (and learn) every row of a CSV stream; write one output row per input row.

    INPUT is a CSV file with a header, or - (default) for stdin. From a pipe, every row's
    output is written and flushed before the next line is read (works behind `tail -f`;
    with --key and shared weights, learning: every block's, see --block-size);
    a regular file is processed in blocks, with the same results.

    \b
    Output columns (CSV, or JSON lines with --format jsonl):
      regression:   [key] [time] TARGET  pred_TARGET  error  [lo_L hi_L ...] [anomaly_score]
      forecasting:  [key] [time] TARGET  forecast_TARGET_t  error  forecast_TARGET_t+H  [lo_L hi_L ...]
                    [anomaly_score]
    error = actual - predicted for that row (empty when the target is empty or unknown);
    lo_L/hi_L (--interval L) bound the prediction written on the row (forecasting: the one
    for t+H); anomaly_score (--anomaly) scores the row's value against its forecast, and
    >= 0.5 is an alert.
    forecast_TARGET_t is the forecast made H rows earlier for this row. Forecasts come from
    the core's forecasting engine (streamlstm.Forecaster; --model lstm: a bare LSTM); the
    summary says which season it found. An empty target
    cell means "no label": the state advances, nothing is learned. Numbers are written
    exactly (e.g. -0.6799999999999997); --digits N rounds them to N significant digits.

    \b
    Input: a delimiter (, ; tab |) detected from the first line, or --delimiter;
    --no-header [--columns A,B,...] for a file without a header line; missing cells
    (empty, NA, nan, null) per --missing. The full reference: docs/cli.md.

    \b
    Examples:
      streamlstm run data.csv --target temp --key sensor --save temp.slstm > preds.csv
      streamlstm run data.csv --load temp.slstm --no-learn --digits 6 > again.csv
      streamlstm run data.csv --target temp --keep sensor --missing error -q > kept.csv
      streamlstm run --no-header --columns t,x,y --delimiter ';' --target y < nohead.csv
      streamlstm run data.csv --target temp --key sensor --ahead 1 --interval 0.9 --anomaly > scored.csv

    Exit status: 0 done, 2 bad input or usage, 1 other failure, 128+N stopped by signal N.
    """
    explicit = {name for name in o if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    _guard(_run_locked, o, explicit)


def _check_paths(o: dict[str, Any]) -> None:
    """The output paths and checkpoint options, checked before any work (and before the
    checkpoint's lock is taken, so that a wrong option is named as such)."""
    if o.get("overwrite") and not o.get("checkpoint"):
        raise CliError("--overwrite goes with --checkpoint PATH")
    if o.get("overwrite") and o.get("resume"):
        raise CliError("--resume continues from the checkpoint and --overwrite replaces it: give one of them")
    if o.get("columns") is not None and not o.get("no_header"):
        raise CliError("--columns names the columns of a file without a header line: add --no-header")
    if o.get("checkpoint") and os.path.exists(o["checkpoint"]) and not o.get("resume") and not o.get("overwrite"):
        raise CliError(f"--checkpoint {o['checkpoint']} exists: give --resume to continue from it, or --overwrite "
                       "to start afresh and replace it")
    for flag in ("save", "checkpoint", "plot"):
        if o.get(flag):
            _check_writable(o[flag], "--" + flag)


def _run_locked(o: dict[str, Any], explicit: set[str]) -> Any:
    """`_run`, holding the checkpoint's lock: two runs must not write one checkpoint."""
    from ._runner import CheckpointLock, check_file_option

    check_file_option("--checkpoint", o.get("checkpoint"))
    check_file_option("--save", o.get("save"))
    _check_paths(o)
    if not o.get("checkpoint"):
        return _run(o, explicit)
    with CheckpointLock(o["checkpoint"]):
        return _run(o, explicit)


def _names(text: str | None) -> list[str] | None:
    """A comma-separated list of column names (None when the option is not given; "" is [])."""
    if text is None:
        return None
    return [f.strip() for f in text.split(",") if f.strip()]


def _job_from_options(o: dict[str, Any]) -> dict[str, Any]:
    return {"target": o.get("target"), "features": _names(o.get("features")), "key": o.get("key"),
            "time": o.get("time_col"), "ahead": int(o.get("ahead") or 0),
            "per_key_models": bool(o.get("per_key_models")), "difference": bool(o.get("difference")),
            "keep": _names(o.get("keep")) or [], "missing": o.get("missing") or "impute",
            "model": _model_kind(o), "interval": _levels(o.get("interval")), "anomaly": bool(o.get("anomaly"))}


def _levels(given: Any) -> list[float]:
    """The --interval levels in the order given (click has checked each is in (0, 1))."""
    levels: list[float] = []
    for v in given or ():
        if not 0.0 < v < 1.0:  # NaN passes click's range check
            raise CliError(f"Invalid value for '--interval': {v} is not in the range 0<x<1.")
        if float(v) in levels:
            raise CliError(f"--interval {v} is given twice")
        levels.append(float(v))
    return levels


def _model_kind(o: dict[str, Any]) -> str:
    """'engine' (the forecasting engine: the default of --ahead) or 'lstm' (the bare LSTM)."""
    kind = o.get("model_kind")
    if not o.get("ahead"):
        if kind == "engine":
            raise CliError("--model engine forecasts (--ahead H); regression uses the bare LSTM")
        return "lstm"
    return kind or "engine"


def _season(text: Any) -> int | str | None:
    """The --season option: 'auto', None ('none') or a number of rows >= 2."""
    if text is None or text == "auto":
        return "auto"
    if str(text).lower() == "none":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 2:
        raise CliError(f"--season {text!r}: expected 'auto', 'none' or a whole number of rows >= 2")
    return n


def _engine_params(o: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """:class:`Forecaster` keyword arguments from the options (horizon and features come from the job).
    The bare LSTM's own options are refused: they would silently do nothing."""
    lstm_only = [n for n in _MODEL_NAMES if n in explicit and n != "seed"]
    lstm_only += [n for n in ("difference", "per_key_models") if o.get(n)]
    if lstm_only:
        names = ", ".join("--" + n.replace("_", "-") for n in lstm_only)
        raise CliError(f"{names}: option(s) of the bare LSTM (--model lstm); the forecasting engine (the default "
                       "with --ahead) takes --season, --max-season, --no-lstm-expert, --lstm-hidden, --lstm-lr, "
                       "--seed (it keeps each key's values and experts and pools its models over the keys)")
    params = {param: o.get(name, default) for name, (param, default) in _engine_defaults().items()}
    params["season"] = _season(params["season"])
    params["seed"] = o.get("seed", 0)
    return params


def _engine_defaults() -> dict[str, tuple[str, Any]]:
    """Option name -> (Forecaster parameter, the option's default)."""
    return {name: (param, kw["default"]) for (decls, param, kw), name in zip(_ENGINE_OPTIONS, ENGINE_PARAMS)}


def _delimiter(text: str | None) -> str | None:
    """The --delimiter option as one character (None: detect)."""
    if text is None:
        return None
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
    d = named.get(text.lower(), text)
    if len(d) != 1 or d in ('"', "\n", "\r"):
        raise CliError(f"--delimiter {text!r}: expected one character such as ',', ';', 'tab' or '|' "
                       "(not a quote or a line break)")
    return d


def _check_writable(path: str, flag: str) -> None:
    """Refuse, before the first row, an output path that could not be written at the end."""
    import tempfile

    if os.path.isdir(path):
        raise CliError(f"{flag} {path}: is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"{flag} {path}: the directory {folder} does not exist (create it first: nothing "
                       "could be saved there at the end)")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".streamlstm-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CliError(f"{flag} {path}: cannot write in {folder} ({exc.strerror or exc})") from None


class _CompileNote:
    """On a terminal, one line when start-up work (numba compiling the kernels on a cold
    cache) takes longer than ``after`` seconds, so that a first run is not silent."""

    # shown after a delay, so it also appears on a slow warm start: worded to be true for both
    TEXT = "starting: a first run compiles the kernels, once (20-30 s); later runs start in about a second..."

    def __init__(self, enabled: bool, after: float = 2.0, stream: Any = None):
        self.enabled, self.after, self.stream = enabled, after, stream
        self.shown = False
        self._timer: Any = None

    def _show(self) -> None:
        self.shown = True
        stream = self.stream or sys.stderr
        stream.write(f"streamlstm: {self.TEXT}\n")
        stream.flush()

    def __enter__(self) -> "_CompileNote":
        if self.enabled:
            import threading

            self._timer = threading.Timer(self.after, self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _params_from_options(o: dict[str, Any], ahead: int) -> dict[str, Any]:
    bptt = o.get("bptt")
    if bptt is None:
        bptt = 16 if not ahead else ahead + 15
    elif ahead and bptt < ahead:
        raise CliError(f"--bptt {bptt} is shorter than --ahead {ahead}: the true value must reach back to the "
                       "step that made its forecast (use --bptt >= H; default H+15)")
    return {"hidden": o["hidden"], "layers": o["layers"], "cell": o["cell"], "bptt": bptt,
            "update_every": o["update_every"], "optimizer": o["optimizer"], "lr": o["lr"],
            "momentum": o["momentum"], "betas": [o["beta1"], o["beta2"]], "rho": o["rho"], "eps": o["eps"],
            "clip": o["clip"] if o["clip"] > 0 else None, "l2": o["l2"], "loss": o["loss"],
            "huber_delta": o["huber_delta"], "standardize_inputs": o["standardize"],
            "standardize_targets": o["standardize_target"], "dtype": o["dtype"], "seed": o["seed"]}


def _read_saved(path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    from streamlstm import persistence

    try:
        kind, meta, arrays = persistence.read_file(path)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory") from None
    except PermissionError:
        raise CliError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None
    except persistence.FormatError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, LookupError, TypeError, OverflowError, RecursionError) as exc:  # a header the reader trips on
        raise CliError(f"{path}: corrupt streamlstm file: {type(exc).__name__}: {exc}") from None
    if kind not in ("streamlstm.cli", "OnlineLSTM"):
        raise CliError(f"{path} holds a {kind!r}, not a streamlstm model")
    if kind == "streamlstm.cli":
        from ._runner import check_checkpoint

        check_checkpoint(meta, arrays, path)
        problem = _checkpoint_problem(meta, arrays)
        if problem:
            raise CliError(f"{path}: corrupt checkpoint: {problem}")
        if "imputer" in meta:  # `info` sums it; a run restores it
            from ._runner import Imputer

            try:
                Imputer.from_meta(meta["imputer"], len(meta["job"]["features"]))
            except CliError as exc:
                raise CliError(f"{path}: {exc}") from None
    return kind, meta, arrays


def _checkpoint_problem(meta: dict[str, Any], arrays: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's job, keys and forecast arrays, before any is used."""
    job = meta.get("job")
    if not isinstance(job, dict):
        return "'job' must be an object"
    kinds = {"target": (str,), "features": (list,), "key": (str, type(None)), "time": (str, type(None)),
             "ahead": (int,), "per_key_models": (bool,), "difference": (bool,)}
    for name, types in kinds.items():
        if type(job.get(name)) not in types:
            return f"job field {name!r} is {job.get(name)!r}"
    if not all(isinstance(f, str) for f in job["features"]) or not 0 <= job["ahead"] <= 10 ** 6:
        return f"job fields 'features' {job['features']!r} / 'ahead' {job['ahead']!r} out of range"
    if not isinstance(meta.get("params"), dict) or not isinstance(meta.get("keys"), list):
        return "'params' must be an object and 'keys' a list"
    if job.get("model") == "engine":  # the forecasting engine's own bytes are checked by its loader
        blob, ring = arrays.get("forecaster"), arrays.get("ring")
        if blob is None or blob.dtype.kind != "u" or blob.ndim != 1:
            return "array 'forecaster' (the engine's bytes) is missing"
        if ring is None or ring.dtype.kind != "f" or ring.shape != (len(meta["keys"]), job["ahead"]):
            return f"array 'ring' is {None if ring is None else (str(ring.dtype), ring.shape)}, expected float " \
                   f"({len(meta['keys'])}, {job['ahead']})"
        return None
    from streamlstm.settings import ModelSettings

    try:  # the settings new keys' models are built with
        ModelSettings.from_config({"n_inputs": len(job["features"]) + (1 if job["ahead"] else 0), **meta["params"]})
    except (ValueError, TypeError) as exc:
        return f"setting {exc}"
    n = len(meta["keys"])
    if job["ahead"]:
        shapes = {"last": (n,), "ring": (n, job["ahead"])}
        if job["difference"]:
            shapes["ring_v"] = (n, job["ahead"])
        for name, shape in shapes.items():
            a = arrays.get(name)
            if a is None or a.shape != shape or a.dtype.kind != "f":
                return f"array {name!r} is {None if a is None else (str(a.dtype), a.shape)}, expected float {shape}"
    if job["per_key_models"] and job["key"] is not None:
        sizes, blob = arrays.get("model_sizes"), arrays.get("models")
        if sizes is None or blob is None or sizes.shape != (n,) or sizes.dtype.kind != "i" \
                or (sizes < 0).any() or int(sizes.sum()) != blob.size:
            return "arrays 'model_sizes' and 'models' do not match the keys"
    elif arrays.get("model") is None or arrays["model"].dtype.kind != "u":
        return "array 'model' (the model's bytes) is missing"
    return None


def _open_input(path: Any) -> Any:
    """A file descriptor or binary file object for the reader (stdin for ``-``)."""
    if not isinstance(path, str):  # in-process callers may hand over a binary file object
        return path
    if path == "-":
        try:
            return sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):  # stdin replaced (click's test runner)
            return sys.stdin.buffer
    try:
        return open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise CliError(f"input file {path!r} not found") from None
    except IsADirectoryError:
        raise CliError(f"input {path!r} is a directory, not a CSV file") from None
    except PermissionError:
        raise CliError(f"input file {path!r}: permission denied") from None


def _position(source: Any) -> Any:
    """For the progress line: (bytes read since now, bytes left from now) of a regular file."""
    fd = source if isinstance(source, int) else source.fileno()
    start = os.lseek(fd, 0, os.SEEK_CUR)
    size = os.fstat(fd).st_size

    def position() -> tuple[int, int]:
        return os.lseek(fd, 0, os.SEEK_CUR) - start, size - start

    return position


def _require_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise CliError("--plot needs matplotlib, which is not installed: pip install 'streamlstm[plot]' "
                       "(or: pip install matplotlib)")


def _describe(job: dict[str, Any], learn: bool, roles: Roles | None = None, unused: list[str] | None = None,
              inferred: list[str] | None = None) -> str:
    """The job in one line on stderr: the task, which columns are features (and, when they
    were chosen here, the time column found and the columns left out; the options the
    columns settled, ``inferred``)."""
    feats = job["features"]
    shown = ", ".join(feats[:12]) + (", ..." if len(feats) > 12 else "")
    if roles is not None:
        shown += "; --features A,B,... to choose"
    what = (f"forecasting {job['target']!r} {job['ahead']} row(s) ahead from its history"
            + (f" and {len(feats)} feature(s) ({shown})" if feats else "")
            + (" (learning the change, --difference)" if job.get("difference") else "")
            + ("; the forecasting engine (--model lstm: a bare LSTM)" if job.get("model") == "engine"
               else "; a bare LSTM (--model lstm)")
            if job["ahead"] else f"regression of {job['target']!r} on {len(feats)} feature(s) ({shown})")
    if job["key"] and job.get("model") == "engine":
        what += f"; key {job['key']!r} (values and experts per key, models pooled over the keys)"
    elif job["key"]:
        what += f"; key {job['key']!r} ({'own weights per key' if job['per_key_models'] else 'shared weights'})"
    if unused:
        what += (f"; numeric columns not used as features by the engine: {', '.join(unused[:12])}"
                 f"{', ...' if len(unused) > 12 else ''} (--features A,B,... to use them)")
    if roles is not None and roles.time:
        what += f"; time column {roles.time!r} ({roles.time_reason}; --time COL to name another)"
    if roles is not None and (roles.text or roles.empty):
        left = [repr(c) for c in roles.text] + [f"{c!r} (empty)" for c in roles.empty]
        what += f"; not features: {', '.join(left[:12])}{', ...' if len(left) > 12 else ''} (--keep copies them out)"
    if inferred:
        what += f"; {'; '.join(inferred)}"
    return what + ("; learning" if learn else "; inference only")


def _open_reader(o: dict[str, Any], delimiter: str | None) -> tuple[RecordReader, list[str], Any]:
    """The input's reader, its column names and the source it reads."""
    source = _open_input(o.get("input", "-"))
    if source == 0 and os.isatty(0) and not o.get("quiet"):
        _echo("reading CSV from the terminal (a header line first; Ctrl-D ends): give a file or pipe one in")
    reader = RecordReader(source, delimiter=delimiter)
    reader.plain_mode = reader.regular  # decode only what is needed before the schema is known
    return reader, _header(reader, o), source


def _infer_job(o: dict[str, Any], explicit: set[str], reader: RecordReader, header: list[str]) -> list[str]:
    """Settle, in ``o``, what the columns leave one reading of, and say so (for stderr).

    * No ``--target``: the only numeric column other than the key, time and kept columns is
      the target (a ``timestamp,value`` file); with several, or none, it must be named.
    * No ``--ahead`` (and no ``--features``): when no numeric column is left besides the
      target, there is nothing to regress it on, so the target is forecast one row ahead
      from its own history (``--ahead 1``, the forecasting engine).
    """
    keep = _names(o.get("keep")) or []
    base = {c for c in (o.get("key"), o.get("time_col"), *keep) if c}
    peeked = [fields(r) for _, r in reader.peek_many(20) if not isinstance(r, BadRecord)]

    candidates = column_roles(header, peeked, base, find_time=o.get("time_col") is None,
                              keyed=o.get("key") is not None).features
    notes = []
    if not o.get("target"):
        if len(candidates) != 1:
            named = ", ".join(candidates[:12]) + (", ..." if len(candidates) > 12 else "")
            raise CliError("--target COL is required (the column to predict): "
                           + (f"the numeric columns are {named}" if candidates else
                              f"no column of the first rows is numeric (columns: {', '.join(header[:12])})"))
        o["target"] = candidates[0]
        notes.append(f"target {o['target']!r} (the only numeric column; --target COL to name another)")
    if not o.get("ahead") and "ahead" not in explicit and o.get("features") is None and o["target"] in header \
            and not [c for c in candidates if c != o["target"]]:
        o["ahead"] = 1
        notes.append("1 row ahead (no column to regress the target on; --ahead H for another horizon)")
    return notes


def _engine(o: dict[str, Any], job: dict[str, Any], params: dict[str, Any] | None, learn: bool, saved: Any,
            saved_path: str | None, resuming: bool, header: list[str], reader: RecordReader) -> tuple[Any, Any, Any]:
    """The job's engine (new, loaded or resumed, then past the consumed rows), its stats and
    the fingerprint of the rows consumed so far."""
    from . import _runner as R

    stats = R.Stats()
    fingerprint = R.InputFingerprint()
    if saved is not None and saved[0] == "streamlstm.cli":
        kind, meta, arrays = saved
        try:
            if meta["job"].get("model") == "engine":
                from ._forecasting import ForecastEngine

                engine: Any = ForecastEngine.restore(meta, arrays, learn, str(saved_path))
            else:
                engine = R.Engine.restore(meta, arrays, learn, str(saved_path))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
            raise CliError(f"{saved_path}: corrupt checkpoint ({type(exc).__name__}: {exc})") from None
        if resuming:
            if meta.get("header") != header:
                raise CliError(f"the input's header differs from the one {saved_path} was made on: "
                               "--resume needs the same input")
            stats = R.Stats.from_meta(meta.get("stats", {}))
            want = int(meta.get("consumed", 0))
            got = reader.skip(want, fingerprint.add)
            if got < want:
                raise CliError(f"the input has {got} rows but {saved_path} has consumed {want}: "
                               "--resume needs the same input")
            if meta.get("input_sha256", fingerprint.hexdigest()) != fingerprint.hexdigest():
                raise CliError(f"the input's first {want:,} rows differ from the {want:,} that {saved_path} "
                               "consumed: --resume needs the same input (it skips the rows consumed)")
            if not o.get("quiet"):
                _echo(f"resuming from {saved_path} after {want:,} input rows")
        else:
            engine.learned = 0
        if not resuming and o.get("fresh_state"):
            engine.reset_states()
    else:
        template = None
        if saved is not None:
            from streamlstm import OnlineLSTM

            assert saved_path is not None
            try:
                template = OnlineLSTM.load(saved_path)
            except (ValueError, OSError) as exc:  # FormatError is a ValueError
                raise CliError(f"{saved_path}: {exc}") from None
            if o.get("fresh_state"):
                template.reset_state()
            params = template.get_params()
            params.pop("n_inputs", None)
        assert params is not None  # made from the options when there is no saved job
        if job["model"] == "engine":
            from ._forecasting import ForecastEngine

            engine = ForecastEngine(job, params, learn)
        else:
            engine = R.Engine(job, params, learn, template=template)
    if not learn and saved is None and not o.get("quiet"):
        _echo("warning: --no-learn without --load predicts with an untrained model")
    return engine, stats, fingerprint


def _keyed_block_size(job: dict[str, Any], o: dict[str, Any], explicit: bool, resuming: bool,
                      saved_path: str | None) -> None:
    """Keys with shared weights learn one block of rows per call (one optimizer step), so
    the block size is part of the job: a checkpoint keeps it and --resume goes on with it."""
    given = o.get("block_size", 4096)
    saved = job.get("block_size")
    if resuming and saved is not None and explicit and given != saved:
        raise CliError(f"--block-size {given} differs from {saved_path}, which was made with --block-size {saved}: "
                       "in a keyed job with shared weights it sets the rows of each learning step")
    if saved is None or (explicit and not resuming):
        job["block_size"] = given


def _header(reader: RecordReader, o: dict[str, Any]) -> list[str]:
    """The column names: the first line, or with --no-header c1..cn / --columns."""
    if not o.get("no_header"):
        return reader.read_header()
    first = reader.peek_many(1)
    if not first:
        raise CliError("the input is empty: --no-header expects rows of data")
    line, rec = first[0]
    if isinstance(rec, BadRecord):
        raise CliError(f"line {line}: not valid CSV: {rec.message}")
    n = len(fields(rec))
    names = _names(o.get("columns"))
    if names is None:
        return [f"c{j + 1}" for j in range(n)]
    if len(names) != n:
        raise CliError(f"--columns gives {len(names)} names, and the first line has {n} fields")
    return names


def _run(o: dict[str, Any], explicit: set[str], stream: Any = None, collect: bool = False) -> Any:
    """The `run` command; returns the outcome (``demo`` calls it too)."""
    if o.get("resume") and not o.get("checkpoint"):
        raise CliError("--resume needs --checkpoint PATH (the checkpoint to resume from)")
    if (o.get("checkpoint_every") or o.get("checkpoint_seconds")) and not o.get("checkpoint"):
        raise CliError("--checkpoint-every/--checkpoint-seconds need --checkpoint PATH")
    if o.get("difference") and not o.get("ahead"):
        raise CliError("--difference goes with --ahead H (forecasting)")
    if o.get("fresh_state") and not o.get("load"):
        raise CliError("--fresh-state goes with --load")
    _check_paths(o)
    if o.get("plot"):
        _require_matplotlib()
    delimiter = _delimiter(o.get("delimiter"))
    learn = not o.get("no_learn")

    # a saved model or checkpoint: its job and settings apply
    saved = None
    saved_path = None
    resuming = False
    if o.get("resume") and os.path.exists(o["checkpoint"]):
        saved, saved_path, resuming = _read_saved(o["checkpoint"]), o["checkpoint"], True
        if saved[0] != "streamlstm.cli":
            raise CliError(f"{o['checkpoint']} is a bare model, not a checkpoint of `streamlstm run`")
    elif o.get("load"):
        saved, saved_path = _read_saved(o["load"]), o["load"]
    # a new job with no --target, or with no feature columns and no --ahead: the columns may
    # leave one reading, read from the header and first rows before the job is settled
    opened = None
    inferred: list[str] = []
    if saved is None and (not o.get("target") or (not o.get("ahead") and "ahead" not in explicit
                                                  and o.get("features") is None)):
        opened = _open_reader(o, delimiter)
        inferred = _infer_job(o, explicit, opened[0], opened[1])
    job = _job_from_options(o)
    if saved is not None and saved[0] == "streamlstm.cli":
        old = saved[1]["job"]
        flags = {"target": "--target", "features": "--features", "key": "--key", "time": "--time",
                 "ahead": "--ahead", "per_key_models": "--per-key-models", "difference": "--difference",
                 "model": "--model", "interval": "--interval", "anomaly": "--anomaly"}
        opt_names = {"target": "target", "features": "features", "key": "key", "time": "time_col",
                     "ahead": "ahead", "per_key_models": "per_key_models", "difference": "difference",
                     "keep": "keep", "missing": "missing", "model": "model_kind", "interval": "interval",
                     "anomaly": "anomaly"}
        flags.update(keep="--keep", missing="--missing")
        # files from before these options
        defaults = {"keep": [], "missing": "impute", "model": "lstm", "interval": [], "anomaly": False}
        if not resuming:  # a loaded model may run on a file whose time and kept columns are named otherwise
            for name in ("time", "keep", "missing"):
                flags.pop(name)
        for name, flag in flags.items():
            was = old.get(name, defaults.get(name))
            if opt_names[name] in explicit and job[name] != was:
                raise CliError(f"{flag} {job[name]!r} differs from {saved_path}, which was made with "
                               f"{flag} {was!r}")
        if "time_col" not in explicit:
            job["time"] = old.get("time")
        if resuming:
            job = {**defaults, **old}
        else:
            job = {**defaults, **old, "time": job["time"], "keep": job["keep"], "missing": job["missing"]}
    if saved is not None and saved[0] == "OnlineLSTM":  # a bare model: the LSTM path
        if job["model"] == "engine" and "model_kind" in explicit:
            raise CliError(f"--model engine: {saved_path} is a bare OnlineLSTM; load it with --model lstm")
        job["model"] = "lstm"
    if saved is not None:
        ignored = [n for n in [*_MODEL_NAMES, *ENGINE_PARAMS] if n in explicit]
        if ignored:
            _echo(f"ignoring {', '.join('--' + n.replace('_', '-') for n in ignored)}: "
                  f"the model's settings come from {saved_path}")
    if not job["target"]:
        raise CliError("--target COL is required (the column to predict)")
    engine_job = job["model"] == "engine"
    if engine_job and not learn:
        from ._forecasting import NO_LEARN

        raise CliError(NO_LEARN)
    if engine_job and o.get("fresh_state"):
        raise CliError("--fresh-state goes with --model lstm: the forecasting engine's state is its keys' values")
    if not engine_job and saved is None:
        given = [n for n in ENGINE_PARAMS if n in explicit]
        if given:
            raise CliError(f"{', '.join('--' + n.replace('_', '-') for n in given)}: option(s) of the forecasting "
                           "engine (--ahead H without --model lstm)")
    if saved is not None and saved[0] != "OnlineLSTM":
        params = None
    elif engine_job:
        params = _engine_params(o, explicit)
    else:
        params = _params_from_options(o, job["ahead"])

    reader, header, source = opened or _open_reader(o, delimiter)
    roles = None
    if job["features"] is None:
        exclude = {c for c in (job["target"], job["key"], job["time"], *job["keep"]) if c}
        peeked = [fields(r) for _, r in reader.peek_many(20) if not isinstance(r, BadRecord)]
        roles = column_roles(header, peeked, exclude, find_time=job["time"] is None, keyed=job["key"] is not None)
        job["features"] = roles.features
        job["time"] = job["time"] or roles.time
    unused: list[str] = []
    if roles is not None and job["model"] == "engine":
        # The engine forecasts from the target's history unless features are named: the numeric
        # columns offered by default made its forecasts worse on all three real series that have
        # some (bench/bench_cli_forecast.py), where its own experts need no columns to be chosen.
        unused, roles.features, job["features"] = roles.features, [], []
    schema = Schema(header, job["target"], job["features"], job["key"], job["time"],
                    target_optional=not learn and not job["ahead"], keep=job["keep"], missing=job["missing"],
                    delimiter=reader.delimiter or ",")
    if reader.regular and reader.delimiter == ",":  # large blocks: parse and print numbers in compiled code
        schema.enable_compiled()
    reader.plain_mode = schema.compiled
    if not job["features"] and not job["ahead"]:
        raise CliError("no numeric feature columns besides the target: give --features, or --ahead H to "
                       "forecast the target from its own history")

    # the core (numba) from here on; a cold numba cache compiles for a while: say so on a terminal
    with _CompileNote(not o.get("quiet") and stream is None and sys.stderr.isatty()):
        engine, stats, fingerprint = _engine(o, job, params, learn, saved, saved_path, resuming, header, reader)
        if getattr(engine, "store", None) is not None and not job["ahead"]:
            _keyed_block_size(engine.job, o, "block_size" in explicit, resuming, saved_path)
        if not o.get("quiet"):
            _echo(_describe(job, learn, roles, unused, inferred))
        engine.warm_up()  # start-up work (loading compiled code), not the first rows
        if schema.compiled:
            from ._fastcsv import warm_up

            warm_up()
    from . import _runner as R

    out_stream = stream
    if out_stream is None:
        try:
            sys.stdout.reconfigure(encoding="utf-8", errors="surrogateescape", newline="\n")  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass
        out_stream = sys.stdout
    from ._uncertainty import column_names

    writer = R.Writer(out_stream, o.get("fmt", "csv"), schema, job["ahead"], o.get("digits"),
                      extra=column_names(job.get("interval") or [], bool(job.get("anomaly"))))
    if not resuming:
        writer.header()
    opts = R.RunOptions(
        on_bad_row=o.get("on_bad_row", "error"), block_size=o.get("block_size", 4096),
        checkpoint=o.get("checkpoint"), checkpoint_every=o.get("checkpoint_every"),
        checkpoint_seconds=o.get("checkpoint_seconds"), save=o.get("save"),
        progress=not o.get("quiet") and stream is None and sys.stderr.isatty(),
        collect=collect or bool(o.get("plot")), flush_each_batch=not reader.regular, header_meta=header,
        prefetch=o.get("reader_thread", True), position=_position(source) if reader.regular else None,
        fingerprint=fingerprint, resumed=resuming)
    outcome = R.run_job(reader, schema, engine, writer, opts, stats, _echo)
    if not o.get("quiet"):
        _echo(R.summary(outcome))
        if hasattr(engine, "season_line"):
            _echo(engine.season_line())
    if o.get("plot") and outcome.actual:
        import numpy as np

        actual = np.concatenate(outcome.actual)
        predicted = np.concatenate(outcome.predicted)
        label = f"forecast made {job['ahead']} rows earlier" if job["ahead"] else "prediction"
        keys = [k for part in outcome.keys for k in part] if outcome.keys else None
        times = [t for part in outcome.times for t in part] if outcome.times else None
        drawn = R.plot(o["plot"], actual, predicted, f"{job['target']}: actual vs {label}", label, keys=keys,
                       times=times, time_name=job["time"] or "time")
        if not o.get("quiet"):
            _echo(f"plot written to {o['plot']}" + (f" ({drawn})" if drawn else ""))
    if outcome.bad_row is not None:
        _echo(outcome.bad_row)
        saved_note = f"; {o['checkpoint']} holds the rows before it" if o.get("checkpoint") else ""
        raise CliError(f"stopped at this bad row (--on-bad-row skip or warn goes past bad rows){saved_note}", 2)
    if outcome.stopped_by is not None:
        sys.exit(128 + outcome.stopped_by)
    return outcome


# --------------------------------------------------------------------------- info
@main.command(context_settings=_CONTEXT)
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(path: str, as_json: bool) -> None:
    """Describe a model or checkpoint saved by `streamlstm run` (or OnlineLSTM.save)."""
    _guard(_info, path, as_json)


def _info(path: str, as_json: bool) -> None:
    import json

    kind, meta, arrays = _read_saved(path)
    from streamlstm import OnlineLSTM

    d: dict[str, Any] = {"file": path, "bytes": os.path.getsize(path)}
    if kind == "OnlineLSTM":
        model = OnlineLSTM.load(path)
        d.update({"kind": "bare OnlineLSTM (OnlineLSTM.save)", "settings": model.get_params(),
                  "steps": model.n_steps, "updates": model.n_updates})
    else:
        job = meta["job"]
        d["kind"] = "streamlstm run " + ("checkpoint/model")
        d["task"] = (f"forecast {job['target']!r} {job['ahead']} row(s) ahead" if job["ahead"]
                     else f"regression of {job['target']!r}")
        # what does not apply to this job (no key, no time column...) is left out
        if job["features"]:
            d["features"] = job["features"]
        for name in ("key", "time"):
            if job.get(name):
                d[name] = job[name]
        if job.get("keep"):
            d["keep"] = job["keep"]
        if job["key"]:
            if job.get("model") != "engine":
                d["weights"] = "one set per key" if job.get("per_key_models") else "shared"
            if job.get("block_size"):
                d["block_size"] = f"{job['block_size']} rows per learning block"
            d["keys"] = len(meta["keys"])
        d["missing"] = job.get("missing", "impute")
        if job.get("interval"):
            d["intervals"] = [f"{v:g}" for v in job["interval"]]
        if job.get("anomaly"):
            d["anomaly_score"] = f"written per row (alert at >= {ANOMALY_THRESHOLD})"
        if job.get("model") == "engine":
            from ._forecasting import describe

            d["model"] = "forecasting engine (streamlstm.Forecaster)"
            d.update(describe(meta, arrays))
        else:
            d["settings"] = {"n_inputs": len(job["features"]) + (1 if job["ahead"] else 0), **meta["params"]}
        if "model" in arrays:
            model = OnlineLSTM.from_bytes(arrays["model"].tobytes())
            d["steps"], d["updates"] = model.n_steps, model.n_updates
        elif "model_sizes" in arrays:
            sizes = arrays["model_sizes"].tolist()
            blob = arrays["models"].tobytes()
            steps = updates = pos = 0
            for s in sizes:
                m = OnlineLSTM.from_bytes(blob[pos:pos + s])
                steps, updates, pos = steps + m.n_steps, updates + m.n_updates, pos + s
            d["steps"], d["updates"] = steps, updates
        d["input_rows_consumed"] = meta.get("consumed", 0)
        st = meta.get("stats", {})
        if st.get("scored"):
            d["mae"] = st["sum_abs"] / st["scored"]
            d["rmse"] = (st["sum_sq"] / st["scored"]) ** 0.5
            d["scored_rows"] = st["scored"]
        if meta.get("imputer") and any(meta["imputer"]["filled"]):
            d["imputed_values"] = sum(meta["imputer"]["filled"])
        d["header"] = meta.get("header")
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    for k, v in d.items():
        if k == "settings":
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, dict):
            v = ", ".join(f"{a} ({b:,} keys)" for a, b in v.items())
        elif isinstance(v, list):
            v = ", ".join(map(str, v)) if v else "-"
        elif isinstance(v, float):
            v = f"{v:.6g}"
        elif isinstance(v, int) and not isinstance(v, bool):
            v = f"{v:,}"
        click.echo(f"{k.replace('_', ' ')}: {v}")


# --------------------------------------------------------------------------- demo
@main.command(context_settings=_CONTEXT)
@click.option("--ahead", default=1, show_default=True, type=click.IntRange(1), help="Hours ahead.")
@click.option("--hidden", default=32, show_default=True, type=click.IntRange(1), help="The bare LSTM's units.")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(0, min_open=True),
              help="The bare LSTM's learning rate.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the forecasts (CSV) here.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write actual vs forecast to this PNG.")
def demo(**o: Any) -> None:
    """Forecast River's WaterFlow series online (the `run` job on a bundled file).

    Learns while it forecasts, one hourly reading at a time, and compares the mean absolute
    error of the default forecast (the forecasting engine) and of a bare LSTM (--model lstm
    --difference) with the last-value baseline on the same hours.
    """
    _guard(_demo, o)


def _demo(o: dict[str, Any]) -> None:
    try:
        from river.datasets import WaterFlow
    except ImportError:
        raise CliError("the demo forecasts River's WaterFlow series, and River is not installed: "
                       "pip install 'streamlstm[river]' (or: pip install river)") from None
    import io

    import numpy as np

    path = str(WaterFlow().path)
    target = "Water flow [l/s]"
    H = o["ahead"]
    if o.get("plot"):
        _require_matplotlib()
    base = ["--target", target, "--time", "Time", "--ahead", str(H)] + (["--seed", str(o["seed"])] if o["seed"] else [])
    lstm = (["--hidden", str(o["hidden"])] if o["hidden"] != 32 else []) + \
        (["--lr", repr(o["lr"])] if o["lr"] != 1e-3 else [])
    results: list[tuple[str, Any]] = []
    for variant in ([], ["--model", "lstm", "--difference", *lstm]):
        args = [path, *base, *variant, "--quiet"]
        if o.get("plot") and not variant:
            args += ["--plot", o["plot"]]
        with run.make_context("run", list(args)) as ctx:
            opts = dict(ctx.params)
        sink: Any = io.StringIO()
        if o.get("out") and not variant:
            sink = open(o["out"], "w", encoding="utf-8", newline="\n")
        try:
            with _CompileNote(not results and sys.stderr.isatty()):  # the first run loads (or compiles) the kernels
                outcome = _run(opts, set(), stream=sink, collect=True)
        finally:
            if sink is not None and not isinstance(sink, io.StringIO):
                sink.close()
        results.append((" ".join(variant), outcome))
    actual = np.concatenate(results[0][1].actual)
    naive = np.full_like(actual, np.nan)
    naive[H:] = actual[:-H]  # the value known H hours earlier
    fcs = [np.concatenate(out.predicted) for _, out in results]
    ok = ~np.isnan(actual) & ~np.isnan(naive)
    for f in fcs:
        ok &= ~np.isnan(f)
    mae_naive = float(np.abs(actual[ok] - naive[ok]).mean())
    n = results[0][1].stats.rows
    click.echo(f"River WaterFlow: {n:,} hourly readings of {target}; each hour, forecast the flow {H} hour(s) "
               f"ahead, then learn from the true value (online, one pass, seed {o['seed']})")
    season = results[0][1].engine.season_line()
    click.echo(f"  default (the forecasting engine): {season}")
    click.echo(f"  MAE over the {int(ok.sum()):,} hours with a forecast from every method:")
    for (opts_text, out), f in zip(results, fcs):
        mae = float(np.abs(actual[ok] - f[ok]).mean())
        label = "streamlstm run" + (f" {opts_text}" if opts_text else " (default)")
        rate = out.stats.rows / max(out.elapsed, 1e-9)
        click.echo(f"  {label:<42} {mae:8.4f}   ({mae / mae_naive:.2f}x the last value; {rate:,.0f} rows/s)")
    click.echo(f"  {'last value (baseline)':<42} {mae_naive:8.4f}")
    mae_default = float(np.abs(actual[ok] - fcs[0][ok]).mean())
    ratio = mae_default / mae_naive
    click.echo(f"the default forecast's MAE is {ratio:.3f}x the last value's "
               f"({'%.1f%% lower' % (100 * (1 - ratio)) if ratio < 1 else '%.1f%% higher' % (100 * (ratio - 1))})")
    click.echo("the same job from the shell:")
    click.echo(f"  streamlstm run {path} --target '{target}' --time Time --ahead {H}"
               + (f" --seed {o['seed']}" if o["seed"] else ""))
    if o.get("out"):
        click.echo(f"forecasts (default) written to {o['out']}")
    if o.get("plot"):
        click.echo(f"plot (default) written to {o['plot']}")


if __name__ == "__main__":
    main(prog_name="streamlstm")
