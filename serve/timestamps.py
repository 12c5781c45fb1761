"""ISO 8601 strings -> naive-UTC ``datetime64[us]``, vectorised (NaT where unparseable or out of range).

The common shapes (``YYYY-MM-DD``, then ``[T ]HH:MM:SS``, then ``.fff`` or ``.ffffff``,
then ``Z``) are decoded as a byte matrix with NumPy, date validity included; every
other string that matches :data:`serve.schemas.TS_PATTERN` goes to pandas, so the
values (and NaT) are exactly those of ``pd.to_datetime(..., utc=True, format="ISO8601")``.
Strings that do not match the pattern are reported as such (``mismatch``).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pandas as pd

from sellerlift.schema import TS_MAX, TS_MIN
from serve.schemas import TS_PATTERN_STRICT

TS_RE = re.compile(TS_PATTERN_STRICT)
CHUNK = 16384  # strings per vectorised step: bounds each NumPy call (and the GIL it holds)
_FAST = np.zeros(65, bool)  # the lengths of the common shapes (strings are at most 64 long)
_FAST[[10, 19, 20, 23, 24, 26, 27]] = True
_WIDTH = 27
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)
_LO, _HI = np.datetime64(TS_MIN, "us"), np.datetime64(TS_MAX, "us")


def in_range(out: np.ndarray) -> np.ndarray:
    out[(out < _LO) | (out >= _HI)] = np.datetime64("NaT")
    return out


def parse_times(values: list[str]) -> np.ndarray:
    """pandas' ISO 8601 parser (the reference); NaT where unparseable or out of the schema's range."""
    if not values:
        return np.zeros(0, dtype="datetime64[us]")
    parsed = pd.to_datetime(np.asarray(values, dtype=object), utc=True, format="ISO8601", errors="coerce")
    return in_range(parsed.tz_localize(None).to_numpy().astype("datetime64[us]"))


def _where(mask, cond):
    """``cond`` where ``mask`` holds, True elsewhere (``mask``: a bool for one-length lists, else an array)."""
    if isinstance(mask, bool | np.bool_):
        return cond if mask else True
    return ~mask | cond


def _uniform(values: list[str]) -> np.ndarray | None:
    """[n, 27] uint8, zero-padded, when every string has the same (common) length and is ASCII without NUL."""
    n, width = len(values), len(values[0]) if values else 0
    if not n or not _FAST[min(width, _FAST.size - 1)]:
        return None
    try:
        joined = "\x00".join(values).encode("ascii")
    except UnicodeEncodeError:
        return None
    if len(joined) != n * (width + 1) - 1:
        return None
    a = np.frombuffer(joined + b"\x00", np.uint8).reshape(n, width + 1)
    if np.count_nonzero(a == 0) != n or not (a[:, width] == 0).all():  # the NULs are exactly the separators
        return None
    chars = np.zeros((n, _WIDTH), np.uint8)
    chars[:, :width] = a[:, :width]
    return chars


def fast_times(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[us] values, handled mask): the strings in a common shape with a valid date and time."""
    n = len(values)
    out = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    done = np.zeros(n, dtype=bool)
    chars = _uniform(values)  # the usual case: every string of one length, in one common shape
    if chars is not None:
        idx = np.arange(n)
        L = len(values[0])  # one length: the shape's flags below are plain bools
    else:
        lens = np.fromiter(map(len, values), dtype=np.int64, count=n)
        idx = np.flatnonzero(_FAST[np.minimum(lens, _FAST.size - 1)])
        if not len(idx):
            return out, done
        try:
            raw = np.array(values if len(idx) == n else [values[i] for i in idx], dtype=f"S{_WIDTH}")
        except UnicodeEncodeError:  # non-ASCII somewhere: leave it all to pandas
            return out, done
        chars = raw.view(np.uint8).reshape(len(idx), _WIDTH)  # shorter strings are zero-padded
        L = lens[idx]
    col = np.ascontiguousarray(chars.T)  # col[p]: character p of every string, contiguous (uint8)
    digit = col - np.uint8(48)  # uint8: a non-digit wraps to >= 10
    isdig = digit < 10
    d = digit.astype(np.int32)

    def digits(*pos):
        v = d[pos[0]].copy()
        ok = isdig[pos[0]].copy()
        for p in pos[1:]:
            ok &= isdig[p]
            v = v * 10 + d[p]
        return v, ok

    def among(*lengths):
        return L in lengths if isinstance(L, int) else np.isin(L, lengths)

    has_time, f3, f6, zulu = L >= 19, among(23, 24), among(26, 27), among(20, 24, 27)
    year, ok_y = digits(0, 1, 2, 3)
    month, ok_m = digits(5, 6)
    day, ok_d = digits(8, 9)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    mi = np.clip(month, 1, 12) - 1
    dim = _DAYS_IN_MONTH[mi] + ((mi == 1) & leap)
    ok = (
        ok_y
        & ok_m
        & ok_d
        & (col[4] == 45)
        & (col[7] == 45)
        & (year >= 1900)
        & (year <= 2199)
        & (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= dim)
    )
    sec = 0
    if np.any(has_time):
        hour, ok_h = digits(11, 12)
        minute, ok_mi = digits(14, 15)
        second, ok_s = digits(17, 18)
        ok &= _where(
            has_time,
            ((col[10] == 84) | (col[10] == 32))
            & (col[13] == 58)
            & (col[16] == 58)
            & ok_h
            & ok_mi
            & ok_s
            & (hour <= 23)
            & (minute <= 59)
            & (second <= 59),
        )
        sec = np.where(has_time, hour * 3600 + minute * 60 + second, 0).astype(np.int64)
    frac = 0
    if np.any(f3 | f6):
        ok &= _where(f3 | f6, col[19] == 46)
    if np.any(f3):
        frac3, ok_f3 = digits(20, 21, 22)
        ok &= _where(f3, ok_f3)
        frac = frac + np.where(f3, frac3 * 1000, 0)
    if np.any(f6):
        frac6, ok_f6 = digits(20, 21, 22, 23, 24, 25)
        ok &= _where(f6, ok_f6)
        frac = frac + np.where(f6, frac6, 0)
    if isinstance(L, int):
        ok &= (col[L - 1] == 90) if zulu else True
    else:
        ok &= ~zulu | (chars[np.arange(len(idx)), L - 1] == 90)
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = (era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468).astype(np.int64)
    us = (days * 86_400 + sec) * 1_000_000 + frac
    good = idx[ok]
    out[good] = us[ok].astype("datetime64[us]")
    done[good] = True
    return out, done


