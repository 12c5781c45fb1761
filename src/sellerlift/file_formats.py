"""Values written in a file's own format (``data.source.timestamp_format`` and friends): timestamps as epochs,
YYYYMMDD or a strftime format, values as text, and the hint of which format to set for timestamps that are not
ISO 8601. The contract's own checks of each column are :mod:`sellerlift.columns`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sellerlift.columns import TS_DTYPE, bad_rows

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
