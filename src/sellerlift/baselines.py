"""Classic baselines for intent and churn, and the metrics every model is scored with (no torch).

Baselines see the same customers, split and labels as the sequence model:

- ``LogisticRegressionBaseline``, ``RandomForestBaseline``, ``LightGBMBaseline``
  read the per-customer aggregates of :mod:`sellerlift.features` (RFM, tenure,
  recent-window counts and spend, event-type counts), log-scaled and
  standardised with the training split's statistics;
- ``BGNBDBaseline`` is the classic customer-base model (:mod:`sellerlift.bgnbd`)
  fitted on the purchases before the cutoff: churn = P(no purchase within the
  churn horizon), intent = 1 - P(no purchase within the intent horizon). It
  needs purchases only, so it runs on any data.

The customer-value baseline is :class:`sellerlift.clv_baseline.BGNBDGammaGammaValue`.

Every baseline is scored by :func:`sellerlift.metrics.head_metrics`, like the sequence
model, so all runs carry the same metric names and the same numbers for the same scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sellerlift.constants import HEADS
from sellerlift.metrics import head_metrics

# --------------------------------------------------------------------------- inputs


@dataclass
class BaselineData:
    """What every baseline sees: one row per customer, in the pipeline's order."""

    customer_id: np.ndarray
    X: np.ndarray  # [n, A] float32: log-scaled, standardised aggregates (training-split statistics)
    feature_names: list[str]
    targets: np.ndarray  # [n, 2] intent, churn
    split: np.ndarray  # 0 train, 1 val, 2 test
    bgnbd: pd.DataFrame  # frequency, recency, T in days, monetary_value, aligned to customer_id
    horizons: dict = field(default_factory=lambda: {"intent_days": 7, "churn_days": 90})

    def rows(self, code: int) -> np.ndarray:
        return np.flatnonzero(self.split == code)


def bgnbd_inputs(events: pd.DataFrame, cutoff, customer_id: np.ndarray, tenure_days: np.ndarray) -> pd.DataFrame:
    """BG/NBD (frequency, recency, T) in days and Gamma-Gamma's ``monetary_value`` (mean spend per repeat purchase
    day, 0 without one) for ``customer_id`` (rows in that order).

    Customers who never bought before the cutoff (possible on the simulator) are
    "born" at their first event: frequency 0, recency 0, T = whole days from that
    day to the last day before the cutoff, the same day arithmetic as buyers get.
    """
    from sellerlift.bgnbd import rfm_summary_for_bgnbd

    cols = ["frequency", "recency", "T", "monetary_value"]
    try:
        summ = rfm_summary_for_bgnbd(events, cutoff, freq="D")
    except ValueError:  # no purchases at all
        summ = pd.DataFrame(columns=cols, dtype=np.float64)
    out = summ.reindex(pd.Index(customer_id))[cols]
    missing = out["frequency"].isna().to_numpy()
    t_birth = np.maximum(np.ceil(np.asarray(tenure_days, dtype=np.float64)) - 1.0, 0.0)
    out.loc[missing, "frequency"] = 0.0
    out.loc[missing, "recency"] = 0.0
    out.loc[missing, "T"] = t_birth[missing]
    out["monetary_value"] = out["monetary_value"].fillna(0.0)
    return out.astype(np.float64).reset_index(drop=True)


def baseline_data(prep, events: pd.DataFrame, cutoff, horizons: dict) -> BaselineData:
    """From the pipeline's :class:`~sellerlift.stages.context.Prepared` (same customers, split, labels)."""
    feats = prep.feats
    return BaselineData(
        customer_id=np.asarray(feats.customer_id),
        X=np.asarray(feats.aggregates, dtype=np.float32),
        feature_names=list(prep.spec.aggregates),
        targets=np.asarray(prep.targets, dtype=np.float32),
        split=np.asarray(prep.split),
        bgnbd=bgnbd_inputs(events, cutoff, feats.customer_id, feats.raw_aggregates["tenure_days"].to_numpy()),
        horizons={"intent_days": int(horizons["intent_days"]), "churn_days": int(horizons["churn_days"])},
    )


# --------------------------------------------------------------------------- models


SMALL_DATA_ROWS = 20000  # below this, one thread: OpenMP start-up and spin-waits cost more than they save


def _threads(n_jobs: int, n_rows: int) -> int:
    return 1 if n_rows < SMALL_DATA_ROWS else int(n_jobs)


def _constant_prob(y: np.ndarray) -> float:
    return float(np.clip(np.mean(y), 1e-6, 1 - 1e-6)) if len(y) else 0.5


