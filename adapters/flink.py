"""Apache Flink adapter for streamlstm (DRAFT: PyFlink 2.3 DataStream API).

Pipeline::

    FileSource(text lines "key,time,v1[,v2,...]")      records its read position in checkpoints
      -> key_by(key)
      -> ModelProcessFunction (KeyedProcessFunction)
           per key:    the engine's state as bytes in a ValueState (PICKLED_BYTE_ARRAY)
           per worker: the shared model, loaded once in open() by an engine factory
      -> FileSink(lines "key,time,prediction[,...][,error]")   exactly-once, commits on checkpoints

The seam with the core is ``load_core_engine`` (see there): an *engine* is any object with

    step(state: bytes | None, time: str, values: tuple[float, ...])
        -> (new_state: bytes, prediction: float | sequence of float, error: float | None)
    close() -> None                                  (optional)

``state`` is None the first time a key is seen. The engine must not keep per-key data
itself: everything that has to survive a failure goes into ``new_state``.

Environment facts this module encodes (learned on PyFlink 2.3.0, Java 17, Python 3.11):
* Run it from a venv holding apache-flink (it pins numpy<2.2): see .ci/flink-setup.sh.
* ``python.executable`` must name that venv's interpreter, else real process-mode workers run
  ``python`` from PATH and fail; with checkpointing on, Flink then retries for ever unless a
  restart strategy is set. ``make_env`` always sets both.
* Thread mode (pemja, the Python interpreter embedded in the JVM) ignores the venv: it finds
  pyflink/numpy only through PYTHONPATH (and the editable streamlstm only if the venv's .pth
  files run: PYTHONUSERBASE), both set before the JVM starts (``prepare_worker_environment``).
  Thread mode also breaks on PRIMITIVE_ARRAY(BYTE) state
  (None -> TypeError, and values come back as tuples of ints), so state is PICKLED_BYTE_ARRAY,
  which gives back ``bytes`` in both modes.
* Process mode keeps a Python-side state cache (``python.state.cache-size``, 1000 keys by
  default); past it state accesses cross gRPC: a no-op job fell from ~10k to ~1.3k events/s
  going from 50 to 5000 keys. Thread mode reads the JVM state backend directly (~30k/s either
  way). In process mode ``python.fn-execution.bundle.size`` (default 1000) 10000 doubles it.
* Real process workers (a cluster; locally ``_python_worker_execution_mode=process``) replace
  ``builtins.print`` by a bound method before user code is imported; numba's import then dies
  with "module 'pyflink.fn_execution.beam.beam_sdk_worker_main' has no attribute 'print'"
  unless ``sys.modules[print.__module__].print = print`` runs before numba is imported.
* Online learning: weights that change inside the engine are per-worker memory, NOT Flink
  state; they are not checkpointed or restored. Only the per-key bytes are.
"""

from __future__ import annotations

import argparse
import importlib
import os
import site
import sys
import time
from typing import Callable, Iterable, Optional, Sequence

__all__ = [
    "load_core_engine",
    "prepare_worker_environment",
    "make_env",
    "parse_line",
    "format_output",
    "ModelProcessFunction",
    "build_pipeline",
    "run_csv_job",
    "read_output",
    "main",
]


# --------------------------------------------------------------------------------------
# the seam with the core

def load_core_engine(model_path: str):
    """Load the shared model from ``model_path`` and return an engine (see module doc).

    SEAM: not wired to the core yet. With the core's keyed engine (``streamlstm.KeyedLSTM``,
    in progress) it could become, per event, one scratch key whose state is swapped in::

        model = OnlineLSTM.load(model_path)
        keyed = KeyedLSTM(model, learn=False)
        def step(state, t, values):
            if state is None: keyed.forget("_")
            else: keyed.set_state_bytes("_", state)
            pred = keyed.step_one("_", values)          # (learning: label/learn calls here)
            return keyed.state_bytes("_"), pred, None

    It runs once per Python worker process (``open()`` of the first subtask there), never
    per event.
    """
    raise NotImplementedError(
        "streamlstm's keyed engine does not exist yet; pass engine_factory= explicitly"
    )


_ENGINES: dict = {}  # (factory, args) -> [engine, number of open subtasks using it]


