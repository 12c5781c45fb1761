"""The promotion stage's data: the logged offers of each split, and the held-out customers at the cutoff.

Offers are split by customer with the run's split (training customers' offers train,
validation customers' early-stop, test customers' are held out for every metric),
subsampled as configured, and get their DIPN inputs as of each offer's time
(:func:`sellerlift.promotion_features.iter_offer_time_features`, plus the sequence
model's scores when the run has one). The propensity model of the logged policy then
gives every offer its propensity and clipped IPW weight (:func:`with_ipw_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from sellerlift.features import SequenceFeatures
from sellerlift.models.propensity import PropensityModel, effective_sample_size, fit_propensity, ipw_weights
from sellerlift.promotion_features import dipn_inputs, iter_offer_time_features
from sellerlift.schema import DISCOUNT_LEVELS
from sellerlift.stages.context import Prepared, RunContext

LEVELS = np.asarray(DISCOUNT_LEVELS)
K = len(LEVELS)
SPLITS = ("train", "val", "test")
CHUNK_OFFERS = 40_000
TRUE_CURVE_COLUMNS = [f"p_response_{d}" for d in DISCOUNT_LEVELS]

# The run's sequence.onnx as the runtime scores it (features -> {output: [n]}), or None: aggregates only.
SequenceScorer = Callable[[SequenceFeatures], dict[str, np.ndarray]] | None


@dataclass(frozen=True)
class Offers:
    """The logged offers of one split's customers, row-aligned with ``frame``."""

    frame: pd.DataFrame  # the promotions rows (customer_id, ts, discount_pct, converted, ...)
    x: np.ndarray  # [n, F] float32 DIPN inputs as of each offer's time
    level: np.ndarray  # [n] index of the offered discount in DISCOUNT_LEVELS
    converted: np.ndarray  # [n] float32 0/1
    randomized: np.ndarray  # [n] bool: the randomised (RCT) slice
    propensity: np.ndarray | None = None  # [n] probability of the offered level under the logged policy
    weight: np.ndarray | None = None  # [n] float32 clipped inverse propensity weight

    def __len__(self) -> int:
        return len(self.level)

    @property
    def logged(self) -> np.ndarray:
        """The offers the historical (biased) policy chose: everything outside the randomised slice."""
        return ~self.randomized

    def at_offered_level(self, curves: np.ndarray) -> np.ndarray:
        """From [n, K] curves, each offer's probability at the level it was offered."""
        return curves[np.arange(len(self)), self.level]


@dataclass(frozen=True)
class OfferSplits:
    train: Offers
    val: Offers
    test: Offers

    def items(self):
        return ((name, getattr(self, name)) for name in SPLITS)

    @property
    def n_inputs(self) -> int:
        return self.train.x.shape[1]


@dataclass(frozen=True)
class HeldOut:
    """The test customers at the cutoff: where curves meet the truth and budgets are allocated."""

    feats: SequenceFeatures  # standardised features (raw aggregates inside)
    x: np.ndarray  # [n, F] DIPN inputs at the cutoff
    truth: pd.DataFrame | None  # simulator truth, row-aligned; None on real data

    @property
    def true_curves(self) -> np.ndarray | None:
        return None if self.truth is None else self.truth[TRUE_CURVE_COLUMNS].to_numpy()


# --------------------------------------------------------------------------- offers and their inputs
def load_offers(ctx: RunContext, pcfg: DictConfig, scorer: SequenceScorer) -> OfferSplits:
    """Each split's logged offers (by customer), subsampled to ``max_offers`` / ``max_eval_offers``."""
    return split_offers(
        ctx, ctx.tables.promotions, scorer, int(pcfg.max_offers), int(pcfg.max_eval_offers), int(pcfg.seed)
    )


def split_offers(
    ctx: RunContext, promos: pd.DataFrame, scorer: SequenceScorer, max_train: int, max_eval: int, seed: int
) -> OfferSplits:
    """The offers of ``promos`` by the run's customer split, each split subsampled to at most its cap."""
    split_of = pd.Series(ctx.prep.split, index=pd.Index(ctx.prep.feats.customer_id))
    offer_split = split_of.reindex(promos["customer_id"].to_numpy()).to_numpy()
    rng = np.random.default_rng(seed)
    out = []
    for code, name in enumerate(SPLITS):
        rows = np.flatnonzero(offer_split == code)
        cap = max_train if name == "train" else max_eval
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, cap, replace=False))
        if len(rows) == 0:
            raise ValueError(f"no logged offers for the {name} customers; simulate more customers")
        out.append(offers_of(ctx, promos.iloc[rows].reset_index(drop=True), scorer))
    return OfferSplits(*out)