class Baseline:
    """fit on the training rows (val rows for early stopping where useful); predict [n, 2] probabilities."""

    name = "baseline"

    def params(self) -> dict:
        return {}

    def fit(self, data: BaselineData) -> Baseline:
        raise NotImplementedError

    def predict(self, data: BaselineData, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def importance(self) -> pd.DataFrame | None:
        return None


class _PerHeadSklearn(Baseline):
    """One scikit-learn-style classifier per head; a head with one class in training predicts its rate."""

    def _make(self, head: int):
        raise NotImplementedError

    def _train_rows(self, data: BaselineData) -> np.ndarray:
        return data.rows(0)

    def fit(self, data: BaselineData) -> Baseline:
        rows = self._train_rows(data)
        self.models_ = []
        for i in range(len(HEADS)):
            y = data.targets[rows, i]
            if 0 < y.mean() < 1:
                self.models_.append(self._fit_head(self._make(i), data, rows, i))
            else:
                self.models_.append(_constant_prob(y))
        return self

    def _fit_head(self, model, data: BaselineData, rows: np.ndarray, i: int):
        return model.fit(data.X[rows], data.targets[rows, i].astype(np.int64))

    def predict(self, data: BaselineData, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), len(HEADS)), dtype=np.float64)
        for i, m in enumerate(self.models_):
            out[:, i] = m if isinstance(m, float) else m.predict_proba(data.X[rows])[:, 1]
        return out


class LogisticRegressionBaseline(_PerHeadSklearn):
    name = "logreg"

    def __init__(self, C: float = 1.0, max_iter: int = 2000):
        self.C, self.max_iter = float(C), int(max_iter)

    def params(self) -> dict:
        return {"C": self.C, "max_iter": self.max_iter}

    def _make(self, head: int):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=self.max_iter)

    def importance(self):
        rows = [m.coef_[0] if not isinstance(m, float) else np.zeros(len(self.feature_names_)) for m in self.models_]
        return pd.DataFrame({"feature": self.feature_names_, **{f"{h}_coef": r for h, r in zip(HEADS, rows)}})

    def fit(self, data):
        self.feature_names_ = data.feature_names
        return super().fit(data)


class RandomForestBaseline(_PerHeadSklearn):
    """Random forest; each tree is grown on a bootstrap of at most ``max_train_rows`` customers (cheap at 50k)."""

    name = "random_forest"

    def __init__(
        self,
        n_estimators: int = 100,
        min_samples_leaf: int = 20,
        max_features: str | float = "sqrt",
        max_train_rows: int = 20000,
        n_jobs: int = 2,
        seed: int = 0,
    ):
        self.n_estimators, self.min_samples_leaf = int(n_estimators), int(min_samples_leaf)
        self.max_features, self.max_train_rows = max_features, int(max_train_rows)
        self.n_jobs, self.seed = int(n_jobs), int(seed)

    def params(self) -> dict:
        return {
            "n_estimators": self.n_estimators,
            "min_samples_leaf": self.min_samples_leaf,
            "max_features": self.max_features,
            "max_train_rows": self.max_train_rows,
            "n_jobs": self.n_jobs,
            "seed": self.seed,
        }

    def _make(self, head: int):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            n_jobs=self.n_jobs,
            random_state=self.seed + head,
        )

    def _fit_head(self, model, data, rows, i):
        if len(rows) > self.max_train_rows:
            model.set_params(max_samples=self.max_train_rows)
        model.set_params(n_jobs=_threads(self.n_jobs, len(rows)))
        return model.fit(data.X[rows], data.targets[rows, i].astype(np.int64))

    def fit(self, data):
        self.feature_names_ = data.feature_names
        return super().fit(data)

    def importance(self):
        cols = {
            f"{h}_importance": (
                m.feature_importances_ if not isinstance(m, float) else np.zeros(len(self.feature_names_))
            )
            for h, m in zip(HEADS, self.models_)
        }
        return pd.DataFrame({"feature": self.feature_names_, **cols})