def _engine_key(factory: Callable, args: tuple):
    return (getattr(factory, "__module__", None), getattr(factory, "__qualname__", repr(factory)), args)


def _acquire_engine(factory: Callable, args: tuple):
    """One engine per (factory, args) per Python process: subtasks in a worker share it."""
    entry = _ENGINES.get(_engine_key(factory, args))
    if entry is None:
        entry = _ENGINES[_engine_key(factory, args)] = [factory(*args), 0]
    entry[1] += 1
    return entry[0]


def _release_engine(factory: Callable, args: tuple) -> None:
    """The last subtask to close an engine closes it (``engine.close()`` if it has one)."""
    key = _engine_key(factory, args)
    entry = _ENGINES.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _ENGINES[key]
        if hasattr(entry[0], "close"):
            entry[0].close()


# --------------------------------------------------------------------------------------
# environment

def prepare_worker_environment(
    *,
    work_dir: Optional[str] = None,
    numba_cache_dir: Optional[str] = None,
    extra_pythonpath: Sequence[str] = (),
) -> None:
    """Set the process environment that the JVM and the Python workers inherit.

    Must run before the first PyFlink call of the process (that call starts the JVM).
    * PYTHONPATH (this interpreter's site-packages first, + extras) and PYTHONUSERBASE (this
      venv's prefix, so that the embedded interpreter also runs the venv's .pth files, e.g.
      the editable install of streamlstm): thread mode's pemja interpreter ignores venvs.
      A venv's own python disables the user site, so PYTHONUSERBASE is inert for it.
    * NUMBA_CACHE_DIR: numba's cache in workers (default ``<work_dir>/numba-cache``).
    * TMPDIR, JVM_ARGS=-Djava.io.tmpdir, FLINK_LOG_DIR: keep Flink's files under ``work_dir``
      (if given); otherwise the logs land inside the venv's pyflink/log.
    Existing values are kept (PYTHONPATH is extended, not replaced).
    """
    paths = [*extra_pythonpath, *site.getsitepackages()]
    old = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    merged = []
    for p in [*old, *paths]:
        if p not in merged:
            merged.append(p)
    os.environ["PYTHONPATH"] = os.pathsep.join(merged)
    if sys.prefix != sys.base_prefix:  # in a venv
        os.environ.setdefault("PYTHONUSERBASE", sys.prefix)

    if work_dir is not None:
        work_dir = os.path.abspath(work_dir)
        tmp = os.path.join(work_dir, "tmp")
        logs = os.path.join(work_dir, "log")
        os.makedirs(tmp, exist_ok=True)
        os.makedirs(logs, exist_ok=True)
        os.environ.setdefault("TMPDIR", tmp)
        if "java.io.tmpdir" not in os.environ.get("JVM_ARGS", ""):
            os.environ["JVM_ARGS"] = (os.environ.get("JVM_ARGS", "") + f" -Djava.io.tmpdir={tmp}").strip()
        os.environ.setdefault("FLINK_LOG_DIR", logs)
        if numba_cache_dir is None:
            numba_cache_dir = os.path.join(work_dir, "numba-cache")
    if numba_cache_dir is not None:
        os.makedirs(numba_cache_dir, exist_ok=True)
        os.environ.setdefault("NUMBA_CACHE_DIR", os.path.abspath(numba_cache_dir))


