"""CDNOW through the generic file source: the real file (when the lifetimes wheel is installed) and edge cases.

CDNOW is a mapping config (configs/data/cdnow.yaml) of ``FileSource``, not a parser of its own: the same
numbers as the published data, and errors naming the file, the row, the file's column and the key.
"""

import importlib.metadata

import numpy as np
import pandas as pd
import pytest
import yaml
from cdnow_files import CDNOW_CONFIG, cdnow_events, cdnow_source, needs_cdnow

from sellerlift.data import cdnow
from sellerlift.data.cdnow import cdnow_path
from sellerlift.data.files import FileSource
from sellerlift.schema import SchemaError


@pytest.fixture(scope="module")
def events():
    return cdnow_events()


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
    assert events["customer_id"].dtype == np.int64 and (events["seller_id"] == 0).all()
    assert (events["event_type"] == "purchase").all()
    assert str(events["ts"].dtype) == "datetime64[us]"
    assert (events["ts"] == events["ts"].dt.floor("D")).all()
    order = np.lexsort((events["ts"].to_numpy(), events["customer_id"].to_numpy()))
    assert (order == np.arange(len(events))).all(), "sorted by customer_id, ts"


@needs_cdnow
def test_sample_file_uses_master_ids(events):
    s = cdnow_events("sample")
    assert s["customer_id"].nunique() == 2_357
    assert len(s) == 6_919
    assert set(s["customer_id"]) <= set(events["customer_id"])


def test_cdnow_is_a_mapping_of_the_generic_file_source():
    cfg = yaml.safe_load(CDNOW_CONFIG.read_text())
    assert cfg["source"]["_target_"] == "sellerlift.data.files.FileSource"
    assert cfg["source"]["layouts"]["master"]["path"] == "package://lifetimes/CDNOW_master.txt"
    assert not hasattr(cdnow, "load_cdnow_events") and not hasattr(cdnow, "CDNOWSource")  # no parser of its own
    src = cdnow_source(path="x.txt")
    assert src.name == "cdnow" and src.csv_sep == "whitespace" and src.timestamp_format == "yyyymmdd"
    assert src.event_type_constant == "purchase" and src.id_type == "int"


def _write(tmp_path, text, name="cd.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode("ascii"))
    return p


HEADER = " customer_id  date number_of_cds  dollar_value\r\n"


def test_parses_header_crlf_and_both_layouts(tmp_path):
    p = _write(
        tmp_path,
        HEADER + " 00002 19970112  5   77.00\r\n"
        " 00001 19970101  1   11.77\r\n"
        "\r\n"
        " 00002 19970112  1   12.00\r\n"
        " 00003 19970102  2    0.00\r\n",
    )
    df = cdnow_events(path=p)
    assert df["customer_id"].tolist() == [1, 2, 2, 3]
    assert df["amount"].tolist() == [11.77, 77.00, 12.00, 0.0]  # same-day rows keep file order
    assert df["quantity"].tolist() == [1, 5, 1, 2]
    assert df["ts"].iloc[0] == pd.Timestamp("1997-01-01")
    five = _write(tmp_path, " 00004 0001 19970101  2   29.33\n 00004 0001 19970118  2   29.73\n", "s.txt")
    assert cdnow_events("sample", path=five)["customer_id"].tolist() == [4, 4]


@pytest.mark.parametrize(
    "bad, column, what",
    [
        (" 00003 19970102  2\n", "'dollar_value' → 'amount'", "missing value"),
        (" 00003 1997012  2  20.76\n", "'date' → 'ts'", "does not match data.source.timestamp_format='yyyymmdd'"),
        (" 00003 19970231  2  20.76\n", "'date' → 'ts'", "'19970231'"),
        (" 00003 19970102  x  20.76\n", "'number_of_cds' → 'quantity'", "not a number"),
        (" 0000x 19970102  2  20.76\n", "'customer_id'", "not an integer identifier (data.source.id_type=int)"),
        (" 00001 19970201  1   -1.00\n", "'dollar_value' → 'amount'", "value below 0.0"),
    ],
)
def test_malformed_line_names_file_row_and_column(tmp_path, bad, column, what):
    p = _write(tmp_path, HEADER + " 00001 19970101  1   11.77\n" + bad)
    with pytest.raises(SchemaError) as e:
        cdnow_events(path=p)
    msg = str(e.value)
    assert str(p) in msg and column in msg and "row 2" in msg and what in msg, msg


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(SchemaError, match="no rows"):
        cdnow_events(path=_write(tmp_path, HEADER))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        cdnow_events(path=tmp_path / "nope.txt")
    with pytest.raises(Exception, match="which='other'"):
        cdnow_source(which="other")


def test_missing_package_gives_install_hint(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(
        cdnow.importlib.metadata if hasattr(cdnow, "importlib") else importlib.metadata, "distribution", missing
    )
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps lifetimes==0\.11\.3"):
        cdnow_path()
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps lifetimes==0\.11\.3"):
        FileSource("package://lifetimes/CDNOW_master.txt")
    with pytest.raises(ValueError, match="which"):
        cdnow_path("other")


@needs_cdnow
def test_data_check_reads_the_file_the_config_names(capsys):
    from sellerlift.data import check

    assert check.main(["--mapping", str(CDNOW_CONFIG)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "CDNOW_master.txt" in out and "69,659 (after mapping)" in out and "23,570 (ids: int64)" in out
    assert "every row is a purchase" in out and "python train.py data=cdnow" in out
