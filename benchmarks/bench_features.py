"""Features: events table -> padded arrays + aggregates, NumPy vs a plain pandas groupby version.

    python benchmarks/bench_features.py [--quick] [--customers 100000]

Both implementations produce the same numbers (checked here); the ratio is
pandas time / NumPy time measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed, write_result

from sellerlift.features import FeatureSpec, build_features
from sellerlift.sim import SimulatorConfig, simulate


def pandas_features(events: pd.DataFrame, cutoff: pd.Timestamp, max_len: int):
    """The same per-event features with pandas groupby (the obvious implementation)."""
    ev = events[events["ts"] < cutoff].sort_values(["customer_id", "ts"], kind="stable")
    g = ev.groupby("customer_id", sort=True)
    gap = g["ts"].diff().dt.total_seconds().fillna(0.0) / 86_400
    age = (cutoff - ev["ts"]).dt.total_seconds() / 86_400
    feats = pd.DataFrame(
        {
            "customer_id": ev["customer_id"].to_numpy(),
            "type": ev["event_type"].cat.codes.to_numpy() + 1,
            "log_amount": np.log1p(ev["amount"].to_numpy()),
            "log_gap": np.log1p(gap.to_numpy()),
            "log_age": np.log1p(age.to_numpy()),
        }
    )
    tail = feats.groupby("customer_id", sort=True).tail(max_len)
    pos = tail.groupby("customer_id", sort=True).cumcount().to_numpy()
    ids, row = np.unique(tail["customer_id"].to_numpy(), return_inverse=True)
    event_type = np.zeros((len(ids), max_len), np.int64)
    numeric = np.zeros((len(ids), max_len, 3), np.float32)
    event_type[row, pos] = tail["type"].to_numpy()
    numeric[row, pos] = tail[["log_amount", "log_gap", "log_age"]].to_numpy(np.float32)
    purchases = ev[ev["event_type"] == "purchase"].groupby("customer_id")["amount"].agg(["count", "sum"])
    counts = ev.groupby(["customer_id", "event_type"], observed=False).size().unstack(fill_value=0)
    return ids, event_type, numeric, purchases, counts


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--customers", type=int, default=100_000)
    args = ap.parse_args(argv)
    n = 2_000 if args.quick else args.customers
    sim = simulate(SimulatorConfig(n_customers=n, n_sellers=20), None, progress=False)
    events, cutoff = sim.events, sim.cutoff
    spec = FeatureSpec(max_len=64)
    repeats = 2 if args.quick else 3

    ours, t_np = timed(lambda: build_features(events, cutoff, spec), repeats)
    theirs, t_pd = timed(lambda: pandas_features(events, cutoff, spec.max_len), repeats)
    np.testing.assert_array_equal(ours.event_type, theirs[1])
    np.testing.assert_allclose(ours.numeric, theirs[2], atol=1e-5)

    tracemalloc.start()
    build_features(events, cutoff, spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n_events = int((events["ts"] < cutoff).sum())
    result = {
        "customers": n,
        "events_before_cutoff": n_events,
        "max_len": spec.max_len,
        "numpy": t_np,
        "pandas_groupby": t_pd,
        "numpy_events_per_s": n_events / t_np["median_s"],
        "pandas_events_per_s": n_events / t_pd["median_s"],
        "speedup_numpy_over_pandas": t_pd["median_s"] / t_np["median_s"],
        "numpy_peak_traced_mib": peak / 2**20,
        "input_table_mib": float(events.memory_usage(deep=True).sum() / 2**20),
    }
    write_result("features", result, args.quick)
    return result


if __name__ == "__main__":
    r = main()
    print(
        f"{r['customers']:,} customers, {r['events_before_cutoff']:,} events: NumPy {r['numpy_events_per_s']:,.0f} "
        f"events/s, pandas {r['pandas_events_per_s']:,.0f} events/s, ratio {r['speedup_numpy_over_pandas']:.1f}x, "
        f"peak {r['numpy_peak_traced_mib']:.0f} MiB"
    )
