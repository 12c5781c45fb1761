"""A bundle trained on one data set never scores or serves another without saying so (issue 13, item 1)."""

import json
import shutil
import sqlite3
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import pytest

from sellerlift import score
from sellerlift.runtime import BundleError, find_bundle, registered_model_name
from sellerlift.runtime.bundle import check_bundle_data


def _bundle(root: Path, run_id: str, data: str | None) -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    manifest = {
        "format": "sellerlift-bundle/2",
        "files": {},
        "run_id": run_id,
        **({"data": data, "data_fingerprint": f"{data}-fp"} if data else {}),
    }
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def _registry(db: Path, rows: list[tuple[str, str, str, Path]]) -> None:
    """The three tables registry_bundle reads: (model, alias, run id, bundle dir) per row."""
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE model_versions (name VARCHAR(256), version INTEGER, run_id VARCHAR(32))")
    con.execute(
        "CREATE TABLE model_version_tags (key VARCHAR(250), value VARCHAR(5000), name VARCHAR(256), version INTEGER)"
    )
    con.execute("CREATE TABLE registered_model_aliases (alias VARCHAR(256), version INTEGER, name VARCHAR(256))")
    for name, alias, run_id, bundle in rows:
        con.execute("INSERT INTO model_versions VALUES (?, 1, ?)", (name, run_id))
        con.execute("INSERT INTO model_version_tags VALUES ('sellerlift.bundle_dir', ?, ?, 1)", (str(bundle), name))
        con.execute("INSERT INTO registered_model_aliases VALUES (?, 1, ?)", (alias, name))
    con.commit()
    con.close()


def test_registered_model_names_are_per_data_set():
    assert registered_model_name("sellerlift-sequence", "cdnow") == "sellerlift-sequence-cdnow"
    assert registered_model_name("sellerlift-sequence", "my shop/2024") == "sellerlift-sequence-my-shop-2024"
    assert registered_model_name("sellerlift-sequence", None) == "sellerlift-sequence"
    assert registered_model_name("sellerlift-sequence-cdnow", "cdnow") == "sellerlift-sequence-cdnow"


def test_find_bundle_serves_the_data_sets_own_champion_and_refuses_another(tmp_path):
    bundles = tmp_path / "bundles"
    sim, shop = _bundle(bundles, "run-sim", "simulator"), _bundle(bundles, "run-shop", "myshop")
    db = tmp_path / "mlflow.db"
    _registry(
        db,
        [
            ("sellerlift-sequence-simulator", "champion", "run-sim", sim),
            ("sellerlift-sequence-myshop", "champion", "run-shop", shop),
        ],
    )
    for data, want in (("simulator", sim), ("myshop", shop)):
        path, how = find_bundle(None, bundles, db, "sellerlift-sequence", "champion", data=data)
        assert path == want and f"sellerlift-sequence-{data}@champion" in how
    # a bundle given explicitly (BUNDLE=..., SELLERLIFT_BUNDLE) that was trained on other data: refused, naming both
    with pytest.raises(BundleError, match=r"trained on data set 'simulator'.*data set 'myshop'"):
        find_bundle(str(sim), bundles, db, "sellerlift-sequence", "champion", data="myshop")
    # no champion for this data set: the newest bundle *of this data set*, never another's
    _bundle(bundles, "run-shop2", "myshop")
    path, how = find_bundle(None, bundles, tmp_path / "none.db", "sellerlift-sequence", "champion", data="myshop")
    assert path.name == "run-shop2" and "myshop" in how
    with pytest.raises(BundleError, match="trained on data set 'cdnow'"):
        find_bundle(None, bundles, tmp_path / "none.db", "sellerlift-sequence", "champion", data="cdnow")
    # without a data set: the old behaviour (what the server does until it passes one)
    assert find_bundle(str(sim), bundles, db, "sellerlift-sequence", "champion")[0] == sim


def test_an_alias_pointing_at_another_data_sets_bundle_is_refused(tmp_path):
    """An old store: sellerlift-sequence-myshop@champion was moved by hand to the simulator's bundle."""
    bundles = tmp_path / "bundles"
    sim = _bundle(bundles, "run-sim", "simulator")
    db = tmp_path / "mlflow.db"
    _registry(db, [("sellerlift-sequence-myshop", "champion", "run-sim", sim)])
    with pytest.raises(BundleError, match="simulator"):
        find_bundle(None, bundles, db, "sellerlift-sequence", "champion", data="myshop")
    check_bundle_data(_bundle(bundles, "run-old", None), "myshop")  # a bundle that does not say: cannot check


