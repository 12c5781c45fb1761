"""The closed loop: forward runs are deterministic and paired, match the label truth when frozen, the oracle is
never beaten on its own objective, and the evaluation command writes every figure it promises."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sellerlift.closed_loop import policies as P
from sellerlift.closed_loop.forward import Population, run_policy
from sellerlift.closed_loop.observe import Budget, Observation
from sellerlift.sim import SimulatorConfig, simulate_cached

CFG = SimulatorConfig(n_customers=3000, seed=5, chunk_size=1500, truth_replications=2)


@pytest.fixture(scope="module")
def pop(tmp_path_factory):
    sim = simulate_cached(CFG, tmp_path_factory.mktemp("sim"), progress=False)
    return Population.load(sim.path)


def test_forward_runs_are_deterministic_and_a_policy_minus_itself_is_zero(pop):
    a = run_policy(pop, P.top_value(10), 40, Budget(0.2), horizons=(40,))
    b = run_policy(pop, P.top_value(10), 40, Budget(0.2), horizons=(40,))
    for field in ("gross", "cost", "purchases", "retained"):
        np.testing.assert_array_equal(getattr(a.outcomes[40], field), getattr(b.outcomes[40], field))
    other = run_policy(pop, P.top_value(10), 40, Budget(0.2), replication=1, horizons=(40,))
    assert not np.array_equal(a.outcomes[40].gross, other.outcomes[40].gross)  # another replication: other draws


def test_frozen_forward_run_without_offers_reproduces_the_label_probabilities(pop):
    """The label truth assumes a frozen state and no campaigns: so must a forward run that checks it."""
    truth = simulate_cached(CFG, pop.path.parent, progress=False).truth.set_index("customer_id")
    intent, churn = [], []
    for r in range(6):
        run = run_policy(
            pop, P.NoOffers(), 90, Budget(None), replication=r, horizons=(7, 90), frozen=True, record_events=False
        )
        intent.append(run.outcomes[7].bought.mean())
        churn.append(1.0 - run.outcomes[90].bought.mean())
    p_intent = truth.loc[pop.customer_id, "p_intent_7d"].mean()
    p_churn = truth.loc[pop.customer_id, "p_churn_90d"].mean()
    n = pop.n * len(intent)
    assert abs(np.mean(intent) - p_intent) < 4 * np.sqrt(p_intent * (1 - p_intent) / n) + 1e-3
    assert abs(np.mean(churn) - p_churn) < 4 * np.sqrt(p_churn * (1 - p_churn) / n) + 1e-3


def _campaign_observation(pop):
    from sellerlift.closed_loop.forward import _world

    worlds = [_world(pop, ch, 100, True) for ch in pop.chunks]
    t = pop.cfg.history_days
    while True:  # the first day some seller mails
        mailed = [w.mailable(t) for w in worlds]
        if sum(len(m) for m in mailed) > 30:
            return Observation(t, pop, worlds, mailed, Budget(0.15))
        for w in worlds:
            w.step(t)
        t += 1


@pytest.mark.parametrize("objective", ["direct", "enduring"])
def test_the_oracle_is_never_beaten_on_its_own_objective(pop, objective):
    obs = _campaign_observation(pop)
    oracle = P.Oracle(objective)
    profit, spend = oracle.values(obs)
    profit[:, 0], spend[:, 0] = 0.0, 0.0
    mine = oracle(obs)
    rows = np.arange(obs.n)
    best = profit[rows, mine].sum()
    assert spend[rows, mine].sum() <= obs.budget * (1 + 1e-9)
    rng = np.random.default_rng(0)
    rivals = [P.top_value(10)(obs), P.rfm_at_risk(15)(obs), P.blanket(20)(obs)]
    rivals += [rng.integers(0, 7, obs.n) for _ in range(200)]
    for other in rivals:
        if spend[rows, other].sum() <= obs.budget:  # any assignment within the budget, judged by the oracle's truth
            assert profit[rows, other].sum() <= best + 1e-6 * abs(best) + 1e-9


def test_enduring_oracle_beats_the_direct_one_over_90_days_and_rules_trail(pop):
    runs = {
        p.name: run_policy(pop, p, 90, Budget(0.15), horizons=(90,), record_events=False)
        for p in (P.NoOffers(), P.top_value(10), P.Oracle("direct"), P.Oracle("enduring"))
    }

    def inc(name):
        o, b = runs[name].outcomes[90], runs["no_offers"].outcomes[90]
        return (0.4 * o.gross - o.cost - (0.4 * b.gross - b.cost)).mean()

    assert inc("oracle_enduring") > inc("oracle_direct") > inc("rule_top_value")


def test_policy_levels_are_checked(pop):
    class Bad:
        name = "bad"

        def __call__(self, obs):
            return np.full(obs.n, 9)

    with pytest.raises(ValueError, match="level indices in"):
        run_policy(pop, Bad(), 30, Budget(0.1))


def test_evaluate_command_writes_every_promised_figure(pop, tmp_path):
    out_json = tmp_path / "closed_loop.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sellerlift.evaluate",
            "closed-loop",
            "--sim",
            str(pop.path),
            "--quick",
            "--out-dir",
            str(tmp_path / "out"),
            "--json",
            str(out_json),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out_json.read_text())
    pols = doc["policies"]
    assert {
        "no_offers",
        "rule_top_value",
        "rule_rfm_at_risk",
        "random",
        "blanket_10",
        "oracle_direct",
        "oracle_enduring",
        "observable_ceiling",
    } <= set(pols)
    for h in ("30d", "90d"):
        row = pols["oracle_enduring"][h]
        for key in (
            "conversion",
            "retained",
            "revenue",
            "discount_cost",
            "incremental_profit",
            "roi",
            "aov",
            "active",
            "incentive_sd",
            "true_effect",
        ):
            assert key in row, key
    ceil = pols["observable_ceiling"]["90d"]
    assert {"ab_estimate", "ab_ci", "ab_true_effect"} <= set(ceil)
    assert {"did_estimate", "did_ci", "did_true_effect"} <= set(pols["observable_ceiling"]["did"])
    for est in ("ipw", "snipw", "dr"):
        assert {"estimate", "ci", "covers_truth"} <= set(doc["ope"]["randomized"][est])
    assert pols["oracle_enduring"]["90d"]["incremental_profit"] > pols["rule_top_value"]["90d"]["incremental_profit"]
    for png in ("revenue_and_retention_by_policy.png", "ab.png", "did_event_study.png", "ope.png"):
        assert (tmp_path / "out" / png).stat().st_size > 5000, png
    assert "| oracle_enduring |" in (tmp_path / "out" / "policy_table.md").read_text()


def test_loyalty_is_measured_at_the_cutoff_and_at_each_horizon_with_one_yardstick(pop, tmp_path_factory):
    """The bundle's loyalty score of every customer from the history each policy produced: the same at the cutoff
    for every policy, the runtime's own score of the forward run's events at the horizon, moved by the offers."""
    import pandas as pd
    from test_serve import build_test_bundle

    from sellerlift.closed_loop.evaluate import loyalty_measure
    from sellerlift.closed_loop.outcomes import policy_rows
    from sellerlift.runtime import Runtime, loyalty_of

    bundle = build_test_bundle(tmp_path_factory)["bundle_full"]
    measure = loyalty_measure(bundle)
    assert measure is not None
    runs = {
        p.name: run_policy(pop, p, 30, Budget(0.15), horizons=(30,), loyalty=measure)
        for p in (P.NoOffers(), P.blanket(10))
    }
    none, blanket = runs["no_offers"], runs["blanket_10"]
    np.testing.assert_array_equal(none.loyalty_start, blanket.loyalty_start)
    assert none.loyalty_start.shape == (pop.n,)
    assert none.loyalty_start.min() >= 0.0 and none.loyalty_start.max() <= 1.0
    history = pd.concat([ch.history for ch in pop.chunks], ignore_index=True)
    direct = loyalty_of(Runtime.load(bundle), history, pop.cfg.cutoff, customers=pop.customer_id)
    np.testing.assert_allclose(none.loyalty_start, direct["loyalty"].to_numpy(), rtol=1e-6)
    assert not np.array_equal(none.outcomes[30].loyalty, blanket.outcomes[30].loyalty)  # offers changed histories
    row = policy_rows(runs, 0.4).set_index("policy").loc["blanket_10"]
    change = blanket.outcomes[30].loyalty - blanket.loyalty_start
    assert row["loyalty_change"] == pytest.approx(change.mean())
    assert row["loyalty_change_reached"] == pytest.approx(change[blanket.outcomes[30].offers > 0].mean())


def test_retention_aware_policies_at_weight_0_are_the_next_week_policy(pop, tmp_path_factory):
    """Both kinds of enduring value (margin after the week, retention at CLV) reduce to today's allocation at
    weight 0, in the loop; at weight 1 they run forward."""
    from test_serve import build_test_bundle

    bundle = build_test_bundle(tmp_path_factory)["bundle_full"]
    budget = Budget(0.15)
    base = run_policy(pop, P.model_policy(bundle, name="next_week"), 30, budget, horizons=(30,))
    for value in ("margin", "retention"):
        same = run_policy(pop, P.retention_aware_policy(bundle, 0.0, value=value), 30, budget, horizons=(30,))
        np.testing.assert_array_equal(same.outcomes[30].discount_pct, base.outcomes[30].discount_pct)
        np.testing.assert_array_equal(same.outcomes[30].net, base.outcomes[30].net)
        aware = P.retention_aware_policy(bundle, 1.0, value=value)
        assert aware.name == f"retention_aware_{value}_w1"
        run = run_policy(pop, aware, 30, budget, horizons=(30,))
        assert np.isfinite(run.outcomes[30].net).all()
    with pytest.raises(ValueError, match="expected one of"):
        from sellerlift.runtime.enduring import enduring_value

        enduring_value({"later_revenue": np.zeros((1, 7))}, 0.4, "clv")
