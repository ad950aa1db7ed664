"""Compiled CSV blocks for the ``streamlstm`` command line: exact number parsing and printing.

A regular file is read in blocks of thousands of rows. Turning their text into floats with
Python's ``float`` and the predictions back into text with ``repr`` costs more than the
LSTM itself (about 0.35 µs per ``float`` and 0.5 µs per ``repr`` against 1.1 µs per row
for the model at H=32), so this module does both in numba, with the same results to the
bit and to the byte:

- :func:`parse_decimal`: decimal text to the nearest double, ties to even (what
  ``float()`` returns), by Clinger's exact fast path or the Eisel-Lemire algorithm
  (D. Lemire, "Number parsing at a gigabyte per second", 2021; the table of 128-bit powers
  of five is computed here with Python integers). Anything it cannot settle for certain
  (more than 19 significant digits, syntax other than ``[+-]digits[.digits][e[+-]digits]``,
  the rare product Eisel-Lemire cannot round) is left to Python's ``float``.
- :func:`write_repr`: the shortest text that reads back as the same double, laid out as
  Python's ``repr`` lays it out, by Ryu (U. Adams, "Ryu: fast float-to-string conversion",
  PLDI 2018; tables again computed here).
- :func:`parse_block` and :func:`format_block`: a block of plain CSV lines (no quotes) to
  feature/target arrays and cell offsets, and predictions plus the copied cells back to
  the bytes of the output lines.

Both directions are checked against ``float``/``repr`` in ``tests/test_fastcsv.py``
(random bit patterns over every exponent, hypothesis-generated decimal strings, and the
known hard cases). Everything here is text handling; the model's maths stays in the core.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros

__all__ = ["MAX_REPR", "format_block", "parse_block", "parse_decimal", "scan_plain", "warm_up", "write_repr"]

_jit = njit(cache=True, error_model="numpy", nogil=True)

MAX_REPR = 24  # longest repr of a double: '-2.2250738585072014e-308' is 24 characters

# Every constant that meets a uint64 is a uint64: numba turns uint64-with-int64 arithmetic
# into float64, which would silently lose bits.
_U0, _U1, _U2, _U4, _U5, _U10 = (np.uint64(v) for v in (0, 1, 2, 4, 5, 10))
_U100 = np.uint64(100)
_U32 = np.uint64(32)
_U52 = np.uint64(52)
_U63 = np.uint64(63)
_U64 = np.uint64(64)
_LOW32 = np.uint64(0xFFFFFFFF)
_ALL64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_MANT_MASK = np.uint64((1 << 52) - 1)
_HIDDEN = np.uint64(1 << 52)
_TWO53 = np.uint64(1 << 53)
_EXP_MASK = np.uint64(0x7FF)
_PRECISION_MASK = np.uint64(0x1FF)  # the 9 bits below the 55 Eisel-Lemire needs

# ----------------------------------------------------------------------------- tables


def _split(v: int) -> tuple[int, int]:
    return v >> 64, v & ((1 << 64) - 1)


def _eisel_lemire_table() -> np.ndarray:
    """128-bit approximations of 5**q, q in [-342, 308], as (high, low) rows.

    q >= 0: 5**q shifted so that its top bit is bit 127, truncated. q < 0: the reciprocal
    2**b / 5**-q rounded up, with b chosen so that it too fills 128 bits.
    """
    rows = []
    for q in range(-342, 0):
        p = 5 ** -q
        z = p.bit_length() if p & (p - 1) else p.bit_length() - 1  # ceil(log2(p))
        if q >= -27:
            c = (1 << (z + 127)) // p + 1
        else:
            c = (1 << (2 * z + 128)) // p + 1
            while c >= 1 << 128:
                c >>= 1
        rows.append(_split(c))
    for q in range(309):
        p = 5 ** q
        while p < 1 << 127:
            p <<= 1
        while p >= 1 << 128:
            p >>= 1
        rows.append(_split(p))
    return np.array(rows, dtype=np.uint64)


_POW5_BITS = 125  # Ryu's table precision (DOUBLE_POW5_BITCOUNT = DOUBLE_POW5_INV_BITCOUNT)


def _ryu_tables() -> tuple[np.ndarray, np.ndarray]:
    """Ryu's 5**i (top 125 bits) and 2**(len+124) / 5**q rounded up, as (low, high) rows."""
    pow5 = []
    for i in range(326):
        p = 5 ** i
        s = p.bit_length() - _POW5_BITS
        v = p >> s if s >= 0 else p << -s
        pow5.append(_split(v)[::-1])
    inv = []
    for q in range(342):
        p = 5 ** q
        v = (1 << (p.bit_length() - 1 + _POW5_BITS)) // p + 1
        inv.append(_split(v)[::-1])
    return np.array(pow5, dtype=np.uint64), np.array(inv, dtype=np.uint64)


