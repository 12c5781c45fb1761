"""From a seller's own export to scores, as a new user goes: check -> train.py -> score, with only a mapping file.

Also the command-line rough edges on that path: the documented ``event_types`` override, config files outside
``configs/`` (``--config-dir``, ``data=/path/x.yaml``), the data set name taken from the file, and a data error
printed as its message alone (exit code 2, no traceback).
"""

import importlib.util
import os
import subprocess
import sys

import pandas as pd
import yaml
from clickstream import MAPPING, clickstream
from conftest import REPO, compose_config
from mlflow.tracking import MlflowClient

from sellerlift.data.mapping import fill_data_name

TINY_FILE = [
    "trainer=debug",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "data.max_len=16",
    "data.datamodule.batch_size=64",
    "model.module.net.d_model=16",
    "model.module.net.head_hidden=16",
    "tracking.register=false",
    "report.enabled=false",
    "extras=[sellerlift.stages.segments.fit_segments_stage]",
]


def _train_py():
    spec = importlib.util.spec_from_file_location("train_entry", REPO / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env(root):
    env = {**os.environ, "SELLERLIFT_ROOT": str(root), "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SELLERLIFT_CONFIG_DIRS", None)
    return env


def _run(args, root, timeout=600):
    return subprocess.run(
        [sys.executable, *args], cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout
    )


def data_config(path, events, **source) -> str:
    """A data config (a copy of configs/data/*.yaml, kept outside configs/) for ``events``."""
    cfg = {
        "name": None,
        "source": {
            "_target_": "sellerlift.data.files.FileSource",
            "name": "${data.name}",
            "path": str(events),
            **MAPPING,
            "cutoff": "auto",
            "horizons": "${data.horizons}",
            **source,
        },
        "max_len": 32,
        "horizons": {"intent_days": 7, "churn_days": 30},
        "split": [0.7, 0.15, 0.15],
        "split_seed": 0,
        "datamodule": {
            "_target_": "sellerlift.models.datamodule.SequenceDataModule",
            "batch_size": 256,
            "num_workers": 0,
            "seed": "${seed}",
        },
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


# --------------------------------------------------------------------------- train.py's command line


def test_documented_event_types_override_adds_an_entry(monkeypatch):
    train = _train_py()
    monkeypatch.delenv(train.CONFIG_DIRS_ENV, raising=False)
    argv = train.prepare_argv(["data=seller_file", "data.source.event_types.checkout=purchase", "trainer=debug"])
    assert argv == ["data=seller_file", "++data.source.event_types.checkout=purchase", "trainer=debug"]
    assert train.prepare_argv(argv) == argv  # idempotent: DDP re-launches train.py with the same argv
    proc = _run(
        [
            str(REPO / "train.py"),
            "data=seller_file",
            "data.source.event_types.checkout=purchase",
            "data.source.event_types.order=view",
            "--cfg",
            "job",
        ],
        REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    source = yaml.safe_load(proc.stdout)["data"]["source"]
    assert source["event_types"]["checkout"] == "purchase" and source["event_types"]["order"] == "view"


def test_data_configs_outside_configs_dir(tmp_path):
    events = tmp_path / "clicks.csv"
    clickstream(n_users=50).to_csv(events, index=False)
    (tmp_path / "mine" / "data").mkdir(parents=True)
    data_config(tmp_path / "mine" / "data" / "shop.yaml", events)
    proc = _run(
        [str(REPO / "train.py"), "--config-dir", str(tmp_path / "mine"), "data=shop", "--cfg", "job"], REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["data"]["source"]["path"] == str(events)
    elsewhere = data_config(tmp_path / "seller_file.yaml", events, cutoff="2024-05-01")  # even a clashing name
    proc = _run([str(REPO / "train.py"), f"data={elsewhere}", "--cfg", "job"], REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["data"]["source"]["cutoff"] == "2024-05-01"
    proc = _run([str(REPO / "train.py"), f"data={tmp_path / 'nope.yaml'}"], REPO, timeout=120)
    assert proc.returncode == 2 and "nope.yaml: no such config file" in proc.stderr


def test_data_name_comes_from_the_file_unless_set(tmp_path):
    cfg = compose_config(["data=seller_file", "data.source.path=/data/Shop Events.csv.gz"], root=tmp_path)
    fill_data_name(cfg)
    assert cfg.data.name == "shop_events" and cfg.logger.experiment_name == "sellerlift-shop_events"
    assert cfg.data.source.name == "shop_events"
    cfg = compose_config(["data=seller_file", "data.name=myshop"], root=tmp_path)
    fill_data_name(cfg)
    assert cfg.logger.experiment_name == "sellerlift-myshop"
    cfg = compose_config(["data=cdnow"], root=tmp_path)
    fill_data_name(cfg)
    assert cfg.data.name == "cdnow"


def test_a_data_error_prints_the_message_only_and_exits_2(tmp_path):
    df = clickstream(n_users=60)
    df.loc[17, "what"] = "mystery_tap"
    events = tmp_path / "clicks.csv"
    df.to_csv(events, index=False)
    proc = _run([str(REPO / "train.py"), f"data={data_config(tmp_path / 'shop.yaml', events)}", *TINY_FILE], tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr
    assert err.startswith("error: ") and "clicks.csv" in err and "row 18" in err and "mystery_tap" in err, err
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err and len(err.splitlines()) < 15, err
    proc = _run(
        [str(REPO / "train.py"), f"data={data_config(tmp_path / 'shop2.yaml', events, csv_sep=';;')}", *TINY_FILE],
        tmp_path,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: data.source.csv_sep=';;'"), proc.stderr
    assert not (tmp_path / "mlruns").exists(), "fails before any run is created"


# --------------------------------------------------------------------------- the whole path


def test_clickstream_from_file_to_scores_with_only_a_mapping_file(tmp_path):
    """A generated clickstream with its own names and no order values: check, train, score."""
    events = tmp_path / "app_clicks.csv"
    df = clickstream(n_users=500, days=200, seed=11)
    df.to_csv(events, index=False)
    mapping = data_config(tmp_path / "app.yaml", events)

    check = _run(["-m", "sellerlift.data", "check", "--mapping", mapping, str(events)], tmp_path, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok: app_clicks.csv is ready" in check.stdout

    train = _run([str(REPO / "train.py"), f"data={mapping}", *TINY_FILE], tmp_path)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "data app_clicks.csv: cutoff" in train.stdout  # what the cutoff keeps is said, not silent
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("sellerlift-app_clicks")  # named after the file
    assert exp is not None
    (run,) = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert run.info.status == "FINISHED" and run.data.tags["data.name"] == "app_clicks"
    bundle = tmp_path / "bundles" / run.info.run_id
    segments = yaml.safe_load((bundle / "segments.json").read_text())
    assert "monetary" not in segments["feature_names"]  # no order values: no money in the segments
    assert not any(w in n for n in segments["names"] for w in ("value", "spend", ","))

    out = tmp_path / "scores.csv"
    scored = _run(
        [
            "-m",
            "sellerlift.score",
            "--bundle",
            str(bundle),
            "--events",
            str(events),
            "--mapping",
            mapping,
            "--out",
            str(out),
            "--no-progress",
        ],
        tmp_path,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    scores = pd.read_csv(out)
    assert len(scores) == df["uid"].nunique() and scores["customer_id"].dtype == "int64"
    assert scores.filter(like="churn").iloc[:, 0].between(0, 1).all()
