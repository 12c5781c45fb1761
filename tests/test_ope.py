"""Off-policy evaluation (closed_loop.ope) on a synthetic contextual bandit whose policy values are known.

The logging policy is confounded (arms 1-2 are logged more often for customers with a high
baseline reward), so the naive mean of matching rewards is biased; the propensities are
known exactly and bounded below by 0.0375. Replication checks use fixed seeds, so they are
deterministic; tolerances are ~3 Monte Carlo standard errors.
"""

import numpy as np
import pytest
from scipy.optimize import linprog
from threadpoolctl import threadpool_limits

from sellerlift.closed_loop import ope


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """The matrices here are small: extra BLAS threads would only contend with the other test worker."""
    with threadpool_limits(1):
        yield


K = 4
COST = np.array([0.0, 0.2, 0.5, 0.8])
N, REPS, BIAS_REPS = 1000, 300, 1000  # units per logged round; seeds with bootstrap intervals; seeds for bias


def _effects(x):
    return np.stack([np.zeros(len(x)), 0.3 * (1 + x[:, 1]), 0.5 + 0.4 * x[:, 0], 0.6 * x[:, 1] - 0.2], axis=1)


def world(n, seed):
    """Features, true mean rewards mu [n, K], logging propensities, one logged round, the target policy."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    tau = _effects(x)
    mu = (1.0 + 0.5 * x[:, 0])[:, None] + tau
    logits = np.stack([np.zeros(n), 0.8 * x[:, 0], 1.2 * x[:, 0] - 0.3, -0.5 * x[:, 0] + 0.5 * x[:, 1]], axis=1)
    pi = np.exp(logits - logits.max(axis=1, keepdims=True))
    pi = 0.85 * pi / pi.sum(axis=1, keepdims=True) + 0.15 / K
    a = (rng.random(n)[:, None] > np.cumsum(pi, axis=1)).sum(axis=1)
    r = np.arange(n)
    t = np.argmax(tau - 0.3 * COST, axis=1)  # target: best effect net of a cost penalty
    cost = COST * (1 + 0.5 * (x[:, :1] > 0))
    return dict(
        x=x,
        mu=mu,
        tau=tau,
        pi=pi,
        a=a,
        e=pi[r, a],
        y=mu[r, a] + rng.normal(size=n),
        t=t,
        cost=cost,
        value=mu[r, t].mean(),
    )  # value: the sample's own true policy value


@pytest.fixture(scope="module")
def truth():
    big = world(1_000_000, 10_000)
    return big["value"]


def _binomial_ok(hits, n, p=0.95, z=3.0):
    return abs(hits / n - p) <= z * np.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def replications(truth):
    """Per seed: the three estimates (q = the true mean rewards), CI coverage of the population value
    (the first REPS seeds), and the estimates under a wrong outcome model and under wrong propensities."""
    rows = []
    for s in range(BIAS_REPS):
        d = world(N, s)
        good = ope.evaluate(d["y"], d["a"], d["e"], d["t"], q=d["mu"], n_boot=400 if s < REPS else 0, seed=s)
        bad_q = d["mu"] + 1.0 + 0.8 * d["x"][:, :1] - 0.5 * np.arange(K)  # biased, arm- and x-dependent
        wrong_e = np.full(N, 1.0 / K)  # ignores the confounding
        rows.append(
            {
                "value": d["value"],
                **{f"{k}": v.estimate for k, v in good.items()},
                **{f"cover_{k}": v.ci[0] <= truth <= v.ci[1] for k, v in good.items()},
                "naive": d["y"][d["a"] == d["t"]].mean(),
                "dr_bad_q": ope.dr(d["y"], d["a"], d["e"], d["t"], bad_q),
                "dr_wrong_e": ope.dr(d["y"], d["a"], wrong_e, d["t"], d["mu"]),
                "ipw_wrong_e": ope.ipw(d["y"], d["a"], wrong_e, d["t"]),
            }
        )
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _bias_z(rep, key):
    """Mean error vs each sample's own true value, in standard errors of that mean."""
    err = rep[key] - rep["value"]
    return err.mean() / (err.std(ddof=1) / np.sqrt(len(err))), err.mean()


def test_the_bandit_is_confounded(replications):
    z, bias = _bias_z(replications, "naive")
    assert z > 10 and bias > 0.1, (z, bias)  # matching logged rewards alone overstate the target's value