_EL = _eisel_lemire_table()
_POW5, _POW5_INV = _ryu_tables()
_P10F = np.array([10.0 ** k for k in range(23)])  # exact doubles
_P10U = np.array([10 ** k for k in range(20)], dtype=np.uint64)

# ------------------------------------------------------------------------ 128-bit helpers


@_jit
def _mul128(a, b):
    """(high, low) 64-bit halves of the 128-bit product of two uint64."""
    a_lo = a & _LOW32
    a_hi = a >> _U32
    b_lo = b & _LOW32
    b_hi = b >> _U32
    p00 = a_lo * b_lo
    p01 = a_lo * b_hi
    p10 = a_hi * b_lo
    p11 = a_hi * b_hi
    mid = (p00 >> _U32) + (p01 & _LOW32) + (p10 & _LOW32)
    low = (mid << _U32) | (p00 & _LOW32)
    high = p11 + (p01 >> _U32) + (p10 >> _U32) + (mid >> _U32)
    return high, low


# ---------------------------------------------------------------------------- parsing


@_jit
def _eisel_lemire(w, q):
    """The double nearest to w * 10**q (w > 0, at most 19 digits), and whether it is certain."""
    if q < -342:
        return 0.0, True
    if q > 308:
        return math.inf, True
    lz = np.uint64(leading_zeros(w))
    w = w << lz
    row = q + 342
    high, low = _mul128(w, _EL[row, 0])
    if (high & _PRECISION_MASK) == _PRECISION_MASK:  # the first 64 bits of 5**q may not be enough
        high2, _ = _mul128(w, _EL[row, 1])
        low_sum = low + high2
        if high2 > low_sum:
            high += _U1
        low = low_sum
        if low == _ALL64:
            return 0.0, False
    upper = high >> _U63
    shift = upper + np.uint64(9)  # 64 - 52 mantissa bits - 3
    mantissa = high >> shift
    power2 = ((217706 * q) >> 16) + 63 + np.int64(upper) - np.int64(lz) + 1023
    if power2 <= 0:  # subnormal
        if -power2 + 1 >= 64:
            return 0.0, True
        mantissa >>= np.uint64(-power2 + 1)
        mantissa += mantissa & _U1
        mantissa >>= _U1
        return math.ldexp(np.float64(mantissa), -1074), True
    if (low <= _U1 and -4 <= q <= 23 and (mantissa & np.uint64(3)) == _U1
            and (mantissa << shift) == high):  # exactly half-way: round to even
        mantissa &= ~_U1
    mantissa += mantissa & _U1
    mantissa >>= _U1
    if mantissa >= _TWO53:
        mantissa = _HIDDEN
        power2 += 1
    if power2 >= 0x7FF:
        return math.inf, True
    return math.ldexp(np.float64(mantissa | _HIDDEN), power2 - 1075), True


