"""Tests for sellerlift.allocate: exactness on tiny instances, gaps, budgets, errors."""

import itertools

import numpy as np
import pytest

from sellerlift.allocate import (
    allocate_exact_lp,
    allocate_lagrangian,
    allocate_rule_based,
    allocate_values,
    incentive_spread,
    incremental_profit_and_spend,
    random_instance,
    random_retention,
)
from sellerlift.allocate.constraints import check_constraints, check_feasible

REL = 1e-7


def _tiny(rng, n, k, monotone=True):
    levels = (0, 5, 10, 15, 20, 25, 30)[:k] if k <= 7 else None
    p = rng.uniform(0, 0.6, size=(n, k))
    if monotone:
        p = np.sort(p, axis=1)
    value = rng.uniform(5, 100, n)
    margin = rng.uniform(0.2, 0.6, n)
    return p, value, margin, levels


def _brute(p, value, margin, levels, budget=None, seller=None, seller_budgets=None):
    """Best total profit over all K**n assignments."""
    pr, sp = incremental_profit_and_spend(p, value, margin, levels)
    n, k = pr.shape
    combos = np.array(list(itertools.product(range(k), repeat=n)))
    rows = np.arange(n)
    prof, spend = pr[rows, combos].sum(1), sp[rows, combos].sum(1)
    ok = np.ones(len(combos), bool)
    if budget is not None:
        ok &= spend <= budget
    if seller_budgets is not None:
        for s, b in seller_budgets.items():
            ok &= sp[rows, combos][:, seller == s].sum(1) <= b
    return prof[ok].max()


def _max_gain(p, value, margin, levels):
    pr, _ = incremental_profit_and_spend(p, value, margin, levels)
    return pr.max()


@pytest.mark.parametrize("seed", range(30))
def test_tiny_brute_force_milp_lagrangian(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 7)), int(rng.integers(3, 5))
    p, value, margin, levels = _tiny(rng, n, k, monotone=seed % 3 != 0)  # some non-monotone
    _, sp = incremental_profit_and_spend(p, value, margin, levels)
    budget = float(rng.uniform(0, 0.8) * sp.max(1).sum())
    best = _brute(p, value, margin, levels, budget)
    milp = allocate_exact_lp(p, value, margin, levels, budget, integer=True)
    lp = allocate_exact_lp(p, value, margin, levels, budget)
    lag = allocate_lagrangian(p, value, margin, levels, budget)
    assert milp.profit == pytest.approx(best, rel=1e-6, abs=1e-9)
    assert lag.spend <= budget
    assert lag.profit <= best + 1e-9
    # LP bound and the Lagrangian dual bound agree, and bound the optimum
    assert lag.bound == pytest.approx(lp.profit, rel=1e-6, abs=1e-9)
    assert lp.profit >= best - 1e-9
    # documented gap: LP bound minus at most one customer's best profit
    assert lag.profit >= lp.profit - _max_gain(p, value, margin, levels) - 1e-9


def test_tiny_lagrangian_often_optimal():
    # n = 6: one upgrade is a big share of the budget, so greedy rounding of the
    # LP is exact in ~60 % of cases and ~2 % below on average; on thousands of
    # customers the gap is ~1e-5 (test_gap_vs_lp_2k).
    hits, gaps = 0, []
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        p, value, margin, levels = _tiny(rng, 6, 4)
        _, sp = incremental_profit_and_spend(p, value, margin, levels)
        budget = float(rng.uniform(0.05, 0.8) * sp.max(1).sum())
        lag = allocate_lagrangian(p, value, margin, levels, budget)
        best = _brute(p, value, margin, levels, budget)
        hits += lag.profit >= best - 1e-9
        gaps.append((best - lag.profit) / best)
    assert hits >= 20 and np.mean(gaps) < 0.03


@pytest.mark.parametrize("seed", range(10))
def test_tiny_per_seller_vs_brute_force(seed):
    rng = np.random.default_rng(50 + seed)
    p, value, margin, levels = _tiny(rng, 6, 3)
    seller = np.array(["a", "a", "a", "b", "b", "b"])
    _, sp = incremental_profit_and_spend(p, value, margin, levels)
    sb = {"a": float(rng.uniform(0, 0.7) * sp[:3].max(1).sum()), "b": float(rng.uniform(0, 0.7) * sp[3:].max(1).sum())}
    total = float(rng.uniform(0.3, 1.0) * sum(sb.values())) if seed % 2 else None
    best = _brute(p, value, margin, levels, total, seller, sb)
    milp = allocate_exact_lp(p, value, margin, levels, total, seller, sb, integer=True)
    lag = allocate_lagrangian(p, value, margin, levels, total, seller, sb)
    assert milp.profit == pytest.approx(best, rel=1e-6, abs=1e-9)
    assert all(lag.seller_spend[s] <= sb[s] for s in sb)
    assert total is None or lag.spend <= total
    assert best + 1e-9 >= lag.profit >= lag.bound - 3 * _max_gain(p, value, margin, levels) - 1e-9


