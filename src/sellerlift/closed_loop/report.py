"""The closed-loop evaluation written out: plots, a JSON of every figure, markdown tables, an MLflow run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.closed_loop.did import plot_event_study
from sellerlift.closed_loop.evaluate import Result, Settings


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_over_time(daily: pd.DataFrame, path: Path) -> Path:
    """Cumulative net revenue and active customers (an event in the last 30 days) by policy, day by day."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, g in daily.groupby("policy", sort=False):
        style = {"lw": 2.5, "c": "k"} if name.startswith("oracle_enduring") else {"lw": 1.2}
        a1.plot(g["day"], g["cumulative_net_revenue"], label=name, **style)
        a2.plot(g["day"], g["active_30d"], label=name, **style)
    a1.set(xlabel="days after the cutoff", ylabel="cumulative net revenue", title="revenue by policy")
    a2.set(xlabel="days after the cutoff", ylabel="active customers (any event in 30 days)", title="retention")
    for a in (a1, a2):
        a.grid(alpha=0.3)
    a1.legend(fontsize=7)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_estimates(rows: list[tuple[str, float, tuple, float]], title: str, path: Path) -> Path:
    """Estimates with their intervals (points, whiskers) next to the truth (a red cross) for each row."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    for i, (_, est, ci, truth) in enumerate(rows):
        ax.errorbar(est, i, xerr=[[est - ci[0]], [ci[1] - est]], fmt="o", c="C0", capsize=3)
        ax.plot(truth, i, "x", c="C3", ms=9, mew=2, label="truth" if i == 0 else None)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.38, right=0.97, top=0.88, bottom=0.12)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_qini(qini: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(qini["spend"], qini["gain"], "-o", ms=3)
    ax.fill_between(qini["spend"], qini["ci_low"], qini["ci_high"], alpha=0.25)
    ax.set(
        xlabel="expected discount spend per offer",
        ylabel="incremental conversions per offer (DR)",
        title="multi-armed Qini (randomised slice)",
    )
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _finite(v):
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def summary(r: Result, s: Settings, meta: dict) -> dict:
    """Every figure of the evaluation as plain JSON, per policy and horizon."""
    policies = {}
    for row in r.table.to_dict("records"):
        entry = policies.setdefault(row["policy"], {})
        h = f"{row['horizon_days']}d"
        entry[h] = {k: v for k, v in row.items() if k not in ("policy", "horizon_days")}
        entry[h]["true_effect"] = row["incremental_profit"]
    out = {
        "settings": {
            k: getattr(s, k)
            for k in (
                "days",
                "horizons",
                "budget_fraction",
                "per_seller",
                "margin",
                "max_customers",
                "ceiling_customers",
                "seed",
            )
        },
        **meta,
        "customers": r.population,
        "policies": policies,
        "timings": r.timings,
    }
    if r.ab:
        for h, a in r.ab.items():
            entry = policies.setdefault(a["treat"], {}).setdefault(f"{h}d", {})
            entry.update(
                {
                    "ab_estimate": a["estimate"],
                    "ab_ci": a["ci_t"],
                    "ab_ci_bootstrap": a["ci_bootstrap"],
                    "ab_p_value": a["p_value"],
                    "ab_true_effect": a["true_effect"],
                }
            )
        out["ab"] = r.ab
    if r.did:
        out["did"] = {k: v for k, v in r.did.items() if k not in ("event_study", "panel")}
        policies.setdefault(r.did["after"], {})["did"] = {
            "did_estimate": r.did["estimate"],
            "did_ci": r.did["ci"],
            "did_true_effect": r.did["true_effect"],
        }
    if r.ope:
        out["ope"] = {sl: {est: v for est, v in d.items()} for sl, d in r.ope.items()}
    return _finite(out)


def write(r: Result, s: Settings, out_dir: Path, meta: dict) -> dict[str, Path]:
    """Plots, tables (csv + md) and the JSON into ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"over_time": plot_over_time(r.daily, out_dir / "revenue_and_retention_by_policy.png")}
    if r.ab:
        rows = []
        for h, a in r.ab.items():
            rows.append((f"profit/customer, {h} d", a["estimate"], a["ci_t"], a["true_effect"]))
            rows.append(
                (
                    f"conversion, {h} d",
                    a["conversion"]["estimate"],
                    a["conversion"]["ci_t"],
                    a["conversion"]["true_effect"],
                )
            )
        treat = next(iter(r.ab.values()))["treat"]
        files["ab"] = plot_estimates(rows, f"A/B: {treat} vs no offers", out_dir / "ab.png")
    if r.did:
        es = r.did["event_study"]
        files["did"] = plot_event_study(
            es,
            true_effect=es["true_effect"].to_numpy(),
            path=out_dir / "did_event_study.png",
            title=f"rollout of {r.did['after']}: seller revenue per month",
        )
    if r.ope:
        rows = [
            (f"{est} ({sl})", v["estimate"], v["ci"], d["true_value"])
            for sl, d in r.ope.items()
            for est, v in d.items()
            if isinstance(v, dict)
        ]
        files["ope"] = plot_estimates(rows, "off-policy estimates of the conversion rate", out_dir / "ope.png")
    if r.qini is not None:
        files["qini"] = plot_qini(r.qini, out_dir / "qini_budget_curve.png")
    r.table.to_csv(out_dir / "policy_table.csv", index=False)
    (out_dir / "policy_table.md").write_text(policy_markdown(r.table))
    doc = summary(r, s, meta)
    (out_dir / "closed_loop.json").write_text(json.dumps(doc, indent=2))
    files["json"], files["table"] = out_dir / "closed_loop.json", out_dir / "policy_table.md"
    return files