@_jit
def parse_decimal(buf, a, b):
    """``float(buf[a:b])`` for the simple decimal syntax; ``(value, status)``.

    status 0: ``value`` is exactly what Python's ``float`` gives; 1: the cell is empty;
    2: Python's ``float`` must decide (other syntax, over 19 significant digits, or a
    rounding Eisel-Lemire cannot settle).

    >>> buf = np.frombuffer(b"0.1,-2.5e-3,,1_0", dtype=np.uint8)
    >>> parse_decimal(buf, 0, 3), parse_decimal(buf, 4, 11)
    ((0.1, 0), (-0.0025, 0))
    >>> parse_decimal(buf, 12, 12)[1], parse_decimal(buf, 13, 16)[1]  # empty; Python's float decides
    (1, 2)
    """
    if a >= b:
        return 0.0, 1
    i = a
    negative = False
    if buf[i] == 45:  # '-'
        negative = True
        i += 1
    elif buf[i] == 43:  # '+'
        i += 1
    w = _U0
    ndig = 0       # significant digits taken into w
    exp10 = 0
    seen = False   # a mantissa digit at all
    point = False  # past the decimal point: each digit lowers the exponent
    while i < b:
        c = buf[i]
        if 48 <= c <= 57:
            seen = True
            d = np.uint64(c - 48)
            if ndig > 0 or d != _U0:  # leading zeros are not significant
                if ndig == 19:
                    return 0.0, 2
                w = w * _U10 + d
                ndig += 1
            if point:
                exp10 -= 1
        elif c == 46 and not point:  # '.'
            point = True
        else:
            break
        i += 1
    if not seen:
        return 0.0, 2
    if i < b and (buf[i] == 101 or buf[i] == 69):  # 'e' 'E'
        i += 1
        eneg = False
        if i < b and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        if i >= b or not (48 <= buf[i] <= 57):
            return 0.0, 2
        e = 0
        while i < b and 48 <= buf[i] <= 57:
            if e < 100000:  # beyond this every value is 0 or inf already
                e = e * 10 + (buf[i] - 48)
            i += 1
        exp10 += -e if eneg else e
    if i != b:
        return 0.0, 2
    if w == _U0:
        return (-0.0 if negative else 0.0), 0
    if -22 <= exp10 <= 22 and w <= _TWO53:  # Clinger: both operands exact, one rounding
        v = np.float64(w)
        v = v * _P10F[exp10] if exp10 >= 0 else v / _P10F[-exp10]
    else:
        v, certain = _eisel_lemire(w, exp10)
        if not certain:
            return 0.0, 2
    return (-v if negative else v), 0


# --------------------------------------------------------------------------- printing


@_jit
def _pow5_factor(v):
    count = 0
    while v != _U0 and v % _U5 == _U0:
        v //= _U5
        count += 1
    return count


@_jit
def _mul_shift(m, lo, hi, j):
    """(m * (hi * 2**64 + lo)) >> j for 64 < j < 128 (Ryu's mulShift64)."""
    high1, low1 = _mul128(m, hi)
    high0, _ = _mul128(m, lo)
    s = high0 + low1
    if s < high0:
        high1 += _U1
    d = np.uint64(j - 64)
    return (high1 << (_U64 - d)) | (s >> d)


