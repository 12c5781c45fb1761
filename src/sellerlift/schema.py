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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sellerlift import columns
from sellerlift.columns import bad_rows, no_rows

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
        Column(
            "propensity", "float", required=False, min_value=0.0, description="logging policy probability of this level"
        ),
    ),
    sort_by=("customer_id", "ts"),
)

TABLES = {"events": EVENTS, "promotions": PROMOTIONS}


@dataclass
class Problem:
    column: str | None
    rows: np.ndarray  # 0-based positions in the table
    message: str


class DataError(ValueError):
    """A data file or data config that cannot be used; the message names the file, row, column or config key.

    Entry points (``train.py``, the scorer, ``python -m sellerlift.data check``) print it without a traceback.
    """


@dataclass
class SchemaError(DataError):
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


def _as_naive_utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


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
        raise SchemaError(source, table, [Problem(None, no_rows(), f"duplicate column name(s) {dup_names}")])
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        hints = "".join(_column_hint(c, df.columns) for c in missing)
        problems.append(
            Problem(None, no_rows(), f"missing required column(s) {missing}; found {list(df.columns)}{hints}")
        )
        raise SchemaError(source, table, problems)
    if len(df) == 0:
        raise SchemaError(source, table, [Problem(None, no_rows(), "the table has no rows")])
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
        except Exception as err:
            rows = columns.find_failing_rows(
                df[col.name].reset_index(drop=True),
                lambda part, sink, c=col: _check_column(c, part, sink, ts_min, ts_max, as_of, {}),
            )
            col_problems = [
                Problem(
                    col.name,
                    rows,
                    f"value(s) that cannot be read as {col.kind} ({type(err).__name__}: {str(err)[:200]})",
                )
            ]
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
                raise SchemaError(
                    source, table, [Problem(None, dup, "exact duplicate of an earlier row (every column equal)")]
                )
            shown = ", ".join(str(int(r) + 1) for r in dup[:5])
            log.warning(
                "%s: dropped %d exact duplicate row(s) of the %s table (rows %s%s)",
                source,
                len(dup),
                table,
                shown,
                " ..." if len(dup) > 5 else "",
            )
            result = result.drop(index=dup).reset_index(drop=True)
            repairs["duplicate_rows_dropped"] = int(len(dup))
            repairs["duplicate_rows"] = [int(r) + 1 for r in dup[:100]]  # 1-based, first 100
    if repairs["ids_unicode_normalized"]:
        log.warning(
            "%s: put %d identifier(s) of the %s table into Unicode NFC form",
            source,
            repairs["ids_unicode_normalized"],
            table,
        )
    result.attrs["source"] = source
    result.attrs["repairs"] = repairs
    return result


def _check_column(col: Column, s: pd.Series, problems: list[Problem], ts_min, ts_max, as_of, repairs: dict):
    null = bad_rows(s.isna().to_numpy())
    if len(null) and col.kind != "timestamp":
        problems.append(Problem(col.name, null, f"missing value (NaN/empty); expected {col.kind}"))
    if col.kind == "id":
        s, bad, why, n_norm = columns.coerce_id(s)
        bad = np.setdiff1d(bad, null)
        if len(bad):
            problems.append(Problem(col.name, bad, why))
        repairs["ids_unicode_normalized"] = repairs.get("ids_unicode_normalized", 0) + n_norm
    elif col.kind == "timestamp":
        if len(null):
            problems.append(Problem(col.name, null, "missing timestamp"))
        s, ts_problems = columns.coerce_timestamp(s)
        problems += [Problem(col.name, rows, msg) for rows, msg in ts_problems]
        ok = s.notna().to_numpy()
        vals = s.to_numpy()
        out_of_range = ok & ((vals < np.datetime64(ts_min)) | (vals >= np.datetime64(ts_max)))
        if out_of_range.any():
            problems.append(
                Problem(col.name, bad_rows(out_of_range), f"timestamp out of range; expected {ts_min} <= ts < {ts_max}")
            )
        if as_of is not None:
            future = ok & ~out_of_range & (vals > np.datetime64(as_of))
            if future.any():
                problems.append(
                    Problem(
                        col.name,
                        bad_rows(future),
                        f"timestamp in the future: after the as-of time {as_of} (UTC) of the data",
                    )
                )
    elif col.kind == "category":
        if isinstance(s.dtype, pd.CategoricalDtype) and tuple(s.cat.categories) == tuple(col.allowed):
            return s  # already the contract's categories: nothing else can be in it
        text = s.astype("string")
        unknown = ~text.isin(col.allowed).to_numpy() & ~s.isna().to_numpy()
        if unknown.any():
            rows = bad_rows(unknown)
            seen = sorted({str(v) for v in text.iloc[rows[:50]].tolist()})[:5]
            problems.append(Problem(col.name, rows, f"unknown value(s) {seen}; expected one of {list(col.allowed)}"))
        s = pd.Categorical(text, categories=list(col.allowed))
    elif col.kind in ("float", "int", "bool"):
        found: list[tuple[np.ndarray, str]] = []
        check = columns.check_bool_column if col.kind == "bool" else columns.check_number_column
        s = check(col, s, found)
        problems += [Problem(col.name, rows, msg) for rows, msg in found]
    return s


def _duplicate_rows(df: pd.DataFrame) -> np.ndarray:
    """0-based rows that repeat an earlier row exactly (every column, extras included)."""
    try:
        return bad_rows(df.duplicated(keep="first").to_numpy())
    except TypeError:  # unhashable values in an extra column: compare their text
        return bad_rows(df.astype(str).duplicated(keep="first").to_numpy())


def sort_table(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Sort by the table's key (stable, so ties keep file order)."""
    return df.sort_values(list(TABLES[table].sort_by), kind="stable").reset_index(drop=True)