@pytest.mark.parametrize("key", ["ipw", "snipw", "dr"])
def test_estimators_are_unbiased_with_the_true_propensities(replications, key):
    z, bias = _bias_z(replications, key)
    assert abs(z) < 3 and abs(bias) < 0.01, (key, z, bias)


def test_dr_has_lower_variance_than_ipw_with_a_good_outcome_model(replications):
    rep = replications
    var = {k: np.var(rep[k] - rep["value"]) for k in ("ipw", "snipw", "dr")}
    assert var["dr"] < 0.6 * var["ipw"] and var["dr"] < var["snipw"], var
    assert np.var(rep["dr"]) < 0.6 * np.var(rep["ipw"])  # also around the population value


@pytest.mark.parametrize("key", ["ipw", "snipw", "dr"])
def test_bootstrap_intervals_cover_the_true_value_near_95_percent(replications, key):
    hits = int(replications[f"cover_{key}"][:REPS].sum())
    assert _binomial_ok(hits, REPS), (key, hits / REPS)


def test_dr_is_unbiased_with_a_wrong_outcome_model_and_right_propensities(replications):
    z, bias = _bias_z(replications, "dr_bad_q")
    assert abs(z) < 3 and abs(bias) < 0.015, (z, bias)


def test_dr_is_unbiased_with_wrong_propensities_and_a_right_outcome_model(replications):
    z, bias = _bias_z(replications, "dr_wrong_e")
    assert abs(z) < 3 and abs(bias) < 0.01, (z, bias)
    z_ipw, _ = _bias_z(replications, "ipw_wrong_e")
    assert abs(z_ipw) > 10  # while IPW with the same wrong propensities is badly biased


def test_scores_agree_with_the_estimates_and_with_each_other():
    d = world(500, 1)
    y, a, e, t, q = d["y"], d["a"], d["e"], d["t"], d["mu"]
    res = ope.evaluate(y, a, e, t, q=q, n_boot=50)
    assert res["ipw"].estimate == pytest.approx(ope.ipw_scores(y, a, e, t).mean())
    assert res["snipw"].estimate == pytest.approx(ope.snipw(y, a, e, t))
    assert res["dr"].estimate == pytest.approx(ope.dr(y, a, e, t, q))
    g = ope.dr_scores(y, a, e, q)
    assert g.shape == (500, K)
    assert ope.dr(y, a, e, t, q) == pytest.approx(g[np.arange(500), t].mean())
    # with q = 0 the DR score of a policy is its IPW score
    assert np.allclose(ope.dr_scores(y, a, e, np.zeros((500, K)))[np.arange(500), t], ope.ipw_scores(y, a, e, t))
    # SNIPW is invariant to shifting the reward, IPW is not
    assert ope.snipw(y + 5, a, e, t) == pytest.approx(ope.snipw(y, a, e, t) + 5)
    w = (a == t) / e
    assert res["dr"].ess == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert 0 < res["dr"].ess < 500
    lo, hi = res["dr"].ci
    assert lo < res["dr"].estimate < hi


def test_clipping_caps_the_weights():
    d = world(2000, 2)
    y, a, e, t = d["y"], d["a"], d["e"], d["t"]
    clipped = ope.ipw_scores(y, a, e, t, clip=0.2)
    assert np.allclose(clipped, np.where(a == t, y / np.maximum(e, 0.2), 0))
    assert ope.evaluate(y, a, e, t, clip=0.2, n_boot=0)["ipw"].ess > ope.evaluate(y, a, e, t, n_boot=0)["ipw"].ess


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(e=np.zeros(10)), r"e: propensities must lie in \(0, 1\]"),
        (dict(e=np.full(10, 1.5)), r"e: propensities must lie in \(0, 1\]"),
        (dict(a=np.arange(10) % 5), r"a: arm indices must lie in 0\.\.3"),
        (dict(t=np.full(10, 0.5)), r"t: expected integer arm indices"),
        (dict(q=np.zeros((10, 3))), r"a: arm indices must lie in 0\.\.2"),
        (dict(q=np.zeros((9, 4))), r"q: expected shape \(10, K\)"),
        (dict(y=np.zeros(9), q=None), r"a: expected one arm per unit, shape \(9,\)"),
        (dict(clip=1.0), r"clip: expected a propensity floor in \(0, 1\)"),
    ],
)
def test_bad_inputs_are_named(bad, match):
    args = dict(y=np.ones(10), a=np.arange(10) % K, e=np.full(10, 0.25), t=np.zeros(10, dtype=int), q=np.zeros((10, K)))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        ope.evaluate(**args, n_boot=10)