@_jit
def _shortest(ieee_mantissa, ieee_exponent):
    """Ryu's d2d: the shortest decimal ``digits * 10**exp`` that reads back as the double
    (the nearest such, ties to even digits), for a finite, non-zero double."""
    if ieee_exponent == 0:
        e2 = 1 - 1023 - 52 - 2
        m2 = ieee_mantissa
    else:
        e2 = ieee_exponent - 1023 - 52 - 2
        m2 = _HIDDEN | ieee_mantissa
    accept_bounds = (m2 & _U1) == _U0
    mv = _U4 * m2
    mm_shift = _U1 if (ieee_mantissa != _U0 or ieee_exponent <= 1) else _U0
    vm_trailing = False
    vr_trailing = False
    if e2 >= 0:
        q = ((e2 * 78913) >> 18) - (1 if e2 > 3 else 0)  # log10(2**e2), minus one past 2**3
        e10 = q
        k = _POW5_BITS + (((q * 1217359) >> 19) + 1) - 1
        i = -e2 + q + k
        lo, hi = _POW5_INV[q, 0], _POW5_INV[q, 1]
        vr = _mul_shift(_U4 * m2, lo, hi, i)
        vp = _mul_shift(_U4 * m2 + _U2, lo, hi, i)
        vm = _mul_shift(_U4 * m2 - _U1 - mm_shift, lo, hi, i)
        if q <= 21:  # only one of mp, mv, mm can be a multiple of 5
            if mv % _U5 == _U0:
                vr_trailing = _pow5_factor(mv) >= q
            elif accept_bounds:
                vm_trailing = _pow5_factor(mv - _U1 - mm_shift) >= q
            elif _pow5_factor(mv + _U2) >= q:
                vp -= _U1
    else:
        q = ((-e2 * 732923) >> 20) - (1 if -e2 > 1 else 0)  # log10(5**-e2), minus one past 5**1
        e10 = q + e2
        i = -e2 - q
        k = (((i * 1217359) >> 19) + 1) - _POW5_BITS
        j = q - k
        lo, hi = _POW5[i, 0], _POW5[i, 1]
        vr = _mul_shift(_U4 * m2, lo, hi, j)
        vp = _mul_shift(_U4 * m2 + _U2, lo, hi, j)
        vm = _mul_shift(_U4 * m2 - _U1 - mm_shift, lo, hi, j)
        if q <= 1:  # mv = 4 * m2 has at least two trailing zero bits
            vr_trailing = True
            if accept_bounds:
                vm_trailing = mm_shift == _U1
            else:
                vp -= _U1
        elif q < 63:
            vr_trailing = (mv & ((_U1 << np.uint64(q)) - _U1)) == _U0
    removed = 0
    last_removed = _U0
    if vm_trailing or vr_trailing:  # rare: exact decimal boundaries
        while vp // _U10 > vm // _U10:
            vm_trailing = vm_trailing and vm % _U10 == _U0
            vr_trailing = vr_trailing and last_removed == _U0
            last_removed = vr % _U10
            vr //= _U10
            vp //= _U10
            vm //= _U10
            removed += 1
        if vm_trailing:
            while vm % _U10 == _U0:
                vr_trailing = vr_trailing and last_removed == _U0
                last_removed = vr % _U10
                vr //= _U10
                vp //= _U10
                vm //= _U10
                removed += 1
        if vr_trailing and last_removed == _U5 and vr % _U2 == _U0:
            last_removed = np.uint64(4)  # exactly ...50...0: round to even
        up = (vr == vm and (not accept_bounds or not vm_trailing)) or last_removed >= _U5
        output = vr + (_U1 if up else _U0)
    else:
        round_up = False
        if vp // _U100 > vm // _U100:  # two digits at once (most numbers)
            round_up = vr % _U100 >= np.uint64(50)
            vr //= _U100
            vp //= _U100
            vm //= _U100
            removed += 2
        while vp // _U10 > vm // _U10:
            round_up = vr % _U10 >= _U5
            vr //= _U10
            vp //= _U10
            vm //= _U10
            removed += 1
        output = vr + (_U1 if (vr == vm or round_up) else _U0)
    return output, e10 + removed


@_jit
def _put(out, pos, text):
    for c in text:
        out[pos] = c
        pos += 1
    return pos


_NAN = np.frombuffer(b"nan", dtype=np.uint8).copy()
_INF = np.frombuffer(b"inf", dtype=np.uint8).copy()


