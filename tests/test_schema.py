import numpy as np
import pandas as pd
import pytest

from sellerlift.io import atomic_write_parquet, read_table
from sellerlift.schema import SchemaError, sort_table, validate


def good_events(n=5):
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) % 2,
            "seller_id": [7] * n,
            "ts": pd.date_range("2025-01-01", periods=n, freq="D"),
            "event_type": ["visit", "view", "add_to_cart", "purchase", "email_open"][:n],
            "amount": [0.0, 0.0, 0.0, 19.9, 0.0][:n],
        }
    )


def problems_of(df, table="events"):
    with pytest.raises(SchemaError) as info:
        validate(df, table, source="shop.csv")
    return info.value, str(info.value)


def test_good_table_passes_with_canonical_dtypes_and_no_rows_lost():
    df = good_events()
    df["note"] = "kept"  # unknown columns are carried, not dropped
    out = validate(df, "events")
    assert len(out) == len(df)
    assert str(out["ts"].dtype) == "datetime64[us]"
    assert isinstance(out["event_type"].dtype, pd.CategoricalDtype)
    assert list(out["note"]) == ["kept"] * 5


def test_missing_column_is_named():
    err, text = problems_of(good_events().drop(columns=["amount"]))
    assert "missing required column" in text and "amount" in text and "shop.csv" in text


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("event_type", "buy", "unknown value"),
        ("amount", -5.0, "below 0"),
        ("amount", float("nan"), "missing value"),
        ("amount", float("inf"), "infinite"),
        ("amount", "ten", "not a number"),
        ("ts", "not a date", "unparseable timestamp"),
        ("ts", "1900-01-01", "out of range"),
        ("customer_id", None, "missing value"),
    ],
)
def test_each_bad_value_names_file_row_and_column(column, value, expected):
    df = good_events().astype({column: object})
    df.loc[3, column] = value
    err, text = problems_of(df)
    assert "shop.csv" in text and f"column '{column}'" in text and expected in text
    assert "row 4" in text  # 1-based data row
    assert any(p.column == column and 3 in p.rows for p in err.problems)


def test_every_problem_is_reported_not_just_the_first():
    df = good_events().astype({"event_type": object})
    df.loc[0, "event_type"] = "nope"
    df.loc[1, "amount"] = -1
    err, _ = problems_of(df)
    assert {p.column for p in err.problems} == {"event_type", "amount"}


def test_mixed_time_zones_are_converted_to_utc():
    df = good_events(2).astype({"ts": object})
    df.loc[0, "ts"] = "2025-01-01T12:00:00+02:00"
    df.loc[1, "ts"] = "2025-01-01T12:00:00Z"
    out = validate(df, "events")
    assert out["ts"].tolist() == [pd.Timestamp("2025-01-01 10:00"), pd.Timestamp("2025-01-01 12:00")]


def test_promotions_discount_level_must_be_allowed():
    promo = pd.DataFrame(
        {
            "customer_id": [1, 2],
            "seller_id": [1, 1],
            "ts": ["2025-01-01", "2025-01-02"],
            "discount_pct": [10, 12],
            "converted": [True, False],
            "revenue": [10.0, 0.0],
            "cost": [1.0, 0.0],
        }
    )
    err, text = problems_of(promo, "promotions")
    assert "discount_pct" in text and "row 2" in text and "expected one of" in text


def test_empty_and_unknown_files_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SchemaError, match="empty"):
        read_table(empty, "events")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_table(tmp_path / "missing.csv", "events")


def test_csv_and_parquet_round_trip(tmp_path):
    df = validate(good_events(), "events")
    df.to_csv(tmp_path / "e.csv", index=False)
    atomic_write_parquet(df, tmp_path / "e.parquet")
    a = read_table(tmp_path / "e.csv", "events")
    b = read_table(tmp_path / "e.parquet", "events")
    pd.testing.assert_frame_equal(a, b)
    assert not list(tmp_path.glob(".*.tmp"))


def test_sort_is_stable_by_customer_then_time():
    df = validate(good_events(), "events")
    out = sort_table(df.iloc[::-1], "events")
    assert out["customer_id"].is_monotonic_increasing
