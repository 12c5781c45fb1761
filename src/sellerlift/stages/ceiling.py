"""Stage (simulator runs): the observable ceiling next to the true one, and each model's share of the gap.

The true ceiling (``ceiling/*``: the simulator's own probabilities) knows who is still alive; no
model can reach it. The observable ceiling (``obs_ceiling/*``, :mod:`sellerlift.ceiling`) is the
best a function of the model's inputs can do. ``gap_closed/<metric>`` is the share of the way from
chance (AUROC 0.5) to the observable ceiling that the run's model covers; ``gap_closed_true/...``
the same against the true ceiling. Runs before the promotion stage, which adds the ceiling's curves
to its allocation comparison (``ctx.ceiling``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sellerlift import ceiling, metrics
from sellerlift.constants import HEADS
from sellerlift.sim import SimulatorConfig
from sellerlift.sim.config import RESPONSE_COLUMNS
from sellerlift.stages.context import RunContext


def observable_ceiling_stage(ctx: RunContext) -> None:
    world = getattr(ctx.tables, "world", None)
    if world is None or ctx.prep.truth is None:
        ctx.summary_rows.append(("observable ceiling", f"skipped: {ctx.tables.name} has no simulator truth"))
        return
    ccfg = ctx.cfg.get("ceiling") or {}
    meta = json.loads((Path(world) / "config.json").read_text())
    world_cfg = SimulatorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
    n = int(ccfg.get("customers", ceiling.CEILING_CUSTOMERS))
    model = ceiling.fit(world_cfg, Path(world).parent, n_customers=n, seed=int(ccfg.get("seed", ceiling.CEILING_SEED)))
    prep = ctx.prep
    test = np.flatnonzero(prep.split == 2)
    raw = prep.feats.raw[test]
    pred = model.predict(raw, ["p_intent_7d", "p_churn_90d"])
    probs = np.clip(np.stack([pred["p_intent_7d"], pred["p_churn_90d"]], axis=1), 0.0, 1.0)
    top = float(ctx.cfg.model.module.get("top_fraction", 0.2)) if "module" in ctx.cfg.model else 0.2
    out = metrics.head_metrics(prep.targets[test], probs, "obs_ceiling/", top)
    curves = model.curves(raw)
    true_curves = prep.truth.iloc[test][list(RESPONSE_COLUMNS)].to_numpy()
    out.update({f"obs_ceiling/{k}": v for k, v in metrics.curve_metrics(curves, true_curves).items()})
    out["obs_ceiling/customers"] = float(model.meta["customers"])
    for head in HEADS:
        m, obs, true = (
            ctx.metrics.get(f"test/{head}_auroc"),
            out.get(f"obs_ceiling/{head}_auroc"),
            ctx.metrics.get(f"ceiling/{head}_auroc", _true_ceiling(ctx, head, test)),
        )
        if m is not None and obs is not None and obs > 0.5:
            out[f"gap_closed/{head}_auroc"] = (m - 0.5) / (obs - 0.5)
        if m is not None and true is not None and true > 0.5:
            out[f"gap_closed_true/{head}_auroc"] = (m - 0.5) / (true - 0.5)
    ctx.log_metrics(out)
    ctx.metrics.update({k: v for k, v in out.items() if k.startswith(("obs_ceiling/", "gap_closed"))})
    ctx.ceiling = {"model": model, "test_curves": curves}
    ctx.summary_rows.append(
        (
            "observable ceiling: AUROC intent / churn, curve RMSE",
            f"{out['obs_ceiling/intent_auroc']:.3f} / {out['obs_ceiling/churn_auroc']:.3f}, "
            f"{out['obs_ceiling/curve_rmse']:.4f} (LightGBM on the truth, "
            f"{model.meta['customers']:,} customers)",
        )
    )
    if "gap_closed/churn_auroc" in out:
        ctx.summary_rows.append(
            (
                "share of the gap to the observable ceiling closed (intent / churn)",
                f"{out.get('gap_closed/intent_auroc', np.nan):.0%} / {out['gap_closed/churn_auroc']:.0%}",
            )
        )


def _true_ceiling(ctx: RunContext, head: str, test: np.ndarray) -> float | None:
    from sellerlift.constants import TRUTH_COLUMNS

    y, p = ctx.prep.targets[test, HEADS.index(head)], ctx.prep.truth[TRUTH_COLUMNS[head]].to_numpy()[test]
    return metrics.binary_metrics(y, p)["auroc"] if 0 < y.mean() < 1 else None