@pytest.fixture(scope="module")
def inst2k():
    return random_instance(2000, seed=3)


def _args(inst):
    return inst["p"], inst["value"], inst["margin"], inst["levels"]


def _full_spend(inst):
    pr, sp = incremental_profit_and_spend(*_args(inst))
    return float(sp[np.arange(len(pr)), pr.argmax(1)].sum())


@pytest.mark.parametrize("frac", [0.02, 0.1, 0.3, 0.6, 0.9])
def test_gap_vs_lp_2k(inst2k, frac):
    budget = frac * _full_spend(inst2k)
    lag = allocate_lagrangian(*_args(inst2k), budget)
    lp = allocate_exact_lp(*_args(inst2k), budget)
    assert lag.spend <= budget
    assert lag.bound == pytest.approx(lp.profit, rel=1e-6)
    assert (lp.profit - lag.profit) / lp.profit < 0.005
    assert lag.multiplier == pytest.approx(lp.multiplier, rel=1e-4)


def test_gap_vs_lp_2k_per_seller(inst2k):
    full = _full_spend(inst2k)
    sb = {s: 0.3 * full / 20 for s in range(20)}
    lag = allocate_lagrangian(*_args(inst2k), 0.25 * full, inst2k["seller"], sb)
    lp = allocate_exact_lp(*_args(inst2k), 0.25 * full, inst2k["seller"], sb)
    assert lag.spend <= 0.25 * full
    assert all(lag.seller_spend[s] <= b for s, b in sb.items())
    assert lag.bound == pytest.approx(lp.profit, rel=1e-4)
    assert (lp.profit - lag.profit) / lp.profit < 0.005
    assert set(lag.multiplier) == {"total", "seller"}


@pytest.mark.parametrize("seed", range(5))
def test_budget_never_exceeded(seed):
    inst = random_instance(3000, seed=seed, n_sellers=7)
    full = _full_spend(inst)
    rng = np.random.default_rng(seed)
    for _ in range(8):
        budget = float(rng.uniform(0, 1.2) * full)
        sb = {s: float(rng.uniform(0, 0.3) * full) for s in range(7)}
        use_total = rng.random() < 0.7
        a = allocate_lagrangian(*_args(inst), budget if use_total else None, inst["seller"], sb)
        assert not use_total or a.spend <= budget
        assert all(a.seller_spend[s] <= b for s, b in sb.items())
        b = allocate_lagrangian(*_args(inst), budget)
        assert b.spend <= budget and b.profit <= b.bound + 1e-9


def test_budget_zero_everyone_level_zero(inst2k):
    a = allocate_lagrangian(*_args(inst2k), 0.0)
    assert (a.level_index == 0).all() and a.spend == 0 and a.profit == 0 and a.roi == 0
    sb = {s: 0.0 for s in range(20)}
    b = allocate_lagrangian(*_args(inst2k), None, inst2k["seller"], sb)
    assert (b.level_index == 0).all()


def test_huge_budget_gives_unconstrained_best(inst2k):
    pr, sp = incremental_profit_and_spend(*_args(inst2k))
    a = allocate_lagrangian(*_args(inst2k), 1e12)
    best = pr.max(1)
    assert a.status == "optimal" and a.multiplier == 0.0
    assert a.profit == pytest.approx(np.maximum(best, 0).sum(), rel=1e-12)
    np.testing.assert_allclose(pr[np.arange(len(best)), a.level_index], np.maximum(best, 0))
    assert a.level_index.tolist() == np.where(best > 0, pr.argmax(1), 0).tolist()
    assert allocate_lagrangian(*_args(inst2k)).level_index.tolist() == a.level_index.tolist()


def test_ties_go_to_the_cheaper_level():
    # upgrades that neither gain nor lose stay at level 0, and identical customers
    p = np.array([[0.2, 0.2, 0.2], [0.0, 0.0, 0.0]] + [[0.1, 0.3, 0.35]] * 10)
    value, levels = np.full(12, 50.0), (0, 10, 20)
    a = allocate_lagrangian(p, value, 0.5, levels, None)
    assert a.level_index[:2].tolist() == [0, 0]
    pr, sp = incremental_profit_and_spend(p, value, 0.5, levels)
    one = sp[2, 1]  # identical customers: 3.5 upgrades' budget buys exactly 3
    b = allocate_lagrangian(p, value, 0.5, levels, 3.5 * one)
    assert b.spend <= 3.5 * one
    assert b.profit == pytest.approx(3 * pr[2, 1])