def event_times(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[us] with NaT where unparseable / out of range, mismatch mask: not ISO 8601 at all)."""
    n = len(values)
    ts = np.empty(n, dtype="datetime64[us]")
    mismatch = np.zeros(n, dtype=bool)
    for s in range(0, n, CHUNK):
        part = values[s : s + CHUNK]
        got, done = fast_times(part)
        if not done.all():
            rest = np.flatnonzero(~done)
            rest_str = [part[i] for i in rest]
            bad = np.fromiter((TS_RE.match(v) is None for v in rest_str), dtype=bool, count=len(rest_str))
            mismatch[s + rest[bad]] = True
            keep = rest[~bad]
            got[keep] = parse_times([part[i] for i in keep])
        ts[s : s + len(part)] = in_range(got)
    return ts, mismatch


@lru_cache(maxsize=4096)
def one_time(value: str) -> np.datetime64:
    """An as-of time (they repeat across requests: each distinct string is parsed once). NaT if invalid."""
    if TS_RE.match(value) is None:
        return np.datetime64("NaT", "us")
    return event_times([value])[0][0]


def iso(t: np.datetime64) -> str:
    return pd.Timestamp(t).tz_localize("UTC").isoformat().replace("+00:00", "Z")


def iso_each(values: np.ndarray) -> list[str]:
    """iso() of every element, formatting each distinct time once (requests usually share one as-of)."""
    uniq, inv = np.unique(values, return_inverse=True)
    names = [iso(u) for u in uniq]
    return [names[i] for i in inv.reshape(-1).tolist()]
