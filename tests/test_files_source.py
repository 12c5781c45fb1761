"""The seller's own file: column and event names mapped by config, errors naming file, row and column."""

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, compose_config
from hydra.utils import instantiate

from sellerlift.data.files import FileSource
from sellerlift.schema import SchemaError

MAPPING = {
    "columns": {
        "customer_id": "Kunde",
        "ts": "Zeitpunkt",
        "event_type": "Aktion",
        "amount": "Umsatz",
        "seller_id": None,
        "quantity": None,
    },
    "event_types": {"Besuch": "visit", "Ansicht": "view", "Kauf": "purchase", "Warenkorb": "add_to_cart"},
}


def foreign_frame(n_customers=30, days=200, seed=0) -> pd.DataFrame:
    """A shop export in a foreign shape: German names, string ids, offsets, empty amounts on non-orders."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2025-01-01", tz="Europe/Berlin")
    for c in range(n_customers):
        for t in np.sort(rng.uniform(0, days, size=rng.integers(3, 15))):
            kind = rng.choice(["Besuch", "Ansicht", "Kauf", "Warenkorb"])
            when = (start + pd.Timedelta(days=float(t))).floor("s").isoformat()
            rows.append(
                {
                    "Kunde": f"K-{c:04d}",
                    "Zeitpunkt": when,
                    "Aktion": kind,
                    "Umsatz": round(float(rng.gamma(2, 20)), 2) if kind == "Kauf" else None,
                    "Notiz": "x",
                }
            )
    return pd.DataFrame(rows)


def write(df, tmp_path, kind):
    path = tmp_path / f"export.{kind}"
    df.to_csv(path, index=False) if kind == "csv" else df.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_foreign_file_maps_onto_the_contract(tmp_path, kind):
    raw = foreign_frame()
    path = write(raw, tmp_path, kind)
    src = FileSource(str(path), **MAPPING, horizons={"intent_days": 7, "churn_days": 90}, min_customers=5)
    tables = src.load()
    ev = tables.events
    assert list(ev.columns[:5]) == ["customer_id", "seller_id", "ts", "event_type", "amount"]
    assert len(ev) == len(raw)  # nothing dropped
    assert set(ev["event_type"].astype(str)) <= {"visit", "view", "purchase", "add_to_cart"}
    assert ev["customer_id"].str.startswith("K-").all()  # string ids kept as they are
    assert (ev["seller_id"] == 0).all()  # one shop: the default seller
    assert (ev.loc[ev["event_type"] != "purchase", "amount"] == 0).all()
    # offsets converted to UTC: Berlin midnight is 23:00 UTC the day before
    first = raw.sort_values("Zeitpunkt").iloc[0]
    assert pd.Timestamp(first["Zeitpunkt"]).tz_convert("UTC").tz_localize(None) == ev["ts"].min()
    # cutoff auto: last event day minus the churn horizon
    assert tables.cutoff == ev["ts"].max().normalize() - pd.Timedelta(days=90)
    assert tables.name == "export" and tables.fingerprint.startswith("export-")  # named after the file


def test_errors_name_file_row_and_column(tmp_path):
    raw = foreign_frame(n_customers=5)
    raw.loc[3, "Aktion"] = "Rücksendung"  # an event name nobody mapped
    path = write(raw, tmp_path, "csv")
    with pytest.raises(SchemaError) as e:
        FileSource(str(path), **MAPPING).read_events()
    msg = str(e.value)
    assert "export.csv" in msg and "'Aktion' → 'event_type'" in msg and "row 4" in msg and "Rücksendung" in msg

    raw = foreign_frame(n_customers=5)
    raw.loc[6, "Zeitpunkt"] = "not a time"
    raw.loc[8, "Umsatz"] = -5.0
    raw.loc[8, "Aktion"] = "Kauf"
    path = write(raw, tmp_path, "csv")
    with pytest.raises(SchemaError) as e:
        FileSource(str(path), **MAPPING).read_events()
    msg = str(e.value)
    assert "'Zeitpunkt' → 'ts'" in msg and "row 7" in msg
    assert "'Umsatz' → 'amount'" in msg and "row 9" in msg

    with pytest.raises(SchemaError, match=r"column 'Kundennummer' \(data.source.columns.customer_id\) is not in"):
        FileSource(
            str(path), **{**MAPPING, "columns": {**MAPPING["columns"], "customer_id": "Kundennummer"}}
        ).read_events()
    with pytest.raises(ValueError, match="unknown type"):
        FileSource(str(path), columns=MAPPING["columns"], event_types={"Kauf": "buy"})


def test_drop_is_explicit_and_counted(tmp_path, capsys):
    raw = foreign_frame(n_customers=5)
    raw.loc[[2, 5], "Aktion"] = "Rücksendung"
    path = write(raw, tmp_path, "csv")
    src = FileSource(str(path), **MAPPING, unknown_event_types="drop")
    ev = src.read_events()
    assert len(ev) == len(raw) - 2 and src.dropped_rows == 2
    assert "dropped 2 row(s)" in capsys.readouterr().out


def test_chunks_keep_file_row_numbers(tmp_path):
    raw = foreign_frame(n_customers=10)
    raw.loc[25, "Zeitpunkt"] = "garbage"
    path = write(raw, tmp_path, "csv")
    src = FileSource(str(path), **MAPPING)
    offset, msg = 0, None
    for chunk in src.iter_raw(path, chunk_rows=10):
        try:
            src.map_frame(chunk, str(path), row_offset=offset)
        except SchemaError as err:
            msg = str(err)
            break
        offset += len(chunk)
    assert msg is not None and "row 26" in msg


def test_example_file_and_config_agree_and_train_ready():
    example = REPO / "examples" / "seller_events.csv"
    assert example.stat().st_size < 1_000_000
    mapping = yaml.safe_load((REPO / "examples" / "seller_events.mapping.yaml").read_text())
    cfg = compose_config(["data=seller_file"], root=REPO)
    for key in ("columns", "event_types", "unknown_event_types", "fill_missing_amount", "timezone"):
        assert cfg.data.source[key] == mapping[key], key
    assert "sellerlift.stages.promotion.train_promotion" not in cfg.extras  # no promotions in the file
    tables = instantiate(cfg.data.source).load()
    assert tables.events["customer_id"].nunique() >= 200
    assert tables.cutoff == pd.Timestamp("2025-12-31")
    assert set(tables.events["seller_id"]) == {"north", "south"}
    # the same mapping file drives the batch scorer
    src = FileSource.from_yaml(REPO / "examples" / "seller_events.mapping.yaml", path=str(example))
    assert src.columns == dict(cfg.data.source.columns)