def test_beats_rule_based_at_same_spend():
    inst = random_instance(5000, seed=11)
    full = _full_spend(inst)
    for rule in ("top_value", "random"):
        rb = allocate_rule_based(*_args(inst), 0.3 * full, rule=rule, level_pct=10)
        assert rb.spend <= 0.3 * full and set(np.unique(rb.level_pct)) <= {0.0, 10.0}
        lag = allocate_lagrangian(*_args(inst), rb.spend)
        assert lag.profit > rb.profit + 0.05 * abs(rb.profit)
        assert lag.roi > rb.roi


def test_rule_based_priority_and_blanket():
    inst = random_instance(200, seed=2)
    recency = np.arange(200.0)
    rb = allocate_rule_based(*_args(inst), 50.0, rule="priority", priority=-recency)
    got = np.flatnonzero(rb.level_index)
    assert got.tolist() == list(range(len(got)))  # most recent first, a prefix
    assert (allocate_rule_based(*_args(inst), rule="top_value", level_pct=5).level_pct == 5).all()


def test_float32_and_array_margin_match():
    inst = random_instance(500, seed=4)
    p, value, margin, levels = _args(inst)
    a = allocate_lagrangian(p, value, margin, levels, 300.0)
    b = allocate_lagrangian(p.astype(np.float32), value, margin, levels, 300.0)
    assert b.spend <= 300.0 and b.profit == pytest.approx(a.profit, rel=1e-4)
    c = allocate_lagrangian(p, value, 0.4, levels, 300.0)
    d = allocate_lagrangian(p, value, np.full(500, 0.4), levels, 300.0)
    assert c.level_index.tolist() == d.level_index.tolist()


def test_seller_spend_reported_without_caps(inst2k):
    a = allocate_lagrangian(*_args(inst2k), 100.0, seller=inst2k["seller"])
    assert sum(a.seller_spend.values()) == pytest.approx(a.spend)
    assert isinstance(a.multiplier, float)


P_OK = np.array([[0.1, 0.2, 0.3], [0.2, 0.25, 0.3]])
V_OK, L_OK = np.array([10.0, 20.0]), (0, 10, 20)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"budget": -1.0}, "budget"),
        ({"budget": float("nan")}, "budget"),
        ({"p": np.array([[0.1, 0.2, 1.3], [0.2, 0.25, 0.3]])}, "p"),
        ({"p": np.array([[0.1, np.nan, 0.3], [0.2, 0.25, 0.3]])}, "p"),
        ({"p": np.array([0.1, 0.2, 0.3])}, "p"),
        ({"value": np.array([10.0])}, "value"),
        ({"value": np.array([10.0, -1.0])}, "value"),
        ({"margin": 0.0}, "margin"),
        ({"margin": 1.5}, "margin"),
        ({"margin": np.array([0.4, 0.4, 0.4])}, "margin"),
        ({"levels": (5, 10, 20)}, "levels"),
        ({"levels": (0, 10)}, "levels"),
        ({"levels": (0, 20, 10)}, "levels"),
        ({"seller": ["a", "b"], "seller_budgets": {"a": 1.0, "b": 1.0, "c": 1.0}}, "seller_budgets"),
        ({"seller": ["a", "b"], "seller_budgets": {"a": 1.0}}, "seller_budgets"),
        ({"seller": ["a", "b"], "seller_budgets": {"a": 1.0, "b": -2.0}}, "seller_budgets"),
        ({"seller_budgets": {"a": 1.0}}, "seller"),
        ({"seller": ["a"], "seller_budgets": {"a": 1.0}}, "seller"),
    ],
)
def test_errors_name_the_parameter(kwargs, match):
    args = {"p": P_OK, "value": V_OK, "margin": 0.4, "levels": L_OK, "budget": 1.0} | kwargs
    for fn in (allocate_lagrangian, allocate_exact_lp):
        with pytest.raises(ValueError, match=rf"^{match}"):
            fn(**args)


def test_rule_based_errors():
    with pytest.raises(ValueError, match="^level_pct"):
        allocate_rule_based(P_OK, V_OK, 0.4, L_OK, 1.0, level_pct=15)
    with pytest.raises(ValueError, match="^rule"):
        allocate_rule_based(P_OK, V_OK, 0.4, L_OK, 1.0, rule="vip")
    with pytest.raises(ValueError, match="^priority"):
        allocate_rule_based(P_OK, V_OK, 0.4, L_OK, 1.0, rule="priority")


