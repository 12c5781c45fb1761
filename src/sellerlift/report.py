"""A per-run report an analyst can read without code: ``report/report.html`` and ``report/report.md``.

Built only from what the run itself logged to MLflow (metrics, tags, ``plots/``,
``tables/``) plus its child runs (the promotion engine logs its response curves
and ROI-by-budget plots into a nested run), so it can be rebuilt for any past
run::

    python -m sellerlift.report <run id>              # (re)build and log it to the run
    python -m sellerlift.report <run id> --out DIR    # only write it to DIR

The pipeline logs it at the end of every tracked run (``report.enabled``). The
HTML file is self-contained (images inlined), so the MLflow UI's artifact view
shows it as is; the markdown version links to the run's ``plots/`` artifacts.
"""

from __future__ import annotations

import argparse
import base64
import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sellerlift.constants import HEADS, head_description, horizons_of

REPORT_DIR = "report"
METRICS = (
    ("auroc", "AUROC"),
    ("ap", "average precision"),
    ("ece", "calibration error (ECE)"),
    ("precision_top20", "precision in the top 20 %"),
)
# Sections: (title, plot name fragments, table names, what to look at)
SECTIONS = (
    (
        "Ranking and calibration",
        ("roc_calibration", "roc"),
        (),
        "Left: ROC curves (higher and further left is better; the dashed *truth* curve, when shown, is the "
        "best any model can do on simulated data). Right: predicted vs observed rates; points on the diagonal "
        "mean the probabilities can be read at face value.",
    ),
    (
        "Model comparison",
        ("baseline", "comparison"),
        ("model_comparison", "calibration_bands"),
        "The sequence model next to classic baselines on the same customers and split.",
    ),
    (
        "Customer segments",
        ("segment",),
        ("segment_summary", "segment_k_selection"),
        "RFM segments (recency, frequency, monetary value, tenure) with their size, churn and purchase rates.",
    ),
    (
        "Promotion response",
        ("response_curves", "uplift_by_level", "assigned_levels", "propensity"),
        (),
        "Probability of a purchase at each discount level; curves never go down as the discount goes up.",
    ),
    (
        "Return on promotion budget",
        ("roi", "budget", "qini"),
        ("roi_table", "share_of_oracle", "allocation"),
        "Expected incremental profit and ROI of the allocation at each budget, next to the rules sellers use.",
    ),
)


@dataclass
class RunArtifacts:
    run_id: str
    label: str  # "" for the run itself, else e.g. "dipn (child run)"
    plots: dict[str, Path] = field(default_factory=dict)  # artifact path -> local file
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # table name -> frame


def _walk(client, run_id: str, path: str) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out.extend(_walk(client, run_id, a.path) if a.is_dir else [a.path])
    return out


def _collect(client, run_id: str, label: str, dst: Path) -> RunArtifacts:
    arts = RunArtifacts(run_id, label)
    for folder in ("plots", "tables"):
        for path in _walk(client, run_id, folder):
            if folder == "plots" and path.endswith((".png", ".jpg", ".svg")):
                arts.plots[path] = Path(client.download_artifacts(run_id, path, str(dst)))
            elif folder == "tables" and path.endswith(".csv"):
                local = client.download_artifacts(run_id, path, str(dst))
                try:
                    arts.tables[Path(path).stem] = pd.read_csv(local)
                except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
                    continue
    return arts


