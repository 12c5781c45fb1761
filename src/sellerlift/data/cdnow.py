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