def test_allocate_values_equals_the_curve_solver_on_the_same_objective():
    """The generic entry (any per-level profit and spend) gives the curve solver's answer on its own objective."""
    inst = random_instance(4000, seed=21)
    pr, sp = incremental_profit_and_spend(inst["p"], inst["value"], inst["margin"], inst["levels"])
    budget = 0.2 * sp[:, -1].sum()
    a = allocate_lagrangian(inst["p"], inst["value"], inst["margin"], inst["levels"], budget=budget)
    b = allocate_values(pr, sp, inst["levels"], budget=budget)
    assert np.array_equal(a.level_index, b.level_index)
    assert b.profit == pytest.approx(a.profit, rel=1e-12) and b.spend <= budget
    with pytest.raises(ValueError, match="level 0"):
        allocate_values(pr + 1.0, sp, inst["levels"], budget=budget)
    # an objective a curve cannot express: profit that falls with the level for some customers
    twist = pr.copy()
    twist[:100] = -np.abs(twist[:100])
    c = allocate_values(twist, sp, inst["levels"], budget=budget)
    assert (c.level_index[:100] == 0).all()  # never pay for a loss


# ===================================================== retention-aware objective and the new constraints
def _objective(
    p, value, margin, levels, enduring=None, weight=0.0, spread_penalty=0.0, max_discount=None, max_incentive=None
):
    """Objective, spend and allowed levels [n, K], written out independently of the solver."""
    pr, sp = incremental_profit_and_spend(p, value, margin, levels)
    obj = pr + (0.0 if enduring is None else weight * enduring) - spread_penalty * sp**2
    ok = np.ones(pr.shape, bool)
    if max_discount is not None:
        ok &= np.asarray(levels, float)[None, :] <= np.broadcast_to(max_discount, (len(pr),))[:, None]
    if max_incentive is not None:
        ok &= sp <= np.broadcast_to(max_incentive, (len(pr),))[:, None]
    return obj, sp, ok, pr


def _brute_all(obj, sp, ok, budget=None, groups=()):
    """Best objective over all K**n assignments within every budget (groups: (label [n], {label: cap}))."""
    n, k = obj.shape
    combos = np.array(list(itertools.product(range(k), repeat=n)))
    rows = np.arange(n)
    good = ok[rows, combos].all(1)
    spend = sp[rows, combos]
    if budget is not None:
        good &= spend.sum(1) <= budget
    for label, caps in groups:
        for g, b in caps.items():
            good &= spend[:, label == g].sum(1) <= b
    return obj[rows, combos].sum(1)[good].max()


def _tiny_constrained(seed):
    rng = np.random.default_rng(seed)
    n, k = 6, int(rng.integers(3, 5))
    p, value, margin, levels = _tiny(rng, n, k, monotone=seed % 4 != 0)
    _, sp = incremental_profit_and_spend(p, value, margin, levels)
    enduring = rng.normal(0, 3, (n, k)) * (np.arange(k) > 0)
    seller = np.array(["a", "a", "b", "b", "c", "c"])
    tiers = {"a": "big", "b": "small", "c": "small"}
    per = sp.max(1)
    kw = {"enduring": enduring, "weight": float(rng.choice([0.0, 0.5, 2.0])), "seller": seller, "seller_tier": tiers}
    if seed % 2:
        kw["seller_budgets"] = {s: float(rng.uniform(0.1, 0.9) * per[seller == s].sum()) for s in "abc"}
    if seed % 3:
        kw["tier_budgets"] = {
            "big": float(rng.uniform(0.1, 0.9) * per[:2].sum()),
            "small": float(rng.uniform(0.1, 0.9) * per[2:].sum()),
        }
    if seed % 5 in (1, 2):
        kw["max_discount"] = rng.choice(levels, n).astype(float)
    if seed % 5 in (2, 3):
        kw["max_incentive"] = float(rng.uniform(0.3, 1.0) * per.max())
    if seed % 7 in (1, 4):
        kw["spread_penalty"] = float(rng.uniform(0, 0.2))
    budget = float(rng.uniform(0.2, 0.9) * per.sum()) if seed % 4 != 3 else None
    return (p, value, margin, levels), budget, kw


@pytest.mark.parametrize("seed", range(40))
def test_tiny_every_constraint_brute_force_milp_lagrangian(seed):
    args, budget, kw = _tiny_constrained(seed)
    obj, sp, ok, _ = _objective(
        *args,
        kw["enduring"],
        kw["weight"],
        kw.get("spread_penalty", 0.0),
        kw.get("max_discount"),
        kw.get("max_incentive"),
    )
    seller, tiers = kw["seller"], kw["seller_tier"]
    tier = np.array([tiers[s] for s in seller])
    groups = [(seller, kw.get("seller_budgets", {})), (tier, kw.get("tier_budgets", {}))]
    best = _brute_all(obj, sp, ok, budget, groups)
    milp = allocate_exact_lp(*args, budget, integer=True, **kw)
    lp = allocate_exact_lp(*args, budget, **kw)
    lag = allocate_lagrangian(*args, budget, **kw)
    assert milp.status == "optimal" and milp.profit == pytest.approx(best, rel=1e-6, abs=1e-9)
    # the LP and dual bounds agree and bound the integer optimum, which can sit strictly below them
    assert lag.bound == pytest.approx(lp.profit, rel=1e-6, abs=1e-7) and lp.profit >= best - 1e-9
    assert lag.profit <= best + 1e-9 and lag.profit >= lag.bound - 3 * max(obj[ok].max(), 0) - 1e-9
    _assert_feasible(lag, args, budget, kw)
    _assert_feasible(milp, args, budget, kw)


