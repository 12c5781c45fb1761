"""What mapping a foreign file onto a contract table needs, shared by events and promotions.

Reading (CSV of any separator, encoding and decimal mark, or Parquet), identifiers
(``id_type``), timestamps in the file's own format, the file's names in contract
errors, and a ready-to-paste ``event_types`` block for event names nobody mapped.
No torch, no Hydra: the batch scorer and ``python -m sellerlift.data check`` use it too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift import file_formats
from sellerlift.delimited import WHITESPACE, read_delimited
from sellerlift.io import ids_from_text
from sellerlift.schema import EVENT_TYPES, DataError, Problem, SchemaError

NO_ROWS = np.array([], dtype=np.int64)
ID_TYPES = ("auto", "int", "str")
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".csv", ".gz", ".txt", ".tsv", ".dat")


def plain(d) -> dict:
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


def default_name(path: str | Path) -> str:
    """A data set name from a file name: ``/data/Shop Events.csv.gz`` -> ``shop_events``."""
    name = Path(str(path).rstrip("/")).name
    for _ in range(2):
        stem, dot, ext = name.rpartition(".")
        if dot and stem and ext.lower() in ("csv", "gz", "tsv", "txt", "parquet", "pq", "dat", "zip", "bz2", "xz"):
            name = stem
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-").lower()
    return slug or "data"


def is_parquet(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES


def check_options(key: str, csv_sep: str, decimal: str, id_type: str, timestamp_format: str | None = None) -> None:
    """Reading options of a mapping; a bad one is a :class:`DataError` naming its key."""
    if not (
        timestamp_format is None
        or timestamp_format in file_formats.TIMESTAMP_FORMATS
        or (isinstance(timestamp_format, str) and "%" in timestamp_format)
    ):
        raise DataError(
            f"{key}.timestamp_format={timestamp_format!r}: expected null (ISO 8601), one of "
            f"{list(file_formats.TIMESTAMP_FORMATS)} or a strftime format such as %d/%m/%Y or "
            "%Y-%m-%d %H:%M:%S"
        )
    if csv_sep != WHITESPACE and (not isinstance(csv_sep, str) or len(csv_sep) != 1):
        raise DataError(
            f"{key}.csv_sep={csv_sep!r}: expected one character (',', ';', '\\t', '|') or "
            f"'{WHITESPACE}' (fields separated by runs of spaces)"
        )
    if decimal not in (".", ","):
        raise DataError(f"{key}.decimal={decimal!r}: expected '.' or ','")
    if id_type not in ID_TYPES:
        raise DataError(f"{key}.id_type={id_type!r}: expected one of {list(ID_TYPES)}")
    if csv_sep == decimal:
        raise DataError(
            f"{key}.csv_sep and {key}.decimal are both {csv_sep!r}; a file with decimal commas is usually ';'-separated"
        )


def read_file(
    path: Path,
    table: str,
    *,
    csv_sep: str = ",",
    encoding: str = "utf-8",
    decimal: str = ".",
    names=None,
    id_columns=(),
    chunk_rows: int | None = None,
    usecols=None,
    key: str = "data.source",
):
    """The raw file (a DataFrame, or an iterator of chunks with ``chunk_rows``): Parquet, or delimited text."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file ({key}.path; expected the {table} as CSV or Parquet)")
    if is_parquet(path):
        if path.is_file() and path.stat().st_size == 0:
            raise SchemaError(str(path), table, [Problem(None, NO_ROWS, "the file is empty")])
        if chunk_rows is None:
            try:
                return pd.read_parquet(path)
            except Exception as err:
                why = f"not a readable Parquet file ({type(err).__name__}: {str(err)[:300]})"
                raise SchemaError(str(path), table, [Problem(None, NO_ROWS, why)]) from None
        return _parquet_batches(path, chunk_rows, usecols)
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type '{path.suffix}'; expected .csv, .txt, .tsv (text, "
            "optionally .gz) or .parquet"
        )
    sep = "\t" if path.suffix.lower() == ".tsv" and csv_sep == "," else csv_sep
    ids = {c: str for c in id_columns if c}
    return read_delimited(
        path,
        table,
        sep=sep,
        encoding=encoding,
        decimal=decimal,
        names=names,
        dtype=ids or None,
        chunksize=chunk_rows,
        key=key,
    )


