"""The real CDNOW transactions as a contract ``events`` table.

CDNOW: 23,570 customers who made their first purchase at the CDNOW online music
store in 1997-Q1, followed to the end of June 1998 (Fader & Hardie). The file
ships inside the ``Lifetimes`` wheel on PyPI; we only read the data file from the
installed distribution and never import ``lifetimes`` (its code breaks on pandas 3).

Install it with ``pip install --no-deps lifetimes==0.11.3``.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.io import sha256_file
from sellerlift.schema import sort_table, validate

INSTALL_HINT = "pip install --no-deps lifetimes==0.11.3"
_FILES = {"master": "CDNOW_master.txt", "sample": "CDNOW_sample.txt"}


class CDNOWFormatError(ValueError):
    """A line of a CDNOW file does not parse; names the file and the line number."""


def cdnow_path(which: str = "master") -> Path:
    """Path of the CDNOW file inside the installed ``lifetimes`` distribution.

    ``which="master"`` is the full 23,570-customer file; ``"sample"`` is the
    1/10 sample (2,357 customers) that Fader, Hardie & Lee (2005) fitted.
    """
    if which not in _FILES:
        raise ValueError(f"which={which!r}: expected one of {list(_FILES)}")
    name = _FILES[which]
    try:
        dist = importlib.metadata.distribution("lifetimes")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the CDNOW data ({name}) ships with the 'lifetimes' package, which is not installed; "
            f"run: {INSTALL_HINT}"
        ) from None
    for f in dist.files or ():
        if f.name == name:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"{name} not found in the installed 'lifetimes' distribution; reinstall it with: {INSTALL_HINT}"
    )


def _parse_lines(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse whitespace-separated rows: id [sample_id] YYYYMMDD quantity amount.

    The master file has 4 fields, the sample 5 (master id, sample id, ...); we keep
    the master id in both so customers match across the two files.
    """
    ids, dates, qty, amt = [], [], [], []
    with open(path, encoding="ascii", errors="strict", newline=None) as fh:
        for lineno, raw in enumerate(fh, start=1):
            parts = raw.split()
            if not parts:
                continue  # blank lines carry nothing
            if lineno == 1 and not parts[0].isdigit():
                continue  # header: "customer_id date number_of_cds dollar_value"
            if len(parts) == 5:
                parts = [parts[0], *parts[2:]]
            if len(parts) != 4:
                raise CDNOWFormatError(
                    f"{path}:{lineno}: expected 4 fields (customer id, date YYYYMMDD, quantity, amount), "
                    f"got {len(parts)}: {raw.strip()!r}"
                )
            cid, date, q, a = parts
            try:
                if not (len(date) == 8 and date.isdigit()):
                    raise ValueError(f"date {date!r} is not YYYYMMDD")
                ids.append(int(cid))
                qty.append(int(q))
                amt.append(float(a))
                dates.append(date)
            except ValueError as e:
                raise CDNOWFormatError(f"{path}:{lineno}: cannot parse {raw.strip()!r}: {e}") from None
    ts = pd.to_datetime(pd.Series(dates, dtype="string"), format="%Y%m%d", errors="coerce")
    bad = np.flatnonzero(ts.isna().to_numpy())
    if len(bad):
        raise CDNOWFormatError(f"{path}: invalid calendar date {dates[bad[0]]!r} ({len(bad)} row(s))")
    return np.asarray(ids, np.int64), ts.to_numpy(), np.asarray(qty, np.int64), np.asarray(amt, np.float64)


def load_cdnow_events(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """CDNOW as the contract ``events`` table: one ``purchase`` per transaction row.

    amount = dollar value, quantity = CDs, ts = the date at midnight UTC,
    seller_id = 0 (one store). Zero-amount rows are kept (amount 0 is valid).
    Sorted by customer_id, ts (stable: same-day rows keep file order).
    """
    path = Path(path) if path is not None else cdnow_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected CDNOW_master.txt; {INSTALL_HINT})")
    ids, ts, qty, amt = _parse_lines(path)
    if len(ids) == 0:
        raise CDNOWFormatError(f"{path}: no transactions found")
    df = pd.DataFrame({
        "customer_id": ids,
        "seller_id": np.zeros(len(ids), np.int64),
        "ts": ts,
        "event_type": "purchase",
        "amount": amt,
        "quantity": qty,
    })
    df = validate(df, "events", source=str(path))
    return sort_table(df, "events")


# --------------------------------------------------------------------------- data source

DEFAULT_CUTOFF = "1997-10-01"  # exclusive: history through 1997-09-30, the classic 39-week calibration


class CDNOWSource:
    """CDNOW as a pipeline data source (``configs/data/cdnow.yaml``).

    ``cutoff`` is exclusive: events with ``ts < cutoff`` are history, the rest is
    the future the labels are read from. The default 1997-10-01 gives history
    through 1997-09-30. ``horizons`` (the config's ``data.horizons``) is checked
    here, before any work starts: a cutoff that leaves no room for the longest
    label window, or that lies before the first purchase, fails with a message
    naming the config keys. One store: ``seller_id`` is 0 for every row.
    """

    name = "cdnow"

    def __init__(self, cutoff: str = DEFAULT_CUTOFF, which: str = "master", path: str | None = None,
                 horizons: dict | None = None, min_customers: int = 50):
        try:
            self.cutoff = pd.Timestamp(cutoff)
        except (ValueError, TypeError) as e:
            raise ValueError(f"data.source.cutoff={cutoff!r} is not a date; expected e.g. 1997-10-01 ({e})") from None
        if self.cutoff.tzinfo is not None:
            self.cutoff = self.cutoff.tz_convert("UTC").tz_localize(None)
        self.which = which
        self.path = Path(path) if path else None
        self.horizons = {str(k): int(v) for k, v in (horizons or {}).items()}
        self.min_customers = int(min_customers)

    def _path(self) -> Path:
        return self.path if self.path is not None else cdnow_path(self.which)

    def fingerprint(self, path: Path | None = None) -> str:
        sha = sha256_file(path or self._path())
        return f"cdnow-{sha[:16]}-cutoff{self.cutoff:%Y%m%d}"

    def load(self):
        from sellerlift.data.sources import Tables
        from sellerlift.labels import check_horizon

        path = self._path()
        events = load_cdnow_events(path)
        first, last = events["ts"].min(), events["ts"].max()
        history = events["ts"] < self.cutoff
        n_customers = events.loc[history, "customer_id"].nunique()
        if n_customers < self.min_customers:
            raise ValueError(
                f"data.source.cutoff={self.cutoff.date()}: only {n_customers} customer(s) of {path.name} have "
                f"purchases before the cutoff (need >= {self.min_customers}); the data runs from {first.date()} "
                f"to {last.date()}: choose a later cutoff"
            )
        if self.horizons:
            key, days = max(self.horizons.items(), key=lambda kv: kv[1])
            check_horizon(events, self.cutoff, days,
                          source=f"{path.name} (data.source.cutoff={self.cutoff.date()}, data.horizons.{key}={days})")
        return Tables(self.name, events, self.cutoff, self.fingerprint(path))
