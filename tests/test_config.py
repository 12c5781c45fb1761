"""Every option of every config group composes and instantiates."""

import lightning as L
import numpy as np
import pandas as pd
import pytest
from conftest import CONFIGS, compose_config
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping

from sellerlift.models.dipn import DIPNNet, KeepBest, PromotionModule, SLearnerNet
from sellerlift.stages.promotion_models import build_module, build_net, build_trainer, fit_baselines, fit_dipn
from sellerlift.stages.promotion_offers import Offers, OfferSplits


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("model", options("model"))
def test_model_options_instantiate(model, tmp_path):
    cfg = compose_config([f"model={model}"], root=tmp_path)
    if "module" in cfg.model:
        module = instantiate(cfg.model.module)
    else:  # model=dipn: DIPN is built from the promotion group (n_inputs from the data)
        module = build_module(cfg.promotion, build_net(cfg.promotion.dipn.net, 20))
    assert cfg.model.name == model
    assert sum(p.numel() for p in module.parameters()) > 1000


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options_instantiate(trainer, tmp_path):
    cfg = compose_config([f"trainer={trainer}"], root=tmp_path)
    t = instantiate(cfg.trainer, _partial_=True)(logger=False, enable_checkpointing=False)
    assert t.max_epochs >= 1


@pytest.mark.parametrize("group", ["callbacks", "logger", "data", "paths", "hydra"])
def test_other_groups_compose(group, tmp_path):
    for option in options(group):
        cfg = compose_config([f"{group}={option}"], root=tmp_path)
        assert cfg is not None


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}"], root=tmp_path)
    assert cfg.model.name in options("model")


def test_callbacks_instantiate(tmp_path):
    cfg = compose_config([], root=tmp_path)
    names = {type(instantiate(c)).__name__ for c in cfg.callbacks.values()}
    assert {"EarlyStopping", "ModelCheckpoint", "RichProgressBar"} <= names


def test_mlflow_store_is_under_root_unless_env_overrides(tmp_path, monkeypatch):
    cfg = compose_config([], root=tmp_path)
    assert cfg.logger.tracking_uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5555")
    assert compose_config([], root=tmp_path).logger.tracking_uri == "http://127.0.0.1:5555"


def test_bad_learning_rate_fails_naming_the_key(tmp_path):
    cfg = compose_config(["model.module.lr=-0.1"], root=tmp_path)
    with pytest.raises(Exception, match="lr"):
        instantiate(cfg.model.module)


# --------------------------------------------------------------------------- the promotion group's _target_ blocks
def test_promotion_config_builds_dipn_the_baseline_the_module_and_the_trainer(tmp_path):
    pcfg = compose_config([], root=tmp_path).promotion
    net = build_net(pcfg.dipn.net, 22)  # n_inputs is the data's: given at instantiate time
    assert isinstance(net, DIPNNet) and net.trunk[0].in_features == 22
    assert [m.out_features for m in net.trunk if hasattr(m, "out_features")] == list(pcfg.dipn.net.hidden)
    mlp = build_net(pcfg.baselines.mlp_net, 22)
    assert isinstance(mlp, SLearnerNet) and mlp.trunk[0].out_features == pcfg.dipn.net.hidden[0]
    module = build_module(pcfg, net)
    assert isinstance(module, PromotionModule) and module.net is net
    assert module.hparams.lr == pcfg.dipn.module.lr and module.hparams.smooth_weight == pcfg.dipn.module.smooth_weight
    trainer = build_trainer(pcfg)
    assert trainer.max_epochs == pcfg.dipn.trainer.max_epochs and trainer.logger is None
    (stop,) = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert stop.patience == pcfg.dipn.callbacks.early_stopping.patience and stop.monitor == "val/loss"
    keep = [c for c in trainer.callbacks if isinstance(c, KeepBest)]
    assert len(keep) == 1
    again = [c for c in build_trainer(pcfg).callbacks if isinstance(c, KeepBest)]
    assert again[0] is not keep[0]  # a fresh trainer per fit: no best weights carried over


class RecordingTrainer(L.Trainer):
    """A Trainer subclass named by `promotion.dipn.trainer._target_`: records that the stage used it."""

    fits = 0

    def fit(self, *args, **kwargs):
        type(self).fits += 1
        return super().fit(*args, **kwargs)


def _toy_offers(n_inputs: int = 3, n: int = 400) -> OfferSplits:
    rng = np.random.default_rng(0)

    def split() -> Offers:
        return Offers(
            pd.DataFrame(index=range(n)),
            rng.normal(size=(n, n_inputs)).astype(np.float32),
            rng.integers(0, 7, n),
            (rng.random(n) < 0.3).astype(np.float32),
            np.zeros(n, bool),
            np.full(n, 1 / 7),
            np.ones(n, np.float32),
        )

    return OfferSplits(split(), split(), split())


def test_target_overrides_reach_the_stages_fits(tmp_path):
    """A `_target_` override takes effect where the stage fits: the net, the module's values, the trainer."""
    pcfg = compose_config(
        [
            f"promotion.dipn.trainer._target_={__name__}.RecordingTrainer",
            "promotion.dipn.net._target_=sellerlift.models.dipn.SLearnerNet",
            "promotion.dipn.net.hidden=[8]",
            "promotion.dipn.module.lr=0.01",
            "promotion.dipn.trainer.max_epochs=1",
            "promotion.baselines.lightgbm=false",
        ],
        root=tmp_path,
    ).promotion
    RecordingTrainer.fits = 0
    dipn = fit_dipn(pcfg, _toy_offers())
    assert isinstance(dipn.net, SLearnerNet) and dipn.net.trunk[0].out_features == 8
    assert RecordingTrainer.fits == 1 and dipn.report["epochs"] == 1 and len(dipn.report["val_loss_history"]) == 1
    baselines = fit_baselines(pcfg, _toy_offers())
    assert set(baselines) == {"dipn_no_ipw", "mlp"} and RecordingTrainer.fits == 3
    assert baselines["mlp"].net.trunk[0].out_features == 8  # the S-learner follows DIPN's size
    assert baselines["mlp"](np.zeros((5, 3), np.float32)).shape == (5, 7)