def _parquet_batches(path: Path, chunk_rows: int, usecols) -> Iterator[pd.DataFrame]:
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(path), format="parquet")
    cols = [c for c in (usecols or []) if c in dataset.schema.names]
    # No read-ahead across files: pyarrow's defaults (4 files, 16 batches) hold up to gigabytes in memory.
    for batch in dataset.to_batches(
        columns=cols or None, batch_size=chunk_rows, batch_readahead=1, fragment_readahead=1
    ):
        yield batch.to_pandas()


def header_of(path: Path, *, csv_sep: str = ",", encoding: str = "utf-8", names=None) -> list[str]:
    """The file's column names without reading its rows."""
    if names:
        return [str(n) for n in names]
    if is_parquet(path):
        import pyarrow.dataset as ds

        return list(ds.dataset(str(path), format="parquet").schema.names)
    sep = "\t" if path.suffix.lower() == ".tsv" and csv_sep == "," else csv_sep
    return list(read_delimited(path, "events", sep=sep, encoding=encoding, nrows=0).columns)


# --------------------------------------------------------------------------- files shipped inside a Python package

PACKAGE_SCHEME = "package://"
# How to install a distribution that ships a data file we read (its code is never imported).
INSTALL_HINTS = {"lifetimes": "pip install --no-deps lifetimes==0.11.3"}


def packaged_file(distribution: str, name: str) -> Path:
    """A data file shipped inside an installed distribution, found with ``importlib.metadata``.

    The distribution's code is never imported. ``name`` is the file name or the end of its path
    inside the distribution (``CDNOW_master.txt`` or ``datasets/CDNOW_master.txt``).
    """
    hint = INSTALL_HINTS.get(distribution.lower(), f"pip install {distribution}")
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"{name} ships with the Python package '{distribution}', which is not installed; run: {hint}"
        ) from None
    want = name.strip("/").split("/")
    for f in dist.files or ():
        if list(f.parts[-len(want) :]) == want:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{name} not found in the installed '{distribution}' distribution; reinstall it: {hint}")


def resolve_path(path: str | os.PathLike, key: str = "data.source.path") -> Path:
    """A file path, or ``package://<distribution>/<file>`` (a data file inside an installed package)."""
    text = str(path)
    if text.startswith(PACKAGE_SCHEME):
        dist, _, name = text[len(PACKAGE_SCHEME) :].partition("/")
        if not dist or not name:
            raise ValueError(f"{key}={text!r}: expected {PACKAGE_SCHEME}<distribution>/<file name>")
        return packaged_file(dist, name)
    return Path(text).expanduser()


# --------------------------------------------------------------------------- identifiers


def coerce_ids(df: pd.DataFrame, cols, id_type: str, key: str = "data.source") -> list[Problem]:
    """Identifier columns as ``id_type``: ``auto`` (integers when every id is a canonical integer, so '007'
    stays text), ``int`` (parse as integers: '00042' -> 42) or ``str`` (text, as written)."""
    problems = []
    for c in cols:
        if c not in df:
            continue
        s = df[c]
        if id_type == "str":
            if not (pd.api.types.is_string_dtype(s) or s.dtype == object):
                df[c] = file_formats.as_text(s).astype("string")
        elif id_type == "int":
            if pd.api.types.is_integer_dtype(s):
                continue
            num = pd.to_numeric(file_formats.as_text(s), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            present = s.notna().to_numpy()
            bad = present & ~(np.isfinite(num) & (np.floor(num) == num) & (np.abs(num) < 2.0**53))
            if bad.any():
                rows = np.flatnonzero(bad)
                seen = list(dict.fromkeys(str(v) for v in s.to_numpy(dtype=object)[rows[:50]]))[:3]
                problems.append(
                    Problem(
                        c,
                        rows,
                        f"not an integer identifier ({key}.id_type=int); e.g. {seen}; "
                        f"set {key}.id_type=str to keep ids as text",
                    )
                )
            elif present.all():
                df[c] = num.astype(np.int64)
        elif pd.api.types.is_string_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
            df[c] = ids_from_text(s)
    return problems


# --------------------------------------------------------------------------- timestamps


def localize(ts: pd.Series, timezone: str) -> tuple[pd.Series, np.ndarray]:
    """Naive local times in ``timezone`` -> UTC-aware; rows that are ambiguous or missing in that zone."""
    out = ts.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="shift_forward")
    bad = out.isna().to_numpy() & ts.notna().to_numpy()
    return out, np.flatnonzero(bad)


