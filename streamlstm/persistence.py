"""A versioned, pickle-free container for named numpy arrays and a JSON header.

Layout of a file (all integers little-endian)::

    b"STREAMLSTM\\0"            11 bytes, magic
    format version            uint32
    header length             uint64
    header                    UTF-8 JSON: {"kind", "meta", "arrays": [{name, dtype, shape}]}
    array bytes               concatenated, in header order, C order
    CRC-32                    uint32 of everything above

A truncated, corrupt, foreign or newer file raises :class:`FormatError` saying which.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"STREAMLSTM\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<IQ")
_CRC = struct.Struct("<I")
_DTYPES = {"float64", "float32", "int64", "uint8", "bool"}
_DTYPE_NAMES = {(np.dtype(name).kind, np.dtype(name).itemsize): name for name in _DTYPES}


class FormatError(ValueError):
    """A file or byte string that is not a readable streamlstm container."""


# what reading a malformed header can raise, before a check of ours names the field
_MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, ZeroDivisionError,
              RecursionError)


@contextmanager
def format_errors(what: str) -> Iterator[None]:
    """Turn what a malformed header raises inside the block into a ``FormatError`` about ``what``.

    >>> with format_errors("demo file"):
    ...     {}["config"]
    Traceback (most recent call last):
    ...
    streamlstm.persistence.FormatError: corrupt demo file: KeyError: 'config'
    """
    try:
        yield
    except FormatError:
        raise
    except _MALFORMED as exc:
        raise FormatError(f"corrupt {what}: {type(exc).__name__}: {exc}") from None


def dumps(kind: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise ``arrays`` and the JSON-able ``meta`` under the label ``kind``.

    >>> blob = dumps("demo", {"a": 1}, {"w": np.arange(3.0)})
    >>> kind, meta, arrays = loads(blob)
    >>> kind, meta, arrays["w"].tolist()
    ('demo', {'a': 1}, [0.0, 1.0, 2.0])
    """
    entries = []
    chunks = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        dtype_name = _DTYPE_NAMES.get((arr.dtype.kind, arr.dtype.itemsize))  # dtype.name is slow to build
        if dtype_name is None:
            raise TypeError(f"array {name!r} has unsupported dtype {arr.dtype}")
        entries.append({"name": name, "dtype": dtype_name, "shape": list(arr.shape)})
        chunks.append(arr.tobytes())
    header = json.dumps({"kind": kind, "meta": meta, "arrays": entries}).encode("utf-8")
    body = MAGIC + _PREFIX.pack(FORMAT_VERSION, len(header)) + header + b"".join(chunks)
    return body + _CRC.pack(zlib.crc32(body))


# A header is a few KB even for a large model; a longer one is not a header we wrote.
MAX_HEADER_BYTES = 64 * 2 ** 20
_MAX_ARRAYS = 1 << 20
MAX_STREAM_BYTES = 4 * 2 ** 30  # from a pipe or a device, where no file size bounds the read
_MAX_NDIM = 8


