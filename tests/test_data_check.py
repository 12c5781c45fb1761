"""`python -m sellerlift.data check`, every unmapped event name at once (with a block to paste), and what a
cutoff keeps: the first things a new user runs into with their own export."""

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from clickstream import MAPPING, NAMES, clickstream
from conftest import REPO

from sellerlift import score
from sellerlift.data import check
from sellerlift.data.files import FileSource
from sellerlift.data.mapping import UnmappedEventNames, event_types_block, guess_event_type

# 17 names the mapping does not know, some only after the first 200 rows, some rare.
EXTRA = [
    "page_view",
    "view_item",
    "add_to_cart_click",
    "begin_checkout",
    "purchase_success",
    "login",
    "logout",
    "newsletter_click",
    "coupon_applied",
    "search",
    "scroll",
    "video_play",
    "share",
    "remove_from_cart",
    "refund_requested",
    "wishlist_add",
    "x7",
]


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """The clickstream with 17 unmapped names mixed in (each 1..40 rows, spread over the whole file)."""
    df = clickstream(n_users=200, seed=3)
    rng = np.random.default_rng(0)
    for i, name in enumerate(EXTRA):
        rows = rng.choice(np.arange(250, len(df)), size=1 + 2 * i, replace=False)
        df.loc[rows, "what"] = name
    path = tmp_path_factory.mktemp("messy") / "app_events.csv"
    df.to_csv(path, index=False)
    return path, df


def test_every_unmapped_name_is_listed_with_its_count_and_a_block_to_paste(messy):
    path, df = messy
    with pytest.raises(UnmappedEventNames) as e:
        FileSource(str(path), **MAPPING).read_events()
    err = e.value
    expected = df.loc[df["what"].isin(EXTRA), "what"].value_counts().to_dict()
    assert err.counts == expected and len(err.counts) == 17
    msg = str(err)
    assert "17 event name(s) not mapped" in msg and "'what' → 'event_type'" in msg and "app_events.csv" in msg
    block = msg[msg.index("    event_types:") : msg.index("  (rows are numbered")]
    pasted = yaml.safe_load(block)["event_types"]
    assert set(pasted) == set(EXTRA)
    assert pasted["purchase_success"] == "purchase" and pasted["page_view"] == "view"
    assert pasted["remove_from_cart"] == "???" and pasted["begin_checkout"] == "???"  # no unsafe guesses
    # one round: the pasted block (with the ??? chosen) is everything the file needs
    chosen = {k: (v if v != "???" else "view") for k, v in pasted.items()}
    ev = FileSource(str(path), **{**MAPPING, "event_types": {**NAMES, **chosen}}).read_events()
    assert len(ev) == len(df)


def test_the_chunked_scorer_also_lists_every_name_of_the_file(messy):
    path, df = messy
    src = FileSource(str(path), **MAPPING)
    with pytest.raises(UnmappedEventNames) as e:
        for _ in score._mapped_chunks(src, path, 500, {}):
            pass
    assert e.value.counts == df.loc[df["what"].isin(EXTRA), "what"].value_counts().to_dict()
    rows = e.value.problems[0].rows
    assert sorted(rows) == sorted(np.flatnonzero(df["what"].isin(EXTRA).to_numpy()))  # the file's rows


def test_guesses_and_yaml_keys():
    assert guess_event_type("OrderCompleted") == "purchase" and guess_event_type("basketAdd") == "add_to_cart"
    assert guess_event_type("newsletter_open") == "email_open" and guess_event_type("session_start") == "visit"
    assert guess_event_type("cancel_order") is None and guess_event_type("zzz") is None
    block = event_types_block({"yes": 2, "a: b": 1, "Rücksendung": 3})
    assert yaml.safe_load(block)["event_types"] == {"yes": "???", "a: b": "???", "Rücksendung": "???"}


# --------------------------------------------------------------------------- the check command


def flat(out: str) -> str:
    """The printed report without table borders and line wraps (rich folds long cells)."""
    return re.sub(r"[\s│┌┐└┘├┤┬┴┼─]+", " ", out)


def _mapping_file(tmp_path, **extra) -> str:
    path = tmp_path / "app.mapping.yaml"
    path.write_text(yaml.safe_dump({**MAPPING, **extra}, sort_keys=False))
    return str(path)


