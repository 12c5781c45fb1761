"""The promotion stage end to end on tiny data, and the allocation evaluation against the oracle."""

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from sellerlift import allocate
from sellerlift.pipeline import run
from sellerlift.policy_eval import evaluate_allocation
from sellerlift.promotion_features import dipn_inputs
from sellerlift.runtime import Runtime, verify_bundle
from sellerlift.schema import DISCOUNT_LEVELS

PROMO_TINY = [
    "promotion.dipn.trainer.max_epochs=2",
    "promotion.dipn.trainer.limit_train_batches=3",
    "promotion.dipn.net.hidden=[16]",
    "promotion.baselines.lightgbm_params.n_estimators=10",
    "promotion.propensity.max_rows=2000",
    "promotion.allocation.curve_fractions=[0.05,0.3]",
]
# segments are someone else's stage and cost time; the bundle-sharing is the same for any extra
EXTRAS = "extras=[sellerlift.stages.promotion.train_promotion]"


@pytest.fixture(scope="module")
def sim_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sim")


def _server_side_curves(bundle_dir, events, cutoff, customers):
    """What serve/ does: the runtime on raw events -> features (bundle spec) -> [sequence.onnx] -> dipn.onnx."""
    rt = Runtime.load(bundle_dir)
    feats = rt.features_of(events, cutoff, customers=customers)
    manifest = rt.manifest
    n_inputs = dipn_inputs(feats, rt.score(feats)).shape[1]
    assert n_inputs == manifest["dipn"]["n_inputs"] == len(manifest["dipn"]["inputs"])
    return rt.curves(feats)


