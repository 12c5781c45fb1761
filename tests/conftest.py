import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# Tests never write to the developer's mlruns/ or MLflow server.
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def compose_config(overrides=(), root: Path | None = None):
    """The same config `python train.py <overrides>` would see, rooted at ``root``."""
    overrides = list(overrides)
    if root is not None:
        overrides.append(f"paths.root_dir={root}")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return cfg


TINY = [
    "trainer=debug",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "data.source.n_customers=800",
    "data.source.n_sellers=5",
    "data.source.progress=false",
    "data.max_len=32",
    "data.datamodule.batch_size=64",
    "model.module.net.d_model=16",
    "model.module.net.head_hidden=16",
    "promotion.dipn.trainer.max_epochs=1",
    "promotion.dipn.trainer.limit_train_batches=3",
    "promotion.baselines.lightgbm_params.n_estimators=10",
    "promotion.propensity.candidates=[logistic]",
    "promotion.enduring.max_epochs=1",
    "promotion.enduring.ensemble=2",
    "data.source.truth_replications=2",
    "ceiling.customers=3000",
]


@pytest.fixture
def tiny_config(tmp_path):
    def make(*extra):
        return compose_config([*TINY, *extra], root=tmp_path)

    return make