def test_check_reports_a_ready_file_and_exits_0(tmp_path, capsys):
    df = clickstream(n_users=300, seed=1)
    path = tmp_path / "clicks.csv"
    df.to_csv(path, index=False)
    rc = check.main(["--mapping", _mapping_file(tmp_path), str(path), "--churn-days", "30"])
    out = flat(capsys.readouterr().out)
    assert rc == 0, out
    purchases = int((df["what"] == "checkout_done").sum())
    for text in (
        f"{len(df):,} rows",
        "300 (ids: int64)",
        "date range",
        f"purchase {purchases:,}",
        "checkout_done -> purchase",
        "order values",
        "none",
        "before the cutoff",
        "churn_days=30: fits",
        "labels at the cutoff",
        "ok: clicks.csv is ready",
    ):
        assert text in out, (text, out)


def test_check_lists_unmapped_names_with_the_block_and_exits_2(messy, tmp_path, capsys):
    path, _ = messy
    rc = check.main(["--mapping", _mapping_file(tmp_path), str(path)])
    out = capsys.readouterr().out
    assert rc == 2
    assert "17 event name(s)" in out and "problem" in out
    block = out[out.index("event_types:") :]
    block = block[: block.index("\nproblem")]
    assert set(yaml.safe_load(block)["event_types"]) == set(EXTRA)
    assert "before the cutoff" in out  # the rest of the file is still described


def test_check_says_what_the_cutoff_leaves_out_and_when_horizons_do_not_fit(tmp_path, capsys):
    df = clickstream(n_users=600, days=180, seed=0)  # six months, monthly cohorts
    path = tmp_path / "six_months.csv"
    df.to_csv(path, index=False)
    rc = check.main(["--mapping", _mapping_file(tmp_path), str(path)])
    out = flat(capsys.readouterr().out)
    first = df.groupby("uid")["when_ms"].min()
    cutoff = pd.Timestamp(df["when_ms"].max(), unit="ms").normalize() - pd.Timedelta(days=90)
    left_out = int((pd.to_datetime(first, unit="ms") >= cutoff).sum())
    assert rc == 0 and left_out > 100
    assert f"{left_out:,} of 600 customers" in out and "left out" in out and "churn_days=30 -> cutoff" in out
    rc = check.main(["--mapping", _mapping_file(tmp_path, cutoff="2024-06-01"), str(path)])
    out = flat(capsys.readouterr().out)
    assert rc == 2 and "data.horizons.churn_days=90 does not fit" in out


def test_check_names_unreadable_files_and_mappings(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_bytes("uid;when_ms;what\n1;2;é\n".encode("latin-1"))
    assert check.main(["--mapping", _mapping_file(tmp_path), str(bad)]) == 2
    out = flat(capsys.readouterr().out)
    assert "bad.csv" in out and "byte" in out and "data.source.encoding" in out
    assert check.main(["--mapping", str(tmp_path / "nope.yaml"), str(bad)]) == 2
    assert "nope.yaml: no such mapping file" in flat(capsys.readouterr().out)


def test_file_source_load_says_who_the_cutoff_leaves_out(tmp_path, capsys):
    df = clickstream(n_users=600, days=180, seed=0)
    path = tmp_path / "six_months.csv"
    df.to_csv(path, index=False)
    tables = FileSource(str(path), **MAPPING, horizons={"intent_days": 7, "churn_days": 90}).load()
    out = capsys.readouterr().out
    cov = tables.coverage
    before = tables.events["ts"] < tables.cutoff
    assert cov.events_before == int(before.sum()) and cov.events_after == int((~before).sum())
    assert cov.customers == 600 and cov.customers_before == tables.events.loc[before, "customer_id"].nunique()
    assert cov.customers_excluded > 100 and cov.shorter[30][1] > cov.customers_before
    assert f"{cov.customers_excluded:,} of 600 customers" in out and "first event is on or after the cutoff" in out
    assert f"before it {cov.customers_before:,} of 600 customers and {cov.events_before:,}" in out


def test_python_m_sellerlift_data_check_is_the_entry_point(tmp_path):
    df = clickstream(n_users=120, seed=2)
    path = tmp_path / "c.csv"
    df.to_csv(path, index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sellerlift.data",
            "check",
            "--mapping",
            _mapping_file(tmp_path),
            str(path),
            "--churn-days",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sellerlift data check: c.csv" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "sellerlift.data"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "check" in proc.stderr
