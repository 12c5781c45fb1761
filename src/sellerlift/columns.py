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


# --------------------------------------------------------------------------- timestamps in the file's own format

EPOCH_FORMATS = {"epoch_s": 1.0, "epoch_ms": 1e-3}  # seconds per unit
TIMESTAMP_FORMATS = ("epoch_s", "epoch_ms", "yyyymmdd")  # besides any strftime format such as %d/%m/%Y %H:%M
_EPOCH_MAX_S = (pd.Timestamp("2100-01-01") - pd.Timestamp("1970-01-01")).total_seconds()


def _examples(values: np.ndarray, rows: np.ndarray, n: int = 3) -> str:
    seen = list(dict.fromkeys(str(v) for v in values[rows[:50]]))[:n]
    return ", ".join(repr(v) for v in seen)


def parse_timestamps(
    s: pd.Series, fmt: str, key: str = "data.source.timestamp_format"
) -> tuple[pd.Series, list[tuple[np.ndarray, str]], bool]:
    """Timestamps written in ``fmt`` -> datetime64 (naive, or UTC-aware for epochs / %z), problems, and whether
    the result is absolute (epochs and formats with an offset: the file's time zone does not apply).

    ``fmt``: ``epoch_s`` / ``epoch_ms`` (numbers, or text of digits), ``yyyymmdd`` (19970101, as a number or
    text) or a strftime format (``%d/%m/%Y``). Rows that do not match are problems naming ``key`` and the format.
    """
    present = s.notna().to_numpy()
    values = s.to_numpy(dtype=object)
    problems: list[tuple[np.ndarray, str]] = []
    if fmt in EPOCH_FORMATS:
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        secs = num * EPOCH_FORMATS[fmt]
        bad = present & ~np.isfinite(secs)
        if bad.any():
            problems.append(
                (
                    bad_rows(bad),
                    f"not a number of {'seconds' if fmt == 'epoch_s' else 'milliseconds'} "
                    f"since 1970 ({key}={fmt}); e.g. {_examples(values, bad_rows(bad))}",
                )
            )
        out_of_range = present & np.isfinite(secs) & ((secs < 0) | (secs >= _EPOCH_MAX_S))
        if out_of_range.any():
            rows = bad_rows(out_of_range)
            big = np.nanmax(np.abs(secs[out_of_range])) >= _EPOCH_MAX_S
            hint = (
                " (these look like milliseconds: set it to epoch_ms)"
                if fmt == "epoch_s" and big
                else " (these look like seconds: set it to epoch_s)"
                if fmt == "epoch_ms" and not big
                else ""
            )
            problems.append(
                (rows, f"epoch value outside 1970-2100 ({key}={fmt}){hint}; e.g. {_examples(values, rows)}")
            )
        ok = present & np.isfinite(secs) & ~out_of_range
        micros = np.where(ok, np.round(np.nan_to_num(secs) * 1e6), 0).astype(np.int64)
        out = pd.Series(micros.astype("datetime64[us]"), index=s.index)
        out[~ok] = pd.NaT
        return out, problems, True
    text = as_text(s)
    pattern = "%Y%m%d" if fmt == "yyyymmdd" else fmt
    aware = fmt != "yyyymmdd" and ("%z" in fmt or "%Z" in fmt)
    if fmt == "yyyymmdd":  # exactly eight digits: strptime alone would take 1997012 as 1997-01-02
        text = text.where(text.astype("string").str.fullmatch(r"\d{8}").fillna(False).to_numpy(dtype=bool), None)
    out = pd.to_datetime(text, format=pattern, errors="coerce", utc=aware)
    if aware:
        out = out.dt.tz_localize(None)
    bad = present & out.isna().to_numpy()
    if bad.any():
        rows = bad_rows(bad)
        problems.append(
            (
                rows,
                f"does not match {key}={fmt!r}"
                + (" (YYYYMMDD, e.g. 19970101)" if fmt == "yyyymmdd" else "")
                + f"; e.g. {_examples(values, rows)}",
            )
        )
    return out.astype(TS_DTYPE), problems, aware


def as_text(s: pd.Series) -> pd.Series:
    """Values as text; whole floats (an integer column with gaps) lose their '.0'."""
    if pd.api.types.is_float_dtype(s):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(v) & (np.floor(v) == v)
        return pd.Series(
            [str(int(x)) if w else (None if np.isnan(x) else str(x)) for x, w in zip(v, whole)],
            index=s.index,
            dtype=object,
        )
    if pd.api.types.is_integer_dtype(s):
        return s.astype("string").astype(object)
    return s.astype("string").str.strip().astype(object).where(s.notna(), None)


def timestamp_format_hint(s: pd.Series, key: str = "data.source.timestamp_format") -> str:
    """What ``key`` to set for timestamps that are not ISO 8601 (numbers, day-first dates), or ''."""
    sample = s.dropna()
    if not len(sample):
        return ""
    sample = sample.iloc[:: max(1, len(sample) // 200)]
    num = pd.to_numeric(sample, errors="coerce")
    if num.notna().all():
        v = float(num.abs().median())
        if 19000101 <= v <= 21001231:
            guess = "yyyymmdd"
        elif 1e11 <= v < _EPOCH_MAX_S * 1e3:
            guess = "epoch_ms"
        elif 1e8 <= v < _EPOCH_MAX_S:
            guess = "epoch_s"
        else:
            return f"; set {key} (one of {list(TIMESTAMP_FORMATS)} or a strftime format)"
        return f"; these look like {guess}: set {key}={guess}"
    text = sample.astype(str).str.strip()
    for fmt in (
        "%d/%m/%Y %H:%M:%S",
        "%d/%m/%Y %H:%M",
        "%d/%m/%Y",
        "%m/%d/%Y %H:%M:%S",
        "%m/%d/%Y %H:%M",
        "%m/%d/%Y",
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
        "%d.%m.%Y",
        "%d-%m-%Y",
        "%Y/%m/%d",
    ):
        if pd.to_datetime(text, format=fmt, errors="coerce").notna().all():
            swapped = fmt.replace("%d", "%X").replace("%m", "%d").replace("%X", "%m")
            if "/" in fmt and pd.to_datetime(text, format=swapped, errors="coerce").notna().all():
                return f"; set {key}='{fmt}' (day first) or '{swapped}' (month first)"
            return f"; these look like {fmt}: set {key}='{fmt}'"
    return f"; or set {key} (a strftime format such as %d/%m/%Y %H:%M, or epoch_s, epoch_ms, yyyymmdd)"


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
