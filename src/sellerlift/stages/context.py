"""What stages share within one run: data, the MLflow run, the bundle being built."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from sellerlift import tracking
from sellerlift.data.sources import Tables
from sellerlift.features import FeatureSpec, SequenceFeatures


@dataclass
class ExtraRows:
    """Training rows from earlier cutoffs (``data.rolling``): training customers only, labels before the cutoff."""

    feats: SequenceFeatures  # standardised like Prepared.feats; customer ids repeat across cutoffs
    targets: np.ndarray  # [m, 2]
    cutoff: np.ndarray  # [m] datetime64: the cutoff each row was built at


@dataclass
class Prepared:
    """Features, labels and split of every customer with history before the cutoff (one row each)."""

    feats: SequenceFeatures  # standardised with the training split's statistics
    targets: np.ndarray  # [n, 2]: intent, churn
    split: np.ndarray  # 0 train, 1 val, 2 test
    spec: FeatureSpec
    truth: pd.DataFrame | None  # simulator truth aligned to feats.customer_id
    extra: ExtraRows | None = None  # more training rows from earlier cutoffs (data.rolling), else None

    def training_rows(self) -> tuple[SequenceFeatures, np.ndarray, np.ndarray]:
        """(feats, targets, split) with the earlier cutoffs' rows appended to the training split."""
        if self.extra is None or len(self.extra.targets) == 0:
            return self.feats, self.targets, self.split
        return (
            SequenceFeatures.concat([self.feats, self.extra.feats]),
            np.concatenate([self.targets, self.extra.targets]),
            np.concatenate([self.split, np.zeros(len(self.extra.targets), self.split.dtype)]),
        )


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
    ceiling: dict | None = None  # simulator runs: the observable ceiling (stages.ceiling), for the promotion stage
    promotion: dict | None = None  # the promotion stage's offers, propensity model, held-out inputs (stages.enduring)
    enduring: dict | None = None  # the enduring stage's network (stages.action_segments)

    @property
    def client(self):
        return self.logger.experiment if self.logger is not None else None

    @property
    def data_source(self) -> str:
        """Where the run's data came from (the file, or the simulator world), for MLflow dataset inputs."""
        from omegaconf import OmegaConf

        return OmegaConf.select(self.cfg, "data.source.path", default=None) or self.tables.world

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.client is not None:
            tracking.log_metrics(self.client, self.run_id, metrics, step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.client is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_table(self, df: pd.DataFrame, name: str, artifact_path: str = "tables") -> None:
        if self.client is not None:
            tracking.log_table(self.client, self.run_id, df, name, artifact_path)


def is_global_zero() -> bool:
    """True in the process that owns the MLflow run and the bundle (global rank 0, or no DDP at all).

    Read from the environment the launchers set (Lightning's subprocess launcher: LOCAL_RANK and
    NODE_RANK; torchrun: RANK; SLURM: SLURM_PROCID), since the run starts before the Trainer exists.
    """
    import os

    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").strip().isdigit():
            return int(os.environ[var]) == 0
    node = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")).strip() or "0"
    local = os.environ.get("LOCAL_RANK", "0").strip() or "0"
    return int(node) == 0 and int(local) == 0