# ---------------------------------------------------------------- budget curve
def _lp_value(tau, cost, budget):
    """Exact optimum of the multiple-choice knapsack's LP relaxation (HiGHS): mean effect at mean spend <= budget."""
    n, k = tau.shape
    a_eq = np.kron(np.eye(n), np.ones(k))
    res = linprog(
        -tau.ravel() / n,
        A_ub=cost.ravel()[None] / n,
        b_ub=[budget],
        A_eq=a_eq,
        b_eq=np.ones(n),
        bounds=(0, 1),
        method="highs",
    )
    assert res.status == 0
    return -res.fun


def test_budget_curve_is_the_lp_optimum_in_sample():
    rng = np.random.default_rng(0)
    for _ in range(5):
        tau = np.column_stack([np.zeros(30), rng.normal(0.2, 0.5, size=(30, 4))])
        cost = np.column_stack([np.zeros(30), rng.uniform(0.1, 1.0, size=(30, 4))])
        budgets = np.array([0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 2.0])
        curve = ope.budget_curve(tau, cost, budgets, n_boot=0)
        assert np.allclose(curve["gain"], [_lp_value(tau, cost, b) for b in budgets], atol=1e-9)
        assert curve["gain"].iloc[0] == 0 and (np.diff(curve["gain"]) >= -1e-12).all()
        assert (curve["spend"] <= budgets + 1e-12).all()


def _logged_scores(d, q):
    g = ope.dr_scores(d["y"], d["a"], d["e"], q)
    return g - g[:, :1]


BUDGETS = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6])


@pytest.fixture(scope="module")
def curve_replications():
    # the true curve of the allocation chosen by the (correct) effects: population version on a large sample
    big = world(400_000, 20_000)
    true_curve = ope.budget_curve(big["tau"], big["cost"], BUDGETS, n_boot=0)["gain"].to_numpy()
    gains, covered = [], []
    for s in range(200):
        d = world(N, 100 + s)
        q = d["mu"] + np.random.default_rng(s).normal(0, 0.3, size=d["mu"].shape)  # a noisy outcome model
        c = ope.budget_curve(
            _logged_scores(d, q), d["cost"], BUDGETS, reference_policy_effects=d["tau"], n_boot=200, seed=s
        )
        gains.append(c["gain"].to_numpy())
        covered.append((c["ci_low"] <= true_curve + 1e-12) & (true_curve <= c["ci_high"] + 1e-12))
    return true_curve, np.array(gains), np.array(covered)


def test_budget_curve_is_zero_at_budget_zero_and_increasing_in_expectation(curve_replications):
    true_curve, gains, _ = curve_replications
    assert (gains[:, 0] == 0).all()
    assert (np.diff(true_curve) > 0).all()
    mean, sd = gains.mean(axis=0), gains.std(axis=0, ddof=1) / np.sqrt(len(gains))
    assert (np.diff(mean) > -3 * np.sqrt(sd[1:] ** 2 + sd[:-1] ** 2)).all(), mean
    assert np.allclose(mean, true_curve, atol=3 * sd.max() + 1e-3), (mean, true_curve)  # unbiased too


def test_budget_curve_intervals_cover_the_true_curve(curve_replications):
    _, _, covered = curve_replications
    reps = len(covered)
    for j in range(1, covered.shape[1]):  # budget 0: the interval is [0, 0] and the truth is 0
        assert _binomial_ok(int(covered[:, j].sum()), reps), (BUDGETS[j], covered[:, j].mean())


def test_budget_curve_inputs_are_checked():
    tau = np.zeros((5, 3))
    with pytest.raises(ValueError, match="cost: every arm but arm 0 must cost more"):
        ope.budget_curve(tau, np.zeros((5, 3)), [0.1])
    with pytest.raises(ValueError, match=r"cost: expected shape \(5, 3\)"):
        ope.budget_curve(tau, np.ones((5, 2)), [0.1])
    with pytest.raises(ValueError, match="budgets: expected a 1-d array"):
        ope.budget_curve(tau, np.ones((5, 3)) - np.eye(3)[0], [-1.0])
    flat = ope.budget_curve(tau - 1, np.ones((5, 3)) - np.eye(3)[0], [0.0, 1.0], n_boot=5)  # nothing worth its cost
    assert (flat["gain"] == 0).all() and (flat["spend"] == 0).all()
