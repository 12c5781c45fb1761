"""Training throughput (sequences/s) for GRU and Transformer, and the share of step time spent on data.

    python benchmarks/bench_training.py [--quick] [--customers 20000]

Runs the real DataModule and LightningModule training step by hand so the time
waiting for a batch and the time in forward/backward/optimiser are measured
separately.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_result

from sellerlift.features import FeatureSpec, build_features
from sellerlift.labels import make_labels, split_customers
from sellerlift.models.datamodule import SequenceDataModule
from sellerlift.models.networks import GRUEncoder, SequenceNet, TransformerEncoder
from sellerlift.models.sequence import SequenceModule
from sellerlift.sim import SimulatorConfig, simulate


def data(n: int, max_len: int):
    sim = simulate(SimulatorConfig(n_customers=n, n_sellers=20), None, progress=False)
    spec = FeatureSpec(max_len=max_len)
    feats = build_features(sim.events, sim.cutoff, spec)
    feats = spec.fit(feats).transform(feats)
    labels = make_labels(sim.events, sim.cutoff, feats.customer_id)
    split = split_customers(feats.customer_id)
    return feats, labels[["intent", "churn"]].to_numpy(np.float32), split


def measure(kind: str, feats, targets, split, batch_size: int, max_batches: int) -> dict:
    torch.manual_seed(0)
    enc = GRUEncoder(64, 64) if kind == "gru" else TransformerEncoder(64, 4, 2, 128, 0.1)
    module = SequenceModule(SequenceNet(enc, d_model=64, head_hidden=64))
    opt = module.configure_optimizers()
    dm = SequenceDataModule(feats, targets, split, batch_size=batch_size)
    dm.setup()
    module.train()
    module.log = lambda *a, **k: None  # no Trainer here: logging is a no-op
    t_data = t_step = 0.0
    n_seq = 0
    it = iter(dm.train_dataloader())
    for i in range(max_batches):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(dm.train_dataloader())
            batch = next(it)
        t1 = time.perf_counter()
        loss = module.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i > 0:  # first step warms up allocators
            t_data += t1 - t0
            t_step += t2 - t1
            n_seq += len(batch["length"])
    return {
        "model": kind,
        "batch_size": batch_size,
        "max_len": feats.event_type.shape[1],
        "sequences_per_s": n_seq / (t_data + t_step),
        "data_wait_share": t_data / (t_data + t_step),
        "batches": max_batches - 1,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--customers", type=int, default=20_000)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    feats, targets, split = data(1_500 if args.quick else args.customers, 64)
    batches, batch_size = (3, 64) if args.quick else (40, 256)
    rows = [measure(kind, feats, targets, split, batch_size, batches) for kind in ("gru", "transformer")]
    result = {"rows": rows}
    write_result("training", result, args.quick)
    return result


if __name__ == "__main__":
    print(markdown_table(main()["rows"], ["model", "batch_size", "max_len", "sequences_per_s", "data_wait_share"]))