def _entry_size(index: int, entry: Any) -> tuple[str, str, tuple[int, ...], int]:
    """(name, dtype, shape, bytes) of one header entry, every field checked."""
    where = f"header entry {index}"
    if not isinstance(entry, dict):
        raise FormatError(f"corrupt streamlstm file: {where} is a {type(entry).__name__}, not an object")
    name, dtype, shape = entry.get("name"), entry.get("dtype"), entry.get("shape")
    if not isinstance(name, str):
        raise FormatError(f"corrupt streamlstm file: {where}: 'name' must be a string, got {name!r}")
    where = f"array {name!r}"
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise FormatError(f"corrupt streamlstm file: {where}: dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM \
            or not all(type(d) is int and d >= 0 for d in shape):
        raise FormatError(f"corrupt streamlstm file: {where}: shape {shape!r} is not a list of at most "
                          f"{_MAX_NDIM} integers >= 0")
    count = 1
    for d in shape:
        count *= d  # Python integers: no overflow, compared with the byte length next
    return name, dtype, tuple(shape), count * np.dtype(dtype).itemsize


def _parse_header(raw: bytes) -> tuple[str, Any, list[tuple[str, str, tuple[int, ...], int]]]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FormatError(f"corrupt streamlstm file: unreadable header ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"corrupt streamlstm file: the header is a {type(header).__name__}, not an object")
    kind, entries = header.get("kind"), header.get("arrays")
    if not isinstance(kind, str):
        raise FormatError(f"corrupt streamlstm file: header field 'kind' must be a string, got {kind!r}")
    if not isinstance(header.get("meta"), dict):
        raise FormatError("corrupt streamlstm file: header field 'meta' must be an object")
    if not isinstance(entries, list) or len(entries) > _MAX_ARRAYS:
        raise FormatError("corrupt streamlstm file: header field 'arrays' must be a list of array entries")
    parsed = [_entry_size(i, e) for i, e in enumerate(entries)]
    if len({p[0] for p in parsed}) != len(parsed):
        raise FormatError("corrupt streamlstm file: header field 'arrays' names an array twice")
    return kind, header["meta"], parsed


def _prefix(blob: bytes) -> int:
    """Check magic, size and version; return the header length."""
    if not blob.startswith(MAGIC):
        raise FormatError("not a streamlstm file (bad magic bytes)")
    head = len(MAGIC) + _PREFIX.size
    if len(blob) < head + _CRC.size:
        raise FormatError(f"truncated streamlstm file: {len(blob)} bytes")
    version, header_len = _PREFIX.unpack_from(blob, len(MAGIC))
    if version > FORMAT_VERSION or version < 1:
        if version < 1:
            raise FormatError(f"corrupt streamlstm file: format version {version}")
        raise FormatError(
            f"file format version {version} was written by a newer streamlstm; "
            f"this one reads versions up to {FORMAT_VERSION}: upgrade streamlstm"
        )
    if header_len > MAX_HEADER_BYTES:
        raise FormatError(f"corrupt streamlstm file: header length {header_len} is over {MAX_HEADER_BYTES} bytes")
    return int(header_len)


def loads(blob: bytes, expect_kind: str | None = None) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`dumps`; returns ``(kind, meta, arrays)``; arrays are writable copies.

    Sizes are checked against the byte length before anything is built; shapes, dtypes
    and names against the header. What the arrays mean is the caller's to check.
    """
    blob = bytes(blob)
    header_len = _prefix(blob)
    head = len(MAGIC) + _PREFIX.size
    if head + header_len + _CRC.size > len(blob):
        raise FormatError(f"truncated streamlstm file: header wants {header_len} bytes, file has {len(blob)}")
    kind, meta, entries = _parse_header(blob[head:head + header_len])
    expected = head + header_len + sum(e[3] for e in entries) + _CRC.size
    if len(blob) < expected:
        raise FormatError(f"truncated streamlstm file: {len(blob)} of {expected} bytes")
    if len(blob) > expected:
        raise FormatError(f"corrupt streamlstm file: {len(blob) - expected} unexpected trailing bytes")
    (crc,) = _CRC.unpack_from(blob, expected - _CRC.size)
    if zlib.crc32(blob[:expected - _CRC.size]) != crc:
        raise FormatError("corrupt streamlstm file: checksum mismatch")
    if expect_kind is not None and kind != expect_kind:
        raise FormatError(f"this file holds a {kind!r}, not a {expect_kind!r}")
    arrays = {}
    pos = head + header_len
    for name, dtype, shape, size in entries:
        arr = np.frombuffer(blob, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=pos)
        arrays[name] = arr.reshape(shape).copy()
        pos += size
    return kind, meta, arrays


def write_atomic(path: str | os.PathLike[str], blob: bytes) -> None:
    """Write ``blob`` so that ``path`` holds either its old content or all of ``blob``.

    A temporary file ``.NAME.PID.XXXXXXXX.tmp`` in the same folder is written, flushed to
    disk, then renamed over ``path`` (an atomic step on POSIX), and the folder entry itself
    is synced. A symlink is written through: the file it points to is replaced, the link
    stays. A FIFO, device, socket or folder at ``path`` raises ``OSError`` (renaming over
    it would replace it with a regular file). Temporary files of this naming that a killed
    writer left behind are removed (see :func:`_remove_stale_temporaries`).

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> write_atomic(os.path.join(folder, "real"), b"one")
    >>> os.symlink("real", os.path.join(folder, "link"))
    >>> write_atomic(os.path.join(folder, "link"), b"two")
    >>> os.path.islink(os.path.join(folder, "link")), open(os.path.join(folder, "real"), "rb").read()
    (True, b'two')
    """
    path = Path(os.path.realpath(path))
    check_replaceable(path)
    folder = path.parent
    _remove_stale_temporaries(folder, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from its group
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Raise ``OSError`` saying what ``path`` is when it exists and is not a regular file
    (through symlinks): :func:`write_atomic` will not replace it.

    >>> check_replaceable("/dev/null")
    Traceback (most recent call last):
    OSError: [Errno 22] is a character device, not a regular file: an atomic write would replace it: '/dev/null'
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there to replace (its folder is checked elsewhere)
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    for test, what in _SPECIAL:
        if test(mode):
            raise OSError(errno.EINVAL, f"is {what}, not a regular file: an atomic write would replace it",
                          str(path))


_TMP_NAME = r"\.{}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp"  # ours; without a PID: written by 0.1.0
_STALE_DEAD = 60.0      # seconds untouched before a dead writer's file goes (the PID may be another host's)
_STALE_UNOWNED = 3600.0  # seconds untouched before a file without a PID goes
_SWEEP_EVERY = 60.0     # a folder is looked through at most this often per name
_last_sweep: dict[tuple[str, str], float] = {}


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    """Remove the temporary files of :func:`write_atomic` for ``name`` that a killed writer
    left: only names of our pattern, only regular files, only when the process in the
    name is gone (untouched for a minute) or, for names without one, after an hour."""
    now = time.monotonic()
    key = (str(folder), name)
    if now - _last_sweep.get(key, -_SWEEP_EVERY) < _SWEEP_EVERY:
        return
    _last_sweep[key] = now
    pattern = re.compile(_TMP_NAME.format(re.escape(name)))
    prefix = f".{name}."
    wall = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        m = pattern.fullmatch(entry.name)
        if m is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        age = wall - st.st_mtime
        pid = m.group(1)
        stale = (age > _STALE_UNOWNED) if pid is None else (age > _STALE_DEAD and not _alive(int(pid)))
        if stale and stat.S_ISREG(st.st_mode):
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's process
        return True
    except (OverflowError, ValueError):  # not a process id at all
        return False
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_file(path: str | os.PathLike[str], expect_kind: str | None = None) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a container written by :func:`write_atomic` (or any copy of its bytes).

    The magic bytes and the header are checked before the rest is read, and never more
    than the header announces is read: a device, a FIFO or an endless stream given by
    mistake is refused after a few bytes.
    """
    try:
        with open(path, "rb") as fh:
            blob = _read_bounded(fh)
        return loads(blob, expect_kind)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None


def _read_exactly(fh: Any, n: int, have: bytes) -> bytes:
    """``have`` plus up to ``n`` more bytes, read in chunks (memory grows with what arrives)."""
    parts = [have]
    while n > 0:
        chunk = fh.read(min(n, 1 << 24))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _read_bounded(fh: Any) -> bytes:
    head = len(MAGIC) + _PREFIX.size
    blob = _read_exactly(fh, head + _CRC.size, b"")
    header_len = _prefix(blob)
    blob = _read_exactly(fh, head + header_len - len(blob), blob)
    if len(blob) < head + header_len:
        raise FormatError(f"truncated streamlstm file: header wants {header_len} bytes, file has {len(blob)}")
    _, _, entries = _parse_header(blob[head:head + header_len])
    total = head + header_len + sum(e[3] for e in entries) + _CRC.size
    st = os.fstat(fh.fileno())
    if stat.S_ISREG(st.st_mode):
        if total > st.st_size:
            raise FormatError(f"truncated streamlstm file: the header announces {total} bytes, the file has "
                              f"{st.st_size}")
    elif total > MAX_STREAM_BYTES:
        raise FormatError(f"the header announces {total} bytes, over {MAX_STREAM_BYTES} bytes for a stream "
                          "that is not a regular file")
    return _read_exactly(fh, total - len(blob) + 1, blob)  # one byte more shows trailing garbage
