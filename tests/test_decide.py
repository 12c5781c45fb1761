"""Tests for runtime.decide.allocate_offers: the retention-aware objective and the constraints, per customer."""

import numpy as np
import pytest

from sellerlift.allocate import (
    allocate_lagrangian,
    allocate_rule_based,
    incremental_profit_and_spend,
    random_instance,
    random_retention,
)
from sellerlift.runtime import allocate_offers


@pytest.fixture(scope="module")
def world():
    inst = random_instance(4000, seed=12, n_sellers=10)
    ext = random_retention(inst, seed=12)
    args = (inst["p"], inst["value"], inst["margin"], inst["levels"])
    full = allocate_lagrangian(*args).spend
    return inst, ext, args, full


def test_weight_zero_gives_todays_offers_exactly(world):
    inst, ext, args, full = world
    for kw in (
        {"budget": 0.2 * full},
        {"budget": 0.3 * full, "seller": inst["seller"], "seller_budgets": {s: 0.04 * full for s in range(10)}},
    ):
        today = allocate_offers(*args, **kw)
        w0 = allocate_offers(*args, **kw, enduring=ext["enduring"], weight=0.0)
        ref = allocate_lagrangian(*args, **kw)
        for f in ("level_pct", "conversion", "spend", "profit"):
            assert np.array_equal(getattr(today, f), getattr(w0, f)), f
        assert np.array_equal(today.allocation.level_index, ref.level_index)
        for a in (today.allocation, w0.allocation):
            assert (a.spend, a.profit, a.bound, a.multiplier) == (ref.spend, ref.profit, ref.bound, ref.multiplier)
        assert today.enduring is None and np.array_equal(today.objective, today.profit)
        assert np.array_equal(w0.objective, w0.profit)  # weight 0: the enduring value is reported, not used
        rows = np.arange(len(w0.spend))
        assert np.array_equal(w0.enduring, ext["enduring"][rows, ref.level_index].astype(float))


def test_per_customer_parts_add_up_to_the_objective(world):
    inst, ext, args, full = world
    w, pen = 0.8, 0.01
    o = allocate_offers(*args, budget=0.25 * full, enduring=ext["enduring"], weight=w, spread_penalty=pen)
    a = o.allocation
    pr, sp = incremental_profit_and_spend(*args)
    rows, k = np.arange(len(pr)), a.level_index
    np.testing.assert_array_equal(o.direct, pr[rows, k])
    np.testing.assert_array_equal(o.spend, sp[rows, k])
    np.testing.assert_allclose(o.objective, o.direct + w * o.enduring - pen * o.spend**2, rtol=1e-12, atol=1e-12)
    assert o.objective.sum() == pytest.approx(a.profit, rel=1e-9)
    assert o.direct.sum() == pytest.approx(a.direct, rel=1e-9)
    assert o.enduring.sum() == pytest.approx(a.enduring, rel=1e-9)
    assert (pen * o.spend**2).sum() == pytest.approx(a.penalty, rel=1e-9)
    assert o.spend.sum() <= 0.25 * full


def test_retention_weight_trades_week_profit_for_enduring_value(world):
    _, ext, args, full = world
    runs = [allocate_offers(*args, budget=0.2 * full, enduring=ext["enduring"], weight=w) for w in (0.0, 0.5, 2.0)]
    end = [r.enduring.sum() for r in runs]
    direct = [r.direct.sum() for r in runs]
    assert end[0] < end[1] < end[2] and direct[0] > direct[1] > direct[2]
    # each run is (near) best on its own objective: no other run beats it there
    for i, w in enumerate((0.0, 0.5, 2.0)):
        own = runs[i].direct.sum() + w * runs[i].enduring.sum()
        for r in runs:
            assert own >= r.direct.sum() + w * r.enduring.sum() - 1e-3 * abs(own)


def test_offers_hold_every_constraint(world):
    inst, ext, args, full = world
    sb = {s: 0.03 * full for s in range(10)}
    tb = {"large": 0.08 * full, "mid": 0.06 * full, "small": 0.02 * full}
    cap = np.where(np.arange(len(inst["p"])) % 4 == 0, 5.0, 25.0)
    o = allocate_offers(
        *args,
        budget=0.15 * full,
        seller=inst["seller"],
        seller_budgets=sb,
        enduring=ext["enduring"],
        weight=1.0,
        seller_tier=ext["seller_tier"],
        tier_budgets=tb,
        max_discount=cap,
        segment=ext["segment"],
        segment_max_discount={"buys anyway": 0},
        spread_penalty=0.02,
        max_incentive=5.0,
    )
    assert o.spend.sum() <= 0.15 * full
    for s, b in sb.items():
        assert o.spend[inst["seller"] == s].sum() <= b
    tier = np.array([ext["seller_tier"][s] for s in inst["seller"]])
    for t, b in tb.items():
        assert o.spend[tier == t].sum() <= b
        assert o.allocation.tier_spend[t] == pytest.approx(o.spend[tier == t].sum())
    assert (o.level_pct <= cap).all() and (o.level_pct[ext["segment"] == "buys anyway"] == 0).all()
    assert (o.spend <= 5.0).all() and o.allocation.gap_to_bound < 0.01


def test_spread_is_reported_against_the_sellers_rule(world):
    _, _, args, full = world
    plain = allocate_offers(*args, budget=0.3 * full, compare_rule=True)
    fair = allocate_offers(*args, budget=0.3 * full, spread_penalty=0.1, compare_rule=True)
    rule = allocate_rule_based(*args, plain.allocation.spend, rule="top_value", level_pct=10)
    assert plain.spread_rule == pytest.approx(rule.spread)
    offered = plain.spend[plain.level_pct > 0]
    assert plain.spread == pytest.approx(offered.std()) == pytest.approx(plain.allocation.spread)
    assert plain.spread_vs_rule == pytest.approx(plain.spread / plain.spread_rule - 1)
    assert fair.spread < plain.spread and fair.spread_vs_rule < plain.spread_vs_rule < 0
    assert allocate_offers(*args, budget=0.3 * full).spread_rule is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight": 1.0}, "enduring"),
        ({"weight": -1.0, "enduring": np.zeros((2, 3))}, "weight"),
        ({"seller": ["a", "b"], "seller_tier": {"a": "gold"}}, "seller_tier"),
        (
            {"seller": ["a", "b"], "seller_tier": {"a": "gold", "b": "gold"}, "tier_budgets": {"silver": 1.0}},
            "tier_budgets",
        ),
        ({"max_discount": -1}, "max_discount"),
        ({"max_incentive": -1}, "max_incentive"),
        ({"spread_penalty": -1}, "spread_penalty"),
    ],
)
def test_invalid_requests_name_the_argument(kwargs, match):
    p = np.array([[0.1, 0.2, 0.3], [0.2, 0.25, 0.3]])
    with pytest.raises(ValueError, match=rf"^{match}"):
        allocate_offers(p, np.array([10.0, 20.0]), 0.4, (0, 10, 20), budget=1.0, **kwargs)
