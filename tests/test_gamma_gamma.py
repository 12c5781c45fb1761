"""Gamma-Gamma spend: recovers simulated parameters, reproduces the published CDNOW fit, sensible posteriors."""

import numpy as np
import pytest
from cdnow_files import cdnow_events

from sellerlift import gamma_gamma as gg
from sellerlift.bgnbd import BGNBDParams, expected_purchases, rfm_summary_for_bgnbd

PUBLISHED = {"p": 6.25, "q": 3.74, "gamma": 15.44}  # Fader, Hardie & Lee (2005), CDNOW 1/10 sample, 39 weeks


def test_recovers_simulated_parameters():
    rng = np.random.default_rng(0)
    true = gg.GammaGammaParams(6.0, 4.0, 15.0)
    n = 6000
    nu = rng.gamma(true.q, 1.0 / true.gamma, n)  # per-customer scale
    x = rng.integers(1, 12, n)
    m = np.array([rng.gamma(true.p, 1.0 / v, k).mean() for v, k in zip(nu, x)])
    fit = gg.fit(x, m)
    for k, v in true.to_dict().items():
        assert getattr(fit, k) == pytest.approx(v, rel=0.12), (k, fit)
    assert fit.population_mean == pytest.approx(true.population_mean, rel=0.05)


def test_cdnow_sample_reproduces_published_fit():
    s = rfm_summary_for_bgnbd(cdnow_events("sample"), "1997-10-01", freq="W")
    fit = gg.fit(s["frequency"], s["monetary_value"])
    for k, v in PUBLISHED.items():
        assert getattr(fit, k) == pytest.approx(v, rel=0.01), fit


def test_expected_value_shrinks_to_the_population_mean():
    p = gg.GammaGammaParams(6.0, 4.0, 15.0)
    ev = gg.expected_value(p, np.array([0, 1, 50]), np.array([0.0, 100.0, 100.0]))
    assert ev[0] == pytest.approx(p.population_mean)  # no repeat purchase: the prior mean (30)
    assert p.population_mean < ev[1] < ev[2] < 100.0  # more transactions: closer to the customer's own mean
    spend = gg.expected_spend(
        BGNBDParams(0.25, 4.4, 0.8, 2.4), p, 13.0, np.array([3.0]), np.array([20.0]), np.array([30.0]), np.array([40.0])
    )
    assert spend[0] == pytest.approx(
        expected_purchases(BGNBDParams(0.25, 4.4, 0.8, 2.4), 13.0, 3.0, 20.0, 30.0)
        * gg.expected_value(p, np.array([3.0]), np.array([40.0]))[0]
    )
    with pytest.raises(ValueError, match="repeat buyers"):
        gg.fit([0, 0], [0.0, 0.0])