def _runtime(bundle_dir: Path, data: str | None):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    return SimpleNamespace(manifest=MappingProxyType(manifest), bundle_dir=bundle_dir, data=data, run_id="r")


def test_scoring_another_data_sets_file_fails_naming_both_or_warns_when_allowed(tmp_path):
    from rich.console import Console

    rt = _runtime(_bundle(tmp_path, "run-sim", "simulator"), "simulator")
    with pytest.raises(score.ScoreError) as err:
        score.check_data(rt, "myshop")
    msg = str(err.value)
    assert "'simulator'" in msg and "'myshop'" in msg and "--allow-other-data" in msg
    assert "sellerlift-sequence-myshop@champion" in msg
    console = Console(record=True, width=200)
    assert "'simulator'" in score.check_data(rt, "myshop", allow_other_data=True, console=console)
    assert "WARNING" in console.export_text()
    assert score.check_data(rt, "simulator") is None  # same data set: fine


def test_the_data_set_of_a_mapping_file(tmp_path):
    (tmp_path / "a.yaml").write_text("data:\n  name: myshop\n  source:\n    name: ${data.name}\n")
    (tmp_path / "b.yaml").write_text("name: shop2\ncolumns: {customer_id: id}\n")
    (tmp_path / "c.yaml").write_text("columns: {customer_id: id}\n")
    assert score.data_name_of_mapping(tmp_path / "a.yaml") == "myshop"
    assert score.data_name_of_mapping(tmp_path / "b.yaml") == "shop2"
    assert score.data_name_of_mapping(tmp_path / "c.yaml") is None
    assert score.data_name_of_mapping(None) is None


def test_at_champion_needs_the_data_set(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(score.ScoreError, match="champions are per data set"):
        score.resolve_bundle("@champion", uri, data=None)
    with pytest.raises(score.ScoreError, match="sellerlift-sequence-myshop@champion") as err:
        score.resolve_bundle("@champion", uri, data="myshop")
    assert "make train" in str(err.value)


def test_no_champion_names_the_newest_bundle_of_the_data_set(tmp_path, monkeypatch):
    """A run too small to measure (the example shop file) trains but never becomes champion: the scorer's error
    says which bundle of that data set to pass instead."""
    monkeypatch.chdir(tmp_path)
    _bundle(tmp_path / "bundles", "run-shop", "seller_file")
    _bundle(tmp_path / "bundles", "run-sim", "simulator")
    with pytest.raises(score.ScoreError) as err:
        score.resolve_bundle("@champion", f"sqlite:///{tmp_path}/mlflow.db", data="seller_file")
    msg = str(err.value)
    assert "--bundle bundles/run-shop" in msg and "guards.min_positives" in msg and "run-sim" not in msg


def test_score_cli_refuses_a_bundle_of_other_data(tmp_path, capsys):
    """End to end through the CLI on a real bundle (the scorer's fixture bundle, relabelled as the simulator's)."""
    from conftest import REPO

    src = tmp_path / "b"
    shutil.copytree(_real_bundle(tmp_path), src)
    m = json.loads((src / "manifest.json").read_text())
    m.update(data="simulator", data_fingerprint="sim-abc")
    (src / "manifest.json").write_text(json.dumps(m))
    mapping = tmp_path / "shop.yaml"
    mapping.write_text((REPO / "examples" / "seller_events.mapping.yaml").read_text() + "name: myshop\n")
    args = [
        "--bundle",
        str(src),
        "--events",
        str(REPO / "examples" / "seller_events.csv"),
        "--mapping",
        str(mapping),
        "--out",
        str(tmp_path / "s.csv"),
        "--no-progress",
    ]
    assert score.main(args) == 2
    err = capsys.readouterr().err
    assert "'simulator'" in err and "'myshop'" in err and not (tmp_path / "s.csv").exists()
    assert score.main([*args, "--allow-other-data"]) == 0
    assert "WARNING" in capsys.readouterr().err and (tmp_path / "s.csv").exists()
    # an unnamed mapping: the data set is named after the events file (seller_events.csv -> seller_events)
    args[5] = str(REPO / "examples" / "seller_events.mapping.yaml")
    assert score.main(args) == 2
    err = capsys.readouterr().err
    assert "data set seller_events (from the events file's name" in err and "'seller_events'" in err


def _real_bundle(tmp_path: Path) -> Path:
    import subprocess
    import sys

    from conftest import REPO
    from test_score import AS_OF, BUILD_BUNDLE, EXAMPLE, MAPPING

    out = tmp_path / "real"
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_BUNDLE, str(out), str(EXAMPLE), str(MAPPING), AS_OF],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