@_jit
def write_repr(bits, out, pos):
    """Write ``repr(x)`` of the double with these bits at ``out[pos:]``; returns the end.

    At most :data:`MAX_REPR` bytes. Layout as CPython's ``float_repr``: positional when
    the decimal point falls within 16 digits after or 4 before the first digit
    (``0.0001``, ``1234567890123456.0``), else ``d.ddde+XX``.

    >>> out = np.zeros(MAX_REPR, dtype=np.uint8)
    >>> [out[:write_repr(np.float64(v).view(np.uint64), out, 0)].tobytes() for v in (0.1, 1e16, -5e-324, 2.0)]
    [b'0.1', b'1e+16', b'-5e-324', b'2.0']
    """
    ieee_mantissa = bits & _MANT_MASK
    ieee_exponent = np.int64((bits >> _U52) & _EXP_MASK)
    if ieee_exponent == 0x7FF:
        if ieee_mantissa != _U0:
            return _put(out, pos, _NAN)
        if bits >> _U63:
            out[pos] = 45
            pos += 1
        return _put(out, pos, _INF)
    if bits >> _U63:
        out[pos] = 45
        pos += 1
    if ieee_exponent == 0 and ieee_mantissa == _U0:
        out[pos] = 48
        out[pos + 1] = 46
        out[pos + 2] = 48
        return pos + 3
    digits, exp = _shortest(ieee_mantissa, ieee_exponent)
    n = 1
    while n < 20 and digits >= _P10U[n]:
        n += 1
    decpt = n + exp  # the decimal point sits after this many digits
    if -4 < decpt <= 16:
        if decpt <= 0:
            out[pos] = 48
            out[pos + 1] = 46
            pos += 2
            for _ in range(-decpt):
                out[pos] = 48
                pos += 1
            pos += n
            for t in range(n):
                out[pos - 1 - t] = 48 + np.int64(digits % _U10)
                digits //= _U10
            return pos
        if decpt >= n:  # an integer: digits, zeros, '.0'
            for t in range(n):
                out[pos + n - 1 - t] = 48 + np.int64(digits % _U10)
                digits //= _U10
            pos += n
            for _ in range(decpt - n):
                out[pos] = 48
                pos += 1
            out[pos] = 46
            out[pos + 1] = 48
            return pos + 2
        end = pos + n + 1  # digits with the point inside
        for t in range(n):
            at = pos + n - t if n - t > decpt else pos + n - 1 - t
            out[at] = 48 + np.int64(digits % _U10)
            digits //= _U10
        out[pos + decpt] = 46
        return end
    # exponent notation: d[.ddd]e[+-]XX
    mant_len = n + 1 if n > 1 else 1
    for t in range(n):
        at = pos + n - t if t < n - 1 else pos
        out[at] = 48 + np.int64(digits % _U10)
        digits //= _U10
    if n > 1:
        out[pos + 1] = 46
    pos += mant_len
    e = decpt - 1
    out[pos] = 101
    out[pos + 1] = 45 if e < 0 else 43
    pos += 2
    e = -e if e < 0 else e
    if e >= 100:
        out[pos] = 48 + e // 100
        pos += 1
    out[pos] = 48 + (e // 10) % 10
    out[pos + 1] = 48 + e % 10
    return pos + 2


# ----------------------------------------------------------------------------- blocks


@_jit
def parse_block(buf, nrows, ncol, role, nspans, limit, X, y, known, spans):
    """Cells of ``nrows`` lines of ``buf`` (each ending in ``\\n``, no quotes).

    ``role[j]`` of column j: a feature slot (>= 0), -1 ignored, -2 the target, or
    ``-3 - s``: keep the cell's offsets as span ``s``. The target's offsets are kept as
    span ``nspans - 1`` when it is there. Fills ``X``, ``y`` (NaN when the cell is empty)
    and ``known``. Returns the number of rows done: it stops before the first row that
    Python must look at (wrong field count, a number needing ``float``, a value that is
    not finite or beyond ``limit``, an empty feature).

    >>> raw = np.frombuffer(b"1.5,a,2\\n-3,b,\\n", dtype=np.uint8)
    >>> X, y, known = np.empty((2, 1)), np.empty(2), np.empty(2, dtype=bool)
    >>> spans = np.empty((2, 2, 2), dtype=np.int64)
    >>> parse_block(raw, 2, 3, np.array([0, -3, -2]), 2, 1e100, X, y, known, spans)
    2
    >>> X[:, 0].tolist(), y.tolist(), known.tolist()
    ([1.5, -3.0], [2.0, nan], [True, False])
    """
    pos = 0
    size = len(buf)
    for r in range(nrows):
        col = 0
        start = pos
        while True:
            if pos >= size:
                return r
            c = buf[pos]
            if c == 44 or c == 10:  # ',' or '\n' ends a cell
                if col >= ncol:
                    return r
                rl = role[col]
                if rl >= 0:
                    v, status = parse_decimal(buf, start, pos)
                    if status != 0 or not abs(v) <= limit:
                        return r
                    X[r, rl] = v
                elif rl == -2:
                    v, status = parse_decimal(buf, start, pos)
                    if status == 1:
                        y[r] = np.nan
                        known[r] = False
                    elif status != 0 or not abs(v) <= limit:
                        return r
                    else:
                        y[r] = v
                        known[r] = True
                    spans[r, nspans - 1, 0] = start
                    spans[r, nspans - 1, 1] = pos
                elif rl <= -3:
                    spans[r, -3 - rl, 0] = start
                    spans[r, -3 - rl, 1] = pos
                col += 1
                pos += 1
                start = pos
                if c == 10:
                    break
            else:
                pos += 1
        if col != ncol:
            return r
    return nrows


@_jit
def format_block(buf, spans, bits, out):
    """Output lines: the kept cells of each row (copied), then its numbers (``repr``; an
    empty cell for NaN), comma-separated. ``bits`` is (numbers, rows) uint64, the
    numbers' IEEE bits. Returns the bytes written to ``out``.

    >>> raw = np.frombuffer(b"a,2\\nb,\\n", dtype=np.uint8)
    >>> spans = np.array([[[0, 1], [2, 3]], [[4, 5], [6, 6]]])
    >>> out = np.empty(64, dtype=np.uint8)
    >>> out[:format_block(raw, spans, np.array([[0.5, np.nan]]).view(np.uint64), out)].tobytes()
    b'a,2,0.5\\nb,,\\n'
    """
    nrows = spans.shape[0]
    nspans = spans.shape[1]
    nnum = bits.shape[0]
    pos = 0
    for r in range(nrows):
        for s in range(nspans):
            for p in range(spans[r, s, 0], spans[r, s, 1]):
                out[pos] = buf[p]
                pos += 1
            out[pos] = 44
            pos += 1
        for k in range(nnum):
            v = bits[k, r]
            if (v & np.uint64(0x7FF0000000000000)) != np.uint64(0x7FF0000000000000) or (v & _MANT_MASK) == _U0:
                pos = write_repr(v, out, pos)  # NaN (no value) leaves the cell empty
            out[pos] = 44
            pos += 1
        out[pos - 1] = 10
    return pos


@_jit
def scan_plain(buf, start, limit, max_line):
    """Count up to ``limit`` plain lines of ``buf`` from ``start``: ``(count, end)``.

    A plain line ends in ``\\n`` within ``buf``, holds no ``"`` or ``\\r``, is at most
    ``max_line`` bytes, and has an ASCII byte that is not white space (so it is surely not
    blank; a line of only non-ASCII bytes and spaces is left to the Python reader, which
    knows Unicode white space). The scan stops before the first line that is not plain.

    >>> scan_plain(np.frombuffer(b'1,2\\n3,4\\n"5",6\\n', dtype=np.uint8), 0, 10, 1000)
    (2, 8)
    """
    size = len(buf)
    pos = start
    count = 0
    while count < limit:
        line_start = pos
        seen = False
        while pos < size:
            c = buf[pos]
            if c == 10:
                break
            if c == 34 or c == 13:
                return count, line_start
            if not seen and c < 128 and not (c == 32 or 9 <= c <= 12 or 28 <= c <= 31):
                seen = True
            pos += 1
        if pos >= size or not seen or pos - line_start > max_line:
            return count, line_start
        pos += 1
        count += 1
    return count, pos


def warm_up() -> None:
    """Load the kernels from numba's cache (compile them on first use) with the argument
    types the reader uses: bytes-backed, read-only arrays."""
    raw = np.frombuffer(b"1.5,x\n", dtype=np.uint8)
    spans = np.zeros((1, 1, 2), dtype=np.int64)
    scan_plain(raw, 0, 1, 100)
    parse_block(raw, 1, 2, np.array([0, -3]), 1, 1e100, np.empty((1, 1)), np.empty(1), np.empty(1, dtype=bool),
                spans)
    format_block(raw, spans, np.zeros((1, 1), dtype=np.uint64), np.empty(64, dtype=np.uint8))
