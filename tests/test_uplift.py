"""Uplift metrics against hand-computed small cases (definitions of scikit-uplift, weighted)."""

import numpy as np
import pytest

from sellerlift import metrics as uplift

# 4 customers, scores already in descending order
Y = np.array([1, 0, 1, 0])
T = np.array([1, 1, 0, 0])
S = np.array([0.9, 0.8, 0.7, 0.6])


def test_qini_curve_by_hand():
    # cumulative (N_t, Y_t, N_c, Y_c): (1,1,0,0) (2,1,0,0) (2,1,1,1) (2,1,2,1)
    # qini = Y_t - Y_c N_t / N_c (ratio 0 while N_c = 0): 1, 1, 1 - 2 = -1, 1 - 1 = 0
    x, q = uplift.qini_curve(Y, T, S)
    np.testing.assert_allclose(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(q, [0, 1, 1, -1, 0])


def test_uplift_curve_by_hand():
    # (Y_t/N_t - Y_c/N_c) * n: 1*1, 0.5*2, (0.5 - 1)*3, 0*4
    x, u = uplift.uplift_curve(Y, T, S)
    np.testing.assert_allclose(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(u, [0, 1, 1, -1.5, 0])


def test_normalised_scores_by_hand():
    # Qini area 1.0, random line area 0; perfect ranking y*t - y*(1-t) = [1, 0, -1, 0] gives the
    # points (1, 1), (3, 1) (tie group), (4, 0): area 3.0 -> 1/3.
    assert uplift.qini_auc_score(Y, T, S) == pytest.approx(1 / 3)
    # Uplift area 0.5; sklift's perfect score 2*(y == t) + t = [3, 1, 0, 2] gives 1, 2, 1.5, 0: area 4.5.
    assert uplift.uplift_auc_score(Y, T, S) == pytest.approx(1 / 9)


def test_ties_are_grouped():
    # all scores equal: one point at the end, the curve is the straight line -> normalised score 0
    x, q = uplift.qini_curve(Y, T, np.zeros(4))
    np.testing.assert_allclose(x, [0, 4])
    np.testing.assert_allclose(q, [0, 0])
    assert uplift.qini_auc_score(Y, T, np.zeros(4)) == pytest.approx(0.0)


def test_weights_equal_duplicated_rows_and_constant_weights_change_nothing():
    rng = np.random.default_rng(0)
    n = 200
    y, t = rng.random(n) < 0.3, rng.random(n) < 0.5
    s = rng.normal(size=n).round(1)  # with ties
    w = rng.integers(1, 4, n)
    rep = np.repeat(np.arange(n), w)
    for f in (uplift.qini_auc_score, uplift.uplift_auc_score):
        assert f(y, t, s, w) == pytest.approx(f(y[rep], t[rep], s[rep]))
        assert f(y, t, s, np.full(n, 2.5)) == pytest.approx(f(y, t, s))
    x, q = uplift.qini_curve(y, t, s, w)
    xr, qr = uplift.qini_curve(y[rep], t[rep], s[rep])
    np.testing.assert_allclose(x, xr)
    np.testing.assert_allclose(q, qr)


def test_ipw_qini_recovers_randomised_ranking_quality():
    """On logged data with confounded treatment, IPW weights bring the Qini back to the RCT value."""
    rng = np.random.default_rng(1)
    n = 60_000
    x = rng.normal(size=n)
    tau = 0.1 * (x > 0)  # true uplift only for x > 0
    base = 0.1 + 0.05 * (x > 0)
    e = np.where(x > 0, 0.8, 0.2)  # logged policy treats x > 0 mostly
    t_log = rng.random(n) < e
    y_log = rng.random(n) < base + tau * t_log
    t_rct = rng.random(n) < 0.5
    y_rct = rng.random(n) < base + tau * t_rct
    score = x + rng.normal(0, 0.5, n)
    w = np.where(t_log, 1 / e, 1 / (1 - e))

    def area(*args):  # area above the random line, both axes as shares of the population
        x, q = uplift.qini_curve(*args)
        return (np.trapezoid(q, x) - x[-1] * q[-1] / 2) / x[-1] ** 2

    rct = area(y_rct, t_rct, score)
    ipw = area(y_log, t_log, score, w)
    naive = area(y_log, t_log, score)
    assert abs(ipw - rct) < 0.3 * abs(rct)
    assert abs(naive - rct) > abs(ipw - rct)


def test_perfect_and_reversed_rankings():
    rng = np.random.default_rng(2)
    n = 4000
    t = rng.random(n) < 0.5
    g = rng.random(n) < 0.5  # responders to treatment only
    y = t & g
    assert uplift.qini_auc_score(y, t, g + 0.01 * rng.random(n)) > 0.3
    assert uplift.qini_auc_score(y, t, -(g + 0.01 * rng.random(n))) < 0


def test_ece_and_curve_metrics():
    assert uplift.ece([0, 1, 1, 1], [0.2, 0.2, 0.8, 0.8], n_bins=10) == pytest.approx((0.3 * 2 + 0.2 * 2) / 4)
    true = np.tile(np.linspace(0.1, 0.4, 7), (3, 1))
    pred = true.copy()
    pred[0, 3] = pred[0, 2] - 0.05  # one non-monotone curve
    m = uplift.curve_metrics(pred, true)
    assert m["non_monotone_frac"] == pytest.approx(1 / 3)
    assert m["curve_rmse"] == pytest.approx(np.sqrt(np.mean((pred - true) ** 2)))
    true[1:] += np.array([[0.0], [0.1]])  # curves that differ, so the correlation is defined
    assert uplift.curve_metrics(true, true)["uplift_rmse"] == 0


def test_input_validation():
    with pytest.raises(ValueError, match="equal lengths"):
        uplift.qini_curve([1, 0], [1], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        uplift.qini_curve([1, 0], [1, 0], [np.nan, 0.2])