def convert_timestamps(df: pd.DataFrame, fmt: str | None, timezone: str, key: str = "data.source") -> list[Problem]:
    """``df['ts']`` in the file's format and zone -> timestamps ``schema.validate`` accepts (in place)."""
    tz = timezone or "UTC"
    if fmt:
        ts, found, absolute = file_formats.parse_timestamps(df["ts"], fmt, key=f"{key}.timestamp_format")
        if found:
            return [Problem("ts", rows, msg) for rows, msg in found]
        if not absolute and tz.upper() != "UTC":
            ts, bad = localize(ts, tz)
            if len(bad):
                return [Problem("ts", bad, f"ambiguous local time in {tz} (a daylight-saving change); give an offset")]
        df["ts"] = ts
        return []
    if (
        tz.upper() != "UTC"
        and not isinstance(df["ts"].dtype, pd.DatetimeTZDtype)
        and not pd.api.types.is_numeric_dtype(df["ts"])
    ):
        try:
            ts = pd.to_datetime(df["ts"], errors="coerce", format="ISO8601")
        except (ValueError, TypeError):  # mixed offsets / types: schema.validate names the rows
            return []
        if getattr(ts.dt, "tz", None) is None and not (ts.isna() & df["ts"].notna()).any():
            ts, bad = localize(ts, tz)
            if len(bad):
                return [Problem("ts", bad, f"ambiguous local time in {tz} (a daylight-saving change); give an offset")]
            df["ts"] = ts
    return []


def with_timestamp_hint(err: SchemaError, raw_ts: pd.Series | None, fmt: str | None, key: str) -> SchemaError:
    """Add which ``timestamp_format`` to set to the contract's 'not a timestamp' problems."""
    if fmt or raw_ts is None:
        return err
    hint = None
    problems = []
    for p in err.problems:
        if p.column == "ts" and (
            "timestamp" in p.message
            and ("unparseable" in p.message or "not timestamps" in p.message or "wrong type" in p.message)
        ):
            hint = (
                file_formats.timestamp_format_hint(
                    raw_ts.iloc[p.rows[:1000]] if len(p.rows) else raw_ts, f"{key}.timestamp_format"
                )
                if hint is None
                else hint
            )
            p = Problem(p.column, p.rows, p.message + hint)
        problems.append(p)
    return SchemaError(err.source, err.table, problems, err.max_rows_shown)


# --------------------------------------------------------------------------- the file's names in errors


def renamed(
    err: SchemaError, columns: Mapping, row_offset: int = 0, rows_in_chunk: np.ndarray | None = None
) -> SchemaError:
    """Name the file's own columns (and the file's rows) in a contract error."""
    problems = []
    for p in err.problems:
        col = p.column
        if col is not None and columns.get(col) and columns[col] != col:
            col = f"{columns[col]}' → '{p.column}"
        rows = p.rows
        if len(rows):
            rows = (rows_in_chunk[rows] if rows_in_chunk is not None else rows) + row_offset
        problems.append(Problem(col, rows, p.message))
    out = SchemaError(err.source, err.table, problems, err.max_rows_shown)
    if isinstance(err, UnmappedEventNames):
        return UnmappedEventNames(out.source, out.table, out.problems, out.max_rows_shown, counts=dict(err.counts))
    return out


# --------------------------------------------------------------------------- event names nobody mapped

# (contract type, words): the first type with a word that starts a token of the name is the guess.
_GUESSES = (
    ("email_open", ("email", "mail", "newsletter")),
    ("support_contact", ("support", "ticket", "complaint", "help", "contact", "chat")),
    ("coupon_redeem", ("coupon", "voucher", "promo", "redeem", "discount")),
    ("add_to_cart", ("cart", "basket", "bag", "wishlist")),
    ("purchase", ("order", "purchase", "checkout", "buy", "bought", "transaction", "sale", "payment", "paid")),
    ("view", ("view", "product", "page", "detail", "impression", "item", "search", "browse", "click")),
    ("visit", ("visit", "session", "login", "signin", "open", "start", "landing", "launch", "app")),
)
_NO_GUESS = (
    "remove",
    "delete",
    "refund",
    "return",
    "cancel",
    "unsubscribe",
    "logout",
    "begin",
    "abandon",
    "fail",
    "error",
)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_ .-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "none", "~"}


def guess_event_type(name: str) -> str | None:
    """The contract type a shop's event name most likely means, from its words (None: no safe guess)."""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(name)).lower()
    tokens = [t for t in re.split(r"[^a-z0-9]+", words) if t]
    if any(t.startswith(w) for t in tokens for w in _NO_GUESS):
        return None
    for kind, vocabulary in _GUESSES:
        if any(t.startswith(w) for t in tokens for w in vocabulary):
            return kind
    return None