def offers_of(ctx: RunContext, frame: pd.DataFrame, scorer: SequenceScorer) -> Offers:
    randomized = frame["randomized"].to_numpy().astype(bool) if "randomized" in frame else np.zeros(len(frame), bool)
    return Offers(
        frame=frame,
        x=inputs_at_offer_time(ctx, frame, scorer),
        level=np.searchsorted(LEVELS, frame["discount_pct"].to_numpy()),
        converted=frame["converted"].to_numpy().astype(np.float32),
        randomized=randomized,
    )


def inputs_at_offer_time(ctx: RunContext, frame: pd.DataFrame, scorer: SequenceScorer) -> np.ndarray:
    """DIPN inputs of each offer from the events before it (chunked: bounded memory)."""
    chunks = iter_offer_time_features(
        ctx.tables.events,
        frame["customer_id"].to_numpy(),
        frame["ts"].to_numpy(),
        ctx.prep.spec,
        chunk_offers=CHUNK_OFFERS,
    )
    return np.concatenate([dipn_inputs(feats, scorer(feats) if scorer else None) for _, feats in chunks])


def held_out_at_cutoff(ctx: RunContext, scorer: SequenceScorer) -> HeldOut:
    prep = ctx.prep
    test = np.flatnonzero(prep.split == 2)
    feats = prep.feats.take(test)
    truth = prep.truth.iloc[test].reset_index(drop=True) if prep.truth is not None else None
    return HeldOut(feats, dipn_inputs(feats, scorer(feats) if scorer else None), truth)


def value_fallback(prep: Prepared) -> float:
    """Order value for customers without purchases: the median basket of training customers who bought."""
    raw = prep.feats.raw_aggregates
    buyers = (prep.split == 0) & (raw["has_purchase"].to_numpy() > 0)
    return float(np.median(raw["monetary"].to_numpy()[buyers]))


# --------------------------------------------------------------------------- the logged policy
def fit_logged_policy(pcfg: DictConfig, offers: OfferSplits) -> PropensityModel:
    """The propensity model of the historical policy, fitted and chosen on the non-randomised offers."""
    tr, va = offers.train, offers.val
    pc = pcfg.propensity
    return fit_propensity(
        tr.x[tr.logged],
        tr.level[tr.logged],
        va.x[va.logged],
        va.level[va.logged],
        K,
        candidates=tuple(pc.candidates),
        seed=int(pcfg.seed),
        max_rows=int(pc.max_rows),
        n_threads=int(pcfg.n_threads),
    )


def with_ipw_weights(pcfg: DictConfig, offers: OfferSplits, policy: PropensityModel) -> OfferSplits:
    """Every split with its offers' propensity (the model's, or the logged one) and clipped IPW weight."""
    pc = pcfg.propensity

    def weigh(o: Offers) -> Offers:
        if pc.source == "logged":
            if "propensity" not in o.frame:
                raise ValueError("promotion.propensity.source=logged, but the promotions table has no propensity")
            e = o.frame["propensity"].to_numpy(dtype=np.float64)
        else:
            e = policy.propensity(o.x, o.level, o.randomized)
        return replace(o, propensity=e, weight=ipw_weights(e, float(pc.clip), K))

    return OfferSplits(*(weigh(o) for _, o in offers.items()))


def propensity_metrics(pcfg: DictConfig, policy: PropensityModel, offers: OfferSplits) -> dict[str, float]:
    report = policy.report
    chosen = report["candidates"][report["chosen"]]
    tr = offers.train
    out = {
        "propensity/ece": chosen["ece"],
        "propensity/log_loss": chosen["log_loss"],
        "propensity/clipped_frac": float(np.mean(tr.propensity < float(pcfg.propensity.clip))),
        "propensity/weight_max": float(tr.weight.max()),
        "propensity/ess_frac": effective_sample_size(tr.weight) / len(tr),
    }
    out.update({f"propensity/{name}_ece": sc["ece"] for name, sc in report["candidates"].items()})
    va = offers.val
    if "propensity" in va.frame:  # the simulator logs the true policy: how close is the model?
        v = va.logged
        out["propensity/mae_vs_logged"] = float(
            np.mean(np.abs(policy.propensity(va.x[v], va.level[v]) - va.frame["propensity"].to_numpy()[v]))
        )
    return out
