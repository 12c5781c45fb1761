"""Data in: every malformed seller file gives a SchemaError naming file, row and column, or a counted repair.

Property-based (hypothesis): good tables are generated, one thing is broken on purpose,
and the outcome is checked. Nothing may raise anything but SchemaError, and nothing
may be dropped without being counted. The last tests kill writers mid-write (SIGKILL)
and check that no half-written Parquet file or bundle ever loads as complete.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sellerlift.io import read_table
from sellerlift.schema import EVENT_TYPES, EVENTS, SchemaError, validate

FAST = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
BASE = pd.Timestamp("2025-01-01")

# Text ids a seller may use: letters/digits of any script, '-' and '_', no surrounding spaces.
id_text = st.text(
    alphabet=st.characters(categories=("L", "N"), exclude_characters="\u2028\u2029"), min_size=1, max_size=12
).map(lambda t: unicodedata.normalize("NFC", t))


@st.composite
def good_events(draw, min_rows=1, max_rows=25):
    n = draw(st.integers(min_rows, max_rows))
    if draw(st.booleans()):
        customers = draw(st.lists(st.integers(0, 10**12), min_size=n, max_size=n))
    else:
        customers = draw(st.lists(id_text, min_size=n, max_size=n))
    seconds = sorted(draw(st.lists(st.integers(0, 300 * 86400), min_size=n, max_size=n, unique=True)))
    df = pd.DataFrame(
        {
            "customer_id": customers,
            "seller_id": draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)),
            "ts": BASE + pd.to_timedelta(seconds, unit="s"),  # unique: no accidental duplicate rows
            "event_type": draw(st.lists(st.sampled_from(EVENT_TYPES), min_size=n, max_size=n)),
            "amount": draw(st.lists(st.floats(0, 1e6, allow_nan=False, allow_infinity=False), min_size=n, max_size=n)),
        }
    )
    if draw(st.booleans()):
        df["quantity"] = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n))
    if draw(st.booleans()):
        df["note"] = draw(
            st.lists(st.sampled_from(["", "gift", "ünïcode ✓", "a,b", 'say "hi"']), min_size=n, max_size=n)
        )
    return df


def write(df: pd.DataFrame, path: Path, fmt: str) -> Path:
    path = path.with_suffix("." + fmt)
    if fmt == "csv":
        out = df.copy()
        if "ts" in out and pd.api.types.is_datetime64_any_dtype(out["ts"]):
            out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def schema_error(fn, *args, **kwargs) -> SchemaError:
    """Run ``fn``; it must raise SchemaError (anything else fails the test with its own traceback)."""
    with pytest.raises(SchemaError) as info:
        fn(*args, **kwargs)
    return info.value


def assert_names(err: SchemaError, source: str, column: str | None, row: int) -> None:
    text = str(err)
    assert source in text
    hits = [p for p in err.problems if p.column == column and row in p.rows]
    assert hits, f"no problem names column {column!r} row {row}:\n{text}"
    if column:
        assert f"column '{column}'" in text


# --------------------------------------------------------------------------- good data


@FAST
@given(df=good_events(), fmt=st.sampled_from(["csv", "parquet"]))
def test_good_tables_round_trip_with_canonical_dtypes_and_no_loss(tmp_path, df, fmt):
    path = write(df, tmp_path / "events", fmt)
    out = read_table(path, "events")
    assert len(out) == len(df) and out.attrs["repairs"]["duplicate_rows_dropped"] == 0
    assert str(out["ts"].dtype) == "datetime64[us]"
    assert isinstance(out["event_type"].dtype, pd.CategoricalDtype)
    assert out["amount"].dtype == np.float64
    if fmt == "parquet":  # typed: ints stay ints, text ids stay exact text
        assert list(out["customer_id"]) == list(df["customer_id"])
    else:  # a CSV has no types: an id column of canonical integers is read as int64, anything else as text
        assert [str(v) for v in out["customer_id"]] == [str(v) for v in df["customer_id"]]
    assert (out["ts"].to_numpy() == df["ts"].to_numpy().astype("datetime64[us]")).all()
    np.testing.assert_allclose(out["amount"].to_numpy(), df["amount"].to_numpy(), rtol=1e-15)
    extras = [c for c in df.columns if c not in {c.name for c in EVENTS.columns}]
    for c in extras:  # unknown columns are carried, not dropped
        assert c in out.columns


def test_leading_zero_ids_are_not_mangled(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text(
        "customer_id,seller_id,ts,event_type,amount\n007,1,2025-01-01T00:00:00Z,visit,0\n"
        "7,1,2025-01-02T00:00:00Z,visit,0\n"
    )
    out = read_table(path, "events")
    assert list(out["customer_id"]) == ["007", "7"]  # two customers, as written: not both 7
    assert list(out["seller_id"]) == [1, 1]


# --------------------------------------------------------------------------- one bad cell

# (column, bad value, works through a CSV file)
BAD_CELLS = [
    ("customer_id", None, True),
    ("customer_id", "", True),
    ("customer_id", " padded ", True),
    ("customer_id", "ctl\x01char", True),
    ("customer_id", [1, 2], False),
    ("customer_id", 1.5, False),
    ("customer_id", True, False),
    ("customer_id", "lone\ud800surrogate", False),
    ("seller_id", None, True),
    ("seller_id", 2.5, False),
    ("ts", "not a date", True),
    ("ts", None, True),
    ("ts", "1900-01-01T00:00:00Z", True),
    ("ts", "2150-01-01T00:00:00Z", True),
    ("ts", 3.5, False),
    ("ts", "2025-13-45T00:00:00Z", True),
    ("event_type", "buy", True),
    ("event_type", "Purchase", True),
    ("event_type", " visit", True),
    ("event_type", None, True),
    ("amount", -5.0, True),
    ("amount", float("nan"), True),
    ("amount", float("inf"), True),
    ("amount", float("-inf"), True),
    ("amount", "ten", True),
    ("amount", "1,5", True),
    ("amount", True, False),
    ("amount", complex(1, 2), False),
    ("amount", [3.0], False),
    ("quantity", 1.5, True),
    ("quantity", -1, True),
    ("quantity", "x", True),
    ("quantity", 2.0**60, True),
]


@FAST
@given(df=good_events(min_rows=2), cell=st.sampled_from(BAD_CELLS), data=st.data())
def test_one_bad_cell_is_named_by_file_row_and_column(tmp_path, df, cell, data):
    column, value, via_csv = cell
    if column == "quantity" and "quantity" not in df:
        df["quantity"] = 1
    row = data.draw(st.integers(0, len(df) - 1), label="row")
    bad = df.astype({column: object})
    bad.iat[row, bad.columns.get_loc(column)] = value
    if via_csv and data.draw(st.booleans(), label="through a CSV file"):
        if column == "ts":  # the other rows as text too, in UTC
            bad["ts"] = [
                v if i == row else pd.Timestamp(v).strftime("%Y-%m-%dT%H:%M:%SZ") for i, v in enumerate(bad["ts"])
            ]
        path = tmp_path / "shop.csv"
        bad.to_csv(path, index=False)
        err = schema_error(read_table, path, "events")
        source = str(path)
    else:
        err = schema_error(validate, bad, "events", source="shop.parquet")
        source = "shop.parquet"
    assert_names(err, source, column, row)
    assert f"row {row + 1}" in str(err) or "more)" in str(err)


@FAST
@given(df=good_events(min_rows=2), data=st.data())
def test_every_bad_row_is_reported_not_just_the_first(df, data):
    rows = data.draw(st.lists(st.integers(0, len(df) - 1), min_size=1, max_size=len(df), unique=True))
    bad = df.copy()
    bad.loc[rows, "amount"] = -1.0
    err = schema_error(validate, bad, "events", source="x.csv")
    (problem,) = [p for p in err.problems if p.column == "amount"]
    assert sorted(problem.rows.tolist()) == sorted(rows)
    assert f"{len(rows)} row(s)" in str(err)


# --------------------------------------------------------------------------- columns


@FAST
@given(df=good_events(), column=st.sampled_from(EVENTS.required), fmt=st.sampled_from(["csv", "parquet"]))
def test_missing_column_is_named(tmp_path, df, column, fmt):
    path = write(df.drop(columns=[column]), tmp_path / "events", fmt)
    err = schema_error(read_table, path, "events")
    assert "missing required column" in str(err) and repr(column) in str(err) and str(path) in str(err)


def test_column_differing_in_case_gets_a_hint_and_duplicate_names_are_refused(tmp_path):
    df = validate(
        pd.DataFrame({"customer_id": [1], "seller_id": [1], "ts": [BASE], "event_type": ["visit"], "amount": [0.0]}),
        "events",
    )
    err = schema_error(validate, df.rename(columns={"amount": "Amount "}), "events")
    assert "'Amount '" in str(err) and "differs only in case" in str(err)
    twice = pd.concat([df, df[["amount"]]], axis=1)
    assert "duplicate column name" in str(schema_error(validate, twice, "events"))
    path = tmp_path / "dup.csv"
    path.write_text("customer_id,seller_id,ts,event_type,amount,amount\n1,1,2025-01-01T00:00:00Z,visit,0,0\n")
    err = schema_error(read_table, path, "events")  # pandas would rename to amount.1 and carry on
    assert "amount" in str(err)


@FAST
@given(
    df=good_events(),
    extra=st.lists(
        st.text(min_size=1, max_size=8).filter(
            lambda c: c not in {c.name for c in EVENTS.columns} and not c.startswith("Unnamed")
        ),
        min_size=1,
        max_size=3,
        unique=True,
    ),
)
def test_extra_columns_are_carried_untouched(df, extra):
    for i, name in enumerate(extra):
        df[name] = np.arange(len(df)) * (i + 1)
    out = validate(df, "events")
    for i, name in enumerate(extra):
        assert list(out[name]) == list(np.arange(len(df)) * (i + 1))


# --------------------------------------------------------------------------- duplicates


@settings(FAST, max_examples=15)
@given(df=good_events(), data=st.data(), fmt=st.sampled_from(["csv", "parquet"]))
def test_exact_duplicates_are_dropped_and_counted_never_silently(tmp_path, df, data, fmt):
    copies = data.draw(st.lists(st.integers(0, len(df) - 1), min_size=1, max_size=5), label="rows copied")
    with_dups = pd.concat([df, df.iloc[copies]], ignore_index=True)
    order = data.draw(st.permutations(range(len(with_dups))), label="order")
    with_dups = with_dups.iloc[list(order)].reset_index(drop=True)
    path = write(with_dups, tmp_path / "events", fmt)

    out = read_table(path, "events")  # default: drop exact duplicates, count them
    assert len(out) == len(df)
    repairs = out.attrs["repairs"]
    assert repairs["duplicate_rows_dropped"] == len(copies)
    expected = sorted(np.flatnonzero(with_dups.duplicated(keep="first").to_numpy()) + 1)
    assert repairs["duplicate_rows"] == expected  # 1-based rows of the file, as in errors

    err = schema_error(read_table, path, "events", duplicates="error")
    assert "exact duplicate" in str(err) and sorted(err.problems[0].rows + 1) == expected
    assert len(read_table(path, "events", duplicates="keep")) == len(with_dups)
    assert len(validate(with_dups, "events")) == len(with_dups)  # validate keeps unless asked


def test_duplicate_drop_is_logged(tmp_path, caplog):
    df = pd.DataFrame(
        {
            "customer_id": [1, 1],
            "seller_id": [1, 1],
            "ts": [BASE, BASE],
            "event_type": ["visit"] * 2,
            "amount": [0.0, 0.0],
        }
    )
    path = write(df, tmp_path / "events", "csv")
    with caplog.at_level("WARNING", logger="sellerlift.schema"):
        out = read_table(path, "events")
    assert len(out) == 1 and "dropped 1 exact duplicate row(s)" in caplog.text and str(path) in caplog.text


# --------------------------------------------------------------------------- time zones and the future


@FAST
@given(df=good_events(), offsets=st.lists(st.integers(-12 * 60, 14 * 60), min_size=25, max_size=25))
def test_mixed_time_zone_offsets_are_converted_to_utc(df, offsets):
    text = []
    for t, off in zip(df["ts"], offsets):
        local = t + pd.Timedelta(minutes=off)
        sign = "+" if off >= 0 else "-"
        text.append(local.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{abs(off) // 60:02d}:{abs(off) % 60:02d}")
    out = validate(df.assign(ts=text), "events")
    assert (out["ts"].to_numpy() == df["ts"].to_numpy().astype("datetime64[us]")).all()


@FAST
@given(df=good_events(min_rows=2), data=st.data())
def test_naive_timestamps_mixed_with_zoned_ones_are_refused(df, data):
    naive = data.draw(st.lists(st.integers(0, len(df) - 1), min_size=1, max_size=len(df) - 1, unique=True))
    text = [t.strftime("%Y-%m-%d %H:%M:%S") + ("" if i in naive else "Z") for i, t in enumerate(df["ts"])]
    err = schema_error(validate, df.assign(ts=text), "events", source="tz.csv")
    (problem,) = [p for p in err.problems if p.column == "ts"]
    assert sorted(problem.rows.tolist()) == sorted(naive) and "time zone" in problem.message


def test_tz_aware_parquet_column_and_tz_aware_limits(tmp_path):
    df = pd.DataFrame(
        {
            "customer_id": [1, 2],
            "seller_id": [1, 1],
            "event_type": ["visit", "view"],
            "amount": [0, 0],
            "ts": pd.to_datetime(["2025-01-01 12:00", "2025-01-01 12:00"]).tz_localize("Europe/Berlin"),
        }
    )
    path = write(df, tmp_path / "events", "parquet")
    out = read_table(path, "events", as_of=pd.Timestamp("2025-06-01", tz="America/New_York"))
    assert out["ts"].tolist() == [pd.Timestamp("2025-01-01 11:00")] * 2


@FAST
@given(df=good_events(), data=st.data())
def test_future_timestamps_after_as_of_are_named(df, data):
    as_of = df["ts"].iloc[-1] - pd.Timedelta(seconds=1)
    future = np.flatnonzero((df["ts"] > as_of).to_numpy())
    err = schema_error(validate, df, "events", source="feed.csv", as_of=as_of)
    (problem,) = [p for p in err.problems if p.column == "ts"]
    assert problem.rows.tolist() == future.tolist() and "future" in problem.message
    assert len(validate(df, "events", as_of=df["ts"].max())) == len(df)  # as_of itself is allowed
    with pytest.raises(SchemaError, match="future"):
        validate(df.assign(ts=pd.Timestamp.now() + pd.Timedelta(days=2)), "events", as_of="now")


# --------------------------------------------------------------------------- unicode ids


@FAST
@given(ids=st.lists(id_text, min_size=1, max_size=20), fmt=st.sampled_from(["csv", "parquet"]))
def test_unicode_ids_survive_files_and_are_put_in_nfc_form_counted(tmp_path, ids, fmt):
    decomposed = [unicodedata.normalize("NFD", i) for i in ids]
    n_changed = sum(d != i for d, i in zip(decomposed, ids))
    df = pd.DataFrame(
        {
            "customer_id": decomposed,
            "seller_id": 1,
            "event_type": "visit",
            "amount": 0.0,
            "ts": BASE + pd.to_timedelta(np.arange(len(ids)), unit="s"),
        }
    )
    out = read_table(write(df, tmp_path / "events", fmt), "events")
    assert [str(v) for v in out["customer_id"]] == ids  # NFC, and otherwise exactly as written
    assert out.attrs["repairs"]["ids_unicode_normalized"] == n_changed


# --------------------------------------------------------------------------- damaged files


def good_csv_bytes(df: pd.DataFrame, tmp_path: Path) -> bytes:
    return write(df, tmp_path / "source", "csv").read_bytes()


@FAST
@given(df=good_events(min_rows=2), data=st.data())
def test_csv_cut_off_anywhere_is_refused_or_is_a_clean_prefix(tmp_path, df, data):
    whole = good_csv_bytes(df, tmp_path)
    cut = data.draw(st.integers(0, len(whole) - 1), label="cut at byte")
    path = tmp_path / "cut.csv"
    path.write_bytes(whole[:cut])
    lines_done = whole[:cut].count(b"\n")
    try:
        out = read_table(path, "events")
    except SchemaError as err:
        assert str(path) in str(err)
        if cut > 0 and whole[cut - 1 : cut] != b"\n" and lines_done >= 1:
            # cut mid-row: the last (partial) row is named
            assert any(lines_done - 1 in p.rows for p in err.problems), str(err)
        return
    # Only a cut exactly at the end of a line can load: then it is the first rows, complete.
    assert whole[cut - 1 : cut] == b"\n"
    assert len(out) == lines_done - 1 >= 1
    pd.testing.assert_series_equal(out["amount"], df["amount"].iloc[: len(out)].astype(float), check_names=False)


@FAST
@given(df=good_events(min_rows=2), data=st.data())
def test_random_byte_damage_never_raises_anything_but_schema_error(tmp_path, df, data):
    raw = bytearray(good_csv_bytes(df, tmp_path))
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]), label="op")
        byte = data.draw(st.sampled_from([b",", b"\n", b'"', b"\x00", b"\xff", b"\xe9", b"x", b"-", b"9", b"\r"]))
        if op == "flip":
            raw[pos : pos + 1] = byte
        elif op == "insert":
            raw[pos:pos] = byte
        else:
            del raw[pos]
    path = tmp_path / "damaged.csv"
    path.write_bytes(bytes(raw))
    try:
        out = read_table(path, "events", duplicates="keep")
    except SchemaError as err:
        assert str(path) in str(err)
        return
    # If it loads, it is a valid table: canonical dtypes, every value in range.
    assert str(out["ts"].dtype) == "datetime64[us]" and (out["amount"] >= 0).all()
    assert np.isfinite(out["amount"]).all() and out["event_type"].notna().all()


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty"),
        (b"customer_id,seller_id,ts,event_type,amount\n", "no rows"),
        (b"\n\n", "empty"),
        (
            b"customer_id,seller_id,ts,event_type,amount\n1,1,2025-01-01T00:00:00Z,visit,0",
            "does not end with a newline",
        ),
        (b"customer_id,seller_id,ts,event_type,amount\n1,1,2025-01-01T00:00:00Z,vis", "fewer fields"),
        (b'customer_id,seller_id,ts,event_type,amount\n1,1,2025-01-01T00:00:00Z,visit,"0', "quote left open"),
        (b"customer_id,seller_id,ts,event_type,amount\n1,1,2025-01-01T00:00:00Z,visit,0,9\n", "more fields"),
        (b"customer_id,seller_id,ts,event_type,amount\n1,1,2025-01-01T00:00:00Z,visit,\x000\n", "NUL"),
        (b"customer_id,seller_id,ts,event_type,amount\n1,\xe9,2025-01-01T00:00:00Z,visit,0\n", "UTF-8"),
    ],
)
def test_damaged_csv_files_give_clear_errors(tmp_path, content, expected):
    path = tmp_path / "shop.csv"
    path.write_bytes(content)
    err = schema_error(read_table, path, "events")
    assert expected in str(err) and str(path) in str(err)


def test_bom_and_crlf_files_are_read(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfcustomer_id,seller_id,ts,event_type,amount\r\n1,1,2025-01-01T00:00:00Z,visit,0\r\n")
    assert len(read_table(path, "events")) == 1


def test_gzip_truncated_and_parquet_damaged_are_schema_errors(tmp_path):
    import gzip

    df = pd.DataFrame(
        {
            "customer_id": range(2000),
            "seller_id": 1,
            "event_type": "visit",
            "amount": 0.0,
            "ts": BASE + pd.to_timedelta(np.arange(2000), unit="s"),
        }
    )
    gz = tmp_path / "e.csv.gz"
    gz.write_bytes(gzip.compress(df.to_csv(index=False).encode()))
    assert len(read_table(gz, "events")) == 2000
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    assert "truncated" in str(schema_error(read_table, gz, "events"))

    pq = write(df, tmp_path / "e", "parquet")
    whole = pq.read_bytes()
    for cut in (0, 4, len(whole) // 2, len(whole) - 1):
        pq.write_bytes(whole[:cut])
        err = schema_error(read_table, pq, "events")
        assert str(pq) in str(err)


# --------------------------------------------------------------------------- promotions


@FAST
@given(n=st.integers(1, 10), data=st.data())
def test_promotions_booleans_levels_and_costs(n, data):
    df = pd.DataFrame(
        {
            "customer_id": range(n),
            "seller_id": 1,
            "ts": BASE,
            "discount_pct": data.draw(st.lists(st.sampled_from([0, 5, 10, 15, 20, 25, 30]), min_size=n, max_size=n)),
            "converted": data.draw(
                st.lists(st.sampled_from([True, False, "true", "0", 1, "yes"]), min_size=n, max_size=n)
            ),
            "revenue": 1.0,
            "cost": 0.5,
        }
    )
    out = validate(df, "promotions")
    assert out["converted"].dtype == bool and out["discount_pct"].dtype == np.int64
    row = data.draw(st.integers(0, n - 1))
    column, value = data.draw(
        st.sampled_from(
            [
                ("discount_pct", 12),
                ("converted", "maybe"),
                ("cost", -1.0),
                ("revenue", float("nan")),
                ("discount_pct", 2.5),
            ]
        )
    )
    bad = df.astype({column: object})
    bad.iat[row, bad.columns.get_loc(column)] = value
    assert_names(schema_error(validate, bad, "promotions", source="promo.csv"), "promo.csv", column, row)


# --------------------------------------------------------------------------- atomic writes under SIGKILL

WRITER = textwrap.dedent("""
    import sys, numpy as np, pandas as pd
    from sellerlift.io import atomic_write_parquet
    path, n = sys.argv[1], int(sys.argv[2])
    i = 0
    print("ready", flush=True)
    while True:  # rewrite the same file forever, alternating content; the test kills us mid-write
        v = i % 2
        df = pd.DataFrame({"k": np.arange(n), "v": np.full(n, v), "pad": np.random.default_rng(i).random(n)})
        atomic_write_parquet(df, path)
        i += 1
