"""How each kind of contract column is read and checked: identifiers, timestamps, numbers, booleans.

Each checker returns the canonical column and appends ``(rows, message)`` for every problem;
:func:`sellerlift.schema.validate` names the column and raises. Nothing here drops a row.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd

TS_DTYPE = "datetime64[us]"
# Largest magnitude stored exactly in a float64 (ids and whole numbers beyond it would silently change).
_EXACT_FLOAT = 2.0**53
_INT64_MAX = np.iinfo(np.int64).max


def no_rows() -> np.ndarray:
    return np.array([], dtype=np.int64)


def bad_rows(mask) -> np.ndarray:
    return np.flatnonzero(np.asarray(mask, dtype=bool))


# --------------------------------------------------------------------------- identifiers

_BAD_ID_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def coerce_id(s: pd.Series) -> tuple[pd.Series, np.ndarray, str, int]:
    """Canonical id column: int64 when every value is a whole number, else NFC strings.

    Returns (series, bad rows, what is wrong with them, number of ids put into NFC form).
    """
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if pd.api.types.is_bool_dtype(s):
        return s, bad_rows(s.notna()), "a boolean is not an identifier", 0
    if pd.api.types.is_integer_dtype(s):
        if pd.api.types.is_unsigned_integer_dtype(s) and len(s) and int(s.max()) > _INT64_MAX:
            return s, bad_rows(s.to_numpy() > _INT64_MAX), "identifier too large for int64; store it as text", 0
        return s.astype("int64"), no_rows(), "", 0
    missing = s.isna().to_numpy()
    if pd.api.types.is_float_dtype(s):
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(vals) & (np.floor(vals) == vals) & (np.abs(vals) < _EXACT_FLOAT)
        if whole.all():
            return s.astype("int64"), no_rows(), "", 0
        return s, bad_rows(~whole & ~missing), "not a valid identifier; expected an integer or a non-empty string", 0
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_datetime64_any_dtype(s):
        return s, bad_rows(~missing), f"{s.dtype} values are not identifiers", 0
    # object / string: every value must be text or a whole number (lists, bytes, floats are not ids)
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind not in ("string", "empty"):
        ok_type = np.array(
            [
                v is None
                or v is pd.NA
                or isinstance(v, (str, int, np.integer))
                and not isinstance(v, bool)
                or (isinstance(v, float) and np.isnan(v))
                for v in s.to_numpy(dtype=object)
            ],
            dtype=bool,
        )
        if not ok_type.all():
            return s, bad_rows(~ok_type), "not a valid identifier (wrong type); expected an integer or a string", 0
    as_str = s.astype("string")
    bad = missing | (as_str.str.len() == 0).fillna(True).to_numpy()
    present = ~missing
    text = as_str.to_numpy(dtype=object, na_value="")
    control = np.array([bool(_BAD_ID_CHARS.search(t)) for t in text], dtype=bool) & present
    stripped = (as_str.str.strip() != as_str).fillna(False).to_numpy() & present
    invalid_unicode = np.zeros(len(text), dtype=bool)
    try:
        "".join(text).encode("utf-8")
    except UnicodeEncodeError:
        invalid_unicode = np.array([not _encodes(t) for t in text], dtype=bool)
    wrong = control | stripped | invalid_unicode
    if wrong.any() or bad[present].any():
        rows = bad_rows(wrong | (bad & present))
        reasons = [
            r
            for r, m in (
                ("control character", control),
                ("leading/trailing whitespace", stripped),
                ("invalid Unicode (lone surrogate)", invalid_unicode),
            )
            if m.any()
        ]
        return s, rows, "not a valid identifier (" + (", ".join(reasons) or "empty") + ")", 0
    normalized = pd.Series(
        [unicodedata.normalize("NFC", t) if not t.isascii() else t for t in text], dtype="string", index=as_str.index
    )
    normalized[missing] = pd.NA
    n_changed = int(((normalized != as_str).fillna(False)).sum())
    return normalized, no_rows(), "", n_changed


def _encodes(t: str) -> bool:
    try:
        t.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# --------------------------------------------------------------------------- timestamps

_HAS_OFFSET = re.compile(r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?|UTC|GMT)$")


def coerce_timestamp(s: pd.Series) -> tuple[pd.Series, list[tuple[np.ndarray, str]]]:
    """Canonical naive-UTC ``datetime64[us]`` and a list of (bad rows, message)."""
    problems: list[tuple[np.ndarray, str]] = []
    present = s.notna().to_numpy()
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        out = s.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(s):
        out = s
    elif pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        # Epoch numbers are ambiguous (s? ms? ns?): refuse rather than guess 1970.
        problems.append(
            (
                bad_rows(present),
                f"{s.dtype} values are not timestamps; expected ISO 8601 text like "
                "2025-03-01T12:00:00Z or a datetime column",
            )
        )
        return pd.Series(pd.NaT, index=s.index, dtype=TS_DTYPE), problems
    else:
        values = s.to_numpy(dtype=object)
        is_text = np.array([isinstance(v, str) for v in values], dtype=bool)
        is_time = np.array(
            [
                isinstance(v, (pd.Timestamp, np.datetime64)) or hasattr(v, "tzinfo") and not isinstance(v, str)
                for v in values
            ],
            dtype=bool,
        )
        wrong_type = present & ~is_text & ~is_time
        if wrong_type.any():
            problems.append(
                (
                    bad_rows(wrong_type),
                    "not a timestamp (wrong type: numbers, booleans, lists are not "
                    "timestamps); expected ISO 8601 text like 2025-03-01T12:00:00Z",
                )
            )
        aware = np.zeros(len(values), dtype=bool)
        for i in np.flatnonzero(present & ~wrong_type):
            v = values[i]
            if isinstance(v, str):
                aware[i] = bool(_HAS_OFFSET.search(v.strip()))
            else:
                aware[i] = getattr(v, "tzinfo", None) is not None
        usable = present & ~wrong_type
        if aware[usable].any() and not aware[usable].all():
            naive = usable & ~aware
            problems.append(
                (
                    bad_rows(naive),
                    "timestamp without a time zone in a column whose other rows have one "
                    "(mixed time zones are ambiguous); give every row an offset, e.g. "
                    "2025-03-01T12:00:00Z or +02:00",
                )
            )
        clean = pd.Series(np.where(usable, values, None), index=s.index, dtype=object)
        # Strings with explicit offsets are converted to UTC; naive ones are taken as UTC.
        out, ambiguous = _parse_text_times(clean, usable)
        if len(ambiguous):
            problems.append(
                (
                    ambiguous,
                    "unparseable timestamp: the day/month order of dates like 05/01/2024 is "
                    "ambiguous; expected ISO 8601 like 2025-03-01T12:00:00Z",
                )
            )
        unparsed = np.setdiff1d(bad_rows(out.isna().to_numpy() & usable), ambiguous)
        if len(unparsed):
            problems.append((unparsed, "unparseable timestamp; expected ISO 8601 like 2025-03-01T12:00:00Z"))
    out = out.astype(TS_DTYPE)
    return out, problems


_DAY_MONTH = re.compile(r"\s*\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}")


def _parse_text_times(clean: pd.Series, usable: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """ISO 8601 text -> naive UTC; other unambiguous spellings ('2025-03-01 12:00 UTC') as a fallback.

    Dates like 05/01/2024 are never guessed (pandas would read them month-first, silently): their rows
    come back as the second value. A file's own format is ``data.source.timestamp_format``.
    """
    out = pd.to_datetime(clean, errors="coerce", utc=True, format="ISO8601")
    retry = out.isna().to_numpy() & usable
    ambiguous = np.zeros(len(clean), dtype=bool)
    if retry.any():
        idx = np.flatnonzero(retry)
        text = clean.iloc[idx].astype(str)
        dm = text.str.match(_DAY_MONTH.pattern).to_numpy(dtype=bool)
        ambiguous[idx[dm]] = True
        rest = idx[~dm]
        if len(rest):
            out.iloc[rest] = pd.to_datetime(clean.iloc[rest], errors="coerce", utc=True, format="mixed")
    return out.dt.tz_localize(None), bad_rows(ambiguous)


# --------------------------------------------------------------------------- numbers and booleans


def _numeric_type_problems(s: pd.Series) -> np.ndarray:
    """Rows of an object column holding booleans, complex numbers or containers (not numbers)."""
    if s.dtype != object:
        return no_rows()
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind in ("string", "integer", "floating", "mixed-integer-float", "decimal", "empty"):
        return no_rows()
    values = s.to_numpy(dtype=object)
    bad = np.array([isinstance(v, (bool, np.bool_, complex, bytes, list, tuple, dict, set)) for v in values], bool)
    return bad_rows(bad)


def check_number_column(col, s: pd.Series, problems: list) -> pd.Series:
    if (
        pd.api.types.is_bool_dtype(s)
        or pd.api.types.is_complex_dtype(s)
        or pd.api.types.is_datetime64_any_dtype(s)
        or isinstance(s.dtype, pd.DatetimeTZDtype)
    ):
        problems.append((bad_rows(s.notna().to_numpy()), f"{s.dtype} values; expected {col.kind}"))
        return pd.Series(np.full(len(s), np.nan), name=col.name)
    wrong_type = _numeric_type_problems(s)
    if len(wrong_type):
        problems.append((wrong_type, f"not a number (wrong type); expected {col.kind}"))
        s = s.copy()
        s.iloc[wrong_type] = None
    num = pd.to_numeric(s, errors="coerce")
    if pd.api.types.is_complex_dtype(num):
        num = pd.Series(np.where(np.iscomplex(num.to_numpy()), np.nan, np.real(num.to_numpy())), index=s.index)
    not_number = np.setdiff1d(bad_rows(num.isna().to_numpy() & ~s.isna().to_numpy()), wrong_type)
    if len(not_number):
        problems.append((not_number, f"not a number; expected {col.kind}"))
    vals = num.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(vals)
    inf = bad_rows(np.isinf(vals))
    if len(inf):
        problems.append((inf, "infinite value; expected a finite number"))
    if col.min_value is not None:
        neg = bad_rows(finite & (vals < col.min_value))
        if len(neg):
            problems.append((neg, f"value below {col.min_value}; expected >= {col.min_value}"))
    if col.kind == "int":
        frac = bad_rows(finite & (np.floor(vals) != vals))
        if len(frac):
            problems.append((frac, "not a whole number; expected int"))
        huge = bad_rows(finite & (np.abs(vals) >= _EXACT_FLOAT))
        if len(huge):
            problems.append((huge, "whole number too large to be exact; expected |value| < 2**53"))
    if col.allowed:
        bad = bad_rows(finite & ~np.isin(vals, col.allowed))
        if len(bad):
            problems.append((bad, f"value not allowed; expected one of {list(col.allowed)}"))
    return pd.Series(vals, name=col.name)


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False, "yes": True, "no": False}


def check_bool_column(col, s: pd.Series, problems: list) -> pd.Series:
    if pd.api.types.is_bool_dtype(s) and not s.isna().any():
        return s.astype(bool)
    mapped = s.astype("string").str.strip().str.lower().map(_BOOL_TEXT)
    bad = bad_rows(mapped.isna().to_numpy() & ~s.isna().to_numpy())
    if len(bad):
        problems.append((bad, "not a boolean; expected true/false or 1/0"))
    return mapped


def find_failing_rows(s: pd.Series, check) -> np.ndarray:
    """Rows on which ``check`` raises, by bisection (a safety net: the checks above should not raise)."""

    def ok(part: pd.Series) -> bool:
        try:
            check(part.reset_index(drop=True), [])
            return True
        except Exception:
            return False

    bad: list[int] = []
    stack = [(0, len(s))]
    while stack and len(bad) < 50:
        lo, hi = stack.pop()
        if hi <= lo or ok(s.iloc[lo:hi]):
            continue
        if hi - lo == 1:
            bad.append(lo)
        else:
            mid = (lo + hi) // 2
            stack += [(mid, hi), (lo, mid)]
    return np.array(sorted(bad), dtype=np.int64)
