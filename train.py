"""Train, evaluate, export and track a sellerlift model: `python train.py [overrides]`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("SELLERLIFT_ROOT", str(ROOT))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from sellerlift import sweep

    if sweep.in_multirun():  # a sweep trial: train it in a fresh process (sellerlift.sweep.run_isolated)
        return sweep.run_isolated(__file__)
    from sellerlift.pipeline import run

    result = run(cfg)
    # What a sweep optimises (configs/train.yaml `optimized_metric`, a validation metric).
    value = result.metrics.get(cfg.get("optimized_metric") or "val/churn_auroc")
    value = None if value is None else float(value)
    sweep.write_result(value)
    return value


if __name__ == "__main__":
    main()
