"""The seller's own promotions log, mapped by config like the events, validated against the contract's table."""

import numpy as np
import pandas as pd
import pytest
import yaml
from clickstream import MAPPING, clickstream

from sellerlift.data import check
from sellerlift.data.files import FileSource
from sellerlift.data.promotions import PromotionsFile
from sellerlift.schema import DISCOUNT_LEVELS, DataError, SchemaError

COLUMNS = {
    "customer_id": "Kunde",
    "ts": "Gesendet",
    "discount_pct": "Rabatt",
    "converted": "Gekauft",
    "revenue": "Umsatz",
    "cost": "Kosten",
    "randomized": "Zufall",
    "propensity": "P",
    "seller_id": None,
}


def campaign_log(customers, n=300, seed=0, fraction=True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    level = rng.choice(DISCOUNT_LEVELS, size=n)
    bought = rng.random(n) < 0.1 + level / 100
    revenue = np.where(bought, rng.gamma(2, 20, n).round(2), 0.0)
    return pd.DataFrame(
        {
            "Kunde": rng.choice(customers, size=n),
            "Gesendet": (pd.Timestamp("2024-03-01") + pd.to_timedelta(rng.integers(0, 60, n), unit="D")).strftime(
                "%d.%m.%Y 09:00"
            ),
            "Rabatt": level / 100 if fraction else [f"{v}%" for v in level],
            "Gekauft": np.where(bought, "ja", "nein"),
            "Umsatz": revenue,
            "Kosten": (revenue * level / 100).round(2),
            "Zufall": (rng.random(n) < 0.2).astype(int),
            "P": np.full(n, 1 / len(DISCOUNT_LEVELS)),
        }
    )


JA_NEIN = {"true_values": ["ja"], "false_values": ["Nein"]}


def promotions_block(path, **extra):
    return {
        "path": str(path),
        "columns": COLUMNS,
        "level_unit": "fraction",
        "timestamp_format": "%d.%m.%Y %H:%M",
        "timezone": "Europe/Berlin",
        **extra,
    }


@pytest.fixture
def files(tmp_path):
    events = clickstream(n_users=150, seed=4)
    ev_path = tmp_path / "clicks.csv"
    events.to_csv(ev_path, index=False)
    log = campaign_log(events["uid"].unique())
    log["Gekauft"] = log["Gekauft"].map({"ja": "yes", "nein": "no"})
    promo_path = tmp_path / "kampagnen.csv"
    log.to_csv(promo_path, index=False, sep=";", decimal=",")
    return ev_path, promo_path, log


def test_campaign_export_maps_onto_the_promotions_contract(files):
    ev_path, promo_path, log = files
    src = FileSource(
        str(ev_path),
        **MAPPING,
        horizons={"intent_days": 7, "churn_days": 30},
        promotions=promotions_block(promo_path, csv_sep=";", decimal=","),
    )
    tables = src.load()
    p = tables.promotions
    assert len(p) == len(log) and set(p["discount_pct"]) <= set(DISCOUNT_LEVELS)
    assert p["discount_pct"].dtype == np.int64 and p["converted"].dtype == bool
    assert p["customer_id"].dtype == np.int64 and (p["seller_id"] == 0).all()
    assert p["converted"].sum() == (log["Gekauft"] == "yes").sum()
    assert sorted(p["discount_pct"]) == sorted(np.round(log["Rabatt"] * 100).astype(int))
    assert p["ts"].min() == pd.Timestamp("2024-03-01 08:00")  # 09:00 in Berlin (CET) is 08:00 UTC
    assert p["randomized"].dtype == bool and p["propensity"].between(0, 1).all()


def test_percent_text_levels_and_the_level_unit_hint(tmp_path):
    log = campaign_log([1, 2, 3], n=40, fraction=False)
    path = tmp_path / "offers.csv"
    log.to_csv(path, index=False)
    p = PromotionsFile(
        str(path),
        columns={**COLUMNS, "randomized": None, "propensity": None},
        timestamp_format="%d.%m.%Y %H:%M",
        **JA_NEIN,
    ).read()
    assert sorted(p["discount_pct"]) == sorted(int(v.rstrip("%")) for v in log["Rabatt"])
    frac = campaign_log([1, 2, 3], n=40, fraction=True)
    frac.to_csv(path, index=False)
    with pytest.raises(SchemaError) as e:
        PromotionsFile(str(path), columns=COLUMNS, timestamp_format="%d.%m.%Y %H:%M", **JA_NEIN).read()
    msg = str(e.value)
    assert "offers.csv" in msg and "'Rabatt' → 'discount_pct'" in msg and "level_unit=fraction" in msg
    frac.loc[5, "Rabatt"] = 0.125
    frac.to_csv(path, index=False)
    with pytest.raises(SchemaError, match=r"row 6.*\['0.125'\] is not one of the discount levels"):
        PromotionsFile(
            str(path), columns=COLUMNS, level_unit="fraction", timestamp_format="%d.%m.%Y %H:%M", **JA_NEIN
        ).read()


def test_promotion_errors_name_file_row_column_and_key(tmp_path):
    log = campaign_log([1, 2], n=20)
    log.loc[3, "Gekauft"] = "vielleicht"
    log.loc[7, "Gesendet"] = "2024-03-01"
    path = tmp_path / "offers.csv"
    log.to_csv(path, index=False)
    with pytest.raises(SchemaError) as e:
        PromotionsFile(
            str(path), columns=COLUMNS, level_unit="fraction", timestamp_format="%d.%m.%Y %H:%M", **JA_NEIN
        ).read()
    assert "'Gesendet' → 'ts'" in str(e.value) and "row 8" in str(e.value)
    log.loc[7, "Gesendet"] = "01.03.2024 09:00"
    log.to_csv(path, index=False)
    with pytest.raises(SchemaError, match=r"'Gekauft' → 'converted', 1 row\(s\) \[row 4\]: not a boolean"):
        PromotionsFile(
            str(path), columns=COLUMNS, level_unit="fraction", timestamp_format="%d.%m.%Y %H:%M", **JA_NEIN
        ).read()
    with pytest.raises(SchemaError, match=r"column 'Bought' \(data.source.promotions.columns.converted\) is not in"):
        PromotionsFile(str(path), columns={**COLUMNS, "converted": "Bought"}, level_unit="fraction").read()
    with pytest.raises(DataError, match="data.source.promotions.level_unit='basis points'"):
        PromotionsFile(str(path), level_unit="basis points")
    with pytest.raises(DataError, match="promotions and data.source.promotions_path are both set"):
        FileSource(str(path), promotions={"path": str(path)}, promotions_path=str(path))


def test_mapping_file_with_promotions_drives_check(files, tmp_path, capsys):
    ev_path, promo_path, log = files
    mapping = tmp_path / "shop.yaml"
    mapping.write_text(
        yaml.safe_dump({**MAPPING, "promotions": promotions_block(promo_path, csv_sep=";", decimal=",")})
    )
    assert check.main(["--mapping", str(mapping), str(ev_path), "--churn-days", "30"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{len(log):,} offers" in out and "randomised" in out