""")

BUNDLE_WRITER = textwrap.dedent("""
    import os, sys, numpy as np
    from pathlib import Path
    from sellerlift.runtime.bundle import write_bundle
    from sellerlift.features import FeatureSpec
    root = Path(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:  # what a run does: the model file (tmp + rename), then write_bundle (manifest last)
        d = root / f"b{i:04d}"
        d.mkdir(parents=True)
        tmp = d / "sequence.onnx.tmp"
        tmp.write_bytes(np.random.default_rng(i).bytes(3_000_000))
        os.replace(tmp, d / "sequence.onnx")
        write_bundle(d, {"sequence": d / "sequence.onnx"}, FeatureSpec(max_len=8), {"m": 1.0}, extra={"i": i})
        i += 1
""")


def _start(script: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill_after(proc: subprocess.Popen, seconds: float) -> None:
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_sigkill_during_atomic_parquet_writes_never_leaves_a_half_file(tmp_path):
    path = tmp_path / "part-00000.parquet"
    rng = np.random.default_rng(0)
    loads = 0
    for _ in range(3):
        proc = _start(WRITER, str(path), "200000")
        _kill_after(proc, float(rng.uniform(0.2, 0.8)))
        if path.exists():  # the last complete version, never a torn one
            df = pd.read_parquet(path)
            assert len(df) == 200_000 and df["v"].nunique() == 1 and (df["k"].to_numpy() == np.arange(200_000)).all()
            loads += 1
        # leftovers of the killed write are hidden temp files, which readers of a parts folder skip
        assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in tmp_path.iterdir() if p != path)
    assert loads >= 1
    if any(tmp_path.glob(".*.tmp")):
        pd.read_parquet(tmp_path)  # the folder still reads: hidden temp files are ignored


def test_sigkill_during_bundle_writes_never_leaves_a_bundle_that_verifies_incomplete(tmp_path):
    from sellerlift.runtime.bundle import verify_bundle

    proc = _start(BUNDLE_WRITER, str(tmp_path))
    _kill_after(proc, 1.5)
    dirs = sorted(tmp_path.iterdir())
    assert dirs, "the writer made no bundle at all"
    complete = 0
    for d in dirs:
        try:
            manifest = verify_bundle(d)
        except (FileNotFoundError, ValueError) as err:  # no manifest yet: refused as incomplete (BundleError)
            assert "not a (complete) sellerlift bundle" in str(err)
            continue
        assert (d / "sequence.onnx").stat().st_size == 3_000_000 and manifest["i"] == int(d.name[1:])
        json.loads((d / "feature_spec.json").read_text())
        complete += 1
    assert complete >= 1
