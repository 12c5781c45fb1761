"""Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"), fitted by maximum likelihood.

A customer's transaction values are Gamma(p, nu) with nu ~ Gamma(q, gamma) across customers,
independent of the purchase process. From x repeat transactions with mean value m_x, the
conditional expected value of the customer's next transaction is

    E[M | x, m_x] = (p (gamma + x m_x)) / (p x + q - 1)

a weighted mean of the population mean p gamma / (q - 1) and the customer's own m_x. With
BG/NBD's expected purchases over a horizon it gives the classic customer value:
``expected_spend = E[purchases in (T, T + t]] * E[M]``. Fitted on customers with x >= 1 (the
model describes repeat transactions), as in the literature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def population_mean(self) -> float:
        return self.p * self.gamma / (self.q - 1.0) if self.q > 1 else float("inf")


def _check(frequency, monetary) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary, dtype=np.float64)
    if x.shape != m.shape:
        raise ValueError(f"frequency and monetary: expected one shape, got {x.shape} and {m.shape}")
    if not (np.isfinite(x).all() and np.isfinite(m).all()) or (x < 0).any() or (m < 0).any():
        raise ValueError("frequency and monetary: expected finite values >= 0")
    return x, m


def log_likelihood(params: GammaGammaParams | tuple, frequency, monetary) -> np.ndarray:
    """Per-customer log-likelihood of the mean transaction value m_x over x transactions (x >= 1)."""
    p, q, g = params if isinstance(params, tuple) else (params.p, params.q, params.gamma)
    x, m = _check(frequency, monetary)
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(g)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(g + m * x)
    )


def fit(frequency, monetary, init=(1.0, 1.0, 1.0), penalizer: float = 0.0) -> GammaGammaParams:
    """MLE on customers with frequency >= 1 and a positive mean value (the others carry no spend information)."""
    x, m = _check(frequency, monetary)
    keep = (x >= 1) & (m > 0)
    if keep.sum() < 10:
        raise ValueError(f"Gamma-Gamma needs repeat buyers with a positive spend; only {int(keep.sum())} found")
    x, m = x[keep], m[keep]
    scale = float(np.median(m))  # fit in units of the median basket: better conditioned, exact back-transform

    def nll(theta):
        p, q, g = np.exp(theta)
        return -log_likelihood((p, q, g), x, m / scale).sum() + penalizer * (theta**2).sum()

    best = None
    for start in (init, (2.0, 2.0, 2.0), (5.0, 3.0, 1.0)):
        res = minimize(nll, np.log(np.asarray(start, dtype=np.float64)), method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    p, q, g = np.exp(best.x)
    return GammaGammaParams(float(p), float(q), float(g * scale))


def expected_value(params: GammaGammaParams, frequency, monetary) -> np.ndarray:
    """E[value of a transaction | x, m_x]: the population mean for customers with no repeat purchase."""
    x, m = _check(frequency, monetary)
    p, q, g = params.p, params.q, params.gamma
    return np.where(x > 0, p * (g + x * m) / (p * x + q - 1.0), params.population_mean)


def expected_spend(bgnbd_params, gg_params: GammaGammaParams, horizon, frequency, recency, T, monetary) -> np.ndarray:
    """BG/NBD expected purchases in the next ``horizon`` (same unit as T) x Gamma-Gamma expected value."""
    from sellerlift.bgnbd import expected_purchases

    return expected_purchases(bgnbd_params, horizon, frequency, recency, T) * expected_value(
        gg_params, frequency, monetary
    )