def _assert_feasible(a, args, budget, kw):
    """Every constraint of ``kw`` holds exactly in ``a``, recomputed from the inputs."""
    p, value, margin, levels = args
    _, sp, _, _ = _objective(*args)
    rows = np.arange(len(p))
    spend = sp[rows, a.level_index]
    assert budget is None or spend.sum() <= budget
    seller = kw.get("seller")
    for s, b in kw.get("seller_budgets", {}).items():
        assert spend[seller == s].sum() <= b
    for t, b in kw.get("tier_budgets", {}).items():
        assert spend[np.isin(seller, [s for s, u in kw["seller_tier"].items() if u == t])].sum() <= b
    pct = np.asarray(levels, float)[a.level_index]
    assert np.array_equal(pct, a.level_pct)
    if kw.get("max_discount") is not None:
        assert (pct <= kw["max_discount"]).all()
    for g, cap in (kw.get("segment_max_discount") or {}).items():
        assert (pct[kw["segment"] == g] <= cap).all()
    if kw.get("max_incentive") is not None:
        assert (spend <= kw["max_incentive"]).all()


@pytest.fixture(scope="module")
def big():
    inst = random_instance(3000, seed=8, n_sellers=12)
    return inst, random_retention(inst, seed=8)


def _full_kw(inst, ext, full, rng):
    """A random combination of every option on a random_instance."""
    kw = {"seller": inst["seller"], "seller_tier": ext["seller_tier"]}
    if rng.random() < 0.6:
        kw["seller_budgets"] = {s: float(rng.uniform(0, 0.15) * full) for s in np.unique(inst["seller"]).tolist()}
    if rng.random() < 0.7:
        kw["tier_budgets"] = {t: float(rng.uniform(0, 0.4) * full) for t in ("large", "mid", "small")}
    if rng.random() < 0.5:
        kw |= {"enduring": ext["enduring"], "weight": float(rng.uniform(0, 2))}
    if rng.random() < 0.5:
        kw["max_discount"] = rng.choice([0, 5, 12.5, 20, 30], len(inst["p"])).astype(float)
    if rng.random() < 0.5:
        kw |= {"segment": ext["segment"], "segment_max_discount": {"buys anyway": 5, "other": 15}}
    if rng.random() < 0.5:
        kw["max_incentive"] = float(rng.uniform(0.5, 10))
    if rng.random() < 0.5:
        kw["spread_penalty"] = float(rng.uniform(0, 0.1))
    return kw


@pytest.mark.parametrize("seed", range(6))
def test_every_constraint_holds_in_random_combinations(big, seed):
    inst, ext = big
    args = _args(inst)
    full = _full_spend(inst)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        kw = _full_kw(inst, ext, full, rng)
        budget = float(rng.uniform(0, 0.8) * full) if rng.random() < 0.8 else None
        a = allocate_lagrangian(*args, budget, **kw)
        _assert_feasible(a, args, budget, kw)
        assert a.profit <= a.bound + 1e-9 and a.profit >= 0
        assert a.tier_spend is not None and sum(a.tier_spend.values()) == pytest.approx(a.spend)


