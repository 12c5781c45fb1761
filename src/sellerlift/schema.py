"""The data contract: the two tables every source produces, written down once.

``events``      one row per customer action (visit, view, purchase, ...)
``promotions``  one row per campaign offer sent to a customer (level 0 = control)

Validation never drops or repairs rows silently: it either returns the table
with canonical dtypes or raises :class:`SchemaError` naming file, row and column
of every problem (the first few of each kind, with counts).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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


def _bad_rows(mask) -> np.ndarray:
    return np.flatnonzero(np.asarray(mask, dtype=bool))


def _coerce_id(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_integer_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
        return s.astype("int64"), np.array([], dtype=np.int64)
    missing = s.isna().to_numpy()
    if pd.api.types.is_float_dtype(s):
        vals = s.to_numpy()
        whole = np.isfinite(vals) & (np.floor(vals) == vals)
        if whole.all():
            return s.astype("int64"), np.array([], dtype=np.int64)
        return s, _bad_rows(~whole)
    as_str = s.astype("string")
    return as_str, _bad_rows(missing | (as_str.str.len() == 0).fillna(True).to_numpy())


def _coerce_timestamp(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        out = s.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(s):
        out = s
    else:
        # Strings with explicit offsets are converted to UTC; naive ones are taken as UTC.
        out = pd.to_datetime(s, errors="coerce", utc=True, format="mixed").dt.tz_localize(None)
    out = out.astype(TS_DTYPE)
    return out, _bad_rows(out.isna().to_numpy() & ~s.isna().to_numpy())


def validate(
    df: pd.DataFrame,
    table: str,
    source: str = "<memory>",
    ts_min: pd.Timestamp = TS_MIN,
    ts_max: pd.Timestamp = TS_MAX,
) -> pd.DataFrame:
    """Check ``df`` against the contract of ``table`` and return it with canonical dtypes.

    Raises :class:`SchemaError` naming every bad column/row; never drops rows.
    """
    spec = TABLES[table]
    problems: list[Problem] = []
    missing = [c for c in spec.required if c not in df.columns]
    if missing:
        problems.append(
            Problem(None, np.array([], dtype=np.int64),
                    f"missing required column(s) {missing}; found {list(df.columns)}")
        )
        raise SchemaError(source, table, problems)
    if len(df) == 0:
        raise SchemaError(source, table, [Problem(None, np.array([], dtype=np.int64), "the table has no rows")])

    out = {}
    for col in spec.columns:
        if col.name not in df.columns:
            continue
        s = df[col.name].reset_index(drop=True)
        null = _bad_rows(s.isna().to_numpy())
        if len(null) and col.kind != "timestamp":
            problems.append(Problem(col.name, null, f"missing value (NaN/empty); expected {col.kind}"))
        if col.kind == "id":
            s, bad = _coerce_id(s)
            bad = np.setdiff1d(bad, null)
            if len(bad):
                problems.append(Problem(col.name, bad, "not a valid identifier; expected an integer or a non-empty string"))
        elif col.kind == "timestamp":
            s, bad = _coerce_timestamp(s)
            if len(null):
                problems.append(Problem(col.name, null, "missing timestamp"))
            if len(bad):
                problems.append(Problem(col.name, bad, "unparseable timestamp; expected ISO 8601 like 2025-03-01T12:00:00Z"))
            ok = s.notna().to_numpy()
            vals = s.to_numpy()
            out_of_range = ok & ((vals < np.datetime64(ts_min)) | (vals >= np.datetime64(ts_max)))
            if out_of_range.any():
                problems.append(Problem(col.name, _bad_rows(out_of_range),
                                        f"timestamp out of range; expected {ts_min} <= ts < {ts_max}"))
        elif col.kind == "category":
            s = s.astype("string")
            unknown = ~s.isin(col.allowed).to_numpy() & ~s.isna().to_numpy()
            if unknown.any():
                rows = _bad_rows(unknown)
                seen = sorted(set(s.iloc[rows[:50]].tolist()))[:5]
                problems.append(Problem(col.name, rows, f"unknown value(s) {seen}; expected one of {list(col.allowed)}"))
            s = pd.Categorical(s, categories=list(col.allowed))
        elif col.kind in ("float", "int"):
            num = pd.to_numeric(s, errors="coerce")
            not_number = _bad_rows(num.isna().to_numpy() & ~s.isna().to_numpy())
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
            if col.allowed:
                bad = _bad_rows(finite & ~np.isin(vals, col.allowed))
                if len(bad):
                    problems.append(Problem(col.name, bad, f"value not allowed; expected one of {list(col.allowed)}"))
            s = pd.Series(vals.astype(np.float64) if col.kind == "float" else vals, name=col.name)
        elif col.kind == "bool":
            if pd.api.types.is_bool_dtype(s):
                s = s.astype(bool)
            else:
                mapping = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False,
                           "yes": True, "no": False}
                mapped = s.astype("string").str.strip().str.lower().map(mapping)
                bad = _bad_rows(mapped.isna().to_numpy() & ~s.isna().to_numpy())
                if len(bad):
                    problems.append(Problem(col.name, bad, "not a boolean; expected true/false or 1/0"))
                s = mapped
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
    return result


def sort_table(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Sort by the table's key (stable, so ties keep file order)."""
    return df.sort_values(list(TABLES[table].sort_by), kind="stable").reset_index(drop=True)


def atomic_write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write Parquet through a temp file + rename so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_table(path: str | os.PathLike, table: str, **kwargs) -> pd.DataFrame:
    """Read a CSV or Parquet file (or a directory of Parquet parts) and validate it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected the {table} table as CSV or Parquet)")
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    elif path.suffix in (".csv", ".gz", ".txt"):
        try:
            df = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raise SchemaError(str(path), table, [Problem(None, np.array([], dtype=np.int64), "the file is empty")])
    else:
        raise ValueError(f"{path}: unsupported file type '{path.suffix}'; expected .csv or .parquet")
    return validate(df, table, source=str(path), **kwargs)
