"""Delimited text files: where a file stops decoding, a CSV's structure checked before pandas parses it (pandas
pads or shifts broken rows silently), and reading text of any shape with every failure a :class:`SchemaError`
naming the file and the row or byte.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.schema import Problem, SchemaError

_NO_ROWS = np.array([], dtype=np.int64)


# --------------------------------------------------------------------------- text decoding


def _opener(path: Path):
    return gzip.open if path.suffix == ".gz" else open


def decode_error_at(path: Path, encoding: str = "utf-8-sig") -> tuple[int, int, bytes, bool] | None:
    """Where ``path`` stops being valid ``encoding``: (byte offset, 0-based line, the bad bytes, at end of file).

    Found with an incremental decoder over the raw bytes, so the offset is exact whatever the
    chunking of the reader that failed. None when the whole file decodes.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = line = 0  # bytes fed to the decoder so far, and the newlines among them
    with _opener(path)(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            final = not chunk
            pending = decoder.getstate()[0]  # an incomplete character carried over from the last chunk
            try:
                decoder.decode(chunk, final=final)
            except UnicodeDecodeError as err:
                data = err.object  # pending + chunk
                return (
                    offset - len(pending) + err.start,
                    line + data[: err.start].count(b"\n"),
                    bytes(data[err.start : err.end]),
                    final,
                )
            if final:
                return None
            line += chunk.count(b"\n")
            offset += len(chunk)


def decode_error_problem(path: Path, table: str, encoding: str = "utf-8-sig", header_lines: int = 1) -> Problem:
    """A :class:`Problem` naming the row and byte where ``path`` is not ``encoding`` text."""
    where = decode_error_at(path, encoding)
    if where is None:  # the reader failed for another reason; say so rather than guess
        return Problem(None, _NO_ROWS, f"cannot be read as {encoding} text")
    pos, line, bad, at_end = where
    row = line - header_lines
    name = "UTF-8" if encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig") else encoding
    rows = np.array([row], np.int64) if row >= 0 else _NO_ROWS
    if at_end:
        msg = (
            f"the file ends in the middle of a {name} character (byte {pos}): it looks cut off mid-row; "
            f"if it is complete, it is not {name} text"
        )
    else:
        msg = (
            f"not {name} text at byte {pos} ({bad!r}); set the file's encoding (data.source.encoding, "
            "e.g. latin-1 or cp1252 for spreadsheet exports) or save it as UTF-8"
        )
    return Problem(None, rows, msg)


# --------------------------------------------------------------------------- CSV structure


class _LastChar:
    """Iterate over lines, remembering the last character read (for the final-newline check)."""

    def __init__(self, lines):
        self.lines, self.last = lines, ""

    def __iter__(self):
        for line in self.lines:
            if line:
                self.last = line[-1]
            yield line


def scan_csv(path: Path, table: str, encoding: str = "utf-8-sig", sep: str = ",") -> None:
    """Structural check of a CSV before pandas parses it (pandas would pad or shift bad rows silently).

    Every record must have as many fields as the header, no NUL bytes, valid text in
    ``encoding``, closed quotes, and the file must end with a newline (else its last row
    may have been cut off mid-row). Raises :class:`SchemaError` naming the rows.
    """
    source = str(path)
    problems: list[Problem] = []
    short, long_, nul = [], [], []
    n_header = None
    row = -1  # 0-based data row, as in the DataFrame (blank lines skipped, as pandas does)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
    try:
        with _opener(path)(path, "rb") as raw:
            lines = _LastChar(io.TextIOWrapper(raw, encoding=encoding, newline=""))
            for record in csv.reader(lines, strict=True, delimiter=sep):
                if not record:
                    continue
                if n_header is None:
                    n_header = len(record)
                    twice = sorted({c for c in record if record.count(c) > 1})
                    if twice:  # pandas would silently rename the second one to "<name>.1"
                        problems.append(Problem(None, _NO_ROWS, f"duplicate column name(s) {twice} in the header"))
                    continue
                row += 1
                if len(record) < n_header:
                    short.append(row)
                elif len(record) > n_header:
                    long_.append(row)
                if any("\x00" in f for f in record):
                    nul.append(row)
    except csv.Error as err:
        where = [
            Problem(
                None,
                np.array([row + 1], np.int64),
                f"malformed CSV: {err} (a quote left open: the file may be cut off mid-row)",
            )
        ]
        if n_header is None:
            where = [Problem(None, _NO_ROWS, f"malformed CSV header: {err}")]
        raise SchemaError(source, table, where) from None
    except UnicodeDecodeError:
        raise SchemaError(source, table, [decode_error_problem(path, table, encoding)]) from None
    except (EOFError, gzip.BadGzipFile, OSError) as err:
        raise SchemaError(
            source,
            table,
            [Problem(None, _NO_ROWS, f"cannot read the file ({type(err).__name__}: {err}); truncated or corrupt?")],
        ) from None
    if n_header is None:
        raise SchemaError(source, table, [Problem(None, _NO_ROWS, "the file is empty")])
    if short:
        problems.append(
            Problem(None, np.array(short, np.int64), f"fewer fields than the header's {n_header} (a row cut off?)")
        )
    if long_:
        problems.append(
            Problem(
                None,
                np.array(long_, np.int64),
                f"more fields than the header's {n_header} (an unquoted separator or a merged line?)",
            )
        )
    if nul:
        problems.append(Problem(None, np.array(nul, np.int64), "NUL byte in a field (binary garbage in the file)"))
    if row >= 0 and lines.last not in ("\n", "\r"):
        problems.append(
            Problem(
                None,
                np.array([row], np.int64),
                "the file does not end with a newline: its last row "
                "looks cut off mid-row (if the file is complete, add "
                "a newline at its end)",
            )
        )
    if problems:
        raise SchemaError(source, table, problems)


# --------------------------------------------------------------------------- delimited text of any shape

WHITESPACE = "whitespace"  # csv_sep value: fields separated by runs of spaces/tabs (CDNOW_master.txt)
SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe", WHITESPACE: "whitespace"}


def text_encoding(encoding: str | None) -> str:
    """The codec to read ``encoding`` with: UTF-8 files may start with a byte-order mark (spreadsheet exports)."""
    e = (encoding or "utf-8").lower().replace("_", "-")
    return "utf-8-sig" if e in ("utf-8", "utf8", "utf-8-sig") else encoding


def first_lines(path: Path, encoding: str | None = "utf-8", n: int = 2) -> list[str]:
    """The first ``n`` lines of a text file (undecodable bytes replaced), for hints."""
    try:
        with _opener(path)(path, "rt", encoding=text_encoding(encoding), errors="replace", newline=None) as f:
            return [line.rstrip("\r\n") for _, line in zip(range(n), f)]
    except (OSError, EOFError, LookupError):
        return []


def separator_hint(path: Path, sep: str, encoding: str | None = "utf-8", key: str = "data.source") -> str:
    """When the header looks separated by something other than ``sep``: which ``csv_sep`` (and ``decimal``) to set."""
    lines = first_lines(path, encoding)
    if not lines:
        return ""
    header = lines[0]
    counts = {c: header.count(c) for c in (";", "\t", "|", ",") if c != sep}
    best = max(counts, key=counts.get)
    if counts[best] == 0 or (sep != WHITESPACE and header.count(sep) >= counts[best]):
        return ""
    hint = f"; the header looks {SEPARATOR_NAMES[best]}-separated: set {key}.csv_sep='{best}'"
    if (
        best != ","
        and len(lines) > 1
        and any(re.fullmatch(r"-?\d+,\d+", f.strip().strip('"')) for f in lines[1].split(best))
    ):
        hint += f" (and {key}.decimal=',' for its decimal commas)"
    return hint


@contextmanager
def read_errors(
    path: Path,
    table: str,
    encoding: str | None = "utf-8",
    header_lines: int = 1,
    sep: str = ",",
    key: str = "data.source",
):
    """Turn every way ``pd.read_csv`` fails into a :class:`SchemaError` naming the file (and the row or byte)."""
    source = str(path)
    try:
        yield
    except UnicodeDecodeError:
        raise SchemaError(
            source, table, [decode_error_problem(path, table, text_encoding(encoding), header_lines)]
        ) from None
    except LookupError as err:  # an unknown codec name
        raise SchemaError(
            source,
            table,
            [Problem(None, _NO_ROWS, f"{key}.encoding={encoding!r}: {err}; expected e.g. utf-8, latin-1, cp1252")],
        ) from None
    except pd.errors.EmptyDataError:
        raise SchemaError(source, table, [Problem(None, _NO_ROWS, "the file is empty")]) from None
    except pd.errors.ParserWarning:  # rows longer than the header: pandas would cut them silently
        hint = separator_hint(path, sep, encoding, key)
        if len(sep) == 1 and header_lines == 1:
            try:
                scan_csv(path, table, text_encoding(encoding), sep)
            except SchemaError as err:
                raise SchemaError(
                    source, table, [Problem(p.column, p.rows, p.message + hint) for p in err.problems]
                ) from None
        raise SchemaError(
            source,
            table,
            [
                Problem(
                    None,
                    _NO_ROWS,
                    f"rows with more fields than the header (an unquoted separator inside a field?){hint}",
                )
            ],
        ) from None
    except pd.errors.ParserError as err:
        m = re.search(r"line (\d+), saw (\d+)", str(err))
        rows = np.array([int(m.group(1)) - 1 - header_lines], np.int64) if m else _NO_ROWS
        what = (
            (
                f"more fields ({m.group(2)}) than the header has: an unquoted separator inside a field, or the wrong "
                f"{key}.csv_sep={sep!r}"
            )
            if m
            else f"cannot parse the file ({str(err).strip()[:300]})"
        )
        raise SchemaError(
            source, table, [Problem(None, rows, what + separator_hint(path, sep, encoding, key))]
        ) from None
    except (EOFError, gzip.BadGzipFile, OSError) as err:
        raise SchemaError(
            source,
            table,
            [Problem(None, _NO_ROWS, f"cannot read the file ({type(err).__name__}: {err}); truncated or corrupt?")],
        ) from None


def read_delimited(
    path: Path,
    table: str,
    *,
    sep: str = ",",
    encoding: str | None = "utf-8",
    decimal: str = ".",
    names: list[str] | None = None,
    dtype: dict | None = None,
    chunksize: int | None = None,
    nrows: int | None = None,
    key: str = "data.source",
):
    """A delimited text file of any shape as a DataFrame (or an iterator of chunks); errors are SchemaErrors.

    ``sep``: one character, or ``whitespace``; ``names``: the columns of a file without a header row.
    """
    kwargs = dict(
        sep=r"\s+" if sep == WHITESPACE else sep,
        encoding=text_encoding(encoding),
        decimal=decimal,
        dtype=dtype,
        index_col=False,
        nrows=nrows,
    )
    if names:
        kwargs.update(header=None, names=[str(n) for n in names])
    errors = dict(table=table, encoding=encoding, header_lines=0 if names else 1, sep=sep, key=key)
    if chunksize is None:
        with read_errors(path, **errors), warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, **kwargs)
    return _chunks(path, kwargs, chunksize, errors)


def _chunks(path: Path, kwargs: dict, chunksize: int, errors: dict):
    with read_errors(path, **errors), warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        yield from pd.read_csv(path, chunksize=chunksize, **kwargs)
