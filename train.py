"""Train, evaluate, export and track a sellerlift model: `python train.py [overrides]`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("SELLERLIFT_ROOT", str(ROOT))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from sellerlift.pipeline import run

    result = run(cfg)
    return result.metrics.get("test/churn_auroc")


if __name__ == "__main__":
    main()
