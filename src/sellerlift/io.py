"""File I/O: atomic writes, hashes, and reading contract tables from CSV / Parquet files.

The contract itself (columns, validation) is :mod:`sellerlift.schema`; this module
only moves bytes. Writes go through a temp file + fsync + rename, so a reader (or a
crash) never sees half a file. :func:`read_table` checks a CSV's structure before
pandas parses it (:func:`sellerlift.delimited.scan_csv`), because pandas pads or shifts
broken rows silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.delimited import scan_csv
from sellerlift.schema import TABLES, Problem, SchemaError, validate

_NO_ROWS = np.array([], dtype=np.int64)


# --------------------------------------------------------------------------- hashes and atomic writes


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    files = sorted(Path(path).rglob("*.parquet")) if Path(path).is_dir() else [Path(path)]
    for f in files:  # a directory of Parquet parts hashes as the concatenation of its parts
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic(path: str | os.PathLike, write) -> Path:
    """``write(tmp_path)`` then fsync + rename onto ``path``; a failed write leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Readers see the previous complete file or the new one; a killed writer leaves a hidden ``.*.tmp``."""
    return _atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


# --------------------------------------------------------------------------- contract tables from files


_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,18})")
_INT64_MAX = np.iinfo(np.int64).max


def ids_from_text(s: pd.Series) -> pd.Series:
    """Text ids read from a CSV: int64 when every value is a canonical integer that fits, else kept as text."""
    present = s.dropna()
    if len(present) and present.str.fullmatch(_CANONICAL_INT.pattern).all():
        as_int = pd.to_numeric(present, errors="coerce")
        if as_int.notna().all() and (as_int.abs() <= _INT64_MAX).all() and len(present) == len(s):
            return s.astype("int64")
    return s


def _read_csv(path: Path, table: str) -> pd.DataFrame:
    ids = [c.name for c in TABLES[table].columns if c.kind == "id"]
    scan_csv(path, table)
    try:
        # Ids as text first: pandas would turn "007" into 7 and 2**64 into a float (lossy, silent).
        df = pd.read_csv(
            path,
            dtype={c: "string" for c in ids},
            index_col=False,
            encoding="utf-8-sig",
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.EmptyDataError:
        raise SchemaError(str(path), table, [Problem(None, _NO_ROWS, "the file is empty")]) from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError, EOFError, OSError) as err:
        raise SchemaError(
            str(path), table, [Problem(None, _NO_ROWS, f"cannot parse the CSV ({type(err).__name__}: {err})")]
        ) from None
    for c in ids:
        if c in df.columns:
            df[c] = ids_from_text(df[c])
    return df


def read_table(path: str | os.PathLike, table: str, duplicates: str = "drop", **kwargs) -> pd.DataFrame:
    """Read a CSV or Parquet file (or a directory of Parquet parts) and validate it.

    Every problem is a :class:`SchemaError` naming file, row and column. Exact duplicate rows
    are dropped and counted (``duplicates="drop"``; see :func:`sellerlift.schema.validate`).
    ``kwargs`` go to ``validate`` (``as_of``, ``ts_min``, ``ts_max``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected the {table} table as CSV or Parquet)")
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        if path.is_file() and path.stat().st_size == 0:
            raise SchemaError(str(path), table, [Problem(None, _NO_ROWS, "the file is empty")])
        try:
            df = pd.read_parquet(path)
        except Exception as err:
            raise SchemaError(
                str(path),
                table,
                [
                    Problem(
                        None,
                        _NO_ROWS,
                        f"not a readable Parquet file ({type(err).__name__}: {str(err)[:300]}); truncated or corrupt?",
                    )
                ],
            ) from None
    elif path.suffix in (".csv", ".gz", ".txt"):
        df = _read_csv(path, table)
    else:
        raise ValueError(f"{path}: unsupported file type '{path.suffix}'; expected .csv or .parquet")
    return validate(df, table, source=str(path), duplicates=duplicates, **kwargs)