@pytest.mark.slow  # trains and exports the sequence model first (minutes on a busy 2-core box)
def test_default_run_has_one_bundle_and_a_nested_dipn_run(tiny_config, sim_cache):
    cfg = tiny_config(
        EXTRAS, *PROMO_TINY, "promotion.propensity.candidates=[logistic]", f"data.source.cache_root={sim_cache}"
    )
    result = run(cfg)
    manifest = verify_bundle(result.bundle_dir)
    assert {"sequence", "dipn"} <= set(manifest["files"])
    info = manifest["dipn"]
    assert manifest["discount_levels"] == list(DISCOUNT_LEVELS) and info["uses_sequence_outputs"] is True
    assert "levels" not in info  # each fact once: the levels are the bundle's
    assert info["onnx_parity_max_abs_diff"] <= 1e-5
    assert "dipn/test/curve_rmse" in manifest["metrics"]

    client = MlflowClient(cfg.logger.tracking_uri)
    parent = client.get_run(result.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    dipn_runs = [r for r in children if r.data.tags.get("model.kind") == "dipn"]
    assert len(dipn_runs) == 1
    child = dipn_runs[0]
    assert child.info.status == "FINISHED"
    assert child.data.params["model.name"] == "dipn"
    for k in (
        "test/curve_rmse",
        "test/uplift_rmse",
        "test/non_monotone_frac",
        "test/offer_ece",
        "baseline/mlp/curve_rmse",
        "baseline/lightgbm/curve_rmse",
        "baseline/dipn_no_ipw/curve_rmse",
        "propensity/ece",
        "alloc/medium/share_of_oracle/dipn",
        "alloc/medium/roi/oracle",
    ):
        assert np.isfinite(child.data.metrics[k]), k
    assert child.data.metrics["test/non_monotone_frac"] == 0.0
    plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
    assert {
        "plots/response_curves_by_archetype.png",
        "plots/uplift_by_level.png",
        "plots/roi_and_profit_by_budget.png",
    } <= plots
    versions = client.search_model_versions("name='sellerlift-dipn-simulator'")  # one registry per data set
    assert versions and versions[0].run_id == child.info.run_id

    # the server's path (raw events -> features -> sequence.onnx -> dipn.onnx) gives monotone curves
    from hydra.utils import instantiate

    from sellerlift.data.sources import SimulatorSource  # noqa: F401  (the tables come from the same cache)

    tables = instantiate(cfg.data.source).load()
    customers = np.unique(tables.events["customer_id"].to_numpy())[:50]
    curves = _server_side_curves(result.bundle_dir, tables.events, tables.cutoff, customers)
    assert curves.shape == (50, len(DISCOUNT_LEVELS))
    assert (np.diff(curves, axis=1) >= 0).all() and ((curves >= 0) & (curves <= 1)).all()


def test_model_dipn_is_the_main_run(tmp_path, sim_cache):
    from conftest import TINY, compose_config

    tiny = [o for o in TINY if not o.startswith("model.")]
    cfg = compose_config(
        [
            *tiny,
            "model=dipn",
            "extras=[]",
            *PROMO_TINY,
            "promotion.baselines.mlp=false",
            "promotion.baselines.dipn_no_ipw=false",
            "promotion.allocation.lp_check=false",
            "promotion.onnx_dynamo=false",
            "promotion.propensity.candidates=[logistic]",
            "tracking.register=false",
            f"data.source.cache_root={sim_cache}",
        ],
        root=tmp_path,
    )
    assert OmegaConf.select(cfg, "model.stage") == "sellerlift.stages.promotion.train_promotion"
    result = run(cfg)
    manifest = verify_bundle(result.bundle_dir)
    assert "dipn" in manifest["files"] and "sequence" not in manifest["files"]
    assert manifest["dipn"]["uses_sequence_outputs"] is False
    client = MlflowClient(cfg.logger.tracking_uri)
    r = client.get_run(result.run_id)
    assert r.info.status == "FINISHED" and "mlflow.parentRunId" not in r.data.tags
    assert np.isfinite(r.data.metrics["test/curve_rmse"])
    assert "test/curve_rmse" in manifest["metrics"]


def test_oracle_is_never_beaten_on_the_true_curves():
    """Every policy's true profit is below the LP bound of the oracle at the spend it actually made."""
    inst = allocate.random_instance(3000, seed=3)
    p_true, v_true = inst["p"], inst["value"]
    rng = np.random.default_rng(0)
    noisy = np.clip(p_true + rng.normal(0, 0.05, p_true.shape), 0, 1)
    curves = {"dipn": np.maximum.accumulate(noisy, axis=1), "lightgbm": noisy}
    raw = pd.DataFrame(
        {
            "has_purchase": rng.random(3000) < 0.8,
            "recency_days": rng.uniform(0, 200, 3000),
            "monetary": v_true * rng.lognormal(0, 0.2, 3000),
        }
    )
    acfg = OmegaConf.create(
        {
            "margin": 0.4,
            "budgets": {"low": 0.05, "medium": 0.15, "high": 0.3, "unrestricted": None},
            "curve_fractions": [0.1],
            "rule": {"level_pct": 10},
            "rfm_rule": {"level_pct": 15, "min_recency_days": 60},
            "lp_check": True,
        }
    )
    table, metrics, curve_df, levels = evaluate_allocation(
        curves, p_true, v_true, raw["monetary"].to_numpy(), raw, np.array(["a", "b", "c"])[np.arange(3000) % 3], acfg
    )
    assert set(table["policy"]) >= {
        "dipn",
        "lightgbm",
        "oracle",
        "rule_top_value",
        "rule_rfm_at_risk",
        "random",
        "blanket",
        "purchase_prob",
    }
    for _, row in table.iterrows():
        bound = allocate.allocate_lagrangian(p_true, v_true, 0.4, DISCOUNT_LEVELS, row["spend"] * (1 + 1e-9)).bound
        assert row["profit"] <= bound * (1 + 1e-6) + 1e-6, row.to_dict()
        if row["policy"] == "oracle":
            assert row["share_of_oracle"] == pytest.approx(1.0)
            if row["budget_amount"] == row["budget_amount"]:  # not NaN: a budget was set
                assert row["spend"] <= row["budget_amount"] * (1 + 1e-9)
    assert metrics["alloc/lp_gap_rel"] < 1e-3
    # rules spend the budget as redeemed (true curves): never over it
    rules = table[table["policy"].isin(["rule_top_value", "random", "blanket"]) & table["budget_amount"].notna()]
    assert (rules["spend"] <= rules["budget_amount"] * (1 + 1e-9)).all()
