"""The seller's own event file (CSV or Parquet) as a data source, mapped by config, not code.

A seller's export rarely uses our column names or event names. ``FileSource``
renames columns (``columns``: contract name -> the file's column), translates
event names (``event_types``: the file's value -> contract type), then checks
the result with :func:`sellerlift.schema.validate`. Every problem is reported
with the file, the row (numbered from 1, the first data row after the header)
and the file's own column name; nothing is dropped or repaired silently.

``configs/data/seller_file.yaml`` is the config; ``examples/`` has a file in a
foreign shape and its mapping. The cutoff is a date, or ``auto``: the last
event's day minus the churn horizon, so the labels see a full window.

This module imports no torch: the batch scorer (``sellerlift.score``) maps
files with the same code, chunk by chunk (:meth:`FileSource.map_frame`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.io import sha256_file
from sellerlift.schema import EVENT_TYPES, EVENTS, Problem, SchemaError, sort_table, validate

CONTRACT_COLUMNS = tuple(c.name for c in EVENTS.columns)
_NO_ROWS = np.array([], dtype=np.int64)


def _plain(d) -> dict:
    """OmegaConf containers / None -> plain dict."""
    if d is None:
        return {}
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(d):
            return OmegaConf.to_container(d, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(d)


class FileSource:
    """Events (and optionally promotions) from the seller's own CSV/Parquet file.

    Parameters (``data.source.*``):

    path:              the events file: .csv (.csv.gz), .parquet, or a directory of Parquet parts
    columns:           contract column -> the file's column name; ``seller_id`` and ``quantity`` may be
                       null (absent): every row then gets ``seller_id_default``; ``amount`` may be null
                       (no order values: every amount is 0)
    event_types:       the file's event name -> contract type (one of ``schema.EVENT_TYPES``); names that
                       already are contract types need no entry
    unknown_event_types: ``error`` (default: the file's rows with unmapped names are reported) or
                       ``drop`` (those rows are removed and the count is printed: an explicit choice)
    fill_missing_amount: empty amount/quantity of non-purchase events become 0 (purchases must have them)
    timezone:          zone of timestamps without an offset (converted to UTC); offsets in the data win
    cutoff:            ``auto`` (last event day minus the churn horizon) or a date (exclusive)
    horizons:          the config's ``data.horizons``: checked against the data's end
    promotions_path:   optional promotions table in the contract's format (for the promotion engine)
    """

    def __init__(self, path: str, columns: Mapping | None = None, event_types: Mapping | None = None,
                 cutoff: str = "auto", horizons: Mapping | None = None, name: str = "seller_file",
                 seller_id_default: int | str = 0, unknown_event_types: str = "error",
                 fill_missing_amount: bool = True, timezone: str = "UTC", csv_sep: str = ",",
                 promotions_path: str | None = None, min_customers: int = 20):
        self.path = Path(path).expanduser()
        self.columns = {k: v for k, v in _plain(columns).items()}
        unknown = sorted(set(self.columns) - set(CONTRACT_COLUMNS))
        if unknown:
            raise ValueError(f"data.source.columns: unknown contract column(s) {unknown}; "
                             f"map these: {list(CONTRACT_COLUMNS)}")
        for required in ("customer_id", "ts", "event_type"):
            self.columns.setdefault(required, required)
        self.event_types = {str(k): str(v) for k, v in _plain(event_types).items()}
        bad = sorted({v for v in self.event_types.values() if v not in EVENT_TYPES})
        if bad:
            raise ValueError(f"data.source.event_types maps to unknown type(s) {bad}; "
                             f"the contract's types are {list(EVENT_TYPES)}")
        if unknown_event_types not in ("error", "drop"):
            raise ValueError(f"data.source.unknown_event_types must be 'error' or 'drop', got {unknown_event_types!r}")
        self.unknown_event_types = unknown_event_types
        self.cutoff_cfg = str(cutoff)
        self.horizons = {str(k): int(v) for k, v in _plain(horizons).items()}
        self.name = name
        self.seller_id_default = seller_id_default
        self.fill_missing_amount = bool(fill_missing_amount)
        self.timezone = timezone or "UTC"
        self.csv_sep = csv_sep
        self.promotions_path = Path(promotions_path).expanduser() if promotions_path else None
        self.min_customers = int(min_customers)
        self.dropped_rows = 0

    # ------------------------------------------------------------------ config from a YAML file
    @classmethod
    def from_yaml(cls, mapping_file: str | Path, **overrides) -> FileSource:
        """A source from a mapping file: ``configs/data/seller_file.yaml`` or ``examples/*_mapping.yaml``.

        Accepts the data config itself (keys under ``data.source`` or ``source``) or a bare mapping.
        """
        import yaml

        doc = yaml.safe_load(Path(mapping_file).read_text()) or {}
        node = doc.get("data", doc)
        node = node.get("source", node)
        kw = {k: v for k, v in node.items() if not str(k).startswith("_")}
        for k in list(kw):  # interpolations like ${data.horizons} mean nothing outside Hydra
            if isinstance(kw[k], str) and "${" in kw[k]:
                kw.pop(k)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        kw.setdefault("path", "")
        return cls(**kw)

    # ------------------------------------------------------------------ reading
    def _usecols(self) -> list[str]:
        return [v for v in self.columns.values() if v]

    def read_raw(self, path: Path | None = None) -> pd.DataFrame:
        path = path or self.path
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file (data.source.path; expected the seller's events as "
                                    "CSV or Parquet)")
        if path.is_dir() or path.suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif path.suffix in (".csv", ".gz", ".txt", ".tsv"):
            ids = {self.columns[c]: str for c in ("customer_id", "seller_id") if self.columns.get(c)}
            try:
                df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else self.csv_sep, dtype=ids)
            except pd.errors.EmptyDataError:
                raise SchemaError(str(path), "events", [Problem(None, _NO_ROWS, "the file is empty")]) from None
        else:
            raise ValueError(f"{path}: unsupported file type '{path.suffix}'; expected .csv or .parquet")
        return df

    def iter_raw(self, path: Path | None = None, chunk_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
        """The raw file in row chunks (constant memory): Parquet row batches or CSV chunks."""
        path = path or self.path
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if path.is_dir() or path.suffix in (".parquet", ".pq"):
            import pyarrow.dataset as ds

            dataset = ds.dataset(str(path), format="parquet")
            cols = [c for c in self._usecols() if c in dataset.schema.names]
            # No read-ahead across files: pyarrow's defaults (4 files, 16 batches) hold up to gigabytes in memory.
            for batch in dataset.to_batches(columns=cols or None, batch_size=chunk_rows, batch_readahead=1,
                                            fragment_readahead=1):
                yield batch.to_pandas()
        else:
            ids = {self.columns[c]: str for c in ("customer_id", "seller_id") if self.columns.get(c)}
            yield from pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else self.csv_sep, dtype=ids,
                                   chunksize=chunk_rows)

    def count_rows(self, path: Path | None = None) -> int | None:
        path = path or self.path
        if path.is_dir() or path.suffix in (".parquet", ".pq"):
            import pyarrow.dataset as ds

            return ds.dataset(str(path), format="parquet").count_rows()
        return None

    # ------------------------------------------------------------------ mapping
    def map_frame(self, raw: pd.DataFrame, source: str | None = None, row_offset: int = 0) -> pd.DataFrame:
        """The file's columns and event names -> a validated contract ``events`` frame (same row order).

        ``row_offset``: rows of ``raw`` before this chunk in the file, so errors name the file's rows.
        """
        source = source or str(self.path)
        found = list(raw.columns)
        problems = []
        for contract, col in self.columns.items():
            if col and col not in raw.columns:
                problems.append(Problem(None, _NO_ROWS, f"column '{col}' (data.source.columns.{contract}) is not in "
                                                        f"the file; found {found}"))
        if problems:
            raise SchemaError(source, "events", problems)
        df = pd.DataFrame({c: raw[col].to_numpy() for c, col in self.columns.items() if col})
        n = len(df)
        if not self.columns.get("seller_id"):
            df["seller_id"] = np.full(n, self.seller_id_default)
        if not self.columns.get("amount"):
            df["amount"] = np.zeros(n)

        # event names -> contract types, looked up once per distinct name (files have a handful, rows are millions)
        codes, uniques = pd.factorize(df["event_type"])  # -1 = missing
        names = [str(v).strip() for v in uniques]
        mapped = [self.event_types.get(v, v) for v in names]
        type_of_name = np.array([EVENT_TYPES.index(m) if m in EVENT_TYPES else -1 for m in mapped] + [-1])
        type_code = type_of_name[codes]  # code -1 (missing) picks the trailing -1
        unknown = (codes >= 0) & (type_code < 0)
        if unknown.any():
            if self.unknown_event_types == "drop":
                self.dropped_rows += int(unknown.sum())
            else:
                rows = np.flatnonzero(unknown)
                seen = sorted({names[c] for c in codes[rows[:200]]})[:8]
                raise self._renamed(SchemaError(source, "events", [Problem("event_type", rows,
                    f"event name(s) {seen} not mapped; add them to data.source.event_types (one of "
                    f"{list(EVENT_TYPES)}) or set data.source.unknown_event_types=drop")]), row_offset)
        df["event_type"] = pd.Categorical.from_codes(type_code, categories=list(EVENT_TYPES))

        # timestamps: naive ones are in `timezone`
        if self.timezone.upper() != "UTC" and not isinstance(df["ts"].dtype, pd.DatetimeTZDtype):
            ts = pd.to_datetime(df["ts"], errors="coerce", format="mixed")
            if getattr(ts.dt, "tz", None) is None:
                ts = ts.dt.tz_localize(self.timezone, ambiguous="NaT", nonexistent="shift_forward")
                bad = ts.isna().to_numpy() & df["ts"].notna().to_numpy()
                if bad.any():
                    problem = Problem("ts", np.flatnonzero(bad), f"ambiguous local time in {self.timezone} "
                                                                 "(a daylight-saving change); give an offset")
                    raise self._renamed(SchemaError(source, "events", [problem]), row_offset)
                df["ts"] = ts
        if self.fill_missing_amount:
            not_purchase = type_code != EVENT_TYPES.index("purchase")
            for col in ("amount", "quantity"):
                if col in df:
                    missing = pd.isna(df[col]).to_numpy() & not_purchase
                    if missing.any():
                        df[col] = df[col].where(~missing, 0)

        rows_in_chunk = None  # positions of validated rows in the chunk (all of them unless dropping)
        if unknown.any() and self.unknown_event_types == "drop":
            rows_in_chunk = np.flatnonzero(~unknown)
            df = df.iloc[rows_in_chunk].reset_index(drop=True)
        try:
            return validate(df, "events", source=source)
        except SchemaError as err:
            raise self._renamed(err, row_offset, rows_in_chunk) from None

    def _renamed(self, err: SchemaError, row_offset: int = 0, rows_in_chunk: np.ndarray | None = None) -> SchemaError:
        """Name the file's own columns and rows in a contract error."""
        problems = []
        for p in err.problems:
            col = p.column
            if col is not None and self.columns.get(col) and self.columns[col] != col:
                col = f"{self.columns[col]}' → '{p.column}"
            rows = p.rows
            if len(rows):
                rows = (rows_in_chunk[rows] if rows_in_chunk is not None else rows) + row_offset
            problems.append(Problem(col, rows, p.message))
        return SchemaError(err.source, err.table, problems, err.max_rows_shown)

    def read_events(self, path: Path | None = None) -> pd.DataFrame:
        path = path or self.path
        self.dropped_rows = 0
        events = self.map_frame(self.read_raw(path), str(path))
        if self.dropped_rows:
            print(f"data {path.name}: dropped {self.dropped_rows:,} row(s) with unmapped event names "
                  "(data.source.unknown_event_types=drop)")
        return sort_table(events, "events")

    # ------------------------------------------------------------------ the pipeline's source API
    def cutoff_for(self, events: pd.DataFrame) -> pd.Timestamp:
        if self.cutoff_cfg.lower() == "auto":
            churn = self.horizons.get("churn_days", max(self.horizons.values(), default=90))
            return pd.Timestamp(events["ts"].max()).normalize() - pd.Timedelta(days=churn)
        try:
            c = pd.Timestamp(self.cutoff_cfg)
        except (ValueError, TypeError) as e:
            raise ValueError(f"data.source.cutoff={self.cutoff_cfg!r} is neither 'auto' nor a date ({e})") from None
        return c.tz_convert("UTC").tz_localize(None) if c.tzinfo is not None else c

    def fingerprint(self, cutoff: pd.Timestamp) -> str:
        mapping = json.dumps({"columns": self.columns, "event_types": self.event_types, "tz": self.timezone,
                              "unknown": self.unknown_event_types, "fill": self.fill_missing_amount}, sort_keys=True)
        h = hashlib.sha256((sha256_file(self.path) + mapping).encode()).hexdigest()
        return f"file-{h[:16]}-cutoff{cutoff:%Y%m%d}"

    def load(self):
        from sellerlift.data.sources import Tables
        from sellerlift.io import read_table
        from sellerlift.labels import check_horizon

        events = self.read_events()
        cutoff = self.cutoff_for(events)
        first, last = events["ts"].min(), events["ts"].max()
        n_hist = events.loc[events["ts"] < cutoff, "customer_id"].nunique()
        if n_hist < self.min_customers:
            raise ValueError(f"{self.path.name}: only {n_hist} customer(s) have events before the cutoff "
                             f"{cutoff.date()} (data.source.cutoff={self.cutoff_cfg}); need >= {self.min_customers}. "
                             f"The data runs from {first.date()} to {last.date()}")
        if self.horizons:
            key, days = max(self.horizons.items(), key=lambda kv: kv[1])
            check_horizon(events, cutoff, days, source=f"{self.path.name} (data.source.cutoff={self.cutoff_cfg} -> "
                                                       f"{cutoff.date()}, data.horizons.{key}={days})")
        promotions = read_table(self.promotions_path, "promotions") if self.promotions_path else None
        return Tables(self.name, events, cutoff, self.fingerprint(cutoff), promotions=promotions)