def make_env(
    *,
    execution_mode: str = "thread",
    parallelism: int = 1,
    checkpoint_interval_ms: int = 1000,
    checkpoint_dir: Optional[str] = None,
    restart_attempts: int = 3,
    restart_delay: str = "1 s",
    bundle_size: Optional[int] = None,
    state_cache_size: Optional[int] = None,
    conf: Optional[dict] = None,
):
    """A StreamExecutionEnvironment with the settings this adapter relies on.

    execution_mode: "thread" (embedded, fastest here) or "process" (Beam workers; the local
    mini-cluster runs them in this process ("loopback") unless the environment variable
    ``_python_worker_execution_mode=process`` asks for real worker processes, which is what a
    cluster does).
    checkpoint_interval_ms <= 0 disables checkpointing.
    checkpoint_dir: None keeps checkpoints in the JobManager's memory (enough for restarts of a
    running job); a path stores them on disk (file://...) so a new job can resume from them.
    """
    if execution_mode not in ("thread", "process"):
        raise ValueError(f"execution_mode must be 'thread' or 'process', not {execution_mode!r}")
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    c = Configuration()
    c.set_string("python.executable", sys.executable)
    c.set_string("python.client.executable", sys.executable)
    c.set_string("python.execution-mode", execution_mode)
    c.set_string("restart-strategy.type", "fixed-delay")
    c.set_string("restart-strategy.fixed-delay.attempts", str(int(restart_attempts)))
    c.set_string("restart-strategy.fixed-delay.delay", restart_delay)
    if bundle_size is not None:
        c.set_string("python.fn-execution.bundle.size", str(int(bundle_size)))
    if state_cache_size is not None:
        c.set_string("python.state.cache-size", str(int(state_cache_size)))
    if checkpoint_dir is not None:
        c.set_string("execution.checkpointing.storage", "filesystem")
        c.set_string("execution.checkpointing.dir", _as_uri(checkpoint_dir))
    for k, v in (conf or {}).items():
        c.set_string(k, str(v))

    env = StreamExecutionEnvironment.get_execution_environment(c)
    env.set_parallelism(parallelism)
    if checkpoint_interval_ms > 0:
        env.enable_checkpointing(int(checkpoint_interval_ms))
    return env


def _as_uri(path: str) -> str:
    return path if "://" in path else "file://" + os.path.abspath(path)


# --------------------------------------------------------------------------------------
# records

def _key_of(line: str) -> str:
    i = line.find(",")
    return line if i < 0 else line[:i]


