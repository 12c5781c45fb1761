"""CDNOW loader: the real file (when the lifetimes wheel is installed) and parsing edge cases."""

import importlib.metadata

import numpy as np
import pandas as pd
import pytest

from sellerlift.data import cdnow
from sellerlift.data.cdnow import CDNOWFormatError, cdnow_path, load_cdnow_events


def _have_lifetimes() -> bool:
    try:
        cdnow_path()
        return True
    except FileNotFoundError:
        return False


needs_cdnow = pytest.mark.skipif(not _have_lifetimes(), reason="pip install --no-deps lifetimes==0.11.3")


@pytest.fixture(scope="module")
def events():
    return load_cdnow_events()


@needs_cdnow
def test_real_cdnow_figures(events):
    assert len(events) == 69_659
    assert events["customer_id"].nunique() == 23_570
    assert events["ts"].min() == pd.Timestamp("1997-01-01")
    assert events["ts"].max() == pd.Timestamp("1998-06-30")
    # Every customer's first purchase is in 1997-Q1 (the cohort definition).
    assert events.groupby("customer_id")["ts"].min().max() < pd.Timestamp("1997-04-01")
    # Zero-amount rows are kept, not dropped: 80 of them in the master file.
    assert int((events["amount"] == 0).sum()) == 80
    assert int((events["quantity"] == 0).sum()) == 0
    assert events["amount"].sum() == pytest.approx(2_500_315.63, abs=0.01)
    assert events["quantity"].sum() > len(events)


@needs_cdnow
def test_real_cdnow_matches_contract(events):
    assert list(events.columns) == ["customer_id", "seller_id", "ts", "event_type", "amount", "quantity"]
    assert (events["seller_id"] == 0).all()
    assert (events["event_type"] == "purchase").all()
    assert str(events["ts"].dtype) == "datetime64[us]"
    assert (events["ts"] == events["ts"].dt.floor("D")).all()
    order = np.lexsort((events["ts"].to_numpy(), events["customer_id"].to_numpy()))
    assert (order == np.arange(len(events))).all(), "sorted by customer_id, ts"


@needs_cdnow
def test_sample_file_uses_master_ids():
    s = load_cdnow_events(cdnow_path("sample"))
    assert s["customer_id"].nunique() == 2_357
    assert len(s) == 6_919


def _write(tmp_path, text, name="cd.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode("ascii"))
    return p


def test_parses_header_crlf_and_both_layouts(tmp_path):
    p = _write(tmp_path, " customer_id  date number_of_cds  dollar_value\r\n"
                         " 00002 19970112  5   77.00\r\n"
                         " 00001 19970101  1   11.77\r\n"
                         "\r\n"
                         " 00002 19970112  1   12.00\r\n"
                         " 00003 19970102  2    0.00\r\n")
    df = load_cdnow_events(p)
    assert df["customer_id"].tolist() == [1, 2, 2, 3]
    assert df["amount"].tolist() == [11.77, 77.00, 12.00, 0.0]  # same-day rows keep file order
    assert df["quantity"].tolist() == [1, 5, 1, 2]
    assert df["ts"].iloc[0] == pd.Timestamp("1997-01-01")
    five = _write(tmp_path, " 00004 0001 19970101  2   29.33\n 00004 0001 19970118  2   29.73\n", "s.txt")
    assert load_cdnow_events(five)["customer_id"].tolist() == [4, 4]


@pytest.mark.parametrize("bad, what", [
    (" 00003 19970102  2\n", "expected 4 fields"),
    (" 00003 1997012  2  20.76\n", "YYYYMMDD"),
    (" 00003 19970102  x  20.76\n", "cannot parse"),
    (" 0000x 19970102  2  20.76\n", "cannot parse"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, what):
    p = _write(tmp_path, "customer_id date number_of_cds dollar_value\n 00001 19970101  1   11.77\n" + bad)
    with pytest.raises(CDNOWFormatError, match=what) as e:
        load_cdnow_events(p)
    assert f"{p}:3" in str(e.value)


def test_invalid_calendar_date_and_negative_amount(tmp_path):
    with pytest.raises(CDNOWFormatError, match="invalid calendar date '19970231'"):
        load_cdnow_events(_write(tmp_path, " 00001 19970231  1   11.77\n"))
    # Negative money is a contract breach reported by schema.validate with the file name.
    with pytest.raises(ValueError, match="amount") as e:
        load_cdnow_events(_write(tmp_path, " 00001 19970201  1   -1.00\n", "neg.txt"))
    assert "neg.txt" in str(e.value)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(CDNOWFormatError, match="no transactions"):
        load_cdnow_events(_write(tmp_path, "customer_id date number_of_cds dollar_value\n"))
    with pytest.raises(FileNotFoundError, match="lifetimes==0.11.3"):
        load_cdnow_events(tmp_path / "nope.txt")


def test_missing_package_gives_install_hint(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cdnow.importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps lifetimes==0\.11\.3"):
        cdnow_path()
    with pytest.raises(ValueError, match="which"):
        cdnow_path("other")
