"""Tests for the simulator: contract, determinism, exact labels, calibrated truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sellerlift.schema import DISCOUNT_LEVELS, EVENT_TYPES, validate
from sellerlift.sim import (
    ARCHETYPES,
    RESPONSE_COLUMNS,
    SimulatedData,
    SimulatorConfig,
    load_simulated,
    policy_probs,
    prob_no_purchase,
    simulate,
    simulate_cached,
)
from sellerlift.sim import history as sim_mod

SMALL = SimulatorConfig(n_customers=3000, seed=1, chunk_size=1000)
EVENT_COLUMNS = ["customer_id", "seller_id", "ts", "event_type", "amount", "quantity"]
PROMO_COLUMNS = [
    "customer_id",
    "seller_id",
    "ts",
    "discount_pct",
    "converted",
    "revenue",
    "cost",
    "randomized",
    "propensity",
]


@pytest.fixture(scope="module")
def small() -> SimulatedData:
    return simulate(SMALL, progress=False)


@pytest.fixture(scope="module")
def large() -> SimulatedData:
    """~20k customers for statistical checks (a few seconds)."""
    return simulate(SimulatorConfig(n_customers=20_000, seed=7), progress=False)


def _day(ts: pd.Series, start: str) -> np.ndarray:
    return ((ts - pd.Timestamp(start)) // pd.Timedelta(days=1)).to_numpy()


def assert_same_frame(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Exact equality of columns, dtypes and values (much faster than assert_frame_equal on categoricals)."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for col in a.columns:
        x, y = a[col], b[col]
        assert x.dtype == y.dtype, (col, x.dtype, y.dtype)
        if isinstance(x.dtype, pd.CategoricalDtype):
            assert list(x.cat.categories) == list(y.cat.categories), col
            x, y = x.cat.codes, y.cat.codes
        np.testing.assert_array_equal(x.to_numpy(), y.to_numpy(), err_msg=col)


# --------------------------------------------------------------------------- contract


def test_tables_follow_the_contract(small):
    ev, pr, tr = small.events, small.promotions, small.truth
    assert list(ev.columns) == EVENT_COLUMNS
    assert list(pr.columns) == PROMO_COLUMNS
    assert_same_frame(validate(ev, "events"), ev)
    assert_same_frame(validate(pr, "promotions"), pr)
    assert list(ev.event_type.cat.categories) == list(EVENT_TYPES)
    assert ev.ts.dtype == "datetime64[us]" and pr.ts.dtype == "datetime64[us]"
    assert ev[["customer_id", "seller_id", "quantity"]].dtypes.eq(np.int64).all()
    # sorted by customer, then time
    assert (np.diff(ev.customer_id.to_numpy()) >= 0).all()
    same = np.diff(ev.customer_id.to_numpy()) == 0
    assert (np.diff(ev.ts.to_numpy())[same] >= np.timedelta64(0)).all()
    # amounts and quantities only on purchases
    is_p = (ev.event_type == "purchase").to_numpy()
    assert (ev.amount.to_numpy()[~is_p] == 0).all() and (ev.amount.to_numpy()[is_p] > 0).all()
    assert (ev.quantity.to_numpy()[~is_p] == 0).all() and (ev.quantity.to_numpy()[is_p] >= 1).all()
    assert set(pr.discount_pct.unique()) <= set(DISCOUNT_LEVELS)
    # truth: one row per customer, global ids 0..n-1
    assert tr.customer_id.tolist() == list(range(SMALL.n_customers))
    for col in [
        "archetype",
        "start_day",
        "alive_at_cutoff",
        "value",
        "p_intent_7d",
        "p_churn_90d",
        "intent_7d",
        "churn_90d",
        *RESPONSE_COLUMNS,
    ]:
        assert col in tr.columns
    assert small.cutoff == pd.Timestamp("2026-01-01")


def test_events_start_on_the_start_day_with_a_visit(small):
    first = small.events.groupby("customer_id", observed=True).first()
    tr = small.truth.set_index("customer_id")
    assert (first.event_type == "visit").all()
    np.testing.assert_array_equal(_day(first.ts, SMALL.start), tr.loc[first.index, "start_day"].to_numpy())
    assert len(first) == SMALL.n_customers  # everyone has at least the first visit


def test_every_seller_belongs_to_one_seller_per_customer(small):
    per_customer = small.events.groupby("customer_id").seller_id.nunique()
    assert (per_customer == 1).all()
    sizes = small.truth.seller_id.value_counts()
    assert sizes.max() > 3 * sizes.median()  # heavy-tailed seller sizes


def test_config_validation_and_fingerprint():
    with pytest.raises(ValueError):
        SimulatorConfig(future_days=30)
    with pytest.raises(ValueError):
        SimulatorConfig(archetype_shares=(0.5, 0.5, 0.1, 0.1))
    a, b = SimulatorConfig(seed=1), SimulatorConfig(seed=2)
    assert a.fingerprint() == SimulatorConfig(seed=1).fingerprint()
    assert a.fingerprint() != b.fingerprint()
    assert SimulatorConfig(history_days=100).cutoff == pd.Timestamp("2025-04-11")


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_frames_other_seed_different(small):
    again = simulate(SMALL, progress=False)
    for name in ("events", "promotions", "truth"):
        assert_same_frame(getattr(small, name), getattr(again, name))
    other = simulate(SimulatorConfig(n_customers=1000, seed=2, chunk_size=1000), progress=False)
    assert not small.truth.archetype.head(1000).equals(other.truth.archetype)
    assert not small.events.head(1000).equals(other.events.head(1000))


def test_same_seed_same_parquet_bytes(tmp_path):
    cfg = SimulatorConfig(n_customers=800, seed=3, chunk_size=300)
    a, b = simulate(cfg, tmp_path / "a", progress=False), simulate(cfg, tmp_path / "b", progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert Path("events/part-00002.parquet") in files_a and Path("_SUCCESS") in files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_chunked_run_matches_one_chunk_in_distribution():
    one = simulate(SimulatorConfig(n_customers=6000, seed=5, chunk_size=6000), progress=False)
    many = simulate(SimulatorConfig(n_customers=6000, seed=5, chunk_size=1500), progress=False)
    # same seller sizes (drawn from the seed alone), same ids, similar statistics
    for d in (one, many):
        assert d.truth.customer_id.tolist() == list(range(6000))
    shares = [d.truth.archetype.value_counts(normalize=True).reindex(ARCHETYPES) for d in (one, many)]
    np.testing.assert_allclose(shares[0], shares[1], atol=0.03)
    seller_share = [d.truth.seller_id.value_counts(normalize=True).sort_index() for d in (one, many)]
    top = seller_share[0].idxmax()
    assert seller_share[1].idxmax() == top
    per_customer = [len(d.events) / 6000 for d in (one, many)]
    assert abs(per_customer[0] / per_customer[1] - 1) < 0.1
    for col in ("p_intent_7d", "p_churn_90d", "p_response_30"):
        assert abs(one.truth[col].mean() - many.truth[col].mean()) < 0.03, col


# --------------------------------------------------------------------------- population


def test_archetype_shares(large):
    shares = large.truth.archetype.value_counts(normalize=True)
    expected = dict(zip(ARCHETYPES, (0.41, 0.19, 0.23, 0.17)))
    for name, share in expected.items():
        assert abs(shares[name] - share) < 0.015, name


def test_label_rates_and_rfm_in_range(large):
    tr = large.truth
    assert 0.02 < tr.intent_7d.mean() < 0.15
    assert 0.4 < tr.churn_90d.mean() < 0.7
    ev, cut = large.events, large.cutoff
    p = ev[(ev.event_type == "purchase") & (ev.ts < cut)]
    freq = p.groupby("customer_id").size()
    basket = p.groupby("customer_id").amount.mean()
    arch = tr.set_index("customer_id").archetype
    by = pd.DataFrame({"freq": freq, "basket": basket}).join(arch).groupby("archetype").mean()
    assert by.loc["high_value", "freq"] > by.loc["intermittent", "freq"] > by.loc["new_low_engagement", "freq"]
    assert by.basket.sort_values().index.tolist() == [
        "new_low_engagement",
        "promotion_sensitive",
        "intermittent",
        "high_value",
    ]
    assert 40 < len(ev) / len(tr) < 120  # moderate event volume


# --------------------------------------------------------------------------- exact labels


def test_dead_customers_emit_nothing_after_death(small):
    tr = small.truth.set_index("customer_id")
    ev_day = _day(small.events.ts, SMALL.start)
    death = tr.death_day.to_numpy()[small.events.customer_id.to_numpy()]
    dead = death >= 0
    assert dead.any()
    assert (ev_day[dead] <= death[dead]).all()
    # alive_at_cutoff is consistent with the death day
    died_before = (tr.death_day >= 0) & (tr.death_day < SMALL.history_days)
    assert (tr.alive_at_cutoff == ~died_before).all()
    # promotions are only sent before the cutoff, windows closed by then
    assert (small.promotions.ts + pd.Timedelta(days=SMALL.campaign_window_days) <= small.cutoff).all()


def test_labels_recomputed_from_events(small):
    ev, tr, cut = small.events, small.truth, small.cutoff
    p = ev[ev.event_type == "purchase"]
    in7 = p[(p.ts > cut) & (p.ts <= cut + pd.Timedelta(days=7))].customer_id.unique()
    in90 = p[(p.ts > cut) & (p.ts <= cut + pd.Timedelta(days=90))].customer_id.unique()
    intent = np.isin(tr.customer_id, in7)
    churn = ~np.isin(tr.customer_id, in90)
    np.testing.assert_array_equal(tr.intent_7d.to_numpy(), intent)
    np.testing.assert_array_equal(tr.churn_90d.to_numpy(), churn)
    # dead at the cutoff: certain churn, no intent, and really no purchases
    dead = ~tr.alive_at_cutoff.to_numpy()
    assert dead.any()
    assert tr.churn_90d.to_numpy()[dead].all() and not tr.intent_7d.to_numpy()[dead].any()
    assert (tr.p_churn_90d.to_numpy()[dead] == 1).all() and (tr.p_intent_7d.to_numpy()[dead] == 0).all()
    assert tr.intent_7d[tr.churn_90d].sum() == 0  # a churned customer bought nothing in 7 days either


def test_response_curves_monotone_and_anchored(small):
    tr = small.truth
    curves = tr[list(RESPONSE_COLUMNS)].to_numpy()
    assert (np.diff(curves, axis=1) >= 0).all()
    np.testing.assert_array_equal(curves[:, 0], tr.p_intent_7d.to_numpy())
    assert ((curves >= 0) & (curves <= 1)).all()
    dead = ~tr.alive_at_cutoff.to_numpy()
    assert (curves[dead] == 0).all()
    lift = tr.p_response_30 - tr.p_response_0
    by = lift.groupby(tr.archetype).mean()
    assert by.idxmax() == "promotion_sensitive" and by.idxmin() == "high_value"


def test_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(0)
    a = np.array([0.97, 0.9, 0.999, 0.5])
    h = np.array([0.01, 0.05, 0.001, 0.2])
    for horizon in (1, 7, 90):
        exact = prob_no_purchase(a, h, horizon)
        n = 40_000
        alive = np.ones((n, len(a)), dtype=bool)
        bought = np.zeros((n, len(a)), dtype=bool)
        for _ in range(horizon):  # purchase draw, then death draw, as in the simulator
            bought |= alive & (rng.random(alive.shape) > a)
            alive &= rng.random(alive.shape) >= h
        mc = 1 - bought.mean(axis=0)
        np.testing.assert_allclose(mc, exact, atol=4 * np.sqrt(0.25 / n) + 1e-3)


def _assert_calibrated(p: np.ndarray, y: np.ndarray, bins: int = 10):
    """Binned calibration: label rate within 4 standard errors (+0.01) of the mean probability."""
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt(p.mean() * (1 - p.mean()) / len(p)) + 0.005
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    for b in np.unique(which):
        m = which == b
        pm = p[m].mean()
        se = np.sqrt(max(pm * (1 - pm), 1e-4) / m.sum())
        assert abs(y[m].mean() - pm) < 4 * se + 0.01, (b, y[m].mean(), pm, m.sum())


def test_truth_is_calibrated_against_realised_labels(large):
    tr = large.truth
    _assert_calibrated(tr.p_intent_7d.to_numpy(), tr.intent_7d.to_numpy().astype(float))
    _assert_calibrated(tr.p_churn_90d.to_numpy(), tr.churn_90d.to_numpy().astype(float))
    alive = tr.alive_at_cutoff.to_numpy()
    _assert_calibrated(tr.p_churn_90d.to_numpy()[alive], tr.churn_90d.to_numpy()[alive].astype(float))


# --------------------------------------------------------------------------- promotions


def test_randomised_slice_is_uniform_with_exact_propensities(large):
    pr = large.promotions
    rct = pr[pr.randomized]
    assert abs(pr.randomized.mean() - 0.1) < 0.03
    shares = rct.discount_pct.value_counts(normalize=True).reindex(DISCOUNT_LEVELS)
    np.testing.assert_allclose(shares.to_numpy(), 1 / len(DISCOUNT_LEVELS), atol=0.02)
    np.testing.assert_allclose(rct.propensity.to_numpy(), 1 / len(DISCOUNT_LEVELS))
    # a customer is either always randomised or never
    assert (pr.groupby("customer_id").randomized.nunique() == 1).all()


def test_logged_policy_is_biased_and_propensities_are_proper(large):
    pr = large.promotions[~large.promotions.randomized]
    # E[1{D=k} / p(k|x)] = 1 for every level k when p is the true logging propensity
    for level in DISCOUNT_LEVELS:
        ipw = ((pr.discount_pct == level) / pr.propensity).mean()
        assert abs(ipw - 1) < 0.1, (level, ipw)
    probs = policy_probs(np.array([5.0, 300.0]), np.array([2000.0, 0.0]), 2.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[0, -1] > probs[1, -1] and probs[0, 0] < probs[1, 0]  # recent big spenders get more
    assert probs.min() > 0.005  # overlap
    # biased: logged big discounts go to customers who convert more organically (confounding)
    top = pr[pr.discount_pct == 30].converted.mean()
    assert pr[pr.discount_pct == 0].converted.mean() < top


def test_propensity_recomputed_from_observable_history(small):
    """The logged propensity is the policy evaluated on what the seller could see (events before the offer)."""
    ev, tr = small.events, small.truth.set_index("customer_id")
    pr = small.promotions[~small.promotions.randomized].head(300)
    purchases = ev[ev.event_type == "purchase"]
    start = pd.Timestamp(SMALL.start)
    for row in pr.itertuples():
        before = purchases[(purchases.customer_id == row.customer_id) & (purchases.ts < row.ts)]
        day = (row.ts - start).days
        last = _day(before.ts, SMALL.start).max() if len(before) else tr.start_day[row.customer_id]
        p = policy_probs(np.array([float(day - last)]), np.array([before.amount.sum()]), SMALL.policy_strength)
        level = DISCOUNT_LEVELS.index(row.discount_pct)
        assert p[0, level] == pytest.approx(row.propensity, rel=1e-9)


def test_coupon_redemptions_match_promotions(small):
    ev, pr = small.events, small.promotions
    window = pd.Timedelta(days=SMALL.campaign_window_days)
    purchases = ev[ev.event_type == "purchase"]
    coupons = ev[ev.event_type == "coupon_redeem"]
    assert (coupons.amount == 0).all()
    n_checked = 0
    for row in pr.head(600).itertuples():
        mine = purchases[
            (purchases.customer_id == row.customer_id) & (purchases.ts >= row.ts) & (purchases.ts < row.ts + window)
        ]
        cps = coupons[
            (coupons.customer_id == row.customer_id) & (coupons.ts >= row.ts) & (coupons.ts < row.ts + window)
        ]
        assert row.converted == (len(mine) > 0)
        assert row.revenue == pytest.approx(mine.amount.sum())
        if row.converted and row.discount_pct > 0:
            assert len(cps) == 1 and cps.ts.iloc[0] == mine.ts.iloc[0]  # first purchase redeems
            d = row.discount_pct / 100
            assert row.cost == pytest.approx(mine.amount.iloc[0] * d / (1 - d))
            n_checked += 1
        else:
            assert len(cps) == 0 and row.cost == 0
    assert n_checked > 10
    assert len(coupons) == (pr.converted & (pr.discount_pct > 0)).sum()


def test_promotion_lift_matches_truth_in_the_rct_slice(large):
    pr = large.promotions[large.promotions.randomized]
    conv = pr.groupby("discount_pct").converted.mean()
    assert conv[30] > conv[0] + 0.1  # discounts cause conversions
    assert conv.loc[[20, 25, 30]].mean() > conv.loc[[0, 5, 10]].mean()


# --------------------------------------------------------------------------- I/O


def test_write_load_round_trip_and_cache(tmp_path, monkeypatch):
    cfg = SimulatorConfig(n_customers=700, seed=4, chunk_size=300)
    out = simulate(cfg, tmp_path / "run", progress=False)
    assert (out / "_SUCCESS").exists()
    meta = json.loads((out / "config.json").read_text())
    assert meta["fingerprint"] == cfg.fingerprint() and meta["config"]["n_customers"] == 700
    assert len(list((out / "events").glob("part-*.parquet"))) == 3
    loaded = load_simulated(out)
    memory = simulate(cfg, progress=False)
    for name in ("events", "promotions", "truth"):
        assert_same_frame(getattr(loaded, name), getattr(memory, name))
    assert loaded.cutoff == cfg.cutoff

    cached = simulate_cached(cfg, cache_root=tmp_path / "cache", progress=False)
    assert (tmp_path / "cache" / cfg.fingerprint() / "_SUCCESS").exists()
    assert_same_frame(cached.truth, memory.truth)

    def boom(*a, **k):
        raise AssertionError("cache was not reused")

    monkeypatch.setattr(sim_mod, "simulate", boom)
    again = simulate_cached(cfg, cache_root=tmp_path / "cache", progress=False)
    assert_same_frame(again.events, memory.events)


def test_unfinished_directory_is_not_loaded(tmp_path):
    out = simulate(SimulatorConfig(n_customers=200, chunk_size=100), tmp_path / "x", progress=False)
    (out / "_SUCCESS").unlink()
    with pytest.raises(FileNotFoundError):
        load_simulated(out)


def test_rerun_into_same_directory_drops_stale_parts(tmp_path):
    simulate(SimulatorConfig(n_customers=300, chunk_size=100), tmp_path, progress=False)
    simulate(SimulatorConfig(n_customers=300, chunk_size=300), tmp_path, progress=False)
    assert len(list((tmp_path / "truth").glob("part-*.parquet"))) == 1
    assert len(load_simulated(tmp_path).truth) == 300


def test_no_torch_import():
    import subprocess
    import sys

    code = "import sys, sellerlift.sim; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
