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


def loads(blob: bytes, expect_kind: str | None = None) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`dumps`; returns ``(kind, meta, arrays)``; arrays are writable copies."""
    blob = bytes(blob)
    if not blob.startswith(MAGIC):
        raise FormatError("not a streamlstm file (bad magic bytes)")
    head = len(MAGIC) + _PREFIX.size
    if len(blob) < head + _CRC.size:
        raise FormatError(f"truncated streamlstm file: {len(blob)} bytes")
    version, header_len = _PREFIX.unpack_from(blob, len(MAGIC))
    if version > FORMAT_VERSION:
        raise FormatError(
            f"file format version {version} was written by a newer streamlstm; "
            f"this one reads versions up to {FORMAT_VERSION}: upgrade streamlstm"
        )
    if head + header_len + _CRC.size > len(blob):
        raise FormatError(f"truncated streamlstm file: header wants {header_len} bytes, file has {len(blob)}")
    try:
        header = json.loads(blob[head:head + header_len].decode("utf-8"))
        entries = header["arrays"]
        sizes = [int(np.prod(e["shape"], dtype=np.int64)) * np.dtype(e["dtype"]).itemsize for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"corrupt streamlstm file: unreadable header ({exc})") from None
    expected = head + header_len + sum(sizes) + _CRC.size
    if len(blob) < expected:
        raise FormatError(f"truncated streamlstm file: {len(blob)} of {expected} bytes")
    if len(blob) > expected:
        raise FormatError(f"corrupt streamlstm file: {len(blob) - expected} unexpected trailing bytes")
    (crc,) = _CRC.unpack_from(blob, expected - _CRC.size)
    if zlib.crc32(blob[:expected - _CRC.size]) != crc:
        raise FormatError("corrupt streamlstm file: checksum mismatch")
    if expect_kind is not None and header["kind"] != expect_kind:
        raise FormatError(f"this file holds a {header['kind']!r}, not a {expect_kind!r}")
    arrays = {}
    pos = head + header_len
    for entry, size in zip(entries, sizes):
        arr = np.frombuffer(blob, dtype=entry["dtype"], count=size // np.dtype(entry["dtype"]).itemsize, offset=pos)
        arrays[entry["name"]] = arr.reshape(entry["shape"]).copy()
        pos += size
    return header["kind"], header["meta"], arrays


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
    """Read and check a container written by :func:`write_atomic` (or any copy of its bytes)."""
    with open(path, "rb") as fh:
        blob = fh.read()
    try:
        return loads(blob, expect_kind)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
