"""What stages share within one run: data, the MLflow run, the bundle being built."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from sellerlift.data.sources import Tables
from sellerlift.features import FeatureSpec, SequenceFeatures


@dataclass
class Prepared:
    """Features, labels and split of every customer with history before the cutoff."""

    feats: SequenceFeatures  # standardised with the training split's statistics
    targets: np.ndarray  # [n, 2]: intent, churn
    split: np.ndarray  # 0 train, 1 val, 2 test
    spec: FeatureSpec
    truth: pd.DataFrame | None  # simulator truth aligned to feats.customer_id


@dataclass
class RunContext:
    cfg: DictConfig
    root: Path
    tables: Tables
    prep: Prepared
    bundle_dir: Path
    logger: object | None = None  # lightning MLFlowLogger
    run_id: str | None = None
    bundle_files: dict[str, Path] = field(default_factory=dict)  # name -> file inside bundle_dir
    bundle_extra: dict = field(default_factory=dict)  # extra manifest entries
    metrics: dict[str, float] = field(default_factory=dict)  # final metrics (into the manifest)
    timings: dict[str, float] = field(default_factory=dict)
    summary_rows: list[tuple[str, str]] = field(default_factory=list)  # printed at the end
    promotion_result: object | None = None  # set by the promotion stage (read by benchmarks)

    @property
    def client(self):
        return self.logger.experiment if self.logger is not None else None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.client is not None:
            for k, v in metrics.items():
                self.client.log_metric(self.run_id, k, float(v), step=step or 0)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.client is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_table(self, df: pd.DataFrame, name: str, artifact_path: str = "tables") -> None:
        """A table as CSV and markdown artifacts (readable in the MLflow UI)."""
        if self.client is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            df.to_csv(Path(tmp) / f"{name}.csv", index=False)
            (Path(tmp) / f"{name}.md").write_text(df.to_markdown(index=False, floatfmt=".4g"))
            self.client.log_artifacts(self.run_id, tmp, artifact_path)
