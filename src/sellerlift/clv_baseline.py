"""The classic customer-value (CLV) baseline: BG/NBD x Gamma-Gamma, on the baselines' shared inputs.

BG/NBD's expected purchase days over the churn horizon (:mod:`sellerlift.bgnbd`) times Gamma-Gamma's expected
spend per purchase day (:mod:`sellerlift.gamma_gamma`), both fitted on the training customers of a
:class:`sellerlift.baselines.BaselineData`. It is scored against the sequence model's value head with the
metrics of :mod:`sellerlift.value_metrics` (:mod:`sellerlift.stages.value_baselines`).
"""

from __future__ import annotations

import numpy as np

from sellerlift.baselines import BaselineData


class BGNBDGammaGammaValue:
    """Customer value the classic way: BG/NBD expected purchase days over the churn horizon x Gamma-Gamma expected
    spend per purchase day, both fitted on the training customers (BG/NBD in days; Gamma-Gamma on repeat buyers)."""

    name = "bgnbd_gg"

    def __init__(self, penalizer: float = 0.0):
        self.penalizer = float(penalizer)

    def params(self) -> dict:
        return {"penalizer": self.penalizer}

    def fit(self, data: BaselineData) -> BGNBDGammaGammaValue:
        """Raises ValueError when there is nothing to fit Gamma-Gamma on (no repeat buyer with a positive spend)."""
        from sellerlift import gamma_gamma
        from sellerlift.bgnbd import fit_bgnbd

        s = data.bgnbd.iloc[data.rows(0)]
        self.bgnbd_ = fit_bgnbd(s["frequency"], s["recency"], s["T"], penalizer=self.penalizer)
        self.gg_ = gamma_gamma.fit(s["frequency"], s["monetary_value"], penalizer=self.penalizer)
        return self

    def predict(self, data: BaselineData, rows: np.ndarray) -> np.ndarray:
        """[n, 2]: expected spend and expected purchase days over ``horizons["churn_days"]``."""
        from sellerlift import gamma_gamma
        from sellerlift.bgnbd import expected_purchases

        s = data.bgnbd.iloc[rows]
        x, tx, T, m = (s[c].to_numpy() for c in ("frequency", "recency", "T", "monetary_value"))
        n = expected_purchases(self.bgnbd_, float(data.horizons["churn_days"]), x, tx, T)
        return np.stack([n * gamma_gamma.expected_value(self.gg_, x, m), n], axis=1)

    def fitted_params(self) -> dict:
        return {
            **{f"bgnbd_{k}": v for k, v in self.bgnbd_.to_dict().items()},
            **{f"gamma_gamma_{k}": v for k, v in self.gg_.to_dict().items()},
        }