def yaml_key(name: str) -> str:
    text = str(name)
    if _PLAIN_KEY.fullmatch(text) and text.lower() not in _YAML_WORDS and text == text.strip():
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def event_types_block(counts: Mapping[str, int], indent: int = 0) -> str:
    """A ready-to-paste ``event_types:`` block: every unmapped name with its row count and a guess to check."""
    pad = " " * indent
    lines = [f"{pad}event_types:"]
    keys = {n: yaml_key(n) for n in counts}
    width = max((len(k) for k in keys.values()), default=0)
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        guess = guess_event_type(name)
        value = guess or "???"
        note = "guessed from the name: check it" if guess else f"choose one of {', '.join(EVENT_TYPES)}, or drop"
        lines.append(f"{pad}  {keys[name] + ':':<{width + 1}} {value:<15} # {n:,} row(s); {note}")
    return "\n".join(lines)


class UnmappedEventNames(SchemaError):
    """Rows whose event names are in neither the contract nor ``data.source.event_types``; ``counts``: name -> rows."""

    def __init__(self, source: str, table: str, problems=None, max_rows_shown: int = 5, counts=None):
        super().__init__(source, table, problems or [], max_rows_shown)
        self.counts = dict(counts or {})

    def __reduce__(self):
        return (type(self), (self.source, self.table, self.problems, self.max_rows_shown, self.counts))


def unmapped_problem(rows: np.ndarray, counts: Mapping[str, int], key: str = "data.source") -> Problem:
    top = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    listing = ", ".join(f"{n!r} ({c:,})" for n, c in top[:10])
    more = f" and {len(top) - 10} more (all in the block below)" if len(top) > 10 else ""
    return Problem(
        "event_type",
        rows,
        f"{len(top)} event name(s) not mapped: {listing}{more}. Map each to one of {list(EVENT_TYPES)} "
        f"(or drop: remove its rows) in {key}.event_types, or set {key}.unknown_event_types=drop. Every "
        f"unmapped name, ready to paste under {key} (check each guess; ??? must be replaced):\n"
        + event_types_block(counts, 4),
    )


# --------------------------------------------------------------------------- mapping files


def mapping_kwargs(mapping_file: str | Path) -> dict:
    """The ``data.source`` keys of a mapping file (a data config or a bare mapping), as plain values.

    Interpolations that resolve inside the file (``${data.horizons}``) are resolved, ``${paths.root_dir}`` is
    ``SELLERLIFT_ROOT`` (else the working directory); those that need the rest of the Hydra config are dropped.
    """
    from omegaconf import OmegaConf

    path = Path(mapping_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such mapping file (expected a data config like "
            "configs/data/seller_file.yaml or a mapping like examples/*.mapping.yaml)"
        )
    try:
        doc = OmegaConf.load(path)
    except Exception as err:
        raise DataError(f"{path}: not a readable YAML mapping ({type(err).__name__}: {err})") from None
    if not OmegaConf.is_dict(doc):
        raise DataError(f"{path}: expected a mapping (keys like columns, event_types), got {type(doc).__name__}")
    root = doc if "data" in doc else OmegaConf.create({"data": doc})
    if "paths" not in root:  # ${paths.root_dir}: the repository, as train.py sets it (else the working dir)
        root.paths = {"root_dir": os.environ.get("SELLERLIFT_ROOT", os.getcwd())}
    prefix = "data.source" if "source" in root.data else "data"
    node = OmegaConf.select(root, prefix)
    kw = {}
    for k in node:
        if str(k).startswith("_") or (prefix == "data" and k in ("max_len", "split", "split_seed", "datamodule")):
            continue
        try:
            value = OmegaConf.select(root, f"{prefix}.{k}", throw_on_resolution_failure=True)
            kw[k] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except Exception:
            continue
    return kw


def fill_data_name(cfg) -> None:
    """``data.name`` null -> the events file's name (``/data/shop_events.parquet`` -> ``shop_events``), so a
    run on a file logs to experiment ``sellerlift-<that name>``. For configs whose source reads a file."""
    from omegaconf import open_dict

    data = cfg.get("data")
    if data is None or data.get("name") is not None:
        return
    source = data.get("source") or {}
    spec = source.get("path")
    layouts, which = source.get("layouts") or {}, source.get("which")
    if not spec and which in layouts:
        spec = layouts[which].get("path")
    with open_dict(cfg):
        cfg.data.name = default_name(spec) if spec else "data"
