"""Files in the shapes sellers actually export: purchase logs, other timestamp formats, separators, encodings, ids.

Each test reproduces what a new user hit (issue 13) and checks the error names the file, the row, the column
and the config key to set.
"""

import numpy as np
import pandas as pd
import pytest

from sellerlift.data.files import FileSource
from sellerlift.schema import DataError, SchemaError

HORIZONS = {"intent_days": 7, "churn_days": 30}


def purchases(n_customers=25, seed=0) -> pd.DataFrame:
    """A transaction log: one row per order, no event-type column."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_customers):
        for day in np.sort(rng.choice(120, size=rng.integers(2, 8), replace=False)):
            rows.append(
                {
                    "user": 1000 + c,
                    "day": pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(day)),
                    "total": round(float(rng.gamma(2, 15)), 2),
                }
            )
    return pd.DataFrame(rows)


def write_csv(tmp_path, df, name="log.csv", **kw):
    path = tmp_path / name
    df.to_csv(path, index=False, **kw)
    return path


# --------------------------------------------------------------------------- 1. purchase-only files


def test_purchase_log_without_event_column_trains_as_purchases(tmp_path):
    df = purchases()
    df["day"] = df["day"].dt.strftime("%Y-%m-%d")
    path = write_csv(tmp_path, df)
    src = FileSource(
        str(path),
        columns={"customer_id": "user", "ts": "day", "amount": "total", "event_type": None},
        event_type_constant="purchase",
        horizons=HORIZONS,
        min_customers=5,
    )
    tables = src.load()
    ev = tables.events
    assert len(ev) == len(df) and (ev["event_type"] == "purchase").all()
    assert ev["amount"].sum() == pytest.approx(df["total"].sum())
    assert ev["customer_id"].dtype == np.int64  # integer ids stay integers


def test_null_event_column_without_a_constant_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path, purchases())
    with pytest.raises(DataError, match=r"columns.event_type is null .*event_type_constant=purchase"):
        FileSource(str(path), columns={"customer_id": "user", "ts": "day", "event_type": None})
    with pytest.raises(DataError, match="both set"):
        FileSource(
            str(path),
            columns={"customer_id": "user", "ts": "day", "event_type": "kind"},
            event_type_constant="purchase",
        )
    with pytest.raises(DataError, match="event_type_constant='order'"):
        FileSource(
            str(path), columns={"customer_id": "user", "ts": "day", "event_type": None}, event_type_constant="order"
        )


# --------------------------------------------------------------------------- 2. timestamps in other formats

FORMATS = {
    "yyyymmdd": lambda t: t.dt.strftime("%Y%m%d").astype(int),
    "%d/%m/%Y": lambda t: t.dt.strftime("%d/%m/%Y"),
    "%d.%m.%Y %H:%M": lambda t: t.dt.strftime("%d.%m.%Y %H:%M"),
    "epoch_s": lambda t: (t - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1),
    "epoch_ms": lambda t: (t - pd.Timestamp("1970-01-01")) // pd.Timedelta(milliseconds=1),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_timestamp_formats(tmp_path, fmt):
    df = purchases()
    expected = df["day"].copy()
    df["day"] = FORMATS[fmt](df["day"])
    path = write_csv(tmp_path, df)
    src = FileSource(
        str(path),
        columns={"customer_id": "user", "ts": "day", "amount": "total", "event_type": None},
        event_type_constant="purchase",
        timestamp_format=fmt,
    )
    ev = src.map_frame(src.read_raw(), str(path))
    assert (ev["ts"].to_numpy() == expected.to_numpy().astype("datetime64[us]")).all()


@pytest.mark.parametrize(
    "fmt, bad, what",
    [
        ("yyyymmdd", "19970231", "does not match data.source.timestamp_format='yyyymmdd'"),
        ("%d/%m/%Y", "2024-01-05", "does not match data.source.timestamp_format='%d/%m/%Y'"),
        ("epoch_s", "1712345678901", "these look like milliseconds: set it to epoch_ms"),
        ("epoch_ms", "soon", "not a number of milliseconds since 1970"),
    ],
)
def test_timestamp_format_errors_name_file_row_column_and_format(tmp_path, fmt, bad, what):
    df = purchases(n_customers=3)
    df["day"] = FORMATS[fmt](pd.to_datetime(df["day"])).astype(str)
    df.loc[4, "day"] = bad
    path = write_csv(tmp_path, df)
    src = FileSource(
        str(path),
        columns={"customer_id": "user", "ts": "day", "amount": "total", "event_type": None},
        event_type_constant="purchase",
        timestamp_format=fmt,
    )
    with pytest.raises(SchemaError) as e:
        src.read_events()
    msg = str(e.value)
    assert "log.csv" in msg and "'day' → 'ts'" in msg and "row 5" in msg and what in msg, msg


@pytest.mark.parametrize(
    "values, hint",
    [
        (lambda t: FORMATS["yyyymmdd"](t), "timestamp_format=yyyymmdd"),
        (lambda t: FORMATS["epoch_s"](t), "timestamp_format=epoch_s"),
        (lambda t: FORMATS["epoch_ms"](t), "timestamp_format=epoch_ms"),
        (lambda t: t.dt.strftime("%d/%m/%Y"), "timestamp_format='%d/%m/%Y'"),
    ],
)
def test_timestamps_without_a_format_say_which_format_to_set(tmp_path, values, hint):
    df = purchases(n_customers=3)
    df["day"] = values(df["day"])
    df.loc[0, "day"] = df.loc[0, "day"]  # every row in the same foreign format
    path = write_csv(tmp_path, df)
    src = FileSource(
        str(path), columns={"customer_id": "user", "ts": "day", "event_type": None}, event_type_constant="purchase"
    )
    with pytest.raises(SchemaError, match=hint):
        src.read_events()


def test_bad_timestamp_format_key_is_refused():
    with pytest.raises(DataError, match="data.source.timestamp_format='dd/mm/yyyy'"):
        FileSource("x.csv", timestamp_format="dd/mm/yyyy")


def test_naive_formatted_times_are_in_the_configured_zone_and_epochs_are_utc(tmp_path):
    df = pd.DataFrame({"user": [1, 1], "day": ["01/07/2024 12:00", "02/07/2024 12:00"], "e": [1719835200] * 2})
    path = write_csv(tmp_path, df)
    cols = {"customer_id": "user", "ts": "day", "event_type": None}
    ev = FileSource(
        str(path),
        columns=cols,
        event_type_constant="visit",
        timestamp_format="%d/%m/%Y %H:%M",
        timezone="Europe/Berlin",
    ).read_events()
    assert ev["ts"].iloc[0] == pd.Timestamp("2024-07-01 10:00")  # CEST = UTC+2
    ev = FileSource(
        str(path),
        columns={**cols, "ts": "e"},
        event_type_constant="visit",
        timestamp_format="epoch_s",
        timezone="Europe/Berlin",
    ).read_events()
    assert ev["ts"].iloc[0] == pd.Timestamp("2024-07-01 12:00")  # an epoch is UTC whatever the zone


# --------------------------------------------------------------------------- 6. separators, encodings, decimals


def _shop_frame():
    return pd.DataFrame(
        {
            "Kunde": ["Zoé", "K2", "Zoé"],
            "Zeit": ["2024-01-01T10:00:00Z"] * 3,
            "Aktion": ["Kauf", "Besuch", "Kauf"],
            "Betrag": [12.5, None, 3.25],
        }
    )


MAP = {
    "columns": {"customer_id": "Kunde", "ts": "Zeit", "event_type": "Aktion", "amount": "Betrag"},
    "event_types": {"Kauf": "purchase", "Besuch": "visit"},
}


def test_semicolon_file_says_which_separator_and_decimal_to_set(tmp_path):
    path = write_csv(tmp_path, _shop_frame(), sep=";", decimal=",")
    with pytest.raises(SchemaError) as e:
        FileSource(str(path), **MAP).read_events()
    msg = str(e.value)
    assert "log.csv" in msg and "csv_sep=';'" in msg and "decimal=','" in msg, msg
    ev = FileSource(str(path), **MAP, csv_sep=";", decimal=",").read_events()
    assert sorted(ev["amount"]) == [0.0, 3.25, 12.5]


def test_latin1_export_names_file_row_and_byte_and_reads_with_encoding(tmp_path):
    path = write_csv(tmp_path, _shop_frame(), encoding="latin-1")
    with pytest.raises(SchemaError) as e:
        FileSource(str(path), **MAP).read_events()
    msg = str(e.value)
    assert "log.csv" in msg and "row 1" in msg and "byte" in msg and "data.source.encoding" in msg, msg
    ev = FileSource(str(path), **MAP, encoding="latin-1").read_events()
    assert len(ev) == 3 and "Zoé" in ev["customer_id"].tolist()


def test_binary_file_is_a_schema_error_not_a_decode_traceback(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(b"Kunde,Zeit\n" + bytes(range(256)) * 4)
    with pytest.raises(SchemaError, match="not UTF-8 text at byte"):
        FileSource(str(path), **MAP).read_events()


def test_utf8_byte_order_mark_and_whitespace_separated_files(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(_shop_frame().to_csv(index=False).encode("utf-8-sig"))
    assert len(FileSource(str(path), **MAP).read_events()) == 3
    path = tmp_path / "log.txt"
    path.write_text("  user   day     total\n  1  20240101   9.50\n  2  20240102  10.00\n")
    ev = FileSource(
        str(path),
        columns={"customer_id": "user", "ts": "day", "amount": "total", "event_type": None},
        event_type_constant="purchase",
        csv_sep="whitespace",
        timestamp_format="yyyymmdd",
    ).read_events()
    assert ev["amount"].tolist() == [9.5, 10.0] and ev["ts"].iloc[1] == pd.Timestamp("2024-01-02")


def test_a_row_with_extra_fields_names_the_row_and_the_separator_key(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("user,day,total\n1,2024-01-01,9.5\n2,2024-01-02,10,5\n")
    with pytest.raises(SchemaError) as e:
        FileSource(
            str(path), columns={"customer_id": "user", "ts": "day", "event_type": None}, event_type_constant="purchase"
        ).read_events()
    assert "row 2" in str(e.value) and "data.source.csv_sep" in str(e.value)


def test_bad_reading_options_name_their_keys():
    with pytest.raises(DataError, match="data.source.csv_sep=';;'"):
        FileSource("x.csv", csv_sep=";;")
    with pytest.raises(DataError, match="data.source.decimal"):
        FileSource("x.csv", decimal=";")
    with pytest.raises(DataError, match="data.source.id_type"):
        FileSource("x.csv", id_type="float")


# --------------------------------------------------------------------------- identifiers


def test_ids_integers_stay_integers_leading_zeros_stay_text_unless_asked(tmp_path):
    df = pd.DataFrame({"user": ["7", "8", "007"], "day": ["2024-01-01"] * 3})
    path = write_csv(tmp_path, df)
    cols = {"customer_id": "user", "ts": "day", "event_type": None}
    auto = FileSource(str(path), columns=cols, event_type_constant="visit").read_events()
    assert auto["customer_id"].tolist() == ["007", "7", "8"]  # '007' would lose its zeros as an integer
    as_int = FileSource(str(path), columns=cols, event_type_constant="visit", id_type="int").read_events()
    assert as_int["customer_id"].dtype == np.int64 and sorted(as_int["customer_id"]) == [7, 7, 8]
    path = write_csv(tmp_path, df.iloc[:2], name="ints.csv")
    assert (
        FileSource(str(path), columns=cols, event_type_constant="visit").read_events()["customer_id"].dtype == np.int64
    )
    bad = write_csv(tmp_path, pd.DataFrame({"user": ["7", "x9"], "day": ["2024-01-01"] * 2}), name="bad.csv")
    with pytest.raises(SchemaError, match=r"'user' → 'customer_id'.*row 2.*id_type=int"):
        FileSource(str(bad), columns=cols, event_type_constant="visit", id_type="int").read_events()


def test_event_names_mapped_to_drop_are_removed_and_counted(tmp_path, capsys):
    df = pd.DataFrame({"user": [1, 1, 2, 2], "day": ["2024-01-01"] * 4, "what": ["buy", "refund", "buy", "refund"]})
    path = write_csv(tmp_path, df)
    src = FileSource(
        str(path),
        columns={"customer_id": "user", "ts": "day", "event_type": "what"},
        event_types={"buy": "purchase", "refund": "drop"},
    )
    ev = src.read_events()
    assert len(ev) == 2 and (ev["event_type"] == "purchase").all() and src.dropped_names == {"refund": 2}
    assert "dropped 2 row(s) of event names mapped to drop" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"unknown type\(s\) \['returned'\]"):
        FileSource(str(path), event_types={"refund": "returned"})
