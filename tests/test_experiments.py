"""A/B tests, power calculator, DiD and event study (closed_loop.experiments, closed_loop.did) against planted effects.

Replication checks use fixed seeds (deterministic); coverage tolerances are 3 binomial
standard errors around the nominal 95 %, bias tolerances 3 Monte Carlo standard errors.
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats
from threadpoolctl import threadpool_limits

from sellerlift.closed_loop.did import did, event_study, plot_event_study
from sellerlift.closed_loop.experiments import ab_test, assign_ab, sample_size


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """The matrices here are small: extra BLAS threads would only contend with the other test worker."""
    with threadpool_limits(1):
        yield


def _binomial_ok(hits, n, p=0.95, z=3.0):
    return abs(hits / n - p) <= z * np.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------ assign_ab
def test_assign_ab_balances_every_seller():
    rng = np.random.default_rng(0)
    seller = np.repeat(np.arange(60), rng.integers(1, 40, size=60))
    rng.shuffle(seller)
    for frac in (0.5, 0.3):
        t = assign_ab(seller, frac=frac, seed=1)
        size = np.bincount(seller)
        n_t = np.bincount(seller, weights=t)
        assert t.dtype == bool and t.shape == seller.shape
        assert (np.abs(n_t - frac * size) < 1).all()  # within one customer of frac in every seller
    assert (assign_ab(seller, seed=3) == assign_ab(seller, seed=3)).all()
    assert (assign_ab(seller, seed=3) != assign_ab(seller, seed=4)).any()


def test_assign_ab_gives_every_customer_the_same_chance():
    seller = np.repeat([0, 1, 2], [3, 4, 7])  # odd sizes: the extra customer is random too
    share = np.mean([assign_ab(seller, frac=0.5, seed=s) for s in range(2000)], axis=0)
    assert np.abs(share - 0.5).max() < 4 * np.sqrt(0.25 / 2000), share
    with pytest.raises(ValueError, match=r"frac: expected a treated share in \(0, 1\)"):
        assign_ab(seller, frac=1.0)


# -------------------------------------------------------------------- ab_test
def test_ab_test_matches_welch_t_test():
    rng = np.random.default_rng(1)
    y = np.r_[rng.normal(1, 2, 80), rng.normal(0, 1, 50)]
    treated = np.r_[np.ones(80, bool), np.zeros(50, bool)]
    r = ab_test(y, treated, n_boot=500)
    ref = stats.ttest_ind(y[treated], y[~treated], equal_var=False)
    assert r.estimate == pytest.approx(y[treated].mean() - y[~treated].mean())
    assert r.p_value == pytest.approx(ref.pvalue)
    assert r.ci_t == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert (r.n_treat, r.n_control) == (80, 50)
    assert r.relative_lift == pytest.approx(r.estimate / r.mean_control)
    one = ab_test(y, treated, strata=np.zeros(130), n_boot=500)
    assert one.estimate == pytest.approx(r.estimate) and one.ci_t == pytest.approx(r.ci_t)
    assert r.ci_bootstrap[0] < r.estimate < r.ci_bootstrap[1]


def _ab_world(s, sizes, effect, stratified):
    """Skewed (revenue-like) outcomes; with ``stratified``, sellers differ in level and in effect."""
    rng = np.random.default_rng(s)
    seller = np.repeat(np.arange(len(sizes)), sizes)
    t = assign_ab(seller, seed=s)
    base = np.linspace(1.0, 4.0, len(sizes))[seller] if stratified else 2.0
    eff = np.asarray(effect)[seller] if stratified else effect
    y = rng.gamma(2.0, np.broadcast_to(base, seller.shape) / 2.0) + eff * t
    return y, t, seller


@pytest.mark.parametrize("stratified", [False, True])
def test_ab_test_intervals_cover_a_planted_effect(stratified):
    sizes = np.array([60, 20, 30, 40, 50]) if stratified else np.array([120])
    effect = np.array([0.2, 0.8, 0.0, 0.5, 1.0]) if stratified else 0.5
    truth = float(np.average(effect, weights=sizes)) if stratified else effect
    reps = 200
    est, cov_t, cov_b = np.empty(reps), 0, 0
    for s in range(reps):
        y, t, seller = _ab_world(s, sizes, effect, stratified)
        r = ab_test(y, t, strata=seller if stratified else None, n_boot=2000, seed=s)
        est[s] = r.estimate
        cov_t += r.ci_t[0] <= truth <= r.ci_t[1]
        cov_b += r.ci_bootstrap[0] <= truth <= r.ci_bootstrap[1]
    assert _binomial_ok(cov_t, reps), cov_t / reps
    assert _binomial_ok(cov_b, reps), cov_b / reps
    assert abs(est.mean() - truth) < 3 * est.std(ddof=1) / np.sqrt(reps), (est.mean(), truth)


def test_ab_test_p_values_are_uniform_under_the_null_and_strata_reduce_variance():
    rejections, se_strat, se_plain = 0, [], []
    for s in range(400):
        y, t, seller = _ab_world(s, np.array([30, 30, 30, 30]), np.zeros(4), stratified=True)
        r = ab_test(y, t, strata=seller, n_boot=0)
        rejections += r.p_value < 0.05
        se_strat.append(r.se)
        se_plain.append(ab_test(y, t, n_boot=0).se)
    assert _binomial_ok(rejections, 400, p=0.05), rejections / 400
    assert np.mean(se_strat) < 0.97 * np.mean(se_plain)  # sellers differ in level: stratifying helps


def test_ab_test_names_bad_inputs():
    with pytest.raises(ValueError, match=r"treated: expected length 3"):
        ab_test([1.0, 2.0, 3.0], [True, False])
    with pytest.raises(ValueError, match=r"treated: expected booleans or 0/1"):
        ab_test([1.0, 2.0, 3.0], [0, 1, 2])
    with pytest.raises(ValueError, match=r"every stratum needs >= 2 customers in each arm; 1 do not, e\.g\. \['b'\]"):
        ab_test(np.arange(8.0), [0, 0, 1, 1, 0, 0, 1, 0], strata=list("aaaabbbb"))
    with pytest.raises(ValueError, match=r"y: 1 non-finite values"):
        ab_test([1.0, np.nan, 3.0, 4.0], [0, 0, 1, 1])


# ---------------------------------------------------------------- sample_size
def _power(n, draw, reps, seed):
    rng = np.random.default_rng(seed)
    t = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    return np.mean([ab_test(draw(rng, t), t, n_boot=0).p_value < 0.05 for _ in range(reps)])


def test_sample_size_gives_the_power_asked_for_proportions():
    n = sample_size(0.10, 0.03)
    h = 2 * (np.arcsin(np.sqrt(0.13)) - np.arcsin(np.sqrt(0.10)))
    assert n == int(np.ceil((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) ** 2 * 2 / h**2))
    power = _power(n, lambda rng, t: (rng.random(len(t)) < np.where(t, 0.13, 0.10)).astype(float), 1000, 0)
    assert abs(power - 0.8) < 0.04, (n, power)


def test_sample_size_gives_the_power_asked_for_means():
    n = sample_size(10.0, 1.0, kind="mean", sd=5.0, power=0.9)
    power = _power(n, lambda rng, t: rng.normal(10.0 + t, 5.0), 1000, 1)
    assert abs(power - 0.9) < 0.03, (n, power)


def test_sample_size_responds_to_its_arguments():
    base = sample_size(0.10, 0.02)
    assert sample_size(0.10, 0.04) < base < sample_size(0.10, 0.02, power=0.9)
    assert sample_size(0.10, 0.02, alpha=0.01) > base
    assert sample_size(0.10, 0.02, ratio=2.0) < base  # a bigger control arm: fewer treated needed
    assert sample_size(0.10, -0.02) < base  # a drop to 8 % is easier to see than a rise to 12 % (lower variance)
    with pytest.raises(ValueError, match=r"baseline/lift: expected rates in \(0, 1\)"):
        sample_size(0.99, 0.05)
    with pytest.raises(ValueError, match=r"sd: kind='mean' needs"):
        sample_size(10.0, 1.0, kind="mean")
    with pytest.raises(ValueError, match=r"kind: expected 'proportion' or 'mean'"):
        sample_size(0.1, 0.01, kind="ratio")


# -------------------------------------------------------------------- panels
G, T, ADOPT = 40, 12, 6


def _panel(seed, effect=lambda rel: np.where(rel >= 0, 2.0, 0.0), rho=0.7, pre_trend=0.0):
    """Monthly revenue of G sellers: seller effects (adopters are bigger), seasonal month effects, AR(1)
    noise within seller, half the sellers adopting at month ADOPT with the effect ``effect(rel)``."""
    rng = np.random.default_rng(seed)
    treated = np.arange(G) < G // 2
    eps = np.empty((G, T))
    eps[:, 0] = rng.normal(0, 1 / np.sqrt(1 - rho**2), G)
    for m in range(1, T):
        eps[:, m] = rho * eps[:, m - 1] + rng.normal(0, 1, G)
    month = np.arange(T)
    rel = month[None, :] - ADOPT
    y = (rng.normal(10, 3, G) + 2 * treated)[:, None] + 1.5 * np.sin(2 * np.pi * month / 12) + 0.1 * month
    y = y + treated[:, None] * (effect(rel) + pre_trend * np.minimum(rel, 0)) + eps
    return pd.DataFrame(
        {
            "seller": np.repeat(np.arange(G), T),
            "month": np.tile(month, G),
            "treated": np.repeat(treated, T).astype(int),
            "post": np.tile(month >= ADOPT, G).astype(int),
            "revenue": y.ravel(),
        }
    )


def test_did_equals_the_dummy_variable_regression_on_an_unbalanced_panel():
    df = _panel(0).sample(frac=0.85, random_state=0)
    r = did(df)
    df = df.assign(d=df.treated * df.post)
    full = smf.ols("revenue ~ d + C(seller) + C(month)", df).fit(cov_type="cluster", cov_kwds={"groups": df.seller})
    assert r.estimate == pytest.approx(full.params["d"], rel=1e-9)
    # same clustered SE up to the documented small-sample factor: absorbed seller effects are not counted in K
    n, k_full, k_within = len(df), len(full.params), T
    assert r.se == pytest.approx(full.bse["d"] * np.sqrt((n - k_full) / (n - k_within)), rel=1e-9)
    assert r.ci[0] < 2.0 < r.ci[1] and r.ci[0] < r.estimate < r.ci[1]
    assert (r.n_units, r.n_periods, r.n_obs, r.n_treated_units) == (G, T, len(df), G // 2)
    assert r.p_value < 1e-3


def test_did_recovers_a_planted_effect_with_calibrated_clustered_errors():
    reps = 200
    est, se, cover, se_iid = np.empty(reps), np.empty(reps), 0, np.empty(reps)
    x_full = None
    for s in range(reps):
        df = _panel(s)
        r = did(df)
        est[s], se[s] = r.estimate, r.se
        cover += r.ci[0] <= 2.0 <= r.ci[1]
        if x_full is None:  # the same dummy design every rep (balanced panel)
            x_full = np.column_stack(
                [
                    df.treated * df.post,
                    pd.get_dummies(df.seller, dtype=float),
                    pd.get_dummies(df.month, drop_first=True, dtype=float),
                ]
            )
        se_iid[s] = sm.OLS(df.revenue.to_numpy(), x_full).fit().bse[0]
    assert _binomial_ok(cover, reps), cover / reps
    assert abs(est.mean() - 2.0) < 3 * est.std(ddof=1) / np.sqrt(reps), est.mean()
    assert 0.85 < se.mean() / est.std(ddof=1) < 1.15, (se.mean(), est.std(ddof=1))
    assert se_iid.mean() / est.std(ddof=1) < 0.8  # ignoring the serial correlation would be overconfident


def test_event_study_has_flat_pre_trends_and_recovers_the_dynamic_effect():
    effect = lambda rel: np.where(rel >= 0, 1.0 + 0.2 * rel, 0.0)
    reps = 100
    coefs, covered, rejections = [], [], 0
    for s in range(reps):
        es = event_study(_panel(s, effect=effect), ADOPT)
        coefs.append(es.estimate.to_numpy())
        truth = effect(es.rel_period.to_numpy())
        covered.append(((es.ci_low <= truth) & (truth <= es.ci_high))[~es.is_ref].to_numpy())
        rejections += es.attrs["pretrend_p_value"] < 0.05
    rel = es.rel_period.to_numpy()
    assert rel.tolist() == list(range(-ADOPT, T - ADOPT)) and es.is_ref.to_numpy()[rel == -1].all()
    coefs = np.array(coefs)
    mean, sem = coefs.mean(axis=0), coefs.std(axis=0, ddof=1) / np.sqrt(reps) + 1e-12
    assert (np.abs(mean - effect(rel)) < 3.5 * sem).all(), (mean, effect(rel))
    assert 0.92 <= np.mean(covered) <= 0.98, np.mean(covered)  # pooled over 11 correlated coefficients
    assert _binomial_ok(rejections, reps, p=0.05), rejections / reps


def test_event_study_detects_a_pre_trend_and_takes_an_adoption_column():
    es = event_study(_panel(0, pre_trend=0.6), ADOPT)
    assert es.attrs["pretrend_p_value"] < 0.01
    df = _panel(1)
    df["adopt"] = np.where(df.treated == 1, ADOPT, np.nan)
    by_col = event_study(df, "adopt")
    assert np.allclose(by_col.estimate, event_study(df, ADOPT).estimate)
    with pytest.raises(ValueError, match=r"adopt_period: expected one of the panel's periods"):
        event_study(df, 99)
    with pytest.raises(ValueError, match=r"ref: relative period -9 is not observed"):
        event_study(df, ADOPT, ref=-9)


def test_did_names_bad_inputs():
    df = _panel(0)
    with pytest.raises(ValueError, match=r"'sales': not a column of the panel"):
        did(df, y="sales")
    with pytest.raises(ValueError, match=r"treated: expected booleans or 0/1"):
        did(df.assign(treated=df.treated * 2))
    with pytest.raises(ValueError, match=r"not identified with unit and period effects"):
        did(df.assign(post=df.treated))  # treated x post constant within every seller


def test_plot_event_study_writes_the_figure(tmp_path):
    es = event_study(_panel(0), ADOPT)
    for truth in (2.0, np.where(es.rel_period >= 0, 2.0, 0.0)):
        path = plot_event_study(es, true_effect=truth, path=tmp_path / "plots" / "es.png")
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert plot_event_study(es, path=tmp_path / "bare.png").exists()
    with pytest.raises(ValueError, match=r"true_effect: expected a number or 12 values"):
        plot_event_study(es, true_effect=[1.0, 2.0], path=tmp_path / "x.png")
