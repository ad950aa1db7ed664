"""`KeyedLSTM`: one `OnlineLSTM` (one set of weights) serving many independent streams.

Each key (any hashable) has its own recurrent state; a micro-batch of events for many
keys is one compiled call whose gate pre-activations are matrix-matrix products over the
keys, with results bit-identical to processing the events one by one with the
single-stream model and swapped states. See ``docs/keyed.md``.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Literal

import numba
import numpy as np

from . import persistence
from ._kernels import checks, hashtable
from ._kernels import keyed as KK
from ._kernels import layout as K
from .model import LSTMState, OnlineLSTM, as_numbers
from .settings import KeyedSettings

__all__ = ["KeyedLSTM"]

_KIND = "KeyedLSTM"
_F64 = np.dtype(np.float64)
_STATE_MAGIC = b"SLKS"
_STATE_VERSION = 1
# magic, version, flags (bit 0 learning, bit 1 float32), layers, hidden, width, t, since
_STATE_HEADER = struct.Struct("<4sBBHIIqq")
_COUNTERS = struct.Struct("<qq")
_ZERO_COUNTERS = _COUNTERS.pack(0, 0)
_I64_MIN, _I64_MAX = -(2 ** 63), 2 ** 63 - 1
_KIND_FREE, _KIND_INT, _KIND_OBJ = 0, 1, 2



def _int_key(k: Any) -> int | None:
    """The int64 value of an integer key (int, numpy integer), else None (a dict key)."""
    if type(k) is int or (isinstance(k, np.integer) and not isinstance(k, np.bool_)):
        v = int(k)
        if _I64_MIN <= v <= _I64_MAX:
            return v
    return None


def _encode_key(k: Any) -> Any:
    """A JSON value for a key: str, int, float, bool, None as themselves; bytes and tuples tagged."""
    if k is None or isinstance(k, (str, bool)):
        return k
    if isinstance(k, (int, np.integer)):
        return int(k)
    if isinstance(k, (float, np.floating)) and np.isfinite(k):
        return float(k)
    if isinstance(k, bytes):
        return {"bytes": k.hex()}
    if isinstance(k, tuple):
        return {"tuple": [_encode_key(v) for v in k]}
    raise TypeError(f"key {k!r} of type {type(k).__name__} cannot be stored: keys may be str, int, "
                    "float, bool, None, bytes or tuples of these (or pass encode_key/decode_key)")


def _decode_key(v: Any) -> Hashable:
    if isinstance(v, dict):
        if "bytes" in v:
            return bytes.fromhex(v["bytes"])
        if "tuple" in v:
            return tuple(_decode_key(x) for x in v["tuple"])
        raise persistence.FormatError(f"corrupt key {v!r}")
    return v


_NUMBA_THREADS: int = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # numba's pool size, fixed
# Numba's GNU OpenMP threads do not survive a fork: a forked child that enters a threaded loop
# is terminated ("fork() called from a process already using GNU OpenMP"). So a process
# forked after this one learned on threads learns on one thread (multiprocessing forks by
# default on Linux before Python 3.14).
_threads_used = False
_forked_after_threads = False


def _after_fork_in_child() -> None:
    global _forked_after_threads
    _forked_after_threads = _forked_after_threads or _threads_used
    usable_cpus.cache_clear()   # a child may be given other CPUs


@functools.cache
def usable_cpus() -> int:
    """The CPUs this process may run on: its CPU affinity, and its cgroup's CPU quota when
    one is set (a container limited to 1.5 CPUs of a 64-core host gets 1, not 64). Read
    once per process (a file read is not for every call of ``learn_many``).

    >>> usable_cpus() >= 1
    True
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "max 100000" or "150000 100000"
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class KeyedLSTM:
    """One :class:`OnlineLSTM` serving (and optionally learning from) many keyed streams.

    Every key has its own state; a new key starts from the zero state. Events of many keys
    are processed in one compiled call (:meth:`step_many`, :meth:`learn_many`); the result
    is exactly, bit for bit, what the single-stream model gives event by event in arrival
    order with each key's state swapped in. Keys may be any hashable: integer keys (int,
    numpy integers) share one key space held in an int64 hash table searched by the
    compiled code (fastest: pass them as a numpy integer array); other keys use a dict.
    Not thread-safe.

    Parameters
    ----------
    model
        The shared weights (used in place: learning updates ``model``). Its own stream
        state is not used and not changed.
    learn
        ``False`` (inference): a key costs ``2 · hidden · layers`` numbers in the model
        dtype (``hidden · layers`` for ``cell="rnn"``), its ``h`` and ``c``. ``True``: a
        key also keeps its TBPTT history (the core's ring of the last ``bptt`` steps,
        ``LSTMState.buffer``), so that :meth:`learn_many` can update the weights.
    capacity
        Initial number of key rows (grows by doubling).
    ttl, ttl_unit
        Forget keys idle for more than ``ttl`` calls, events (all keys) or seconds
        (``clock``); an expired key that comes back starts from zero. Ages are taken at
        call granularity (a call stamps every key it touches). Memory is reclaimed by a
        sweep every ``ttl``.
    max_keys
        Keep at most this many keys: adding keys beyond it forgets the least recently
        used ones first (never a key of the current call).
    update_input_stats
        ``True`` (as ``OnlineLSTM.advance``): events update the running input
        statistics. ``False`` freezes them (serving a trained model).
    threads
        Threads that :meth:`learn_many` spreads a batch's keys over (``None``:
        :func:`usable_cpus`, capped by numba's ``NUMBA_NUM_THREADS``). The numbers do not
        depend on it: the keys' gradients are summed in the same tiles and order with any
        count. Not saved with a snapshot (a property of the machine). On a core another
        process keeps busy, a second thread only waits: use ``threads=1`` there. Numba's
        GNU OpenMP threads do not survive a ``fork``, so in a process forked after this one
        learned on threads (``multiprocessing``'s default on Linux), learning runs on one
        thread whatever ``threads`` says.
    clock
        Time source for ``ttl_unit="seconds"`` (default ``time.monotonic``).

    Examples
    --------
    >>> import numpy as np
    >>> model = OnlineLSTM(n_inputs=2, hidden=8, seed=0)
    >>> engine = KeyedLSTM(model)
    >>> keys = ["a", "b", "a", 42]                   # "a" twice: its events keep their order
    >>> X = np.arange(8.0).reshape(4, 2)
    >>> engine.step_many(keys, X).shape
    (4, 1)
    >>> len(engine), engine.state_nbytes_per_key    # 2 * 8 * 1 float64 numbers per key
    (3, 128)
    """

    def __init__(
        self,
        model: OnlineLSTM,
        *,
        learn: bool = False,
        capacity: int = 1024,
        ttl: float | None = None,
        ttl_unit: Literal["calls", "events", "seconds"] = "calls",
        max_keys: int | None = None,
        update_input_stats: bool = True,
        clock: Callable[[], float] | None = None,
        threads: int | None = None,
    ) -> None:
        if not isinstance(model, OnlineLSTM):
            raise TypeError(f"model must be an OnlineLSTM, got {type(model).__name__}")
        settings = KeyedSettings(learn=learn, capacity=capacity, ttl=ttl, ttl_unit=ttl_unit, max_keys=max_keys,
                                 update_input_stats=update_input_stats, threads=threads)
        self._model = model
        self._learn = settings.learn
        self.ttl = settings.ttl
        self.ttl_unit = settings.ttl_unit
        self.max_keys = settings.max_keys
        self.update_input_stats = settings.update_input_stats
        self.threads = settings.threads
        self._clock = clock or time.monotonic
        self._fingerprint = self._layout_of(model)
        self._P_ref = model._P  # replaced only when the model's layout changes
        L, H = model.layers, model.hidden
        self._lh = L * H
        if self._learn:
            self._width = model._state_end
        else:
            self._width = (2 if model.cell == "lstm" else 1) * L * H
        self._dtype = np.dtype(model.dtype)
        self._head = _STATE_HEADER.pack(_STATE_MAGIC, _STATE_VERSION, self._flags(), L, H, self._width,
                                        0, 0)[:_STATE_HEADER.size - _COUNTERS.size]
        self._blob_len = _STATE_HEADER.size + self._width * self._dtype.itemsize
        self._scratch = np.zeros((1, self._width), dtype=self._dtype)  # step_state's row
        self._scratch_c = np.zeros((1, 2), dtype=np.int64)
        G = model._G
        tile = max(8, min(32, 32768 // (G * self._dtype.itemsize)))  # a tile of gates: ~32 KB
        # tiles: forward, backward; threads (set per call)
        self._opt = np.array([int(self.update_input_stats), tile, 32, 1], dtype=np.int64)
        self._stats = np.zeros(4, dtype=np.float64)
        self._calls = 0
        self._events = 0
        self._last_sweep = 0.0
        self._contributions = 0
        self._waves = 0
        self._reset_keys(settings.capacity)
        self._last_sweep = self._now()

    def _reset_keys(self, cap: int) -> None:
        # Integer keys live in an int64 open-addressing table (_TK, _TR, looked up inside the
        # compiled code); other keys in a dict. Per row: kind, int key, state, stamps.
        self._dict: dict[Hashable, int] = {}
        self._objkey: dict[int, Hashable] = {}
        self._TK = np.zeros(16, dtype=np.int64)
        self._TR = np.full(16, hashtable.EMPTY, dtype=np.int64)
        self._n_int = 0
        self._n_tomb = 0
        self._free: list[int] = []
        self._used = 0
        self._alloc_arrays(cap)

    # ----------------------------------------------------------------- storage
    @staticmethod
    def _layout_of(model: OnlineLSTM) -> tuple:
        return (model.n_inputs, model.n_outputs, model.hidden, model.layers, model.cell, model.bptt,
                model.dtype, model._state_end)

    def _alloc_arrays(self, cap: int) -> None:
        self._S = np.zeros((cap, self._width), dtype=self._dtype)
        self._C = np.zeros((cap if self._learn else 0, 2), dtype=np.int64)
        self._occ = np.zeros(cap, dtype=np.int32)
        self._last = np.zeros(cap, dtype=np.float64)
        self._recent = np.zeros(cap, dtype=np.int64)
        self._kind = np.zeros(cap, dtype=np.uint8)
        self._rowkey = np.zeros(cap, dtype=np.int64)

    def _row_arrays(self) -> tuple:
        return (self._S, self._C, self._occ, self._last, self._recent, self._kind, self._rowkey)

    def _grow(self, need: int) -> None:
        old = self._row_arrays()
        self._alloc_arrays(max(need, 2 * self._S.shape[0]))
        for dst, src in zip(self._row_arrays(), old):
            dst[:src.shape[0]] = src

    def _new_rows(self, n: int) -> np.ndarray:
        """n zeroed rows (freed ones first)."""
        take = min(n, len(self._free))
        rows = [self._free.pop() for _ in range(take)]
        m = n - take
        if m:
            if self._used + m > self._S.shape[0]:
                self._grow(self._used + m)
            rows.extend(range(self._used, self._used + m))
            self._used += m
        idx = np.asarray(rows, dtype=np.int64)
        self._S[idx] = 0
        if self._learn:
            self._C[idx] = 0
        return idx

    def _table_room(self, m: int) -> None:
        """Make room for m more integer keys (load factor <= 1/2, tombstones included)."""
        if 2 * (self._n_int + self._n_tomb + m) <= self._TK.shape[0]:
            return
        cap = 16
        while cap < 2 * (self._n_int + m):
            cap *= 2
        TK, TR = np.zeros(cap, dtype=np.int64), np.full(cap, hashtable.EMPTY, dtype=np.int64)
        hashtable.table_rebuild(self._TK, self._TR, TK, TR)
        self._TK, self._TR, self._n_tomb = TK, TR, 0

    def _add_keys(self, int_keys: np.ndarray, obj_keys: list) -> None:
        """Register new (absent, distinct) keys with zeroed rows."""
        n_i = int_keys.shape[0]
        rows = self._new_rows(n_i + len(obj_keys))
        if n_i:
            self._table_room(n_i)
            self._n_tomb -= hashtable.table_insert(self._TK, self._TR, int_keys, rows[:n_i])
            self._n_int += n_i
            self._kind[rows[:n_i]] = _KIND_INT
            self._rowkey[rows[:n_i]] = int_keys
        for k, r in zip(obj_keys, rows[n_i:].tolist()):
            self._dict[k] = r
            self._objkey[r] = k
        self._kind[rows[n_i:]] = _KIND_OBJ
        self._last[rows] = self._now()
        self._recent[rows] = self._events
        self._added = rows

    def _drop_rows(self, rows: Any) -> int:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not rows.size:
            return 0
        kinds = self._kind[rows]
        ir = rows[kinds == _KIND_INT]
        if ir.size:
            n = hashtable.table_delete(self._TK, self._TR, self._rowkey[ir])
            self._n_int -= n
            self._n_tomb += n
        for r in rows[kinds == _KIND_OBJ].tolist():
            del self._dict[self._objkey.pop(r)]
        self._kind[rows] = _KIND_FREE
        self._free.extend(rows.tolist())
        return int(rows.size)

    def _now(self) -> float:
        if self.ttl_unit == "calls":
            return float(self._calls)
        if self.ttl_unit == "events":
            return float(self._events)
        return float(self._clock())

    def _check_model(self) -> None:
        if self._model._P is not self._P_ref:
            if self._layout_of(self._model) != self._fingerprint:
                raise RuntimeError("the model's layout changed (add_inputs/add_outputs?) after this "
                                   "KeyedLSTM was built; build a new one")
            self._P_ref = self._model._P

    # -------------------------------------------------------------- key -> row
    @staticmethod
    def _split_keys(keys: Any) -> tuple[np.ndarray | None, list | None, int]:
        """(int64 array, None) when every key is an integer, else (None, list); and B."""
        if isinstance(keys, np.ndarray):
            if keys.ndim != 1:
                raise ValueError(f"keys must be 1-D, got shape {keys.shape}")
            if keys.dtype.kind == "i" or (keys.dtype.kind == "u" and (keys.size == 0 or keys.max() <= _I64_MAX)):
                return keys.astype(np.int64, copy=False), None, keys.shape[0]
            keys = keys.tolist()
        elif isinstance(keys, (str, bytes)):
            raise TypeError("keys must be a sequence of keys (one per event), not a single str/bytes")
        elif not isinstance(keys, list):
            keys = list(keys)
        if all(type(k) is int for k in keys):
            try:
                return np.array(keys, dtype=np.int64).reshape(-1), None, len(keys)
            except OverflowError:
                pass
        return None, keys, len(keys)

    def _rows(self, ik: np.ndarray | None, ok: list | None, B: int, now: float) -> np.ndarray:
        """Rows of the keys of one call; new keys get zeroed rows (may evict LRU keys)."""
        rows = np.empty(B, dtype=np.int64)
        if ok is None:
            assert ik is not None  # _keys gives integer keys or a list of others
            if hashtable.table_lookup(self._TK, self._TR, ik, rows):
                self._rows_with_new(ik, None, rows, None)
        else:
            try:  # all keys already in the dict (integer keys never are)
                rows = np.fromiter(map(self._dict.__getitem__, ok), dtype=np.int64, count=B)
                ok = None
            except (KeyError, TypeError):
                pass
        if ok is not None:
            ipos, ivals, opos = [], [], []
            for i, k in enumerate(ok):
                v = _int_key(k)
                if v is None:
                    opos.append(i)
                else:
                    ipos.append(i)
                    ivals.append(v)
            ipos_a = np.asarray(ipos, dtype=np.int64)
            ivals_a = np.asarray(ivals, dtype=np.int64)
            irows = np.empty(len(ipos), dtype=np.int64)
            miss = hashtable.table_lookup(self._TK, self._TR, ivals_a, irows)
            get = self._dict.get
            okeys = [ok[i] for i in opos]
            try:
                orows = np.fromiter((get(k, -1) for k in okeys), dtype=np.int64, count=len(opos))
            except TypeError:
                for i in opos:
                    try:
                        hash(ok[i])
                    except TypeError:
                        raise TypeError(f"keys[{i}] = {ok[i]!r} is not hashable") from None
                raise
            rows[ipos_a] = irows
            rows[np.asarray(opos, dtype=np.int64)] = orows
            if miss or (orows < 0).any():
                self._rows_with_new(ivals_a, okeys, irows, orows)
                rows[ipos_a] = irows
                rows[np.asarray(opos, dtype=np.int64)] = orows
        if self.ttl is not None:
            stale = rows[(now - self._last[rows]) > self.ttl]
            if stale.size:  # expired but not yet swept: it starts again from zero
                stale = np.unique(stale)
                self._S[stale] = 0
                if self._learn:
                    self._C[stale] = 0
        return rows

    def _rows_with_new(self, ik: np.ndarray, okeys: list | None, irows: np.ndarray,
                       orows: np.ndarray | None) -> None:
        """Create the missing keys, then fill irows / orows (in place)."""
        new_int = np.unique(ik[irows < 0])
        new_obj = [] if okeys is None or orows is None else \
            list(dict.fromkeys(k for k, r in zip(okeys, orows.tolist()) if r < 0))  # orows comes with okeys
        n_new = new_int.shape[0] + len(new_obj)
        if self.max_keys is not None:
            present = np.unique(np.concatenate([irows[irows >= 0], [] if orows is None else orows[orows >= 0]])
                                .astype(np.int64))
            if present.size + n_new > self.max_keys:
                raise ValueError(f"this call has {present.size + n_new} distinct keys, more than "
                                 f"max_keys={self.max_keys}")
            excess = self._n_keys_held() + n_new - self.max_keys
            if excess > 0:
                self._evict_lru(excess, present)
        self._add_keys(new_int, new_obj)
        hashtable.table_lookup(self._TK, self._TR, ik, irows)
        if okeys is not None and orows is not None:
            d = self._dict
            orows[:] = [d[k] for k in okeys]

    def _n_keys_held(self) -> int:
        return self._n_int + len(self._dict)

    def _evict_lru(self, n: int, keep: np.ndarray) -> None:
        held = self._kind[:self._used] != _KIND_FREE
        held[keep] = False
        cand = np.flatnonzero(held)
        if n < cand.size:
            cand = cand[np.argpartition(self._recent[cand], n - 1)[:n]]
        self._drop_rows(cand)

    def _sweep(self, now: float) -> int:
        """Drop the keys idle for longer than ``ttl`` (set: the callers check)."""
        ttl = self.ttl
        assert ttl is not None
        used = self._used
        idle = np.flatnonzero((self._kind[:used] != _KIND_FREE) & ((now - self._last[:used]) > ttl))
        self._last_sweep = now
        return self._drop_rows(idle)

    def _begin(self, ik: np.ndarray | None, ok: list | None, B: int) -> tuple[np.ndarray, float]:
        self._check_model()
        now = self._now()
        if self.ttl is not None and now - self._last_sweep >= self.ttl:
            self._sweep(now)
        return self._rows(ik, ok, B, now), now

    def _end(self, rows: np.ndarray, now: float) -> None:
        B = rows.shape[0]
        self._recent[rows] = np.arange(self._events, self._events + B, dtype=np.int64)
        self._calls += 1
        self._events += B
        # ages count the calls (events) completed after a key's last call, or seconds
        self._last[rows] = now if self.ttl_unit == "seconds" else self._now()

    # --------------------------------------------------------------- validation
    @staticmethod
    def _key_at(keys: tuple, r: int) -> Hashable:
        ik, ok = keys
        return int(ik[r]) if ok is None else ok[r]

    def _inputs(self, X: Any, B: int, keys: tuple) -> np.ndarray:
        n_in = self._model.n_inputs
        try:
            X = as_numbers(X, "X")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"X must be numbers of shape ({B}, {n_in}) ({exc})") from None
        if X.ndim == 1 and n_in == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape != (B, n_in):
            raise ValueError(f"X must have shape ({B}, {n_in}) (one row per key), got {X.shape}")
        if not np.isfinite(X).all():
            r, p = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"row {r} (key {self._key_at(keys, r)!r}): input position {p} is {float(X[r, p])!r}: "
                             "not a finite number")
        return np.ascontiguousarray(X)

    def _targets(self, Y: Any, M: np.ndarray, B: int, keys: tuple) -> np.ndarray:
        m = self._model
        ce = m.loss == "cross_entropy"
        width = 1 if ce else m.n_outputs
        try:
            Y = as_numbers(Y, "Y")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Y must be numbers of shape ({B},) or ({B}, {width}) ({exc})") from None
        if Y.ndim == 1 and width == 1:
            Y = Y[:, None]
        if Y.shape != (B, width):
            raise ValueError(f"Y must have shape ({B},) or ({B}, {width}), got {Y.shape}")
        bad = ~np.isfinite(Y) & M[:, None]
        if bad.any():
            r, p = np.argwhere(bad)[0]
            raise ValueError(f"row {r} (key {self._key_at(keys, r)!r}): target position {p} is {float(Y[r, p])!r}: "
                             "not a finite number")
        if ce:
            y = Y[:, 0]
            bad = M & ~((y >= 0) & (y < m.n_outputs) & (y == np.floor(y)))
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise ValueError(f"row {r} (key {self._key_at(keys, r)!r}): target {float(y[r])!r} is not a class index in "
                                 f"[0, {m.n_outputs})")
        return np.ascontiguousarray(Y)

    def _mask(self, mask: Any, B: int) -> np.ndarray:
        if mask is None:
            return np.ones(B, dtype=np.bool_)
        M = np.ascontiguousarray(np.asarray(mask, dtype=np.bool_))
        if M.shape != (B,):
            raise ValueError(f"mask must have shape ({B},), got {M.shape}")
        return M

    # --------------------------------------------------------------- the events
    def step_many(self, keys: Sequence[Hashable] | np.ndarray, X: Any) -> np.ndarray:
        """Advance key ``keys[e]`` by input ``X[e]`` for every event e, in one compiled call.

        Equivalent to ``model.advance(X[e])`` event by event in arrival order with the
        key's state swapped in (bit-identical outputs and states). Returns the outputs,
        shape ``(B, n_outputs)`` (class probabilities for ``cross_entropy``). A bad row
        raises ``ValueError`` naming the row and position; nothing is changed then. In a
        learning engine the steps enter each key's TBPTT history (unlabelled).

        >>> import numpy as np
        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=4))
        >>> engine.step_many([7, 8, 7], np.array([[0.1], [0.2], [0.3]])).shape
        (3, 1)
        """
        ik, ok, B = self._split_keys(keys)
        X = self._inputs(X, B, (ik, ok))
        out = np.empty((B, self._model.n_outputs), dtype=np.float64)
        if B == 0:
            return out
        if self._learn:
            M = np.zeros(B, dtype=np.bool_)
            Y = np.zeros((B, 1 if self._model._is_ce else self._model.n_outputs))
            return self._run_learn(ik, ok, X, Y, M, out)
        rows, now = self._begin(ik, ok, B)
        m = self._model
        self._waves = KK.k_infer(rows, X, out, self._S, self._occ, m._P, m._F, m._I, self._opt)
        self._end(rows, now)
        return out

    def learn_many(self, keys: Sequence[Hashable] | np.ndarray, X: Any, Y: Any, mask: Any = None,
                   lag: int = 0) -> np.ndarray:
        """Advance and label a batch of events of many keys; then one optimizer step.

        Semantics: the weights are fixed during the call. Every event is advanced (and
        labelled where ``mask[e]``, default all) as ``model.advance(x)`` then
        ``model.label(y, lag)`` would, key by key in arrival order (``lag = 0``:
        ``learn_one``; ``lag > 0``: the target of the key's step ``lag`` events back, a
        forecast whose truth arrives now); every time a key's update is due (``update_every`` steps since its
        last one) its TBPTT gradient is computed over its own history; at the end of the
        call ONE optimizer step is applied to the MEAN of those gradients (the same
        clipping, L2 and optimizer as the single-stream core). With one due key, that is
        exactly the core's update. Returns the prequential outputs ``(B, n_outputs)``.

        >>> import numpy as np
        >>> model = OnlineLSTM(n_inputs=1, hidden=4)
        >>> engine = KeyedLSTM(model, learn=True)
        >>> preds = engine.learn_many(["x", "y"], [[0.5], [1.0]], [1.0, 2.0])
        >>> preds.shape, model.n_updates, engine.last_contributions
        ((2, 1), 1, 2)

        A labelled event of a key fewer than ``lag`` steps deep raises ``ValueError``
        naming it, before anything changes (keys the call would have created are dropped).
        """
        if not self._learn:
            raise RuntimeError("this KeyedLSTM serves only (learn=False): build it with learn=True to learn")
        bptt = self._model.bptt
        if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or not 0 <= lag < bptt:
            raise ValueError(f"lag must be an integer in [0, bptt={bptt}), got {lag!r}")
        ik, ok, B = self._split_keys(keys)
        X = self._inputs(X, B, (ik, ok))
        M = self._mask(mask, B)
        Y = self._targets(Y, M, B, (ik, ok))
        out = np.empty((B, self._model.n_outputs), dtype=np.float64)
        if B == 0:
            return out
        return self._run_learn(ik, ok, X, Y, M, out, int(lag))

    def _run_learn(self, ik: np.ndarray | None, ok: list | None, X: np.ndarray, Y: np.ndarray,
                   M: np.ndarray, out: np.ndarray, lag: int = 0) -> np.ndarray:
        self._added = np.empty(0, dtype=np.int64)
        rows, now = self._begin(ik, ok, X.shape[0])
        m = self._model
        I = m._I
        if lag:
            bad = KK.first_shallow_label(rows, M, self._C, self._occ, lag)
            if bad >= 0:
                steps = int(np.count_nonzero(rows[:bad + 1] == rows[bad]) + self._C[rows[bad], 0])
                key = self._key_at((ik, ok), bad)
                self._drop_rows(self._added)
                raise ValueError(f"row {bad} (key {key!r}): lag {lag} is out of range: a label may go to one "
                                 f"of the last min(steps={steps}, bptt={m.bptt}) steps of its key")
        ring, se = int(I[K.I_RING]), m._state_end
        saved = m._R[ring:se].copy()
        t, since = int(I[K.I_T]), int(I[K.I_SINCE])
        # chunks as asked (the numbers do not depend on them), run on the threads numba has;
        # a batch smaller than two forward tiles and than one backward tile runs on one anyway
        small = X.shape[0] < min(2 * self._opt[KK.O_TILE], self._opt[KK.O_BACKWARD_TILE] + 1)
        chunks = 1 if _forked_after_threads or small else self.threads or usable_cpus()
        self._opt[KK.O_THREADS] = chunks
        before = numba.get_num_threads() if chunks > 1 else 0
        try:
            if chunks > 1:
                global _threads_used
                _threads_used = True
                numba.set_num_threads(min(chunks, _NUMBA_THREADS))
            self._waves = KK.k_learn(rows, X, Y, M, lag, out, self._S, self._C, self._occ, m._P, m._R, m._F, I,
                                     self._opt, self._stats)
        finally:
            if chunks > 1:
                numba.set_num_threads(before)
            m._R[ring:se] = saved
            I[K.I_T], I[K.I_SINCE] = t, since
        self._contributions = int(self._stats[KK.S_NCONTRIB])
        self._end(rows, now)
        return out

    def step_one(self, key: Hashable, x: Sequence[float] | np.ndarray) -> float | np.ndarray:
        """Advance one key by one event; returns its output (a float for a single
        regression output, else an array), as ``model.advance(x)`` with the key's state.

        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=2, hidden=4))
        >>> isinstance(engine.step_one(("user", 1), [0.5, 1.5]), float)
        True
        """
        m = self._model
        if self._learn or m._P is not self._P_ref:
            return self._event_one(key, x, None)
        if type(x) is not np.ndarray or x.dtype != _F64 or x.ndim != 1:
            x = m._vector(x)
        I = m._I
        v = _int_key(key)
        if v is not None and self.ttl is None:  # one compiled call finds the row and steps it
            row, first = KK.k_infer_one_int(v, self._TK, self._TR, x, self._S, m._P, m._F, I,
                                            self.update_input_stats)
        else:
            row = self._live_row(key, v)
            if row is not None and self.ttl is not None and self._now() - self._last_sweep >= self.ttl:
                row = None  # a sweep is due: the general path runs it
            if row is not None:
                first = KK.k_infer_one(row, x, self._S, m._P, m._F, I, self.update_input_stats)
        if row is None or row < 0:  # a new (or expired) key
            return self._single(self.step_many([key], x.reshape(1, -1)))
        if first != first and I[K.I_STATUS]:
            raise ValueError(f"key {key!r}: {m._refused('input', x)}")
        self._recent[row] = self._events
        self._calls += 1
        self._events += 1
        if self.ttl is not None:
            self._last[row] = self._now() if self.ttl_unit != "seconds" else self._clock()
        if m._scalar_out:
            return first
        return m._F[m._fout:m._fout + m.n_outputs].copy()

    def learn_one(self, key: Hashable, x: Sequence[float] | np.ndarray, y: Any) -> float | np.ndarray:
        """One event of one key: ``advance``, ``label`` and (when due) the update, run by
        the single-stream core itself on the key's state (= ``learn_many`` of one event).

        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=4), learn=True)
        >>> y_hat = engine.learn_one("k", [0.5], 1.0)
        >>> engine.model.n_updates
        1
        """
        if not self._learn:
            raise RuntimeError("this KeyedLSTM serves only (learn=False): build it with learn=True to learn")
        return self._event_one(key, x, y)

    def _event_one(self, key: Hashable, x: Any, y: Any) -> float | np.ndarray:
        """step_one / learn_one of a learning engine: the core's own advance/label on the row."""
        m = self._model
        if type(x) is not np.ndarray or x.dtype != _F64 or x.ndim != 1:
            x = m._vector(x)
        labelled = y is not None
        yv = m._target(y) if labelled else m._y1
        row = self._live_row(key)
        if row is None or m._P is not self._P_ref or (
                self.ttl is not None and self._now() - self._last_sweep >= self.ttl):
            X = x.reshape(1, -1)  # new or expired key, sweep due, ...: the general path
            if labelled:
                return self._single(self.learn_many([key], X, yv.reshape(1, -1)))
            return self._single(self.step_many([key], X))
        return self._event_row(row, key, x, yv, labelled, self._S, self._C)

    def _event_row(self, row: int, key: Any, x: np.ndarray, yv: np.ndarray, labelled: bool,
                   S: np.ndarray, C: np.ndarray) -> float | np.ndarray:
        m = self._model
        I = m._I
        n_upd = I[K.I_NUPD]
        first = KK.k_event_row(row, x, yv, labelled, S, C, m._P, m._R, m._F, I)
        if first != first and I[K.I_STATUS]:
            bad_input = not checks.check_input(x, I.copy())
            err = m._refused("input" if bad_input else "target", x if bad_input else yv)
            raise ValueError(f"key {key!r}: {err}")
        self._contributions = int(I[K.I_NUPD] - n_upd)
        if S is self._S:
            self._recent[row] = self._events
        self._calls += 1
        self._events += 1
        if S is self._S and self.ttl is not None:
            self._last[row] = self._now()
        if m._scalar_out:
            return first
        return m._F[m._fout:m._fout + m.n_outputs].copy()

    def _single(self, out: np.ndarray) -> float | np.ndarray:
        m = self._model
        if m.n_outputs == 1 and not m._is_ce:
            return float(out[0, 0])
        return out[0]

    # -------------------------------------------------------------- the keys
    @property
    def model(self) -> OnlineLSTM:
        """The shared model (weights, normalisers, optimizer)."""
        return self._model

    @property
    def learning(self) -> bool:
        """Whether keys keep TBPTT history (``learn=True``)."""
        return self._learn

    @property
    def state_nbytes_per_key(self) -> int:
        """Bytes of state array per key (inference: ``2·hidden·layers`` numbers in the
        model dtype; learning: the core's whole ``LSTMState`` buffer + two int64 counters).
        The key index and stamps add about 60-90 bytes per integer key on top, a dict entry
        and the key object for other keys (docs/keyed.md, bench/RESULTS.md)."""
        return self._width * self._dtype.itemsize + (16 if self._learn else 0)

    @property
    def last_contributions(self) -> int:
        """Keys' gradients averaged by the last learning call (0: no optimizer step)."""
        return self._contributions

    @property
    def n_events(self) -> int:
        """Events processed by this engine."""
        return self._events

    def _live_mask(self) -> np.ndarray:
        used = self._used
        live = self._kind[:used] != _KIND_FREE
        if self.ttl is not None:
            live &= (self._now() - self._last[:used]) <= self.ttl
        return live

    def __len__(self) -> int:
        """Keys held (expired keys not counted, swept or not)."""
        if self.ttl is None:
            return self._n_keys_held()
        return int(np.count_nonzero(self._live_mask()))

    def __contains__(self, key: Hashable) -> bool:
        return self._live_row(key) is not None

    def keys(self) -> Iterator[Hashable]:
        """The keys currently held, expired ones excluded (in no particular order)."""
        rows = np.flatnonzero(self._live_mask())
        return iter(self._keys_of(rows))

    def _keys_of(self, rows: np.ndarray) -> list:
        kinds = self._kind[rows].tolist()
        ints = self._rowkey[rows].tolist()
        obj = self._objkey
        return [i if k == _KIND_INT else obj[r] for k, i, r in zip(kinds, ints, rows.tolist())]

    def _row_any(self, key: Hashable, v: int | None = None) -> int | None:
        """The key's row (expired or not), or None."""
        if v is None:
            v = _int_key(key)
        if v is None:
            return self._dict.get(key)
        s = hashtable.table_find(self._TK, self._TR, v)
        return None if s < 0 else int(self._TR[s])

    def _live_row(self, key: Hashable, v: int | None = None) -> int | None:
        row = self._row_any(key, v)
        if row is not None and self.ttl is not None and self._now() - self._last[row] > self.ttl:
            return None
        return row

    def forget(self, key: Hashable) -> bool:
        """Drop a key's state (it would start from zero again). Returns whether it existed.

        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=4))
        >>> _ = engine.step_one("k", [1.0])
        >>> engine.forget("k"), engine.forget("k"), len(engine)
        (True, False, 0)
        """
        row = self._live_row(key)
        stale = self._row_any(key)
        if stale is not None:
            self._drop_rows([stale])
        return row is not None

    def clear(self) -> None:
        """Forget every key (the state arrays keep their capacity)."""
        self._reset_keys(self._S.shape[0])

    def expire(self) -> int:
        """Forget every key idle for more than ``ttl`` now; returns how many were dropped.

        >>> now = [0.0]
        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=4), ttl=60, ttl_unit="seconds",
        ...                    clock=lambda: now[0])
        >>> _ = engine.step_one("a", [1.0])
        >>> now[0] = 61.0
        >>> engine.expire(), "a" in engine
        (1, False)
        """
        if self.ttl is None:
            return 0
        return self._sweep(self._now())

    def _row_of(self, key: Hashable) -> int:
        row = self._live_row(key)
        if row is None:
            raise KeyError(f"unknown (or expired) key {key!r}")
        return row

    def _row_for_write(self, key: Hashable) -> int:
        """The key's row, created if new (its stamps say: touched now)."""
        row = self._row_any(key)
        if row is None:
            ik, ok, B = self._split_keys([key])
            row = int(self._begin(ik, ok, B)[0][0])
        self._last[row] = self._now()
        self._recent[row] = self._events
        return row

    def state(self, key: Hashable) -> LSTMState:
        """A copy of the key's state as the single-stream model's ``LSTMState``
        (``model.state = engine.state(key)`` continues the key there). In an inference
        engine the TBPTT history and step counters of the returned state are zero.

        >>> import numpy as np
        >>> model = OnlineLSTM(n_inputs=1, hidden=4)
        >>> engine = KeyedLSTM(model)
        >>> _ = engine.step_one("k", [0.5])
        >>> model.reset_state(); _ = model.advance([0.5])
        >>> bool((engine.state("k").h == model.state.h).all())
        True
        """
        row = self._row_of(key)
        m = self._model
        if self._learn:
            return LSTMState(self._S[row].copy(), self._C[row].copy(), m.layers, m.hidden)
        buf = np.zeros(m._state_end, dtype=self._dtype)
        buf[:self._width] = self._S[row]
        return LSTMState(buf, np.zeros(2, dtype=np.int64), m.layers, m.hidden)

    def set_state(self, key: Hashable, state: LSTMState) -> None:
        """Set (or create) a key's state from an ``LSTMState`` of the model (e.g.
        ``model.state``). An inference engine keeps its ``h`` and ``c`` only.

        >>> model = OnlineLSTM(n_inputs=1, hidden=4)
        >>> engine = KeyedLSTM(model)
        >>> _ = model.advance([1.0]); engine.set_state("k", model.state)
        >>> bool((engine.state("k").c == model.state.c).all())
        True
        """
        m = self._model
        if not isinstance(state, LSTMState):
            raise TypeError(f"state must be an LSTMState, got {type(state).__name__}")
        if state.buffer.shape != (m._state_end,) or state.layers != m.layers or state.hidden != m.hidden:
            raise ValueError(f"state does not fit this model: buffer of {state.buffer.shape} values, expected "
                             f"({m._state_end},)")
        m.check_states(state.buffer.reshape(1, -1), np.asarray(state.counters).reshape(1, -1), "state", stored=False)
        row = self._row_for_write(key)
        self._S[row] = state.buffer[:self._width]
        if self._learn:
            self._C[row] = state.counters

    def state_bytes(self, key: Hashable) -> bytes:
        """The key's state as bytes: a 32-byte header (layout check) + the raw row.

        Cheap (one copy); read back with :meth:`set_state_bytes` by an engine built on a
        model of the same shape, dtype and mode.

        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=4))
        >>> _ = engine.step_one("k", [1.0])
        >>> blob = engine.state_bytes("k"); len(blob)       # 32 + 2 * 4 * 8
        96
        >>> engine.set_state_bytes("copy", blob)
        >>> bool((engine.state("copy").h == engine.state("k").h).all())
        True
        """
        row = self._row_of(key)
        if self._learn:
            return self._head + _COUNTERS.pack(*self._C[row].tolist()) + self._S[row].tobytes()
        return self._head + _ZERO_COUNTERS + self._S[row].tobytes()

    def set_state_bytes(self, key: Hashable, blob: bytes) -> None:
        """Set (or create) a key's state from :meth:`state_bytes`; ``ValueError`` if the
        bytes do not fit this engine (mode, dtype, layers, hidden, size) or are not finite."""
        n = _STATE_HEADER.size
        if len(blob) != self._blob_len or bytes(blob[:len(self._head)]) != self._head:
            raise self._bad_state_bytes(blob)
        vals = np.frombuffer(blob, dtype=self._dtype, count=self._width, offset=n)
        self._check_state_bytes(blob, vals)
        fresh = self._row_any(key) is None
        row = self._row_for_write(key)
        if not KK.put_row(self._S, row, vals):
            if fresh:
                self.forget(key)
            raise ValueError("key state holds non-finite values")
        if self._learn:
            self._C[row] = _COUNTERS.unpack_from(blob, len(self._head))

    def step_state(self, state: bytes | None, x: Sequence[float] | np.ndarray) -> tuple[bytes, float | np.ndarray]:
        """Stateless per-event form for an external state store (e.g. Flink keyed state).

        ``state``: a key's :meth:`state_bytes` (``None`` for a new key). Returns the new
        state bytes and the output, the numbers :meth:`step_one` gives on a key holding
        that state; the engine keeps nothing for the key.

        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=4))
        >>> s, y1 = engine.step_state(None, [0.5])      # a new key
        >>> s, y2 = engine.step_state(s, [0.7])         # its next event
        >>> len(engine), len(s)
        (0, 96)
        """
        if self._learn:
            return self._via_scratch_key(state, x, None)
        m = self._model
        self._check_model()
        S = self._scratch
        if state is None:
            S[0] = 0
        else:
            if len(state) != self._blob_len or bytes(state[:len(self._head)]) != self._head:
                raise self._bad_state_bytes(state)
            vals = np.frombuffer(state, dtype=self._dtype, count=self._width, offset=_STATE_HEADER.size)
            if not KK.put_row(S, 0, vals):
                raise ValueError("key state holds non-finite values")
        if type(x) is not np.ndarray or x.dtype != _F64 or x.ndim != 1:
            x = m._vector(x)
        I = m._I
        first = KK.k_infer_one(0, x, S, m._P, m._F, I, self.update_input_stats)
        if first != first and I[K.I_STATUS]:
            raise m._refused("input", x)
        self._calls += 1
        self._events += 1
        out = first if m._scalar_out else m._F[m._fout:m._fout + m.n_outputs].copy()
        return self._head + _ZERO_COUNTERS + S[0].tobytes(), out

    def learn_state(self, state: bytes | None, x: Sequence[float] | np.ndarray,
                    y: Any) -> tuple[bytes, float | np.ndarray]:
        """:meth:`step_state` for learning engines: :meth:`learn_one` on a key holding
        ``state`` (``None``: a new key); returns the new state bytes and the prediction.

        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=4), learn=True)
        >>> s, y_hat = engine.learn_state(None, [0.5], 1.0)
        >>> engine.model.n_updates, len(engine)
        (1, 0)
        """
        if not self._learn:
            raise RuntimeError("this KeyedLSTM serves only (learn=False): build it with learn=True to learn")
        return self._via_scratch_key(state, x, y)

    def _via_scratch_key(self, state: bytes | None, x: Any, y: Any) -> tuple[bytes, Any]:
        """A learning key's event on the scratch row (state bytes in, state bytes out)."""
        m = self._model
        self._check_model()
        S, C = self._scratch, self._scratch_c
        if state is None:
            S[0] = 0
            C[0] = 0
        else:
            if len(state) != self._blob_len or bytes(state[:len(self._head)]) != self._head:
                raise self._bad_state_bytes(state)
            vals = np.frombuffer(state, dtype=self._dtype, count=self._width, offset=_STATE_HEADER.size)
            self._check_state_bytes(state, vals)
            if not KK.put_row(S, 0, vals):
                raise ValueError("key state holds non-finite values")
            C[0] = _COUNTERS.unpack_from(state, len(self._head))
        if type(x) is not np.ndarray or x.dtype != _F64 or x.ndim != 1:
            x = m._vector(x)
        labelled = y is not None
        yv = m._target(y) if labelled else m._y1
        out = self._event_row(0, "<state>", x, yv, labelled, S, C)
        return self._head + _COUNTERS.pack(int(C[0, 0]), int(C[0, 1])) + S[0].tobytes(), out

    def _check_state_bytes(self, blob: bytes, vals: np.ndarray) -> None:
        """A learning key's ring holds class indices and step counters: check them (and
        finiteness) before compiled code uses them; h and c alone need only be finite."""
        if self._learn:
            counters = np.array([_COUNTERS.unpack_from(blob, len(self._head))], dtype=np.int64)
            self._model.check_states(vals.reshape(1, -1), counters, "key state")

    def _bad_state_bytes(self, blob: bytes) -> ValueError:
        n = _STATE_HEADER.size
        if len(blob) < n:
            return ValueError(f"state bytes too short: {len(blob)} bytes")
        magic, ver, flags, layers, hidden, width, _, _ = _STATE_HEADER.unpack_from(blob)
        if magic != _STATE_MAGIC:
            return ValueError("not a KeyedLSTM key state (bad magic bytes)")
        if ver != _STATE_VERSION:
            return ValueError(f"key state version {ver}; this streamlstm reads version {_STATE_VERSION}")
        m = self._model
        want = (self._flags(), m.layers, m.hidden, self._width)
        if (flags, layers, hidden, width) != want:
            return ValueError(f"key state does not fit this engine: (flags, layers, hidden, width) = "
                              f"{(flags, layers, hidden, width)}, expected {want}")
        return ValueError(f"key state has {len(blob)} bytes, expected {self._blob_len}")

    def _flags(self) -> int:
        return int(self._learn) | (2 if self._dtype == np.float32 else 0)

    # ------------------------------------------------------------- persistence
    def _config(self) -> dict[str, Any]:
        return {"learn": self._learn, "ttl": self.ttl, "ttl_unit": self.ttl_unit, "max_keys": self.max_keys,
                "update_input_stats": self.update_input_stats}

    def snapshot(self, encode_key: Callable[[Hashable], Any] | None = None) -> bytes:
        """Everything (model, every key's state, key ages) as one versioned byte string.

        Integer keys (int, numpy integers within int64) are stored as an int64 array; other
        keys in the JSON header: str, float, bool, None, bytes, int beyond int64 and tuples
        of these; anything else through ``encode_key`` (key -> JSON value) and
        ``decode_key`` on restore.

        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=4))
        >>> _ = engine.step_many(["a", ("b", 2)], [[1.0], [2.0]])
        >>> twin = KeyedLSTM.from_snapshot(engine.snapshot())
        >>> sorted(map(str, twin.keys())), twin.step_one("a", [0.5]) == engine.step_one("a", [0.5])
        (["('b', 2)", 'a'], True)
        """
        rows = np.flatnonzero(self._live_mask())
        kinds = self._kind[rows]
        now = self._now()
        enc = encode_key or _encode_key
        meta: dict[str, Any] = {
            "config": self._config(), "calls": self._calls, "events": self._events, "width": self._width,
            "since_sweep": now - self._last_sweep,
            "object_keys": [enc(self._objkey[r]) for r in rows[kinds == _KIND_OBJ].tolist()]}
        arrays: dict[str, np.ndarray] = {
            "model": np.frombuffer(self._model.to_bytes(), dtype=np.uint8),
            "states": self._S[rows],
            "age": now - self._last[rows],
            "recency": self._recent[rows],
            "key_kind": kinds,
            "int_keys": np.where(kinds == _KIND_INT, self._rowkey[rows], 0),
        }
        if self._learn:
            arrays["counters"] = self._C[rows]
        return persistence.dumps(_KIND, meta, arrays)

    @classmethod
    def from_snapshot(cls, blob: bytes, decode_key: Callable[[Any], Hashable] | None = None,
                      clock: Callable[[], float] | None = None) -> KeyedLSTM:
        """A new engine (and model) from :meth:`snapshot`; it continues bit-identically."""
        _, meta, arrays = persistence.loads(blob, expect_kind=_KIND)
        return cls._from_parts(meta, arrays, decode_key, clock)

    @classmethod
    def _from_parts(cls, meta: Any, arrays: dict[str, np.ndarray],
                    decode_key: Callable[[Any], Hashable] | None, clock: Callable[[], float] | None) -> KeyedLSTM:
        with persistence.format_errors("KeyedLSTM snapshot"):
            return cls._checked_from_parts(meta, arrays, decode_key, clock)

    @classmethod
    def _checked_from_parts(cls, meta: Any, arrays: dict[str, np.ndarray],
                            decode_key: Callable[[Any], Hashable] | None,
                            clock: Callable[[], float] | None) -> KeyedLSTM:
        bad = persistence.FormatError
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise bad("corrupt KeyedLSTM snapshot: the header has no 'config' object")
        model_bytes = arrays.get("model")
        if model_bytes is None or model_bytes.dtype != np.uint8 or model_bytes.ndim != 1:
            raise bad("corrupt KeyedLSTM snapshot: array 'model' must be the model's bytes (uint8)")
        model = OnlineLSTM.from_bytes(model_bytes.tobytes())
        cfg = meta["config"]
        try:
            settings = KeyedSettings(**cfg)
        except (TypeError, ValueError) as exc:
            raise bad(f"corrupt KeyedLSTM snapshot: setting {exc}") from None
        for name in ("calls", "events"):
            v = meta.get(name)
            # the counters live in int64 arrays: anything past 2**62 leaves no room to count on
            if type(v) is not int or not 0 <= v <= 1 << 62:
                raise bad(f"corrupt KeyedLSTM snapshot: {name!r} must be an integer in [0, 2**62], got {v!r}")
        since_sweep: Any = meta.get("since_sweep")
        if type(since_sweep) not in (int, float) or not math.isfinite(since_sweep):
            raise bad(f"corrupt KeyedLSTM snapshot: 'since_sweep' must be a finite number, got {since_sweep!r}")
        found = arrays.get("states")
        width = (model._state_end if settings.learn
                 else (2 if model.cell == "lstm" else 1) * model.layers * model.hidden)
        if found is None or found.ndim != 2 or found.shape[1] != width or found.dtype != np.dtype(model.dtype) \
                or meta.get("width") != width:
            got = None if found is None else (str(found.dtype), found.shape)
            raise bad(f"corrupt KeyedLSTM snapshot: array 'states' is {got}, expected {model.dtype} (n, {width})")
        states: np.ndarray = found
        n = states.shape[0]
        shapes: dict[str, tuple[tuple[int, ...], str]] = {
            "age": ((n,), "float64"), "recency": ((n,), "int64"), "key_kind": ((n,), "uint8"),
            "int_keys": ((n,), "int64")}
        if settings.learn:
            shapes["counters"] = ((n, 2), "int64")
        extra = set(arrays) - set(shapes) - {"model", "states"}
        if extra:
            raise bad(f"corrupt KeyedLSTM snapshot: unexpected arrays {sorted(extra)}")
        for name, (shape, dtype) in shapes.items():
            a = arrays.get(name)
            if a is None or a.shape != shape or a.dtype != np.dtype(dtype):
                got = None if a is None else (str(a.dtype), a.shape)
                raise bad(f"corrupt KeyedLSTM snapshot: array {name!r} is {got}, expected {dtype} {shape}")
        age = arrays["age"]
        if not np.isfinite(age).all():
            raise bad("corrupt KeyedLSTM snapshot: array 'age' holds a non-finite key age")
        counters = arrays["counters"] if settings.learn else np.zeros((0, 2), dtype=np.int64)
        try:
            model.check_states(states, counters, "array 'states'")
        except ValueError as exc:
            raise bad(f"corrupt KeyedLSTM snapshot: {exc}") from None
        kinds, ints = arrays["key_kind"], arrays["int_keys"]
        objects = meta.get("object_keys")
        if not isinstance(objects, list):
            raise bad("corrupt KeyedLSTM snapshot: 'object_keys' must be a list")
        dec = decode_key or _decode_key
        objs = [dec(v) for v in objects]
        if decode_key is None:
            for k in objs:
                _encode_key(k)  # what could not be saved again (a key of inf) is refused now
        ir = np.flatnonzero(kinds == _KIND_INT)
        orows = np.flatnonzero(kinds == _KIND_OBJ)
        if ir.size + orows.size != n or len(objs) != orows.size:
            raise bad("corrupt KeyedLSTM snapshot: the key arrays do not match the states")
        if np.unique(ints[ir]).size != ir.size or len(set(objs)) != len(objs) \
                or any(_int_key(k) is not None for k in objs):
            raise bad("corrupt KeyedLSTM snapshot: duplicate keys")
        engine = cls(model, learn=settings.learn, capacity=max(n, 1), ttl=settings.ttl,
                     ttl_unit=settings.ttl_unit,  # type: ignore[arg-type]  # checked by KeyedSettings
                     max_keys=settings.max_keys, update_input_stats=settings.update_input_stats, clock=clock)
        engine._calls, engine._events = meta["calls"], meta["events"]
        now = engine._now()
        engine._last_sweep = now - float(since_sweep)
        rows = engine._new_rows(n)  # 0 .. n-1
        engine._S[rows] = states
        if engine._learn:
            engine._C[rows] = counters
        engine._last[rows] = now - age
        engine._recent[rows] = arrays["recency"]
        engine._table_room(ir.size)
        hashtable.table_insert(engine._TK, engine._TR, ints[ir].astype(np.int64), ir)
        engine._n_int = int(ir.size)
        engine._kind[ir] = _KIND_INT
        engine._rowkey[ir] = ints[ir]
        for r, k in zip(orows.tolist(), objs):
            engine._dict[k] = r
            engine._objkey[r] = k
        engine._kind[orows] = _KIND_OBJ
        return engine

    def restore(self, blob: bytes, decode_key: Callable[[Any], Hashable] | None = None) -> None:
        """Replace everything (model included: see :attr:`model`) by a :meth:`snapshot`.
        The blob is fully checked before anything is replaced.

        >>> engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=4))
        >>> snap = engine.snapshot(); _ = engine.step_one("k", [1.0])
        >>> engine.restore(snap); len(engine)
        0
        """
        other = type(self).from_snapshot(blob, decode_key, self._clock)
        self.__dict__.update(other.__dict__)

    def save(self, path: str | os.PathLike[str], encode_key: Callable[[Hashable], Any] | None = None) -> None:
        """Write :meth:`snapshot` to ``path`` atomically (temporary file, fsync, rename)."""
        persistence.write_atomic(path, self.snapshot(encode_key))

    @classmethod
    def load(cls, path: str | os.PathLike[str], decode_key: Callable[[Any], Hashable] | None = None,
             clock: Callable[[], float] | None = None) -> KeyedLSTM:
        """Read an engine written by :meth:`save`."""
        _, meta, arrays = persistence.read_file(path, expect_kind=_KIND)
        try:
            return cls._from_parts(meta, arrays, decode_key, clock)
        except persistence.FormatError as exc:
            raise persistence.FormatError(f"{path}: {exc}") from None

    def __getstate__(self) -> dict[str, Any]:
        return {"blob": self.snapshot()}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(type(self).from_snapshot(d["blob"]).__dict__)

    def __repr__(self) -> str:
        return (f"KeyedLSTM({self._model!r}, learn={self._learn}, keys={len(self)}, ttl={self.ttl}, "
                f"ttl_unit={self.ttl_unit!r}, max_keys={self.max_keys})")
