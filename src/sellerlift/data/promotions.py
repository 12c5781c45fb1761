"""The seller's own promotions log (offers sent, and what came of them), mapped by config like the events.

A campaign export names its columns its own way, writes the offered level as a percent
(``10``, ``"10%"``) or a fraction (``0.1``) and its times in its own format. ``PromotionsFile``
(``data.source.promotions`` in a data config) maps it onto the contract's ``promotions``
table (:data:`sellerlift.schema.PROMOTIONS`): one row per offer with ``customer_id``,
``seller_id``, ``ts`` (sent), ``discount_pct`` (one of ``schema.DISCOUNT_LEVELS``; 0 =
control), ``converted``, ``revenue``, ``cost`` and, when the file has them, ``randomized``
(the offer came from a randomised slice) and ``propensity`` (the logging policy's
probability of that level). Errors name the file, the row, the file's column and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.data.mapping import (
    NO_ROWS,
    check_options,
    coerce_ids,
    convert_timestamps,
    plain,
    read_file,
    renamed,
    resolve_path,
    with_timestamp_hint,
)
from sellerlift.delimited import separator_hint
from sellerlift.schema import DISCOUNT_LEVELS, PROMOTIONS, DataError, Problem, SchemaError, sort_table, validate

KEY = "data.source.promotions"
PROMOTION_COLUMNS = tuple(c.name for c in PROMOTIONS.columns)
OPTIONAL = ("seller_id", "randomized", "propensity")
LEVEL_UNITS = ("percent", "fraction")


class PromotionsFile:
    """A promotions file in the seller's shape -> the contract ``promotions`` table.

    Parameters (``data.source.promotions.*``; reading options default to the events' ones):

    path:             the file (CSV / Parquet, like the events)
    columns:          contract column -> the file's column; ``seller_id``, ``randomized``, ``propensity``
                      may be null (absent: ``seller_id_default``; not randomised; unknown propensity)
    level_unit:       ``percent`` (10 or "10%" = 10 %) or ``fraction`` (0.1 = 10 %)
    true_values, false_values: the file's words for yes / no in ``converted`` and ``randomized`` (besides
                      true/false, yes/no, 1/0), e.g. ``[ja]`` / ``[nein]``
    timestamp_format, timezone, csv_sep, encoding, decimal, names, id_type: as for the events
    """

    def __init__(
        self,
        path: str,
        columns: Mapping | None = None,
        level_unit: str = "percent",
        timestamp_format: str | None = None,
        timezone: str = "UTC",
        csv_sep: str = ",",
        encoding: str = "utf-8",
        decimal: str = ".",
        names: list | None = None,
        id_type: str = "auto",
        seller_id_default: int | str = 0,
        true_values: list | None = None,
        false_values: list | None = None,
    ):
        if not path:
            raise DataError(f"{KEY}.path is not set: the promotions file (CSV or Parquet)")
        self.path = resolve_path(path, f"{KEY}.path")
        cols = plain(columns)
        unknown = sorted(set(cols) - set(PROMOTION_COLUMNS))
        if unknown:
            raise DataError(
                f"{KEY}.columns: unknown contract column(s) {unknown}; map these: {list(PROMOTION_COLUMNS)}"
            )
        for c in PROMOTION_COLUMNS:
            if c not in OPTIONAL:
                if c in cols and not cols[c]:
                    raise DataError(f"{KEY}.columns.{c} cannot be null: every offer needs a {c}")
                cols.setdefault(c, c)
        self.columns = cols
        if level_unit not in LEVEL_UNITS:
            raise DataError(f"{KEY}.level_unit={level_unit!r}: expected one of {list(LEVEL_UNITS)}")
        check_options(KEY, csv_sep, decimal, id_type, timestamp_format)
        self.level_unit, self.timestamp_format, self.timezone = level_unit, timestamp_format, timezone or "UTC"
        self.csv_sep, self.encoding, self.decimal, self.id_type = csv_sep, encoding or "utf-8", decimal, id_type
        self.names = [str(n) for n in names] if names else None
        self.seller_id_default = seller_id_default
        self.booleans = {
            **{str(v).strip().lower(): "true" for v in true_values or ()},
            **{str(v).strip().lower(): "false" for v in false_values or ()},
        }

    def read_raw(self) -> pd.DataFrame:
        return read_file(
            self.path,
            "promotions",
            csv_sep=self.csv_sep,
            encoding=self.encoding,
            decimal=self.decimal,
            names=self.names,
            id_columns=[self.columns.get(c) for c in ("customer_id", "seller_id")],
            key=KEY,
        )

    def read(self) -> pd.DataFrame:
        return sort_table(self.map_frame(self.read_raw()), "promotions")

    def map_frame(self, raw: pd.DataFrame, source: str | None = None) -> pd.DataFrame:
        source = source or str(self.path)
        found = list(raw.columns)
        missing = [
            Problem(
                None,
                NO_ROWS,
                f"column '{col}' ({KEY}.columns.{c}) is not in the file; found {found}"
                + (
                    separator_hint(self.path, self.csv_sep, self.encoding, KEY)
                    if self.path.is_file() and self.path.suffix != ".parquet"
                    else ""
                ),
            )
            for c, col in self.columns.items()
            if col and col not in raw.columns
        ]
        if missing:
            raise SchemaError(source, "promotions", missing)
        df = pd.DataFrame({c: raw[col].to_numpy() for c, col in self.columns.items() if col})
        if not self.columns.get("seller_id"):
            df["seller_id"] = np.full(len(df), self.seller_id_default)
        problems = coerce_ids(df, [c for c in ("customer_id", "seller_id") if self.columns.get(c)], self.id_type, KEY)
        problems += convert_timestamps(df, self.timestamp_format, self.timezone, KEY)
        problems += self._levels(df)
        for c in ("converted", "randomized"):
            if self.booleans and c in df and not pd.api.types.is_bool_dtype(df[c]):
                text = df[c].astype("string").str.strip().str.lower()
                df[c] = text.map(lambda v: self.booleans.get(v, v) if isinstance(v, str) else v).astype(object)
        if problems:
            raise renamed(SchemaError(source, "promotions", problems), self.columns)
        try:
            return validate(df, "promotions", source=source)
        except SchemaError as err:
            raise renamed(with_timestamp_hint(err, df["ts"], self.timestamp_format, KEY), self.columns) from None

    def _levels(self, df: pd.DataFrame) -> list[Problem]:
        """``discount_pct`` in percent, whatever the file wrote; levels off the contract's grid are named."""
        s = df["discount_pct"]
        text = s.astype("string").str.strip().str.rstrip("%").str.strip() if not pd.api.types.is_numeric_dtype(s) else s
        num = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        present = s.notna().to_numpy()
        if self.level_unit == "fraction":
            num = num * 100.0
        pct = np.round(num, 6)
        bad = present & ~(np.isfinite(pct) & np.isin(pct, DISCOUNT_LEVELS))
        if not bad.any():
            df["discount_pct"] = pct.astype(np.int64)
            return []
        rows = np.flatnonzero(bad)
        seen = list(dict.fromkeys(str(v) for v in s.to_numpy(dtype=object)[rows[:50]]))[:4]
        ok = num[present & np.isfinite(num)]
        hint = ""
        if self.level_unit == "percent" and len(ok) and ok.max() <= 1 and (ok > 0).any():
            hint = f"; these look like fractions: set {KEY}.level_unit=fraction"
        elif self.level_unit == "fraction" and len(ok) and ok.max() > 100:
            hint = f"; these look like percents: set {KEY}.level_unit=percent"
        return [
            Problem(
                "discount_pct",
                rows,
                f"offered level {seen} is not one of the discount levels "
                f"{list(DISCOUNT_LEVELS)} % ({KEY}.level_unit={self.level_unit}){hint}",
            )
        ]


def promotions_from(config: Mapping | None, path: str | Path | None = None, **inherit) -> pd.DataFrame | None:
    """The promotions table of a ``data.source.promotions`` block (None when there is none)."""
    cfg = plain(config)
    if not cfg:
        return None
    if path is not None:
        cfg["path"] = str(path)
    return PromotionsFile(**{**inherit, **cfg}).read()
