"""Stage: RFM k-means segments, logged to MLflow and written into the bundle as plain JSON."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from sellerlift import k_selection, segment
from sellerlift.stages.context import RunContext


def fit_segments_stage(ctx: RunContext) -> None:
    cfg = ctx.cfg.segments
    prep = ctx.prep
    rfm = prep.feats.rfm()
    rule = cfg.rule if cfg.rule in k_selection.RULES else int(cfg.rule)
    model, sel = segment.fit_segments(rfm, ks=range(cfg.k_min, cfg.k_max + 1), rule=rule, seed=cfg.seed)
    names = np.asarray(model.names, dtype=object)[model.assign(rfm)]
    summary = segment.segment_summary(rfm, names, churn=prep.targets[:, 1], intent=prep.targets[:, 0])

    path = ctx.bundle_dir / "segments.json"
    path.write_text(json.dumps(model.to_json(), indent=2))
    ctx.bundle_files["segments"] = path
    ctx.log_table(summary.reset_index() if "segment" not in summary.columns else summary, "segment_summary")
    ctx.log_table(sel.table().reset_index(), "segment_k_selection")  # keep the k column
    metrics = {"segments/k": model.k}
    if prep.truth is not None and "archetype" in prep.truth:
        from sklearn.metrics import adjusted_rand_score

        metrics["segments/archetype_ari"] = adjusted_rand_score(prep.truth["archetype"].astype(str), names)
    ctx.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        ctx.log_artifact(k_selection.plot_k_selection(sel, Path(tmp) / "segment_k_selection.png"), "plots")
    ari = f", ARI vs archetypes {metrics['segments/archetype_ari']:.3f}" if "segments/archetype_ari" in metrics else ""
    ctx.summary_rows.append(("segments", f"k={model.k} by {sel.rule}: {', '.join(model.names)}{ari}"))
