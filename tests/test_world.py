"""The simulated world's day step: common random numbers, enduring effects and their documented signs."""

import numpy as np
import pytest
from scipy import stats

from sellerlift.sim import SimulatorConfig, simulate
from sellerlift.sim.config import ARCHETYPES, LEVELS
from sellerlift.sim.history import chunk_customers, logged_campaign
from sellerlift.sim.world import Campaign, Streams, World, poisson_icdf

CFG = SimulatorConfig(n_customers=4000, seed=11, chunk_size=4000, truth_replications=0)


def _world_at_cutoff(cfg=CFG):
    c, x0 = chunk_customers(cfg, 0)
    w = World(cfg, c, Streams(cfg.seed, 0, 0, len(c)), x0)
    for t in range(cfg.history_days):
        w.step(t, logged_campaign(w, t))
    return c, w.state()


def _forward(cfg, c, state, campaign_level=None, days=40, stream=5):
    w = World(cfg, c, Streams(cfg.seed, 0, stream, len(c)), state["x"])
    w.restore(state)
    t0 = cfg.history_days
    for t in range(t0, t0 + days):
        camp = None
        if t == t0 and campaign_level is not None:
            camp = Campaign(np.arange(len(c)), np.asarray(campaign_level))
        w.step(t, camp)
    return w


def test_poisson_by_inversion_is_poisson_and_coupled():
    rng = np.random.default_rng(0)
    u = rng.random(200_000)
    for lam in (0.003, 0.3, 2.5):
        k = poisson_icdf(np.full(len(u), lam), u)
        counts = np.bincount(k, minlength=8)[:8]
        expected = stats.poisson.pmf(np.arange(8), lam) * len(u)
        keep = expected > 20
        assert stats.chisquare(counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum()).pvalue > 1e-3
    low, high = poisson_icdf(np.full(len(u), 0.2), u), poisson_icdf(np.full(len(u), 0.4), u)
    assert (high >= low).all()  # the same uniforms: a higher rate never gives fewer events


def test_common_random_numbers_rerun_and_unaffected_customers():
    c, state = _world_at_cutoff()
    a, b = _forward(CFG, c, state), _forward(CFG, c, state)
    for name in ("n_purchases", "cum_gross", "alive", "x"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))  # a policy minus itself: exactly 0
    # offer the top level to one alive customer only: nobody else's purchases or deaths change
    who = int(np.flatnonzero(state["alive"])[0])
    w = World(CFG, c, Streams(CFG.seed, 0, 5, len(c)), state["x"])
    w.restore(state)
    w.step(CFG.history_days, Campaign(np.array([who]), np.array([len(LEVELS) - 1])))
    for t in range(CFG.history_days + 1, CFG.history_days + 40):
        w.step(t)
    others = np.arange(len(c)) != who
    np.testing.assert_array_equal(w.n_purchases[others], a.n_purchases[others])
    np.testing.assert_array_equal(w.alive[others], a.alive[others])


def test_redemption_shifts_engagement_and_reference_memory():
    c, state = _world_at_cutoff()
    base = _forward(CFG, c, state, days=1)
    top = _forward(CFG, c, state, campaign_level=np.full(len(c), len(LEVELS) - 1), days=1)
    red = top.redeemed
    assert red.sum() > 100
    # day 1: every state moved by the same innovation; a redemption adds habit * 30 / 30 on top
    np.testing.assert_allclose(top.x[red] - base.x[red], CFG.rho * c.habit[red], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(top.ref[red] - base.ref[red], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(top.x[~red], base.x[~red])


@pytest.fixture(scope="module")
def truth():
    return simulate(SimulatorConfig(n_customers=12_000, seed=3, truth_replications=4), progress=False).truth


def test_documented_effect_signs_by_archetype(truth):
    t = truth[truth.alive_at_cutoff]
    m = 0.4
    for arch, sign in (("new_low_engagement", 1), ("intermittent", 1), ("promotion_sensitive", -1)):
        g = t[t.archetype == arch]
        diff = g["p_retain_30"] - g["p_retain_0"]
        se = np.sqrt((g["p_retain_30_diff_se"] ** 2).sum()) / len(g)
        assert sign * diff.mean() > 3 * se, (arch, diff.mean(), se)
    hv = t[t.archetype == "high_value"]
    enduring = (m * (hv["gross_90d_30"] - hv["gross_90d_0"]) - hv["cost_90d_30"]).mean()
    direct = (hv["p_response_30"] * hv["value"] * (m - 0.3) - hv["p_response_0"] * hv["value"] * m).mean()
    assert enduring < direct < 0  # discounting those who buy anyway costs more than the week shows
    assert set(ARCHETYPES) == set(t.archetype)


def test_without_enduring_effects_an_offer_changes_nothing_after_its_week():
    cfg = SimulatorConfig(n_customers=2000, seed=3, truth_replications=2, enduring=False)
    t = simulate(cfg, progress=False).truth
    for d in LEVELS[1:]:
        np.testing.assert_array_equal(t[f"p_retain_{d}"], t["p_retain_0"])


def test_truth_standard_errors_shrink_with_common_random_numbers(truth):
    alive = truth[truth.alive_at_cutoff]
    assert alive["gross_90d_30_diff_se"].mean() < 0.5 * alive["gross_90d_30_se"].mean()
    assert np.isfinite(alive["clv_90d"]).all() and (alive["clv_90d"] >= 0).all()