@pytest.mark.parametrize("frac", [0.05, 0.3])
def test_gap_vs_lp_bound_and_milp_optimum_with_every_option(frac):
    inst = random_instance(1500, seed=31)
    ext = random_retention(inst, seed=31)
    full = _full_spend(inst)
    kw = {
        "seller": inst["seller"],
        "seller_budgets": {s: 0.04 * full for s in range(20)},
        "seller_tier": ext["seller_tier"],
        "tier_budgets": {"large": 0.1 * full, "mid": 0.08 * full, "small": 0.06 * full},
        "enduring": ext["enduring"],
        "weight": 0.5,
        "max_discount": 25.0,
        "segment": ext["segment"],
        "segment_max_discount": {"buys anyway": 5},
        "spread_penalty": 0.01,
        "max_incentive": 8.0,
    }
    args = _args(inst)
    lag = allocate_lagrangian(*args, frac * full, **kw)
    lp = allocate_exact_lp(*args, frac * full, **kw)
    milp = allocate_exact_lp(*args, frac * full, integer=True, time_limit=120, **kw)
    assert milp.status == "optimal"
    assert lag.bound == pytest.approx(lp.profit, rel=1e-6)  # the dual bound is the LP bound
    assert lag.profit <= milp.profit + 1e-6 <= lp.profit + 2e-6  # heuristic <= integer optimum <= LP bound
    assert (milp.profit - lag.profit) / milp.profit < 1e-3
    assert lag.gap_to_bound >= (milp.profit - lag.profit) / lp.profit - 1e-12  # gap_to_bound over-states
    _assert_feasible(lag, args, frac * full, kw)
    # the parts add up to the objective
    assert lag.direct + 0.5 * lag.enduring - lag.penalty == pytest.approx(lag.profit, rel=1e-9)
    assert lp.direct + 0.5 * lp.enduring - lp.penalty == pytest.approx(lp.profit, rel=1e-6)


def test_gap_to_bound_is_an_upper_bound_on_the_gap_not_the_gap():
    # two identical customers, budget for one and a half upgrades: the integer optimum takes one, the LP
    # takes one and a half, so an optimal answer still shows a gap against the LP bound
    p, value, levels = np.array([[0.1, 0.5]] * 2), np.full(2, 100.0), (0, 10)
    _, sp = incremental_profit_and_spend(p, value, 0.5, levels)
    lag = allocate_lagrangian(p, value, 0.5, levels, 1.5 * sp[0, 1])
    milp = allocate_exact_lp(p, value, 0.5, levels, 1.5 * sp[0, 1], integer=True)
    lp = allocate_exact_lp(p, value, 0.5, levels, 1.5 * sp[0, 1])
    assert lag.profit == pytest.approx(milp.profit) and milp.status == "optimal"
    assert lag.bound == pytest.approx(lp.profit) == pytest.approx(1.5 * milp.profit)
    assert lag.gap_to_bound == pytest.approx(1 / 3) and lag.gap == lag.gap_to_bound and lag.status == "ok"


def test_weight_zero_reproduces_todays_allocation_exactly(big):
    inst, ext = big
    args = _args(inst)
    full = _full_spend(inst)
    for budget, kw in (
        (0.2 * full, {}),
        (None, {"seller": inst["seller"], "seller_budgets": {s: 0.03 * full for s in range(12)}}),
        (0.3 * full, {"seller": inst["seller"], "seller_budgets": {s: 0.05 * full for s in range(12)}}),
    ):
        today = allocate_lagrangian(*args, budget, **kw)
        w0 = allocate_lagrangian(*args, budget, **kw, enduring=ext["enduring"], weight=0.0)
        assert np.array_equal(today.level_index, w0.level_index)
        assert (today.spend, today.profit, today.bound, today.multiplier, today.seller_spend, today.n_iter) == (
            w0.spend,
            w0.profit,
            w0.bound,
            w0.multiplier,
            w0.seller_spend,
            w0.n_iter,
        )
        assert w0.direct == w0.profit and today.direct == today.profit and today.enduring == 0.0
        rows = np.arange(len(inst["p"]))
        assert w0.enduring == pytest.approx(ext["enduring"][rows, w0.level_index].sum())  # reported, not used
        # a tier layer without budgets, caps that forbid nothing, a zero penalty: still the same answer
        same = allocate_lagrangian(
            *args,
            budget,
            **(kw | {"seller": inst["seller"]}),
            seller_tier=ext["seller_tier"],
            max_discount=30,
            max_incentive=np.inf,
            spread_penalty=0.0,
        )
        assert np.array_equal(today.level_index, same.level_index)
        assert (same.profit, same.spend) == (today.profit, today.spend)


def test_enduring_objective_is_direct_plus_weight_times_enduring(big):
    inst, ext = big
    args = _args(inst)
    pr, sp = incremental_profit_and_spend(*args)
    budget = 0.25 * _full_spend(inst)
    for w in (0.3, 1.0, 3.0):
        a = allocate_lagrangian(*args, budget, enduring=ext["enduring"], weight=w)
        b = allocate_values(pr + w * ext["enduring"], sp, inst["levels"], budget)
        assert np.array_equal(a.level_index, b.level_index) and a.profit == pytest.approx(b.profit, rel=1e-12)
        rows = np.arange(len(pr))
        assert a.direct == pytest.approx(pr[rows, a.level_index].sum(), rel=1e-12)
        assert a.enduring == pytest.approx(ext["enduring"][rows, a.level_index].sum(), rel=1e-9)
        assert a.spend <= budget and a.info["weight"] == w
    # more weight on the enduring value buys more of it and less of the week's profit (same budget)
    runs = [allocate_lagrangian(*args, budget, enduring=ext["enduring"], weight=w) for w in (0.0, 1.0, 4.0)]
    assert runs[0].enduring < runs[1].enduring < runs[2].enduring
    assert runs[0].direct > runs[1].direct > runs[2].direct