def _children(client, run) -> list:
    try:
        return client.search_runs(
            [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'", max_results=200
        )
    except Exception:  # an MLflow server without search support for tags: no children, no failure
        return []


def run_horizons(params: dict) -> dict[str, int]:
    """The run's label horizons from its params (``data.horizons.*``); 7 / 90 days for runs that predate them."""
    return horizons_of({k.rsplit(".", 1)[1]: v for k, v in params.items() if k.startswith("data.horizons.")})


def _ci(metrics: dict, key: str) -> str | None:
    lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return None if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


def _metric_table(metrics: dict[str, float], horizons: dict | None = None) -> pd.DataFrame | None:
    rows = []
    for head in HEADS:
        for key, name in METRICS:
            vals = {split: metrics.get(f"{split}/{head}_{key}") for split in ("val", "test", "ceiling")}
            if any(v is not None for v in vals.values()):
                rows.append(
                    {
                        "target": f"{head} ({head_description(head, horizons)})",
                        "metric": name,
                        "val": vals["val"],
                        "test": vals["test"],
                        "test 95 % CI": _ci(metrics, f"test/{head}_{key}"),
                        "ceiling": vals["ceiling"],
                    }
                )
    if not rows:
        return None
    df = pd.DataFrame(rows).rename(columns={"val": "validation", "ceiling": "ceiling (truth)"})
    return df.dropna(axis=1, how="all")


def _label_facts(tags: dict, metrics: dict) -> list[tuple[str, str]]:
    """Positives per split and head, and the small-data warning when the run had one."""
    counts = []
    for h in HEADS:
        parts = [
            f"{s} {int(metrics[k]):,}" for s in ("train", "val", "test") if (k := f"data/{s}_{h}_positives") in metrics
        ]
        if parts:
            counts.append(f"{h} " + " / ".join(parts))
    facts = [("positives per split", "; ".join(counts))] if counts else []
    if tags.get("guards.small_data") == "true":
        facts.append(
            (
                "WARNING",
                f"too few labels to measure ({tags.get('guards.reason', '')}): the test numbers "
                "are noise, read their intervals; this run is not a champion candidate",
            )
        )
    return facts


def _section_of(name: str, kind: int) -> int | None:
    low = name.lower()
    for i, sec in enumerate(SECTIONS):
        if any(f in low for f in sec[kind]):
            return i
    return None


def build_report(client, run_id: str, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` for ``run_id`` into ``out_dir``; returns both paths."""
    import os

    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one tqdm bar per downloaded plot otherwise
    try:
        return _build_report(client, run_id, out_dir)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def _build_report(client, run_id: str, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = client.get_run(run_id)
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    with tempfile.TemporaryDirectory() as tmp:
        parts = [_collect(client, run_id, "", Path(tmp) / "self")]
        for child in _children(client, run):
            kind = child.data.tags.get("model.kind", "")
            if kind == "baseline":  # their numbers are in the main run's comparison table already
                continue
            name = child.data.tags.get("mlflow.runName") or child.info.run_id[:8]
            parts.append(
                _collect(
                    client,
                    child.info.run_id,
                    f"{name} (child run {child.info.run_id[:8]})",
                    Path(tmp) / child.info.run_id,
                )
            )
        sections: list[dict] = [{"plots": [], "tables": []} for _ in SECTIONS]
        other: dict = {"plots": [], "tables": []}
        for part in parts:
            for path, local in sorted(part.plots.items()):
                i = _section_of(Path(path).stem, 1)
                (sections[i] if i is not None else other)["plots"].append((part, path, local))
            for name, df in part.tables.items():
                i = _section_of(name, 2)
                (sections[i] if i is not None else other)["tables"].append((part, name, df))

        model = params.get("model.name", tags.get("model.kind", "model"))
        title = f"{model} on {tags.get('data.name', params.get('data.name', 'data'))}"
        facts = [
            ("run", f"{run.info.run_name or ''} ({run_id})"),
            ("status", run.info.status),
            ("started", pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")),
            (
                "data",
                f"{tags.get('data.name', '—')}, cutoff {tags.get('data.cutoff', '—')}, "
                f"fingerprint {tags.get('data.fingerprint', '—')}",
            ),
            ("code", tags.get("git.commit", "—")),
            (
                "champion",
                f"{tags['champion.decision']}: {tags.get('champion.reason', '')}"
                if "champion.decision" in tags
                else "—",
            ),
            ("parent run (sweep)", tags.get("mlflow.parentRunId", "—")),
            *_label_facts(tags, metrics),
        ]
        mt = _metric_table(metrics, run_horizons(params))
        html_doc = _html(title, facts, mt, sections, other)
        md_doc = _markdown(title, facts, mt, sections, other)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(html_doc)
    md_path.write_text(md_doc)
    return html_path, md_path


def log_report(client, run_id: str) -> str:
    """Build the report of ``run_id`` and log it to the run under ``report/``; returns a one-line summary."""
    with tempfile.TemporaryDirectory() as tmp:
        html_path, _ = build_report(client, run_id, tmp)
        client.log_artifacts(run_id, tmp, REPORT_DIR)
    return f"{REPORT_DIR}/{html_path.name} (+ report.md) in the run's artifacts"


# --------------------------------------------------------------------------- rendering


def _img_b64(path: Path) -> str:
    mime = "image/svg+xml" if path.suffix == ".svg" else f"image/{path.suffix.lstrip('.').replace('jpg', 'jpeg')}"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _df_html(df: pd.DataFrame, max_rows: int = 40) -> str:
    return df.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="t", na_rep="—")


def _df_md(df: pd.DataFrame, max_rows: int = 40) -> str:
    df = df.head(max_rows)
    return df.astype(object).where(df.notna(), None).to_markdown(index=False, floatfmt=".4g", missingval="—")


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table.t,table.facts{border-collapse:collapse;margin:.6em 0}table.t td,table.t th,table.facts td{padding:.25em .7em;
border-bottom:1px solid #eee;text-align:right}table.t th{background:#f6f6f6}table.facts td:first-child{font-weight:600;
text-align:left}table.facts td{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.note{color:#555}.src{color:#888;font-size:.85em}"""


def _html(title, facts, mt, sections, other) -> str:
    h = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>sellerlift report: {html.escape(title)}</h1>",
        "<table class='facts'>"
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
        + "</table>",
    ]
    if mt is not None:
        h.append(
            "<h2>Key metrics</h2><p class='note'>Validation picks models (sweeps, champion); test is the "
            "untouched estimate; the ceiling is the score of the true probabilities (simulator only).</p>"
        )
        h.append(_df_html(mt))
    for (sec_title, _, _, note), content in zip(SECTIONS, sections):
        if not content["plots"] and not content["tables"]:
            continue
        h.append(f"<h2>{html.escape(sec_title)}</h2><p class='note'>{html.escape(note)}</p>")
        h += _html_items(content)
    if other["plots"] or other["tables"]:
        h.append("<h2>More plots and tables</h2>")
        h += _html_items(other)
    h.append("</body></html>")
    return "\n".join(h)


def _html_items(content) -> list[str]:
    out = []
    for part, name, df in content["tables"]:
        src = f" <span class='src'>from {html.escape(part.label)}</span>" if part.label else ""
        out.append(f"<h3>{html.escape(name.replace('_', ' '))}{src}</h3>{_df_html(df)}")
    for part, path, local in content["plots"]:
        src = f" <span class='src'>from {html.escape(part.label)}</span>" if part.label else ""
        out.append(
            f"<h3>{html.escape(Path(path).stem.replace('_', ' '))}{src}</h3>"
            f"<img alt='{html.escape(path)}' src='{_img_b64(local)}'>"
        )
    return out


def _markdown(title, facts, mt, sections, other) -> str:
    m = [f"# sellerlift report: {title}", "", "| | |", "|---|---|"]
    m += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in facts]
    if mt is not None:
        m += [
            "",
            "## Key metrics",
            "",
            "Validation picks models; test is the untouched estimate; the ceiling is "
            "the score of the true probabilities (simulator only).",
            "",
            _df_md(mt),
        ]
    for (sec_title, _, _, note), content in list(zip(SECTIONS, sections)) + [
        (("More plots and tables",) + ("",) * 3, other)
    ]:
        if not content["plots"] and not content["tables"]:
            continue
        m += ["", f"## {sec_title}", ""] + ([note, ""] if note else [])
        for part, name, df in content["tables"]:
            m += [f"### {name.replace('_', ' ')}" + (f" (from {part.label})" if part.label else ""), "", _df_md(df), ""]
        for part, path, _ in content["plots"]:
            if part.label:  # a child run's artifact: not reachable by a relative link
                m.append(f"- `{path}` from {part.label} (inlined in report.html)")
            else:
                m.append(f"![{Path(path).stem}](../{path})")
    return "\n".join(m) + "\n"


def main(argv: list[str] | None = None) -> int:
    from sellerlift.champion import default_tracking_uri

    ap = argparse.ArgumentParser(prog="python -m sellerlift.report", description="Build the report of an MLflow run.")
    ap.add_argument("run_id")
    ap.add_argument("--out", help="write report.html/report.md here instead of logging them to the run")
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db")
    args = ap.parse_args(argv)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri or default_tracking_uri())
    if args.out:
        html_path, md_path = build_report(client, args.run_id, args.out)
        print(f"wrote {html_path} and {md_path}")
    else:
        print(f"logged {log_report(client, args.run_id)} of run {args.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