def parse_line(line: str):
    """``"key,time,v1[,v2,...]"`` -> ``(key, time, (v1, v2, ...))``; time stays a string."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) < 3:
        raise ValueError(f"expected 'key,time,value[,...]', got {line!r}")
    return parts[0], parts[1], tuple(float(p) for p in parts[2:])


def _fmt(x) -> str:
    if isinstance(x, (list, tuple)) or getattr(x, "ndim", 0) > 0:
        return ",".join(repr(float(v)) for v in x)
    return repr(float(x))


def format_output(key: str, t: str, prediction, error=None) -> str:
    """``key,time,prediction[,...][,error]`` (floats in round-trip repr)."""
    s = f"{key},{t},{_fmt(prediction)}"
    if error is not None:
        s += "," + _fmt(error)
    return s


# --------------------------------------------------------------------------------------
# the keyed function

try:  # the module stays importable without pyflink (docs, the dev venv)
    from pyflink.datastream import KeyedProcessFunction as _KPF
except ImportError:  # pragma: no cover
    _KPF = object


class ModelProcessFunction(_KPF):
    """Per key: engine state bytes in a ValueState; per worker: one engine from the factory.

    ``engine_factory`` must be picklable by reference (a module-level function importable in
    the workers, e.g. ``load_core_engine``); ``factory_args`` are passed to it.
    """

    STATE_NAME = "streamlstm-state"

    def __init__(self, engine_factory: Callable = load_core_engine, *factory_args):
        self._factory = engine_factory
        self._args = tuple(factory_args)
        self._engine = None
        self._state = None

    def open(self, runtime_context):
        from pyflink.common import Types
        from pyflink.datastream.state import ValueStateDescriptor

        self._state = runtime_context.get_state(
            ValueStateDescriptor(self.STATE_NAME, Types.PICKLED_BYTE_ARRAY())
        )
        self._engine = _acquire_engine(self._factory, self._args)

    def process_element(self, value, ctx):
        if not value.strip():
            return
        key, t, values = parse_line(value)
        # ---- core call (the seam): one event of one key --------------------------------
        new_state, prediction, error = self._engine.step(self._state.value(), t, values)
        # ---------------------------------------------------------------------------------
        self._state.update(bytes(new_state))
        yield format_output(key, t, prediction, error)

    def close(self):
        if self._engine is not None:
            self._engine = None
            _release_engine(self._factory, self._args)


# --------------------------------------------------------------------------------------
# job assembly

def build_pipeline(env, input_paths: Iterable[str], output_dir: str, engine_factory: Callable = load_core_engine,
                   *factory_args, name: str = "streamlstm"):
    """Source -> key_by -> ModelProcessFunction -> FileSink, on ``env``. Returns the sink."""
    from pyflink.common import Encoder, Types, WatermarkStrategy
    from pyflink.datastream.connectors.file_system import (
        BucketAssigner, FileSink, FileSource, OutputFileConfig, StreamFormat)

    paths = [os.path.abspath(p) for p in ([input_paths] if isinstance(input_paths, str) else input_paths)]
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), *paths).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), f"{name}-source")
    out = (lines.key_by(_key_of, key_type=Types.STRING())
                .process(ModelProcessFunction(engine_factory, *factory_args), output_type=Types.STRING())
                .name(f"{name}-model"))
    sink = (FileSink.for_row_format(os.path.abspath(output_dir), Encoder.simple_string_encoder())
                    .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
                    .with_output_file_config(OutputFileConfig.builder().with_part_prefix("part")
                                             .with_part_suffix(".csv").build())
                    .build())
    return out.sink_to(sink).name(f"{name}-sink")


def run_csv_job(input_paths, output_dir: str, engine_factory: Callable = load_core_engine, *factory_args,
                work_dir: Optional[str] = None, job_name: str = "streamlstm", **env_kwargs):
    """Prepare the environment, build and run the job to completion (bounded input)."""
    prepare_worker_environment(work_dir=work_dir)
    env = make_env(**env_kwargs)
    build_pipeline(env, input_paths, output_dir, engine_factory, *factory_args, name=job_name)
    return env.execute(job_name)


def read_output(output_dir: str) -> list:
    """Lines of the committed part files (in-progress files are hidden '.part-*')."""
    rows = []
    for root, _dirs, files in os.walk(output_dir):
        for f in sorted(files):
            if f.startswith("."):
                continue
            with open(os.path.join(root, f)) as fh:
                rows.extend(line.rstrip("\n") for line in fh if line.strip())
    return rows


# --------------------------------------------------------------------------------------
# command line: python -m streamlstm.adapters.flink --input ev.csv --output outdir --engine mod:factory ...

def _resolve(spec: str) -> Callable:
    mod, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--engine wants 'module:function', got {spec!r}")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamlstm.adapters.flink", description=__doc__.split("\n")[0])
    ap.add_argument("--input", action="append", required=True, help="CSV file (repeatable)")
    ap.add_argument("--output", required=True, help="output directory (FileSink)")
    ap.add_argument("--engine", default="streamlstm.adapters.flink:load_core_engine", help="module:factory")
    ap.add_argument("--engine-arg", action="append", default=[], help="factory argument (repeatable)")
    ap.add_argument("--mode", choices=("thread", "process"), default="thread")
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--checkpoint-ms", type=int, default=1000)
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--restart-attempts", type=int, default=3)
    ap.add_argument("--restart-delay", default="1 s")
    ap.add_argument("--bundle-size", type=int, default=None)
    ap.add_argument("--state-cache-size", type=int, default=None)
    ap.add_argument("--work-dir", default=None, help="tmp/, log/, numba-cache/ go here")
    ap.add_argument("--pythonpath", action="append", default=[], help="extra path for workers")
    ap.add_argument("--conf", action="append", default=[], help="extra Flink option key=value")
    a = ap.parse_args(argv)

    prepare_worker_environment(work_dir=a.work_dir, extra_pythonpath=a.pythonpath)
    for p in a.pythonpath:
        if p not in sys.path:
            sys.path.insert(0, p)
    factory = _resolve(a.engine)
    env = make_env(execution_mode=a.mode, parallelism=a.parallelism, checkpoint_interval_ms=a.checkpoint_ms,
                   checkpoint_dir=a.checkpoint_dir, restart_attempts=a.restart_attempts,
                   restart_delay=a.restart_delay, bundle_size=a.bundle_size,
                   state_cache_size=a.state_cache_size,
                   conf=dict(kv.split("=", 1) for kv in a.conf))
    build_pipeline(env, a.input, a.output, factory, *a.engine_arg)
    t0 = time.time()
    env.execute("streamlstm")
    print(f"flink job done in {time.time() - t0:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    # Re-enter through the package name so that pickled classes reference
    # streamlstm.adapters.flink, which the workers import, not __main__.
    from streamlstm.adapters.flink import main as _main

    sys.exit(_main())
