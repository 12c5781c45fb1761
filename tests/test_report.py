"""Per-run report: logged by every tracked run, built from the run's own artifacts (and child runs')."""

import base64
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from conftest import REPO, TINY, compose_config
from mlflow.tracking import MlflowClient

from sellerlift import report

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def test_tiny_run_logs_a_report_with_its_plots_and_tables(tmp_path):
    # `python train.py` in its own process (a second ONNX export in one process currently fails).
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        *TINY,
        "extras=[sellerlift.stages.segments.fit_segments_stage]",
        f"paths.root_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg = compose_config(TINY, root=tmp_path)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run_info,) = client.search_runs([client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id])
    result = SimpleNamespace(run_id=run_info.info.run_id, metrics=run_info.data.metrics)
    client = MlflowClient(cfg.logger.tracking_uri)
    names = {a.path for a in client.list_artifacts(result.run_id, "report")}
    assert names == {"report/report.html", "report/report.md"}
    html = Path(client.download_artifacts(result.run_id, "report/report.html", str(tmp_path))).read_text()
    md = Path(client.download_artifacts(result.run_id, "report/report.md", str(tmp_path))).read_text()
    for text in (html, md):
        assert "Key metrics" in text and "Ranking and calibration" in text and "Customer segments" in text
        assert f"{result.metrics['test/churn_auroc']:.4g}" in text
    assert html.count("data:image/png;base64,") >= 3  # ROC/calibration x2 + k selection, inlined
    assert "segment summary" in html and "skipped" in html  # segment table; the champion decision
    assert "](../plots/churn_roc_calibration.png)" in md
    # 800 customers: ~7 intent positives in validation; the report says so and gives every test metric's interval
    for text in (html, md):
        assert "positives per split" in text and "too few labels to measure" in text and "test 95 % CI" in text
        assert "no purchase in the next 90 days" in text
    r = client.get_run(result.run_id)
    assert r.info.status == "FINISHED" and r.data.tags["champion.decision"] == "skipped"
    assert "too small to measure" in r.data.tags["champion.reason"]
    assert "val/churn_auroc" in r.data.metrics  # the selection metric is tracked next to test


def test_report_picks_up_promotion_plots_of_child_runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("r", artifact_location=f"file://{tmp_path}/artifacts")
    parent = client.create_run(exp, run_name="gru-simulator").info.run_id
    client.log_metric(parent, "val/churn_auroc", 0.81)
    child = client.create_run(
        exp, run_name="dipn-simulator", tags={"mlflow.parentRunId": parent, "model.kind": "dipn"}
    ).info.run_id
    (tmp_path / "plots").mkdir()
    for name in ("response_curves_by_archetype.png", "roi_and_profit_by_budget.png"):
        (tmp_path / "plots" / name).write_bytes(PNG)
    client.log_artifacts(child, str(tmp_path / "plots"), "plots")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "roi_table.csv").write_text("budget,dipn,oracle\n100,1.5,1.9\n")
    client.log_artifacts(child, str(tmp_path / "tables"), "tables")

    html_path, md_path = report.build_report(client, parent, tmp_path / "out")
    html, md = html_path.read_text(), md_path.read_text()
    assert "Promotion response" in html and "Return on promotion budget" in html
    assert "response curves by archetype" in html and "roi table" in html and "dipn-simulator" in html
    assert "0.81" in md and "roi_and_profit_by_budget.png" in md