COLUMNS = [
    ("conversion", "conversion", "{:.1%}"),
    ("retained", "retained", "{:.1%}"),
    ("revenue", "revenue", "{:.2f}"),
    ("discount_cost", "cost", "{:.2f}"),
    ("incremental_profit", "incremental profit (95 % CI)", None),
    ("roi", "ROI", "{:.0%}"),
    ("aov", "AOV", "{:.2f}"),
    ("active", "active", "{:.1%}"),
    ("share_of_oracle", "share of oracle", "{:.0%}"),
    ("spread_vs_rule", "spread vs top-value rule", "{:+.0%}"),
    ("loyalty", "loyalty", "{:.3f}"),  # bundles with the value head only
    ("loyalty_change", "loyalty change", "{:+.3f}"),
    ("loyalty_change_reached", "loyalty change, reached", "{:+.3f}"),
]


def policy_markdown(table: pd.DataFrame) -> str:
    """The policy table as markdown, one section per horizon; money per customer of the population."""
    out = []
    columns = [c for c in COLUMNS if not c[0].startswith("loyalty") or c[0] in table]
    for h, g in table.groupby("horizon_days"):
        out += [
            f"**{h} days** (money per customer)",
            "",
            "| policy | " + " | ".join(c[1] for c in columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for row in g.to_dict("records"):
            cells = []
            for key, _, fmt in columns:
                v = row.get(key, float("nan"))
                if key == "incremental_profit":
                    cells.append(
                        f"{v:.2f} ({row['incremental_profit_ci_low']:.2f}, {row['incremental_profit_ci_high']:.2f})"
                    )
                else:
                    cells.append("—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v))
            out.append(f"| {row['policy']} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def log_mlflow(client, parent_run_id: str | None, experiment_id: str, files: dict, doc: dict, s: Settings) -> str:
    """A run (nested under the bundle's run when known) with the settings, the figures and the artifacts."""
    from sellerlift import tracking

    tags = {"model.kind": "closed_loop", "mlflow.runName": "closed-loop"}
    if parent_run_id:
        cm = tracking.child_run(client, parent_run_id, "closed-loop", tags, params=doc["settings"])
    else:
        run = client.create_run(experiment_id, run_name="closed-loop", tags=tags)
        tracking.log_params(client, run.info.run_id, tracking.flatten(doc["settings"]))
        cm = _Finishing(client, run.info.run_id)
    with cm as run_id:
        metrics = {}
        for pol, per in doc["policies"].items():
            for h, m in per.items():
                for k in ("incremental_profit", "retained", "conversion", "roi", "share_of_oracle", "spread_vs_rule"):
                    if isinstance(m, dict) and m.get(k) is not None:
                        metrics[f"closed_loop/{h}/{k}/{pol}"] = m[k]
        tracking.log_metrics(client, run_id, metrics)
        for p in files.values():
            client.log_artifact(run_id, str(p), "closed_loop")
    return run_id


class _Finishing:
    def __init__(self, client, run_id):
        self.client, self.run_id = client, run_id

    def __enter__(self):
        return self.run_id

    def __exit__(self, exc_type, exc, tb):
        self.client.set_terminated(self.run_id, "FAILED" if exc_type else "FINISHED")
        return False
