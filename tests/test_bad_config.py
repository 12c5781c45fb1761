"""Bad configuration fails before any work starts, naming the key; a non-finite loss stops the run clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow.tracking import MlflowClient

from sellerlift.config_checks import ConfigError, check
from sellerlift.pipeline import run

REPO = Path(__file__).resolve().parents[1]

BAD = [
    ("model.module.lr=-0.001", "model.module.lr"),
    ("model.module.lr=0", "model.module.lr"),
    ("model.module.lr=.inf", "model.module.lr"),
    ("model.name=xgboost", "model.name"),
    ("model.stage=sellerlift.stages.nope.train", "model.stage"),
    ("model.module._target_=sellerlift.models.sequence.NoSuchModule", "model.module._target_"),
    ("model.module.net.dropout=1.5", "model.module.net.dropout"),
    ("data.split=[0.5,0.2,0.2]", "data.split"),
    ("data.split=[0.7,0.3]", "data.split"),
    ("data.split=[1.2,-0.1,-0.1]", "data.split"),
    ("data.max_len=0", "data.max_len"),
    ("data.datamodule.batch_size=0", "data.datamodule.batch_size"),
    ("data.horizons.churn_days=120", "data.horizons.churn_days"),  # the simulated future is 90 days
    ("data.horizons.intent_days=0", "data.horizons.intent_days"),
    ("data.source.n_customers=0", "data.source.n_customers"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("resume=/no/such/last.ckpt", "resume"),
    ("extras=[sellerlift.stages.segments.no_such_stage]", "extras[0]"),
    # the promotion engine's `_target_` blocks (configs/promotion/default.yaml)
    ("promotion.dipn.module.lr=-1", "promotion.dipn.module.lr"),
    ("promotion.dipn.module.smooth_weight=-1", "promotion.dipn.module.smooth_weight"),
    ("promotion.dipn.net.hidden=[0]", "promotion.dipn.net.hidden"),
    ("promotion.dipn.net._target_=sellerlift.models.dipn.NoSuchNet", "promotion.dipn.net._target_"),
    ("promotion.dipn.trainer.max_epochs=0", "promotion.dipn.trainer.max_epochs"),
    ("promotion.dipn.callbacks.early_stopping.patience=-1", "promotion.dipn.callbacks.early_stopping.patience"),
]


def nothing_was_done(root: Path) -> bool:
    return not any((root / d).exists() for d in ("data", "mlruns", "bundles", "checkpoints", "outputs"))


@pytest.mark.parametrize("override, key", BAD, ids=[b[1] + ":" + b[0].split("=", 1)[1] for b in BAD])
def test_bad_value_fails_before_any_work_naming_the_key(tiny_config, tmp_path, override, key):
    cfg = tiny_config(override)
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert key in info.value.keys, str(info.value)
    assert key in str(info.value) and "nothing was run" in str(info.value)
    assert nothing_was_done(tmp_path)


def test_budget_below_zero_names_the_key(tiny_config, tmp_path):
    cfg = tiny_config()
    budgets = [k for k in ("promotion.allocation.budgets", "allocation.budgets") if cfg.get(k.split(".")[0])]
    if not budgets:
        pytest.skip("no budget in this config")
    from omegaconf import OmegaConf

    key = budgets[0] + "." + next(iter(OmegaConf.select(cfg, budgets[0])))
    OmegaConf.update(cfg, key, -0.1)
    with pytest.raises(ConfigError) as info:
        run(cfg)
    assert key in info.value.keys and nothing_was_done(tmp_path)


def test_every_problem_is_listed_at_once(tiny_config):
    with pytest.raises(ConfigError) as info:
        check(tiny_config("model.module.lr=-1", "data.max_len=0", "data.split=[0.5,0.5,0.5]"))
    assert {"model.module.lr", "data.max_len", "data.split"} <= set(info.value.keys)


@pytest.mark.parametrize(
    "overrides", [[], ["model=transformer"], ["experiment=smoke"], ["resume=auto"], ["trainer.max_epochs=-1"]]
)
def test_shipped_configs_pass(tiny_config, overrides):
    check(tiny_config(*overrides))


@pytest.mark.parametrize("group", ["model=dipn", "data=cdnow", "data=seller_file"])
def test_other_shipped_groups_pass(tmp_path, group):
    from conftest import compose_config

    try:
        cfg = compose_config([group], root=tmp_path)
    except Exception as err:
        pytest.skip(f"{group} does not compose here: {err}")
    check(cfg)


def test_unknown_model_group_fails_in_train_py_naming_it(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "model=xgboost", f"paths.root_dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert out.returncode != 0
    assert "model/xgboost" in out.stderr + out.stdout and "gru" in out.stderr + out.stdout  # the options are listed
    assert nothing_was_done(tmp_path)


class PoisonWeights(L.Callback):
    """Make one weight infinite before batch 1: the loss becomes non-finite at that step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("inf"))


def test_non_finite_loss_stops_the_run_with_a_clear_message_and_a_failed_mlflow_run(tiny_config):
    cfg = tiny_config(
        "model=transformer",
        "extras=[]",
        "tracking.register=false",
        f"+callbacks.poison._target_={__name__}.PoisonWeights",
    )
    with pytest.raises(FloatingPointError) as info:
        run(cfg)
    assert "non-finite training loss" in str(info.value) and "model.lr" in str(info.value)
    client = MlflowClient(cfg.logger.tracking_uri)
    (r,) = client.search_runs([client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id])
    assert r.info.status == "FAILED" and "non-finite training loss" in r.data.tags["error"]
