"""The seller's own event file (CSV or Parquet) as a data source, mapped by config, not code.

A seller's export rarely uses our column names, event names or formats. ``FileSource``
reads the file as it is (``csv_sep``, ``encoding``, ``decimal``, ``names`` for a file
without a header), renames columns (``columns``: contract name -> the file's column),
translates event names (``event_types``: the file's value -> contract type, or
``event_type_constant`` for a purchase log without an event column), reads timestamps
in the file's format (``timestamp_format``), then checks the result with
:func:`sellerlift.schema.validate`. Every problem is reported with the file, the row
(numbered from 1, the first data row after the header), the file's own column name and
the config key to change; nothing is dropped or repaired silently.

``configs/data/seller_file.yaml`` is the config, ``configs/data/cdnow.yaml`` maps the
CDNOW transaction log the same way; ``examples/`` has a file in a foreign shape and its
mapping. The cutoff is a date, or ``auto``: the last event's day minus the churn
horizon, so the labels see a full window. :meth:`FileSource.load` says how many
customers and events lie before and after it, and who is left out.

This module imports no torch: the batch scorer (``sellerlift.score``) and
``python -m sellerlift.data check`` map files with the same code, chunk by chunk
(:meth:`FileSource.map_frame`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.data.mapping import (
    NO_ROWS,
    UnmappedEventNames,
    check_options,
    coerce_ids,
    convert_timestamps,
    default_name,
    header_of,
    is_parquet,
    mapping_kwargs,
    plain,
    read_file,
    renamed,
    resolve_path,
    unmapped_problem,
    with_timestamp_hint,
)
from sellerlift.data.sources import Coverage, Tables, coverage_of
from sellerlift.delimited import separator_hint
from sellerlift.io import sha256_file
from sellerlift.schema import EVENT_TYPES, EVENTS, DataError, Problem, SchemaError, _column_hint, sort_table, validate

CONTRACT_COLUMNS = tuple(c.name for c in EVENTS.columns)
KEY = "data.source"
DROP = "drop"  # an event_types value: remove the rows with that name (counted, never silent)
_LAYOUT_KEYS = ("path", "names")


class FileSource:
    """Events (and optionally promotions) from the seller's own CSV/Parquet file.

    Parameters (``data.source.*``; docs/config_reference.md has the defaults):

    path:              the events file: .csv/.txt/.tsv (optionally .gz), .parquet, a directory of Parquet
                       parts, or ``package://<distribution>/<file>`` (a data file inside an installed package)
    name:              the data set's name (MLflow experiment ``sellerlift-<name>``); null: from the file name
    columns:           contract column -> the file's column name; ``seller_id`` and ``quantity`` may be
                       null (absent): every row then gets ``seller_id_default``; ``amount`` may be null
                       (no order values: every amount is 0); ``event_type`` null needs ``event_type_constant``
    event_type_constant: a contract type every row has (``purchase`` for a transaction log without an
                       event-type column); then ``columns.event_type`` must be null
    event_types:       the file's event name -> contract type (one of ``schema.EVENT_TYPES``), or ``drop``
                       (rows with that name are removed, and counted); names that are contract types need no entry
    unknown_event_types: ``error`` (default: every unmapped name is listed, with a block to paste) or
                       ``drop`` (those rows are removed and the count is printed: an explicit choice)
    fill_missing_amount: empty amount/quantity of non-purchase events become 0 (purchases must have them)
    timestamp_format:  null (ISO 8601), ``epoch_s``, ``epoch_ms``, ``yyyymmdd`` or a strftime format
    timezone:          zone of timestamps without an offset (converted to UTC); offsets in the data win
    csv_sep:           one character (``,`` ``;`` ``\\t`` ``|``) or ``whitespace`` (runs of spaces/tabs)
    encoding, decimal: the text encoding (``utf-8``, ``latin-1``, ``cp1252``, ...) and decimal mark (``.``/``,``)
    names:             column names of a file without a header row (null: the first row is the header)
    id_type:           ``auto`` (integers when every id is a canonical integer), ``int`` or ``str``
    which, layouts:    a data set shipped as several files (CDNOW: master, sample): ``layouts.<which>``
                       gives the ``path`` and ``names`` of each; ``path`` set explicitly wins
    cutoff:            ``auto`` (last event day minus the churn horizon) or a date (exclusive)
    horizons:          the config's ``data.horizons``: checked against the data's end
    promotions:        a promotions file mapped like the events (:class:`sellerlift.data.promotions.PromotionsFile`)
    promotions_path:   a promotions table already in the contract's format (shorthand)
    min_customers:     fewer customers with history before the cutoff is an error
    """

    def __init__(
        self,
        path: str | None = None,
        columns: Mapping | None = None,
        event_types: Mapping | None = None,
        cutoff: str = "auto",
        horizons: Mapping | None = None,
        name: str | None = None,
        seller_id_default: int | str = 0,
        unknown_event_types: str = "error",
        fill_missing_amount: bool = True,
        timezone: str = "UTC",
        csv_sep: str = ",",
        encoding: str = "utf-8",
        decimal: str = ".",
        names: list | None = None,
        timestamp_format: str | None = None,
        event_type_constant: str | None = None,
        id_type: str = "auto",
        which: str | None = None,
        layouts: Mapping | None = None,
        promotions: Mapping | None = None,
        promotions_path: str | None = None,
        min_customers: int = 20,
    ):
        layouts = plain(layouts)
        if layouts or which is not None:
            if which not in layouts:
                raise DataError(
                    f"{KEY}.which={which!r}: expected one of {sorted(layouts)} (the files of {KEY}.layouts)"
                )
            layout = plain(layouts[which])
            extra = sorted(set(layout) - set(_LAYOUT_KEYS))
            if extra:
                raise DataError(f"{KEY}.layouts.{which}: unknown key(s) {extra}; a layout sets {list(_LAYOUT_KEYS)}")
            path = path or layout.get("path")
            names = names if names is not None else layout.get("names")
        self.which = which
        self.path = resolve_path(path, f"{KEY}.path") if path else None
        self.name = name or default_name(self.path or "data")
        self.columns = self._columns(plain(columns), event_type_constant)
        self.event_type_constant = event_type_constant
        self.event_types = {str(k): str(v) for k, v in plain(event_types).items()}
        bad = sorted({v for v in self.event_types.values() if v not in EVENT_TYPES and v != DROP})
        if bad:
            raise DataError(
                f"{KEY}.event_types maps to unknown type(s) {bad}; the contract's types are "
                f"{list(EVENT_TYPES)} (or {DROP}: remove those rows)"
            )
        if unknown_event_types not in ("error", "drop"):
            raise DataError(f"{KEY}.unknown_event_types must be 'error' or 'drop', got {unknown_event_types!r}")
        check_options(KEY, csv_sep, decimal, id_type, timestamp_format)
        self.unknown_event_types = unknown_event_types
        self.cutoff_cfg = str(cutoff)
        self.horizons = {str(k): int(v) for k, v in plain(horizons).items()}
        self.seller_id_default = seller_id_default
        self.fill_missing_amount = bool(fill_missing_amount)
        self.timezone = timezone or "UTC"
        self.csv_sep, self.encoding, self.decimal = csv_sep, encoding or "utf-8", decimal
        self.names = [str(n) for n in names] if names else None
        self.timestamp_format = timestamp_format
        self.id_type = id_type
        self.promotions = plain(promotions) or None
        self.promotions_path = promotions_path
        if self.promotions and promotions_path:
            raise DataError(f"{KEY}.promotions and {KEY}.promotions_path are both set; keep one")
        self.min_customers = int(min_customers)
        self.dropped_rows = 0
        self.unmapped: dict[str, int] = {}  # event names found unmapped so far (read_events / map_frame)
        self.dropped_names: dict[str, int] = {}  # rows removed because their name maps to `drop`

    @staticmethod
    def _columns(cols: dict, constant: str | None) -> dict:
        unknown = sorted(set(cols) - set(CONTRACT_COLUMNS))
        if unknown:
            raise DataError(f"{KEY}.columns: unknown contract column(s) {unknown}; map these: {list(CONTRACT_COLUMNS)}")
        if constant is not None:
            if constant not in EVENT_TYPES:
                raise DataError(f"{KEY}.event_type_constant={constant!r}: expected one of {list(EVENT_TYPES)}")
            if cols.get("event_type"):
                raise DataError(
                    f"{KEY}.event_type_constant={constant!r} and {KEY}.columns.event_type="
                    f"{cols['event_type']!r} are both set: either every row is a {constant} (set "
                    f"{KEY}.columns.event_type=null) or the file's column says what each row is"
                )
            cols["event_type"] = None
        elif "event_type" in cols and not cols["event_type"]:
            raise DataError(
                f"{KEY}.columns.event_type is null (the file has no event-type column) but "
                f"{KEY}.event_type_constant is not set: for a transaction log where every row is "
                f"one purchase set {KEY}.event_type_constant=purchase"
            )
        for required in ("customer_id", "ts"):
            if required in cols and not cols[required]:
                raise DataError(f"{KEY}.columns.{required} cannot be null: every event needs a {required}")
            cols.setdefault(required, required)
        if constant is None:
            cols.setdefault("event_type", "event_type")
        return cols

    # ------------------------------------------------------------------ config from a YAML file
    @classmethod
    def from_yaml(cls, mapping_file: str | Path, **overrides) -> FileSource:
        """A source from a mapping file: a data config (``configs/data/*.yaml``) or a bare mapping
        (``examples/*.mapping.yaml``). Interpolations that resolve inside the file (``${data.horizons}``) are
        resolved, ``${paths.root_dir}`` is ``SELLERLIFT_ROOT`` (else the working directory); those that need
        the rest of the Hydra config are dropped.
        """
        kw = mapping_kwargs(mapping_file)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    @classmethod
    def contract_shaped(cls, path: str | Path, **kw) -> FileSource:
        """A file already in the contract's shape: every contract column it has maps onto itself."""
        names = cls(str(path), **kw).header()
        cols = {c: c for c in CONTRACT_COLUMNS if c in names}
        for c in ("amount", "seller_id", "quantity"):
            cols.setdefault(c, None)
        return cls(str(path), columns=cols, **kw)

    # ------------------------------------------------------------------ reading
    def _path(self, path: Path | None) -> Path:
        path = Path(path) if path is not None else self.path
        if path is None:
            raise DataError(f"{KEY}.path is not set: the events file (CSV or Parquet) to read")
        return path

    def _read_kw(self) -> dict:
        return dict(
            csv_sep=self.csv_sep,
            encoding=self.encoding,
            decimal=self.decimal,
            names=self.names,
            id_columns=[self.columns.get(c) for c in ("customer_id", "seller_id")],
            key=KEY,
        )

    def read_raw(self, path: Path | None = None) -> pd.DataFrame:
        return read_file(self._path(path), "events", **self._read_kw())

    def iter_raw(self, path: Path | None = None, chunk_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
        """The raw file in row chunks (constant memory): Parquet row batches or CSV chunks."""
        return read_file(
            self._path(path),
            "events",
            chunk_rows=chunk_rows,
            usecols=[v for v in self.columns.values() if v],
            **self._read_kw(),
        )

    def header(self, path: Path | None = None) -> list[str]:
        return header_of(self._path(path), csv_sep=self.csv_sep, encoding=self.encoding, names=self.names)

    def count_rows(self, path: Path | None = None) -> int | None:
        path = self._path(path)
        if is_parquet(path):
            import pyarrow.dataset as ds

            return ds.dataset(str(path), format="parquet").count_rows()
        return None

    # ------------------------------------------------------------------ mapping
    def map_frame(
        self, raw: pd.DataFrame, source: str | None = None, row_offset: int = 0, id_type: str | None = None
    ) -> pd.DataFrame:
        """The file's columns and event names -> a validated contract ``events`` frame (same row order).

        ``row_offset``: rows of ``raw`` before this chunk in the file, so errors name the file's rows.
        ``id_type`` overrides ``data.source.id_type`` (the chunked scorer decides ``auto`` over the whole file).
        """
        source = source or str(self.path)
        found = list(raw.columns)
        problems = [
            Problem(
                None,
                NO_ROWS,
                f"column '{col}' ({KEY}.columns.{contract}) is not in the file; found "
                f"{found}{_column_hint(col, found)}",
            )
            for contract, col in self.columns.items()
            if col and col not in raw.columns
        ]
        if problems:
            if Path(source).is_file() and not is_parquet(Path(source)):
                hint = separator_hint(Path(source), self.csv_sep, self.encoding, KEY)
                if hint:  # once, not per column
                    problems.append(Problem(None, NO_ROWS, hint.removeprefix("; ")))
            raise SchemaError(source, "events", problems)
        df = pd.DataFrame({c: raw[col].to_numpy() for c, col in self.columns.items() if col})
        n = len(df)
        if not self.columns.get("seller_id"):
            df["seller_id"] = np.full(n, self.seller_id_default)
        if not self.columns.get("amount"):
            df["amount"] = np.zeros(n)

        type_code, unknown, counts = self._type_codes(df["event_type"] if self.columns.get("event_type") else None, n)
        removed = type_code == -2  # names mapped to `drop`
        if removed.any():
            self.dropped_rows += int(removed.sum())
            type_code = np.where(removed, -1, type_code)
        if unknown.any():
            if self.unknown_event_types == "drop":
                self.dropped_rows += int(unknown.sum())
                removed |= unknown
            else:
                err = UnmappedEventNames(
                    source, "events", [unmapped_problem(np.flatnonzero(unknown), counts, KEY)], counts=counts
                )
                raise renamed(err, self.columns, row_offset)
        df["event_type"] = pd.Categorical.from_codes(type_code, categories=list(EVENT_TYPES))

        id_problems = coerce_ids(
            df, [c for c in ("customer_id", "seller_id") if self.columns.get(c)], id_type or self.id_type, KEY
        )
        ts_problems = convert_timestamps(df, self.timestamp_format, self.timezone, KEY)
        if id_problems or ts_problems:
            raise renamed(SchemaError(source, "events", id_problems + ts_problems), self.columns, row_offset)
        if self.fill_missing_amount:
            not_purchase = type_code != EVENT_TYPES.index("purchase")
            for col in ("amount", "quantity"):
                if col in df:
                    missing = pd.isna(df[col]).to_numpy() & not_purchase
                    if missing.any():
                        df[col] = df[col].where(~missing, 0)

        rows_in_chunk = None  # positions of validated rows in the chunk (all of them unless dropping)
        if removed.any():
            rows_in_chunk = np.flatnonzero(~removed)
            df = df.iloc[rows_in_chunk].reset_index(drop=True)
        try:
            return validate(df, "events", source=source)
        except SchemaError as err:
            err = with_timestamp_hint(err, df["ts"], self.timestamp_format, KEY)
            raise renamed(err, self.columns, row_offset, rows_in_chunk) from None

    def _type_codes(self, names_col: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Contract type index per row (-1: unmapped or missing), the unmapped rows, and their names' counts
        (also added to ``self.unmapped``). Looked up once per distinct name: files have a handful, rows are millions.
        """
        if names_col is None:  # event_type_constant
            return np.full(n, EVENT_TYPES.index(self.event_type_constant), np.int64), np.zeros(n, bool), {}
        codes, uniques = pd.factorize(names_col)  # -1 = missing
        names = [str(v).strip() for v in uniques]
        mapped = [self.event_types.get(v, v) for v in names]
        type_of_name = np.array(
            [EVENT_TYPES.index(m) if m in EVENT_TYPES else -2 if m == DROP else -1 for m in mapped] + [-1]
        )
        type_code = type_of_name[codes]  # code -1 (missing) picks the trailing -1
        unknown = (codes >= 0) & (type_code == -1)
        for i in np.flatnonzero(type_of_name[:-1] == -2):
            self.dropped_names[names[i]] = self.dropped_names.get(names[i], 0) + int((codes == i).sum())
        counts = {}
        if unknown.any():
            per_name = np.bincount(codes[unknown], minlength=len(names))
            counts = {names[i]: int(c) for i, c in enumerate(per_name) if c}
            for k, c in counts.items():
                self.unmapped[k] = self.unmapped.get(k, 0) + c
        return type_code, unknown, counts

    def unmapped_rows(self, raw: pd.DataFrame) -> np.ndarray:
        """Rows of a raw chunk whose event names are unmapped (their names are counted in ``self.unmapped``)."""
        col = self.columns.get("event_type")
        if not col or col not in raw.columns:
            return NO_ROWS
        return np.flatnonzero(self._type_codes(raw[col].reset_index(drop=True), len(raw))[1])

    def read_events(self, path: Path | None = None) -> pd.DataFrame:
        path = self._path(path)
        self.dropped_rows, self.unmapped, self.dropped_names = 0, {}, {}
        events = self.map_frame(self.read_raw(path), str(path))
        if self.dropped_names:
            print(
                f"data {path.name}: dropped {sum(self.dropped_names.values()):,} row(s) of event names mapped to "
                f"{DROP} ({KEY}.event_types): {self.dropped_names}"
            )
        if self.unmapped and self.unknown_event_types == "drop":
            print(
                f"data {path.name}: dropped {sum(self.unmapped.values()):,} row(s) with unmapped event names "
                f"{sorted(self.unmapped)} ({KEY}.unknown_event_types=drop)"
            )
        return sort_table(events, "events")

    # ------------------------------------------------------------------ the pipeline's source API
    def churn_days(self) -> int:
        return self.horizons.get("churn_days", max(self.horizons.values(), default=90))

    def cutoff_for(self, events: pd.DataFrame) -> pd.Timestamp:
        if self.cutoff_cfg.lower() == "auto":
            return pd.Timestamp(events["ts"].max()).normalize() - pd.Timedelta(days=self.churn_days())
        try:
            c = pd.Timestamp(self.cutoff_cfg)
        except (ValueError, TypeError) as e:
            raise DataError(f"{KEY}.cutoff={self.cutoff_cfg!r} is neither 'auto' nor a date ({e})") from None
        return c.tz_convert("UTC").tz_localize(None) if c.tzinfo is not None else c

    def coverage(self, events: pd.DataFrame, cutoff: pd.Timestamp) -> Coverage:
        auto = self.cutoff_cfg.lower() == "auto"
        shorter = [d for d in (60, 30, 14) if d < self.churn_days()] if auto else []
        return coverage_of(events, cutoff, shorter)

    def describe_coverage(self, cov: Coverage, label: str | None = None) -> list[str]:
        """What the cutoff keeps, in words: the lines :meth:`load` prints."""
        auto = self.cutoff_cfg.lower() == "auto"
        how = (
            f"auto: last event day {cov.last.date()} minus data.horizons.churn_days={self.churn_days()}"
            if auto
            else f"{KEY}.cutoff={self.cutoff_cfg}"
        )
        return cov.lines(
            label or (self.path.name if self.path else self.name),
            how,
            None if auto else f"a later {KEY}.cutoff keeps more (and leaves less future for the labels)",
        )

    def fingerprint(self, cutoff: pd.Timestamp) -> str:
        mapping = json.dumps(
            {
                "columns": self.columns,
                "event_types": self.event_types,
                "tz": self.timezone,
                "unknown": self.unknown_event_types,
                "fill": self.fill_missing_amount,
                "ts_format": self.timestamp_format,
                "constant": self.event_type_constant,
                "ids": self.id_type,
                "names": self.names,
                "sep": self.csv_sep,
                "decimal": self.decimal,
                "encoding": self.encoding,
            },
            sort_keys=True,
            default=str,
        )
        h = hashlib.sha256((sha256_file(self._path(None)) + mapping).encode()).hexdigest()
        return f"{default_name(self.name)}-{h[:16]}-cutoff{cutoff:%Y%m%d}"

    def load_promotions(self) -> pd.DataFrame | None:
        if self.promotions:
            from sellerlift.data.promotions import PromotionsFile

            inherit = dict(
                timezone=self.timezone,
                csv_sep=self.csv_sep,
                encoding=self.encoding,
                decimal=self.decimal,
                id_type=self.id_type,
                seller_id_default=self.seller_id_default,
            )
            return PromotionsFile(**{**inherit, **self.promotions}).read()
        if self.promotions_path:
            from sellerlift.io import read_table

            return read_table(resolve_path(self.promotions_path, f"{KEY}.promotions_path"), "promotions")
        return None

    def load(self) -> Tables:
        from sellerlift.labels import check_horizon

        path = self._path(None)
        events = self.read_events()
        cutoff = self.cutoff_for(events)
        cov = self.coverage(events, cutoff)
        for line in self.describe_coverage(cov):
            print(line)
        if cov.customers_before < self.min_customers:
            raise DataError(
                f"{path.name}: only {cov.customers_before} customer(s) have events before the cutoff "
                f"{cutoff.date()} ({KEY}.cutoff={self.cutoff_cfg}); need >= {self.min_customers} "
                f"({KEY}.min_customers). The data runs from {cov.first.date()} to {cov.last.date()}"
                + ("; choose a later cutoff" if cutoff <= cov.first else "")
            )
        if self.horizons:
            key, days = max(self.horizons.items(), key=lambda kv: kv[1])
            try:
                check_horizon(
                    events,
                    cutoff,
                    days,
                    source=f"{path.name} ({KEY}.cutoff={self.cutoff_cfg} -> "
                    f"{cutoff.date()}, data.horizons.{key}={days})",
                )
            except ValueError as err:
                raise DataError(str(err)) from None
        return Tables(
            self.name, events, cutoff, self.fingerprint(cutoff), promotions=self.load_promotions(), coverage=cov
        )