def test_tier_multipliers_bind_only_where_the_tier_budget_does(big):
    inst, ext = big
    args = _args(inst)
    full = _full_spend(inst)
    tb = {"large": 0.05 * full, "mid": 1.0 * full, "small": 0.04 * full}  # mid never binds
    a = allocate_lagrangian(*args, 0.2 * full, inst["seller"], seller_tier=ext["seller_tier"], tier_budgets=tb)
    lam = a.multiplier["tier"]
    assert set(a.multiplier) == {"total", "tier"} and lam["mid"] == 0.0 and lam["large"] > 0 and lam["small"] > 0
    for t in ("large", "small"):
        assert tb[t] * (1 - 1e-3) <= a.tier_spend[t] <= tb[t]
    assert a.gap_to_bound < 1e-3
    # a tier budget above its sellers' spend changes nothing
    sb = {s: 0.01 * full for s in range(12)}
    b = allocate_lagrangian(*args, 0.2 * full, inst["seller"], sb)
    c = allocate_lagrangian(
        *args, 0.2 * full, inst["seller"], sb, seller_tier=ext["seller_tier"], tier_budgets={t: full for t in tb}
    )
    assert np.array_equal(b.level_index, c.level_index) and b.profit == c.profit
    assert set(c.multiplier) == {"total", "seller", "tier"}


def test_discount_caps_per_customer_and_by_segment(big):
    inst, ext = big
    args = _args(inst)
    n = len(inst["p"])
    cap = np.where(np.arange(n) % 3 == 0, 10.0, 30.0)
    seg = {"buys anyway": 0, "promotion-sensitive": 12.5}
    a = allocate_lagrangian(*args, None, max_discount=cap, segment=ext["segment"], segment_max_discount=seg)
    assert (a.level_pct <= cap).all()
    assert (a.level_pct[ext["segment"] == "buys anyway"] == 0).all()
    assert (a.level_pct[ext["segment"] == "promotion-sensitive"] <= 10).all()  # 12.5 % allows 10 %, not 15 %
    # unbudgeted and capped: each customer gets its best allowed level
    obj, _, ok, _ = _objective(*args, max_discount=np.minimum(cap, [seg.get(s, 30) for s in ext["segment"]]))
    best = np.where(ok, obj, -np.inf)
    assert a.status == "optimal"
    np.testing.assert_allclose(obj[np.arange(n), a.level_index], np.maximum(best.max(1), 0), rtol=1e-12)
    assert allocate_lagrangian(*args, None, max_discount=0.0).level_index.max() == 0


def test_max_incentive_caps_each_customers_expected_incentive(big):
    inst, ext = big
    args = _args(inst)
    _, sp = incremental_profit_and_spend(*args)
    for cap in (0.0, 0.5, 3.0):
        a = allocate_lagrangian(*args, 0.3 * _full_spend(inst), max_incentive=cap)
        assert (sp[np.arange(len(sp)), a.level_index] <= cap).all()
    per = np.where(ext["segment"] == "buys anyway", 0.0, np.inf)  # an array: per customer
    b = allocate_lagrangian(*args, None, max_incentive=per)
    assert (b.level_index[ext["segment"] == "buys anyway"] == 0).all() and b.level_index.max() > 0


def test_spread_penalty_lowers_the_spread_and_is_reported(big):
    inst, _ = big
    args = _args(inst)
    budget = 0.3 * _full_spend(inst)
    _, sp = incremental_profit_and_spend(*args)
    runs = [allocate_lagrangian(*args, budget, spread_penalty=pen) for pen in (0.0, 0.02, 0.2)]
    spreads = [r.spread for r in runs]
    assert spreads[0] > spreads[1] > spreads[2]
    rows = np.arange(len(sp))
    for r, pen in zip(runs, (0.0, 0.02, 0.2)):
        s = sp[rows, r.level_index]
        assert r.spread == pytest.approx(s[r.level_index > 0].std(), rel=1e-12)
        assert r.penalty == pytest.approx(pen * (s**2).sum(), rel=1e-9)
        assert r.direct - r.penalty == pytest.approx(r.profit, rel=1e-9)
    rule = allocate_rule_based(*args, runs[0].spend, rule="top_value")
    assert rule.spread == pytest.approx(incentive_spread(sp[rows, rule.level_index], rule.level_index))
    assert runs[2].spread < rule.spread  # the penalised allocation spreads incentives more evenly than the rule
    assert incentive_spread(np.zeros(3), np.zeros(3, int)) == 0.0


