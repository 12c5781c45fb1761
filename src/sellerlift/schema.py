"""The data contract: the two tables every source produces, written down once.

``events``      one row per customer action (visit, view, purchase, ...)
``promotions``  one row per campaign offer sent to a customer (level 0 = control)

Validation never drops or repairs rows silently: it either returns the table
with canonical dtypes or raises :class:`SchemaError` naming file, row and column
of every problem (the first few of each kind, with counts).

Documented, counted repairs (reported in ``df.attrs["repairs"]`` and logged as a
warning on the ``sellerlift.schema`` logger, never done silently):

* exact duplicate rows (every column equal after canonicalisation) are dropped
  when ``duplicates="drop"`` (the default of :func:`sellerlift.io.read_table`; :func:`validate`
  keeps them unless asked): ``repairs["duplicate_rows_dropped"]``;
* string identifiers are put in Unicode NFC form, so the same name typed on two
  systems is one customer: ``repairs["ids_unicode_normalized"]``;
* timestamps with an explicit offset are converted to UTC (naive ones are UTC).

Everything else that is wrong is an error (file-level checks are in
:mod:`sellerlift.io`): a CSV row with more or fewer fields
than the header (e.g. a file cut off mid-row), a file that does not end with a
newline, NUL bytes, undecodable bytes, an unreadable Parquet file, a column
mixing timestamps with and without a time zone, numbers in a timestamp column,
timestamps after ``as_of``, identifiers with control characters, surrounding
whitespace or invalid Unicode, duplicate column names. See docs/reliability.md.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

EVENT_TYPES: tuple[str, ...] = (
    "visit",
    "view",
    "add_to_cart",
    "purchase",
    "email_open",
    "support_contact",
    "coupon_redeem",
)
# Discount levels in percent; index 0 is "no discount".
DISCOUNT_LEVELS: tuple[int, ...] = (0, 5, 10, 15, 20, 25, 30)

TS_MIN = pd.Timestamp("1970-01-01")
TS_MAX = pd.Timestamp("2100-01-01")
TS_DTYPE = "datetime64[us]"
# Largest magnitude stored exactly in a float64 (ids and whole numbers beyond it would silently change).
_EXACT_FLOAT = 2.0**53
_INT64_MAX = np.iinfo(np.int64).max
DUPLICATE_POLICIES = ("keep", "drop", "error")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "id" | "timestamp" | "category" | "float" | "int" | "bool"
    required: bool = True
    allowed: tuple = ()
    min_value: float | None = None
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    sort_by: tuple[str, ...] = ()

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


EVENTS = TableSpec(
    name="events",
    columns=(
        Column("customer_id", "id", description="customer identifier (integer or string)"),
        Column("seller_id", "id", description="seller the customer belongs to"),
        Column("ts", "timestamp", description="event time, UTC"),
        Column("event_type", "category", allowed=EVENT_TYPES, description="what happened"),
        Column("amount", "float", min_value=0.0, description="order value for purchases (net of discount), else 0"),
        Column("quantity", "int", required=False, min_value=0, description="items in the order (optional)"),
    ),
    sort_by=("customer_id", "ts"),
)

PROMOTIONS = TableSpec(
    name="promotions",
    columns=(
        Column("customer_id", "id"),
        Column("seller_id", "id"),
        Column("ts", "timestamp", description="time the offer was sent, UTC"),
        Column("discount_pct", "int", allowed=DISCOUNT_LEVELS, description="offered discount in percent; 0 = control"),
        Column("converted", "bool", description="purchased within the campaign window"),
        Column("revenue", "float", min_value=0.0, description="net revenue in the window"),
        Column("cost", "float", min_value=0.0, description="discount spend in the window"),
        Column("randomized", "bool", required=False, description="offer drawn by the randomised (RCT) slice"),
        Column("propensity", "float", required=False, min_value=0.0, description="logging policy probability of this level"),
    ),
    sort_by=("customer_id", "ts"),
)

TABLES = {"events": EVENTS, "promotions": PROMOTIONS}


@dataclass
class Problem:
    column: str | None
    rows: np.ndarray  # 0-based positions in the table
    message: str


@dataclass
class SchemaError(ValueError):
    """Raised when a table breaks the contract; lists every problem found."""

    source: str
    table: str
    problems: list[Problem] = field(default_factory=list)
    max_rows_shown: int = 5

    def __str__(self) -> str:
        lines = [f"{self.source}: the {self.table} table breaks the data contract:"]
        for p in self.problems:
            where = f"column '{p.column}'" if p.column else "table"
            if len(p.rows):
                shown = ", ".join(str(int(r) + 1) for r in p.rows[: self.max_rows_shown])
                more = f" (+{len(p.rows) - self.max_rows_shown} more)" if len(p.rows) > self.max_rows_shown else ""
                lines.append(f"  - {where}, {len(p.rows)} row(s) [row {shown}{more}]: {p.message}")
            else:
                lines.append(f"  - {where}: {p.message}")
        lines.append("  (rows are numbered from 1, the first data row after the header)")
        return "\n".join(lines)


    def __reduce__(self):  # picklable across processes (dataclass exceptions lose their fields otherwise)
        return (type(self), (self.source, self.table, self.problems, self.max_rows_shown))


def _no_rows() -> np.ndarray:
    return np.array([], dtype=np.int64)


def _bad_rows(mask) -> np.ndarray:
    return np.flatnonzero(np.asarray(mask, dtype=bool))


def _as_naive_utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


# --------------------------------------------------------------------------- identifiers

_BAD_ID_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _coerce_id(s: pd.Series) -> tuple[pd.Series, np.ndarray, str, int]:
    """Canonical id column: int64 when every value is a whole number, else NFC strings.

    Returns (series, bad rows, what is wrong with them, number of ids put into NFC form).
    """
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if pd.api.types.is_bool_dtype(s):
        return s, _bad_rows(s.notna()), "a boolean is not an identifier", 0
    if pd.api.types.is_integer_dtype(s):
        if pd.api.types.is_unsigned_integer_dtype(s) and len(s) and int(s.max()) > _INT64_MAX:
            return s, _bad_rows(s.to_numpy() > _INT64_MAX), "identifier too large for int64; store it as text", 0
        return s.astype("int64"), _no_rows(), "", 0
    missing = s.isna().to_numpy()
    if pd.api.types.is_float_dtype(s):
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(vals) & (np.floor(vals) == vals) & (np.abs(vals) < _EXACT_FLOAT)
        if whole.all():
            return s.astype("int64"), _no_rows(), "", 0
        return s, _bad_rows(~whole & ~missing), "not a valid identifier; expected an integer or a non-empty string", 0
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_datetime64_any_dtype(s):
        return s, _bad_rows(~missing), f"{s.dtype} values are not identifiers", 0
    # object / string: every value must be text or a whole number (lists, bytes, floats are not ids)
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind not in ("string", "empty"):
        ok_type = np.array([v is None or v is pd.NA or isinstance(v, (str, int, np.integer)) and not isinstance(v, bool)
                            or (isinstance(v, float) and np.isnan(v)) for v in s.to_numpy(dtype=object)], dtype=bool)
        if not ok_type.all():
            return s, _bad_rows(~ok_type), "not a valid identifier (wrong type); expected an integer or a string", 0
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
        rows = _bad_rows(wrong | (bad & present))
        reasons = [r for r, m in (("control character", control), ("leading/trailing whitespace", stripped),
                                  ("invalid Unicode (lone surrogate)", invalid_unicode)) if m.any()]
        return s, rows, "not a valid identifier (" + (", ".join(reasons) or "empty") + ")", 0
    normalized = pd.Series([unicodedata.normalize("NFC", t) if not t.isascii() else t for t in text],
                           dtype="string", index=as_str.index)
    normalized[missing] = pd.NA
    n_changed = int(((normalized != as_str).fillna(False)).sum())
    return normalized, _no_rows(), "", n_changed


def _encodes(t: str) -> bool:
    try:
        t.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# --------------------------------------------------------------------------- timestamps

_HAS_OFFSET = re.compile(r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?|UTC|GMT)$")


def _coerce_timestamp(s: pd.Series) -> tuple[pd.Series, list[tuple[np.ndarray, str]]]:
    """Canonical naive-UTC ``datetime64[us]`` and a list of (bad rows, message)."""
    problems: list[tuple[np.ndarray, str]] = []
    present = s.notna().to_numpy()
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        out = s.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(s):
        out = s
    elif pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        # Epoch numbers are ambiguous (s? ms? ns?): refuse rather than guess 1970.
        problems.append((_bad_rows(present), f"{s.dtype} values are not timestamps; expected ISO 8601 text like "
                                             "2025-03-01T12:00:00Z or a datetime column"))
        return pd.Series(pd.NaT, index=s.index, dtype=TS_DTYPE), problems
    else:
        values = s.to_numpy(dtype=object)
        is_text = np.array([isinstance(v, str) for v in values], dtype=bool)
        is_time = np.array([isinstance(v, (pd.Timestamp, np.datetime64)) or hasattr(v, "tzinfo") and
                            not isinstance(v, str) for v in values], dtype=bool)
        wrong_type = present & ~is_text & ~is_time
        if wrong_type.any():
            problems.append((_bad_rows(wrong_type), "not a timestamp (wrong type: numbers, booleans, lists are not "
                                                    "timestamps); expected ISO 8601 text like 2025-03-01T12:00:00Z"))
        aware = np.zeros(len(values), dtype=bool)
        for i in np.flatnonzero(present & ~wrong_type):
            v = values[i]
            aware[i] = bool(_HAS_OFFSET.search(v.strip())) if isinstance(v, str) else getattr(v, "tzinfo", None) is not None
        usable = present & ~wrong_type
        if aware[usable].any() and not aware[usable].all():
            naive = usable & ~aware
            problems.append((_bad_rows(naive), "timestamp without a time zone in a column whose other rows have one "
                                               "(mixed time zones are ambiguous); give every row an offset, e.g. "
                                               "2025-03-01T12:00:00Z or +02:00"))
        clean = pd.Series(np.where(usable, values, None), index=s.index, dtype=object)
        # Strings with explicit offsets are converted to UTC; naive ones are taken as UTC.
        out = pd.to_datetime(clean, errors="coerce", utc=True, format="mixed").dt.tz_localize(None)
        unparsed = _bad_rows(out.isna().to_numpy() & usable)
        if len(unparsed):
            problems.append((unparsed, "unparseable timestamp; expected ISO 8601 like 2025-03-01T12:00:00Z"))
    out = out.astype(TS_DTYPE)
    return out, problems


# --------------------------------------------------------------------------- numbers and booleans

def _numeric_type_problems(s: pd.Series) -> np.ndarray:
    """Rows of an object column holding booleans, complex numbers or containers (not numbers)."""
    if s.dtype != object:
        return _no_rows()
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind in ("string", "integer", "floating", "mixed-integer-float", "decimal", "empty"):
        return _no_rows()
    values = s.to_numpy(dtype=object)
    bad = np.array([isinstance(v, (bool, np.bool_, complex, bytes, list, tuple, dict, set)) for v in values], bool)
    return _bad_rows(bad)


def _check_number_column(col: Column, s: pd.Series, problems: list[Problem]) -> pd.Series:
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_complex_dtype(s) or pd.api.types.is_datetime64_any_dtype(s) \
            or isinstance(s.dtype, pd.DatetimeTZDtype):
        problems.append(Problem(col.name, _bad_rows(s.notna().to_numpy()), f"{s.dtype} values; expected {col.kind}"))
        return pd.Series(np.full(len(s), np.nan), name=col.name)
    wrong_type = _numeric_type_problems(s)
    if len(wrong_type):
        problems.append(Problem(col.name, wrong_type, f"not a number (wrong type); expected {col.kind}"))
        s = s.copy()
        s.iloc[wrong_type] = None
    num = pd.to_numeric(s, errors="coerce")
    if pd.api.types.is_complex_dtype(num):
        num = pd.Series(np.where(np.iscomplex(num.to_numpy()), np.nan, np.real(num.to_numpy())), index=s.index)
    not_number = np.setdiff1d(_bad_rows(num.isna().to_numpy() & ~s.isna().to_numpy()), wrong_type)
    if len(not_number):
        problems.append(Problem(col.name, not_number, f"not a number; expected {col.kind}"))
    vals = num.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(vals)
    inf = _bad_rows(np.isinf(vals))
    if len(inf):
        problems.append(Problem(col.name, inf, "infinite value; expected a finite number"))
    if col.min_value is not None:
        neg = _bad_rows(finite & (vals < col.min_value))
        if len(neg):
            problems.append(Problem(col.name, neg, f"value below {col.min_value}; expected >= {col.min_value}"))
    if col.kind == "int":
        frac = _bad_rows(finite & (np.floor(vals) != vals))
        if len(frac):
            problems.append(Problem(col.name, frac, "not a whole number; expected int"))
        huge = _bad_rows(finite & (np.abs(vals) >= _EXACT_FLOAT))
        if len(huge):
            problems.append(Problem(col.name, huge, "whole number too large to be exact; expected |value| < 2**53"))
    if col.allowed:
        bad = _bad_rows(finite & ~np.isin(vals, col.allowed))
        if len(bad):
            problems.append(Problem(col.name, bad, f"value not allowed; expected one of {list(col.allowed)}"))
    return pd.Series(vals, name=col.name)


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False, "yes": True,
              "no": False}


def _check_bool_column(col: Column, s: pd.Series, problems: list[Problem]) -> pd.Series:
    if pd.api.types.is_bool_dtype(s) and not s.isna().any():
        return s.astype(bool)
    mapped = s.astype("string").str.strip().str.lower().map(_BOOL_TEXT)
    bad = _bad_rows(mapped.isna().to_numpy() & ~s.isna().to_numpy())
    if len(bad):
        problems.append(Problem(col.name, bad, "not a boolean; expected true/false or 1/0"))
    return mapped


def _find_failing_rows(s: pd.Series, check) -> np.ndarray:
    """Rows on which ``check`` raises, by bisection (a safety net: the checks above should not raise)."""
    def ok(part: pd.Series) -> bool:
        try:
            check(part.reset_index(drop=True), [])
            return True
        except Exception:  # noqa: BLE001 - we are locating the row that breaks it
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


# --------------------------------------------------------------------------- validate

def _column_hint(name: str, columns) -> str:
    def canon(c) -> str:
        return re.sub(r"[\s_\-]+", "", str(c)).lower()

    near = [c for c in columns if canon(c) == canon(name) and c != name]
    return f" (column {near[0]!r} differs only in case/spaces: rename it)" if near else ""


def validate(
    df: pd.DataFrame,
    table: str,
    source: str = "<memory>",
    ts_min: pd.Timestamp = TS_MIN,
    ts_max: pd.Timestamp = TS_MAX,
    as_of: pd.Timestamp | str | None = None,
    duplicates: str = "keep",
) -> pd.DataFrame:
    """Check ``df`` against the contract of ``table`` and return it with canonical dtypes.

    Raises :class:`SchemaError` naming every bad column/row; never drops rows silently.
    ``as_of``: the time the data was extracted ("now" for the current time); any
    timestamp after it is an error (events cannot come from the future).
    ``duplicates``: what to do with exact duplicate rows: ``keep`` them, ``drop``
    them (a counted repair: ``attrs["repairs"]["duplicate_rows_dropped"]`` and a
    log warning) or raise an ``error`` naming them.
    """
    spec = TABLES[table]
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates={duplicates!r}; expected one of {DUPLICATE_POLICIES}")
    problems: list[Problem] = []
    dup_names = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dup_names:
        raise SchemaError(source, table, [Problem(None, _no_rows(), f"duplicate column name(s) {dup_names}")])
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        hints = "".join(_column_hint(c, df.columns) for c in missing)
        problems.append(Problem(None, _no_rows(), f"missing required column(s) {missing}; found {list(df.columns)}"
                                                   f"{hints}"))
        raise SchemaError(source, table, problems)
    if len(df) == 0:
        raise SchemaError(source, table, [Problem(None, _no_rows(), "the table has no rows")])
    ts_min, ts_max = _as_naive_utc(ts_min), _as_naive_utc(ts_max)
    if as_of is not None:
        as_of = _as_naive_utc(pd.Timestamp.now(tz="UTC") if str(as_of) == "now" else as_of)

    repairs = {"duplicate_rows_dropped": 0, "ids_unicode_normalized": 0}
    out = {}
    for col in spec.columns:
        if col.name not in df.columns:
            continue
        s = df[col.name].reset_index(drop=True)
        col_problems: list[Problem] = []
        try:
            s = _check_column(col, s, col_problems, ts_min, ts_max, as_of, repairs)
        except Exception as err:  # noqa: BLE001 - never a raw stack trace: name the rows instead
            rows = _find_failing_rows(df[col.name].reset_index(drop=True),
                                      lambda part, sink: _check_column(col, part, sink, ts_min, ts_max, as_of, {}))
            col_problems = [Problem(col.name, rows, f"value(s) that cannot be read as {col.kind} "
                                                    f"({type(err).__name__}: {str(err)[:200]})")]
        problems += col_problems
        out[col.name] = s

    if problems:
        raise SchemaError(source, table, problems)
    result = pd.DataFrame(out)
    for col in spec.columns:
        if col.kind == "int" and col.name in result:
            result[col.name] = result[col.name].astype(np.int64)
        if col.kind == "bool" and col.name in result:
            result[col.name] = result[col.name].astype(bool)
    extra = [c for c in df.columns if c not in result.columns]
    for c in extra:  # keep unknown columns untouched: nothing is lost
        result[c] = df[c].to_numpy()

    if duplicates != "keep":
        dup = _duplicate_rows(result)
        if len(dup):
            if duplicates == "error":
                raise SchemaError(source, table, [Problem(None, dup, "exact duplicate of an earlier row "
                                                                      "(every column equal)")])
            shown = ", ".join(str(int(r) + 1) for r in dup[:5])
            log.warning("%s: dropped %d exact duplicate row(s) of the %s table (rows %s%s)", source, len(dup), table,
                        shown, " ..." if len(dup) > 5 else "")
            result = result.drop(index=dup).reset_index(drop=True)
            repairs["duplicate_rows_dropped"] = int(len(dup))
            repairs["duplicate_rows"] = [int(r) + 1 for r in dup[:100]]  # 1-based, first 100
    if repairs["ids_unicode_normalized"]:
        log.warning("%s: put %d identifier(s) of the %s table into Unicode NFC form", source,
                    repairs["ids_unicode_normalized"], table)
    result.attrs["source"] = source
    result.attrs["repairs"] = repairs
    return result


def _check_column(col: Column, s: pd.Series, problems: list[Problem], ts_min, ts_max, as_of, repairs: dict):
    null = _bad_rows(s.isna().to_numpy())
    if len(null) and col.kind != "timestamp":
        problems.append(Problem(col.name, null, f"missing value (NaN/empty); expected {col.kind}"))
    if col.kind == "id":
        s, bad, why, n_norm = _coerce_id(s)
        bad = np.setdiff1d(bad, null)
        if len(bad):
            problems.append(Problem(col.name, bad, why))
        repairs["ids_unicode_normalized"] = repairs.get("ids_unicode_normalized", 0) + n_norm
    elif col.kind == "timestamp":
        if len(null):
            problems.append(Problem(col.name, null, "missing timestamp"))
        s, ts_problems = _coerce_timestamp(s)
        problems += [Problem(col.name, rows, msg) for rows, msg in ts_problems]
        ok = s.notna().to_numpy()
        vals = s.to_numpy()
        out_of_range = ok & ((vals < np.datetime64(ts_min)) | (vals >= np.datetime64(ts_max)))
        if out_of_range.any():
            problems.append(Problem(col.name, _bad_rows(out_of_range),
                                    f"timestamp out of range; expected {ts_min} <= ts < {ts_max}"))
        if as_of is not None:
            future = ok & ~out_of_range & (vals > np.datetime64(as_of))
            if future.any():
                problems.append(Problem(col.name, _bad_rows(future),
                                        f"timestamp in the future: after the as-of time {as_of} (UTC) of the data"))
    elif col.kind == "category":
        if isinstance(s.dtype, pd.CategoricalDtype) and tuple(s.cat.categories) == tuple(col.allowed):
            return s  # already the contract's categories: nothing else can be in it
        text = s.astype("string")
        unknown = ~text.isin(col.allowed).to_numpy() & ~s.isna().to_numpy()
        if unknown.any():
            rows = _bad_rows(unknown)
            seen = sorted({str(v) for v in text.iloc[rows[:50]].tolist()})[:5]
            problems.append(Problem(col.name, rows, f"unknown value(s) {seen}; expected one of {list(col.allowed)}"))
        s = pd.Categorical(text, categories=list(col.allowed))
    elif col.kind in ("float", "int"):
        s = _check_number_column(col, s, problems)
    elif col.kind == "bool":
        s = _check_bool_column(col, s, problems)
    return s


def _duplicate_rows(df: pd.DataFrame) -> np.ndarray:
    """0-based rows that repeat an earlier row exactly (every column, extras included)."""
    try:
        return _bad_rows(df.duplicated(keep="first").to_numpy())
    except TypeError:  # unhashable values in an extra column: compare their text
        return _bad_rows(df.astype(str).duplicated(keep="first").to_numpy())


def sort_table(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Sort by the table's key (stable, so ties keep file order)."""
    return df.sort_values(list(TABLES[table].sort_by), kind="stable").reset_index(drop=True)
