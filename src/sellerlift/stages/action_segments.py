"""Stage: segments that say how to act (RFM + the predicted response and value), next to the RFM segments.

Runs after the promotion and enduring stages: every customer's DIPN curve and enduring response at the
cutoff give the features of :mod:`sellerlift.action_segments`; k-means on the training customers, the
names by what they mean for a promotion, the adjusted Rand index against the simulator's archetypes
(the RFM segments' is logged by the segments stage), ``action_segments.json`` into the bundle.
"""

from __future__ import annotations

import json

import numpy as np

from sellerlift import action_segments as A
from sellerlift.models import enduring as E
from sellerlift.promotion_features import dipn_inputs, order_value
from sellerlift.stages.context import RunContext
from sellerlift.stages.enduring import profit_effects


def fit_action_segments_stage(ctx: RunContext) -> None:
    if ctx.promotion is None or ctx.enduring is None:
        ctx.summary_rows.append(("action segments", "skipped: needs the promotion and enduring stages"))
        return
    prep = ctx.prep
    scorer = ctx.promotion["scorer"]
    x = dipn_inputs(prep.feats, scorer(prep.feats) if scorer else None)
    curves = np.clip(ctx.promotion["dipn"](x), 0.0, 1.0)
    pred = E.predict(ctx.enduring["net"], x, ctx.enduring["revenue_scale"])
    margin = float(ctx.cfg.promotion.allocation.margin)
    basket = order_value(prep.feats, ctx.promotion["fallback"])
    enduring_top = profit_effects(pred, margin, basket)[:, -1]
    X = A.action_features(
        prep.feats.raw_columns(["recency_days", "frequency", "monetary", "tenure_days"]),
        curves,
        pred["revenue"][:, 0],
        enduring_top,
    )
    train = prep.split == 0
    model, sel = A.fit(X[train], seed=int(ctx.cfg.seed))
    names = np.asarray(model.names, dtype=object)[model.assign(X)]
    path = ctx.bundle_dir / "action_segments.json"
    path.write_text(json.dumps(model.to_json(), indent=2))
    ctx.bundle_files["action_segments"] = path
    archetype = prep.truth["archetype"].astype(str).to_numpy() if prep.truth is not None else None
    ctx.log_table(A.summary(X, names, archetype), "action_segment_summary")
    metrics = {"action_segments/k": float(model.k)}
    if archetype is not None:
        from sklearn.metrics import adjusted_rand_score

        metrics["action_segments/archetype_ari"] = float(adjusted_rand_score(archetype, names))
    ctx.log_metrics(metrics)
    ctx.metrics.update(metrics)
    ari = f", ARI vs archetypes {metrics['action_segments/archetype_ari']:.3f}" if archetype is not None else ""
    ctx.summary_rows.append(("action segments", f"k={model.k}: {'; '.join(model.names)}{ari}"))