class LightGBMBaseline(_PerHeadSklearn):
    """Gradient-boosted trees, early-stopped on the validation split's log loss."""

    name = "lightgbm"

    def __init__(
        self,
        n_estimators: int = 1000,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        early_stopping_rounds: int = 50,
        n_jobs: int = 2,
        seed: int = 0,
    ):
        self.n_estimators, self.learning_rate = int(n_estimators), float(learning_rate)
        self.num_leaves = int(num_leaves)
        self.min_child_samples, self.subsample = int(min_child_samples), float(subsample)
        self.colsample_bytree, self.early_stopping_rounds = float(colsample_bytree), int(early_stopping_rounds)
        self.n_jobs, self.seed = int(n_jobs), int(seed)

    def params(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "n_estimators",
                "learning_rate",
                "num_leaves",
                "min_child_samples",
                "subsample",
                "colsample_bytree",
                "early_stopping_rounds",
                "n_jobs",
                "seed",
            )
        }

    def _make(self, head: int):
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            subsample_freq=1,
            colsample_bytree=self.colsample_bytree,
            n_jobs=self.n_jobs,
            random_state=self.seed + head,
            verbose=-1,
        )

    def _fit_head(self, model, data, rows, i):
        import lightgbm as lgb

        X = pd.DataFrame(data.X[rows], columns=data.feature_names)
        y = data.targets[rows, i].astype(np.int64)
        model.set_params(n_jobs=_threads(self.n_jobs, len(rows)))
        val = data.rows(1)
        yv = data.targets[val, i]
        if len(val) and 0 < yv.mean() < 1:
            Xv = pd.DataFrame(data.X[val], columns=data.feature_names)
            model.fit(
                X,
                y,
                eval_X=(Xv,),
                eval_y=(yv.astype(np.int64),),
                eval_metric="binary_logloss",
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            )
        else:  # no usable validation split: a fixed, modest number of rounds
            model.set_params(n_estimators=min(self.n_estimators, 200))
            model.fit(X, y)
        return model

    def predict(self, data, rows):
        out = np.empty((len(rows), len(HEADS)), dtype=np.float64)
        X = pd.DataFrame(data.X[rows], columns=data.feature_names)
        for i, m in enumerate(self.models_):
            out[:, i] = m if isinstance(m, float) else m.predict_proba(X)[:, 1]
        return out

    def fit(self, data):
        self.feature_names_ = data.feature_names
        return super().fit(data)

    def importance(self):
        cols = {}
        for h, m in zip(HEADS, self.models_):
            cols[f"{h}_gain"] = (
                m.booster_.feature_importance("gain")
                if not isinstance(m, float)
                else np.zeros(len(self.feature_names_))
            )
        return pd.DataFrame({"feature": self.feature_names_, **cols})

    def best_iterations(self) -> dict:
        return {
            f"{h}_best_iteration": int(getattr(m, "best_iteration_", 0) or m.n_estimators)
            for h, m in zip(HEADS, self.models_)
            if not isinstance(m, float)
        }


class BGNBDBaseline(Baseline):
    """BG/NBD fitted by maximum likelihood on the training customers' purchases (time in days)."""

    name = "bgnbd"

    def __init__(self, penalizer: float = 0.0):
        self.penalizer = float(penalizer)

    def params(self) -> dict:
        return {"penalizer": self.penalizer}

    def fit(self, data: BaselineData) -> Baseline:
        from sellerlift.bgnbd import fit_bgnbd

        s = data.bgnbd.iloc[data.rows(0)]
        self.params_ = fit_bgnbd(s["frequency"], s["recency"], s["T"], penalizer=self.penalizer)
        return self

    def predict(self, data: BaselineData, rows: np.ndarray) -> np.ndarray:
        from sellerlift.bgnbd import p_no_purchase

        s = data.bgnbd.iloc[rows]
        args = (s["frequency"].to_numpy(), s["recency"].to_numpy(), s["T"].to_numpy())
        intent = 1.0 - p_no_purchase(self.params_, data.horizons["intent_days"], *args)
        churn = p_no_purchase(self.params_, data.horizons["churn_days"], *args)
        return np.clip(np.stack([intent, churn], axis=1), 0.0, 1.0)

    def fitted_params(self) -> dict:
        return {f"bgnbd_{k}": v for k, v in self.params_.to_dict().items()}


@dataclass
class BaselineResult:
    name: str
    model: Baseline
    fit_s: float
    test_rows: np.ndarray
    test_probs: np.ndarray  # [n_test, 2]
    metrics: dict[str, float]  # test/... and val/...


def fit_and_evaluate(model: Baseline, data: BaselineData, top_fraction: float = 0.2) -> BaselineResult:
    """Fit on train (val for early stopping), score val and test with the shared metric names."""
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    with threadpool_limits(limits=1 if len(data.rows(0)) < SMALL_DATA_ROWS else None):
        model.fit(data)
    fit_s = time.perf_counter() - t0
    test, val = data.rows(2), data.rows(1)
    p_test = model.predict(data, test)
    metrics = head_metrics(data.targets[test], p_test, "test/", top_fraction)
    if len(val):
        metrics.update(head_metrics(data.targets[val], model.predict(data, val), "val/", top_fraction))
    return BaselineResult(model.name, model, fit_s, test, p_test, metrics)
