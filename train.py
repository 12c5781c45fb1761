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
    # What a sweep optimises (configs/train.yaml `optimized_metric`, a validation metric).
    value = result.metrics.get(cfg.get("optimized_metric") or "val/churn_auroc")
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