def test_values_entry_takes_the_same_options(big):
    inst, ext = big
    args = _args(inst)
    pr, sp = incremental_profit_and_spend(*args)
    kw = {
        "seller": inst["seller"],
        "seller_tier": ext["seller_tier"],
        "tier_budgets": {"large": 200.0, "mid": 150.0, "small": 100.0},
        "enduring": ext["enduring"],
        "weight": 0.7,
        "max_discount": 20,
        "spread_penalty": 0.01,
        "max_incentive": 6.0,
    }
    a = allocate_lagrangian(*args, 400.0, **kw)
    b = allocate_values(pr, sp, inst["levels"], 400.0, **kw)
    assert np.array_equal(a.level_index, b.level_index) and a.profit == b.profit and a.tier_spend == b.tier_spend


def test_random_retention_inputs():
    inst = random_instance(5000, seed=2)
    ext = random_retention(inst, seed=2)
    e = ext["enduring"]
    assert e.shape == inst["p"].shape and (e[:, 0] == 0).all()
    assert (e[:, 1:] > 0).mean() > 0.5 and (e[:, -1] < 0).mean() > 0.05  # habit, and the reference-price effect
    assert set(ext["seller_tier"].values()) == {"large", "mid", "small"} and len(set(ext["segment"])) == 4


def test_check_feasible_catches_a_broken_result(big):
    inst, ext = big
    args = _args(inst)
    a = allocate_lagrangian(*args, 100.0, max_discount=10)
    cons = check_constraints(len(inst["p"]), inst["levels"], 100.0, max_discount=10)
    _, sp = incremental_profit_and_spend(*args)
    a.level_index = np.full(len(sp), 6)
    with pytest.raises(RuntimeError, match="infeasible"):
        check_feasible(a, cons, sp[:, 6])


S_OK = ["a", "b"]
T_OK = {"a": "gold", "b": "basic"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"seller": S_OK, "seller_tier": T_OK, "tier_budgets": {"gold": 1.0, "basic": 1.0, "platinum": 1.0}},
            "tier_budgets: unknown tier",
        ),
        ({"seller": S_OK, "seller_tier": T_OK, "tier_budgets": {"gold": 1.0}}, "tier_budgets: no budget"),
        ({"seller": S_OK, "seller_tier": T_OK, "tier_budgets": {"gold": 1.0, "basic": -1.0}}, "tier_budgets"),
        ({"seller": S_OK, "seller_tier": {"a": "gold"}, "tier_budgets": {"gold": 1.0}}, "seller_tier: no tier"),
        ({"seller": S_OK, "tier_budgets": {"gold": 1.0}}, "seller_tier: required"),
        ({"seller_tier": T_OK}, "seller: required"),
        ({"seller": S_OK, "seller_tier": ["gold", "basic"]}, "seller_tier: expected a mapping"),
        ({"seller": S_OK, "seller_budgets": [1.0, 1.0]}, "seller_budgets: expected a mapping"),
        ({"max_discount": -5.0}, "max_discount"),
        ({"max_discount": np.array([10.0, np.nan])}, "max_discount"),
        ({"max_discount": np.array([10.0, 5.0, 0.0])}, "max_discount"),
        ({"segment_max_discount": {"vip": 5}}, "segment: required"),
        ({"segment": ["vip", "new"], "segment_max_discount": {"vip": -1}}, "segment_max_discount"),
        ({"segment": ["vip", "new"], "segment_max_discount": {"VIP": 5}}, "segment_max_discount: unknown"),
        ({"segment": ["vip"], "segment_max_discount": {"vip": 5}}, "segment"),
        ({"max_incentive": -0.1}, "max_incentive"),
        ({"max_incentive": "lots"}, "max_incentive"),
        ({"spread_penalty": -1.0}, "spread_penalty"),
        ({"spread_penalty": float("inf")}, "spread_penalty"),
        ({"weight": -0.5, "enduring": np.zeros((2, 3))}, "weight"),
        ({"weight": 1.0}, "enduring: required"),
        ({"weight": 1.0, "enduring": np.zeros((2, 2))}, "enduring"),
        ({"weight": 1.0, "enduring": np.array([[0.0, 1.0, np.nan], [0.0, 1.0, 2.0]])}, "enduring"),
        ({"weight": 1.0, "enduring": np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])}, "enduring: level 0"),
    ],
)
def test_constraint_errors_name_the_argument(kwargs, match):
    args = {"p": P_OK, "value": V_OK, "margin": 0.4, "levels": L_OK, "budget": 1.0} | kwargs
    for fn in (allocate_lagrangian, allocate_exact_lp):
        with pytest.raises(ValueError, match=rf"^{match}"):
            fn(**args)
