"""DIPN: monotone by construction, ONNX parity, propensity/IPW, offer-time features."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sellerlift.export import check_dipn_parity, export_dipn_onnx
from sellerlift.features import AGGREGATES, FeatureSpec, build_features
from sellerlift.models import dipn as D
from sellerlift.models.propensity import effective_sample_size, fit_propensity, ipw_weights
from sellerlift.promotion_features import dipn_inputs, input_names, offer_time_features
from sellerlift.runtime import session
from sellerlift.schema import DISCOUNT_LEVELS

K = len(DISCOUNT_LEVELS)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.01, 50.0),
    input_scale=st.floats(0.1, 1e4),
    n_inputs=st.integers(1, 30),
    depth=st.integers(0, 3),
)
def test_dipn_is_monotone_for_any_weights_and_inputs(seed, scale, input_scale, n_inputs, depth):
    torch.manual_seed(seed)
    net = D.DIPNNet(n_inputs, hidden=(16,) * depth, dropout=0.0).eval()
    with torch.no_grad():
        for p in net.parameters():  # arbitrary weights, including huge ones
            p.copy_(torch.randn_like(p) * scale)
        x = torch.randn(64, n_inputs) * input_scale
        curve = net(x)
    assert curve.shape == (64, K)
    assert torch.all(torch.isfinite(curve))
    assert torch.all(curve[:, 1:] >= curve[:, :-1])
    assert torch.all((curve >= 0) & (curve <= 1))


def test_unconstrained_mlp_can_go_down():
    """The baseline has no such guarantee: the monotonicity test above could fail for it."""
    torch.manual_seed(0)
    worst = 0.0
    for seed in range(5):
        torch.manual_seed(seed)
        net = D.SLearnerNet(8, hidden=(16,), dropout=0.0).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p) * 3)
            c = net(torch.randn(256, 8))
        worst = min(worst, float((c[:, 1:] - c[:, :-1]).min()))
    assert worst < -1e-3


def test_onnx_export_parity_and_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    n_inputs = len(input_names(True))
    net = D.DIPNNet(n_inputs, hidden=(32, 32), dropout=0.1)
    # the dynamo exporter (the default) is exercised by the stage test; this one starts in a second
    path = export_dipn_onnx(net, tmp_path / "dipn.onnx", n_inputs, dynamo=False)
    diff = check_dipn_parity(net, path, n_inputs)
    assert diff <= 1e-5
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == ["features"]
    assert [o.name for o in sess.get_outputs()] == ["curve"]
    with torch.no_grad():  # large weights: increments underflow, neighbouring levels nearly equal
        for p in net.parameters():
            p.mul_(8.0)
    path = export_dipn_onnx(net, tmp_path / "dipn_big.onnx", n_inputs, dynamo=False)
    assert check_dipn_parity(net.eval(), path, n_inputs, batches=(1, 4096)) <= 1e-5
    sess = session(path)
    for b in (1, 3, 1000, 20000):
        x = np.random.default_rng(b).normal(size=(b, n_inputs)).astype(np.float32) * 10
        out = sess.run(["curve"], {"features": x})
        assert out[0].shape == (b, K)
        assert (np.diff(out[0], axis=1) >= 0).all()


def test_ipw_weights_finite_and_clipped():
    e = np.array([0.0, 1e-9, 0.01, 0.02, 1 / 7, 0.5, 1.0])
    w = ipw_weights(e, clip=0.02, n_levels=K)
    assert np.all(np.isfinite(w))
    assert w.max() == pytest.approx(1 / (K * 0.02))
    assert w[4] == pytest.approx(1.0)  # uniform policy -> weight 1
    assert np.all(w[:4] == w[0])  # everything below the clip gets the clip's weight
    for bad in (0.0, -0.1, 0.5):
        with pytest.raises(ValueError, match="clip"):
            ipw_weights(e, clip=bad, n_levels=K)
    with pytest.raises(ValueError, match="finite"):
        ipw_weights(np.array([np.nan]), clip=0.02, n_levels=K)
    assert effective_sample_size(np.ones(10)) == pytest.approx(10)


def _policy_data(n, rng):
    x = rng.normal(size=(n, 3)).astype(np.float32)
    logits = np.outer(x[:, 0], np.linspace(-1.5, 1.5, K))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    level = (rng.random((n, 1)) > p.cumsum(1)).sum(1).clip(0, K - 1)
    return x, level, p


def test_propensity_model_is_calibrated_and_randomised_rows_are_uniform():
    rng = np.random.default_rng(0)
    x, level, p = _policy_data(6000, rng)
    xv, lv, pv = _policy_data(3000, rng)
    model = fit_propensity(x, level, xv, lv, K, candidates=("logistic", "lightgbm"), seed=0)
    assert model.report["chosen"] in ("logistic", "lightgbm")
    assert set(model.report["candidates"]) == {"logistic", "lightgbm"}
    # the true policy is multinomial logistic: the fitted probabilities are close to it
    assert np.abs(model.predict_proba(xv) - pv).mean() < 0.03
    e = model.propensity(xv, lv, randomized=np.arange(len(lv)) % 2 == 0)
    assert np.allclose(e[::2], 1 / K)
    assert np.all((e > 0) & (e <= 1))


def _toy_events():
    rng = np.random.default_rng(0)
    rows = []
    t0 = pd.Timestamp("2025-01-01")
    for c in [3, 7, 11]:
        for _ in range(rng.integers(5, 30)):
            rows.append(
                (
                    c,
                    t0 + pd.Timedelta(seconds=int(rng.integers(0, 200 * 86400))),
                    rng.choice(["visit", "view", "purchase", "email_open"]),
                    float(rng.uniform(5, 80)),
                )
            )
    ev = pd.DataFrame(rows, columns=["customer_id", "ts", "event_type", "amount"])
    ev["amount"] = np.where(ev["event_type"] == "purchase", ev["amount"], 0.0)
    ev["ts"] = ev["ts"].astype("datetime64[us]")
    return ev.sample(frac=1, random_state=0).reset_index(drop=True)  # unsorted on purpose


def test_offer_time_features_equal_build_features_at_each_offer():
    ev = _toy_events()
    spec = FeatureSpec(max_len=8)
    spec.fit(build_features(ev, "2025-08-01", spec))
    cust = np.array([3, 7, 11, 3, 99, 7])  # 99: no events (cold start)
    ts = (
        pd.to_datetime(
            ["2025-03-01", "2025-05-01", "2025-01-01", "2025-06-15 12:00", "2025-04-01", "2025-07-19"], format="mixed"
        )
        .to_numpy()
        .astype("datetime64[us]")
    )
    got = offer_time_features(ev, cust, ts, spec, chunk_rows=7)  # tiny chunks: several build_features calls
    assert list(got.customer_id) == list(cust)
    for i, (c, t) in enumerate(zip(cust, ts)):
        want = build_features(ev, pd.Timestamp(t), spec, customers=np.array([c]))
        np.testing.assert_allclose(got.aggregates[i], want.aggregates[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got.event_type[i], want.event_type[0])
        np.testing.assert_allclose(got.numeric[i], want.numeric[0], rtol=1e-6, atol=1e-6)
        assert got.length[i] == want.length[0]


def test_dipn_inputs_shapes_and_names():
    ev = _toy_events()
    spec = FeatureSpec(max_len=8)
    feats = build_features(ev, "2025-08-01", spec.fit(build_features(ev, "2025-08-01", spec)))
    x = dipn_inputs(feats)
    assert x.dtype == np.float32 and x.shape == (3, len(AGGREGATES)) == (3, len(input_names(False)))
    seq = {"intent_7d": np.array([0.1, 0.5, 0.0]), "churn_90d": np.array([[0.9], [0.2], [1.0]])}
    xs = dipn_inputs(feats, seq)
    assert xs.shape == (3, len(input_names(True))) and np.isfinite(xs).all()
    np.testing.assert_array_equal(xs[:, : len(AGGREGATES)], x)
    with pytest.raises(ValueError, match="churn_90d"):
        dipn_inputs(feats, {"intent_7d": seq["intent_7d"]})


def test_training_learns_a_monotone_response_and_ipw_corrects_selection(tmp_path):
    """Logged policy gives high discounts to customers who buy anyway; IPW keeps the uplift honest."""
    from conftest import compose_config

    from sellerlift.stages.promotion_models import build_trainer

    rng = np.random.default_rng(0)
    n = 20_000
    x = rng.normal(size=(n, 2)).astype(np.float32)
    base = 1 / (1 + np.exp(-(-2.0 + 1.0 * x[:, 0])))
    u = 0.3 * (x[:, 1] > 0)  # only x1 > 0 responds, linearly up to the top level
    true = 1 - (1 - base[:, None]) * (1 - u[:, None] * np.linspace(0, 1, K)[None, :])
    logit = np.outer(x[:, 0], np.linspace(-1, 1, K))  # logged policy: favour high-base customers
    e_all = np.exp(logit) / np.exp(logit).sum(1, keepdims=True)
    level = (rng.random((n, 1)) > e_all.cumsum(1)).sum(1).clip(0, K - 1)
    y = (rng.random(n) < true[np.arange(n), level]).astype(np.float32)
    w = ipw_weights(e_all[np.arange(n), level], clip=0.02, n_levels=K)
    tr, va = slice(0, 16_000), slice(16_000, n)
    torch.manual_seed(0)
    module = D.PromotionModule(D.DIPNNet(2, hidden=(32,), dropout=0.0), lr=1e-2, smooth_weight=1.0)
    pcfg = compose_config(
        ["promotion.dipn.trainer.max_epochs=6", "promotion.dipn.callbacks.early_stopping.patience=2"], root=tmp_path
    ).promotion  # the stage's Trainer, early stopping and KeepBest
    rep = D.fit(
        build_trainer(pcfg),
        module,
        D.OfferTensors(x[tr], level[tr], y[tr], w[tr]),
        D.OfferTensors(x[va], level[va], y[va], w[va]),
        batch_size=512,
    )
    assert rep["epochs"] >= 1 and np.isfinite(rep["best_val_loss"])
    pred = D.predict_curves(module.net, x[va])
    assert (np.diff(pred, axis=1) >= 0).all()
    rmse = np.sqrt(np.mean((pred - true[va]) ** 2))
    flat = np.sqrt(np.mean((true[va].mean(0) - true[va]) ** 2))
    assert rmse < 0.5 * flat  # learned something customer-specific
    up = pred[:, -1] - pred[:, 0]
    assert up[x[va][:, 1] > 0].mean() > up[x[va][:, 1] <= 0].mean() + 0.1  # finds the responders
