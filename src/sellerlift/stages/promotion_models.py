"""The promotion engine's models: built from `_target_` config, fitted on the same offers, scored alike.

``promotion.dipn.net`` (DIPNNet) and ``promotion.baselines.mlp_net`` (the SLearnerNet
baseline) get the number of inputs from the data; ``promotion.dipn.module``
(PromotionModule) gets the net; every fit gets a fresh Trainer from
``promotion.dipn.trainer`` with the callbacks of ``promotion.dipn.callbacks`` (early
stopping, KeepBest). A fitted model is a *predictor*: DIPN inputs [n, F] -> curves [n, K].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sellerlift import metrics
from sellerlift.models import dipn as D
from sellerlift.schema import DISCOUNT_LEVELS
from sellerlift.stages.promotion_offers import LEVELS, HeldOut, K, Offers, OfferSplits

Predictor = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- built from config
def build_net(net_cfg: DictConfig, n_inputs: int) -> torch.nn.Module:
    return instantiate(net_cfg, n_inputs=n_inputs)


def build_module(pcfg: DictConfig, net: torch.nn.Module) -> D.PromotionModule:
    return instantiate(pcfg.dipn.module, _partial_=True)(net=net)


def build_trainer(pcfg: DictConfig):
    """A fresh Trainer (callbacks hold per-fit state: early stopping's counter, KeepBest's weights)."""
    callbacks = [instantiate(c) for c in (pcfg.dipn.get("callbacks") or {}).values() if c is not None]
    return instantiate(pcfg.dipn.trainer, _partial_=True)(callbacks=callbacks)


# --------------------------------------------------------------------------- fitted
@dataclass
class FittedNet:
    """A trained network (DIPN or the S-learner) and its fit report; called on inputs, gives curves."""

    net: torch.nn.Module
    report: dict  # epochs, best_val_loss, val_loss_history

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return D.predict_curves(self.net, x)


@dataclass
class LightGBMCurves:
    """LightGBM with the discount as a feature, evaluated at every level (nothing keeps it monotone)."""

    model: object

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        xx = np.column_stack([np.repeat(x, K, axis=0), np.tile(LEVELS, n)])
        return self.model.predict_proba(xx)[:, 1].reshape(n, K)


def fit_dipn(pcfg: DictConfig, offers: OfferSplits) -> FittedNet:
    """DIPN, IPW-weighted as configured (torch seeded here: the same seed gives the same DIPN)."""
    torch.manual_seed(int(pcfg.seed))
    return _fit_dipn(pcfg, offers, ipw=bool(pcfg.dipn.ipw))


def fit_baselines(pcfg: DictConfig, offers: OfferSplits) -> dict[str, Predictor]:
    """DIPN without IPW, the unconstrained S-learner and LightGBM, on the same offers (as configured)."""
    bc, ipw = pcfg.baselines, bool(pcfg.dipn.ipw)
    out: dict[str, Predictor] = {}
    if bc.dipn_no_ipw and ipw:
        out["dipn_no_ipw"] = _fit_dipn(pcfg, offers, ipw=False)
    if bc.mlp:
        out["mlp"] = fit_net(pcfg, build_net(bc.mlp_net, offers.n_inputs), offers, ipw)
    if bc.lightgbm:
        out["lightgbm"] = _fit_lightgbm(pcfg, offers.train, ipw)
    return out


def _fit_dipn(pcfg: DictConfig, offers: OfferSplits, ipw: bool) -> FittedNet:
    return fit_net(pcfg, build_net(pcfg.dipn.net, offers.n_inputs), offers, ipw)


def fit_net(pcfg: DictConfig, net: torch.nn.Module, offers: OfferSplits, ipw: bool) -> FittedNet:
    """Train ``net`` in a PromotionModule with a fresh Trainer; the best epoch's weights are kept."""
    module = build_module(pcfg, net)
    report = D.fit(
        build_trainer(pcfg),
        module,
        _tensors(offers.train, ipw),
        _tensors(offers.val, ipw),
        batch_size=int(pcfg.dipn.batch_size),
        seed=int(pcfg.seed),
    )
    return FittedNet(module.net.eval(), report)


def _tensors(o: Offers, ipw: bool) -> D.OfferTensors:
    return D.OfferTensors(o.x, o.level, o.converted, o.weight if ipw else None)  # None: every weight 1


def _fit_lightgbm(pcfg: DictConfig, train: Offers, ipw: bool) -> LightGBMCurves:
    from lightgbm import LGBMClassifier

    params = pcfg.baselines.lightgbm_params
    params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params)
    model = LGBMClassifier(**params, random_state=int(pcfg.seed), n_jobs=int(pcfg.n_threads), verbose=-1)
    weight = train.weight if ipw else np.ones_like(train.weight)
    model.fit(np.column_stack([train.x, LEVELS[train.level]]), train.converted, sample_weight=weight)
    return LightGBMCurves(model)


# --------------------------------------------------------------------------- scored alike
def evaluate(predict: Predictor, held_out: HeldOut, test: Offers) -> tuple[np.ndarray, dict[str, float]]:
    """A model's curves of the held-out customers at the cutoff, and its test metrics: the curves against
    the truth (simulator), calibration at the offered level and Qini/AUUC per level on the test offers."""
    curves = np.clip(predict(held_out.x), 0.0, 1.0)
    m = metrics.curve_metrics(curves, held_out.true_curves) if held_out.truth is not None else {}
    at_offers = np.clip(predict(test.x), 0, 1)
    p_offered = test.at_offered_level(at_offers)
    m["offer_ece"] = metrics.ece(test.converted, p_offered)
    m["offer_ece_ipw"] = metrics.ece(test.converted, p_offered, test.weight)
    m.update(
        metrics.qini_by_level(at_offers, test.level, test.converted, test.randomized, test.weight, DISCOUNT_LEVELS)
    )
    return curves, m
