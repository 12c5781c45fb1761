"""The scorer's ``--budget`` on an engine: the curves stay in the scored parts; one allocation shard
(:class:`ScoreShard`) per group of partitions solves its share of the budget with the driver bisecting the
multiplier (:mod:`sellerlift.allocate.sharded`), then writes its parts with the chosen discount.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.allocate.shard import AllocShard
from sellerlift.engine.base import Engine, chunks_of
from sellerlift.score_parts import _Writer, part_name, public


class ScoreShard(AllocShard):
    """An allocation shard over scored parts: loads their curves and values, writes them back with the discount."""

    def __init__(self, source):
        self.folder, self.parts, self.offsets, self.levels, self.margin, self.final = source
        p, v, idx = [], [], []
        for j, off in zip(self.parts, self.offsets):
            cols = [f"conversion_{lvl}pct" for lvl in self.levels] + ["_value"]
            df = pd.read_parquet(Path(self.folder) / part_name(j), columns=cols)
            p.append(df[cols[:-1]].to_numpy(np.float64))
            v.append(df["_value"].to_numpy(np.float64))
            idx.append(off + np.arange(len(df), dtype=np.int64))
        p = np.concatenate(p) if p else np.zeros((0, len(self.levels)))
        value = np.concatenate(v) if v else np.zeros(0)
        super().__init__(
            {
                "index": np.concatenate(idx) if idx else np.zeros(0, np.int64),
                "p": p,
                "value": value,
                "margin": np.full(len(value), self.margin),
            }
        )

    def write_offers(self) -> int:
        """Each part with ``discount_pct, expected_spend, expected_incremental_profit, objective`` (no ``_value``)."""
        from sellerlift.allocate import profit_and_spend_at

        level = self.level
        d = self.data
        profit, spend = profit_and_spend_at(d["p"], d["value"], d["margin"], self.levels, level)
        pct = np.asarray(self.levels, dtype=np.float64)[level]
        pos = 0
        for j in self.parts:
            df = public(pd.read_parquet(Path(self.folder) / part_name(j)))
            sl = slice(pos, pos + len(df))
            df["discount_pct"] = pct[sl]
            df["expected_spend"] = spend[sl]
            df["expected_incremental_profit"] = profit[sl]
            df["objective"] = profit[sl]  # weight 0, no spread penalty (the only options on Ray): the week's profit
            w = _Writer(Path(self.final) / part_name(j))
            w.write(df)
            w.close()
            pos += len(df)
        return pos


def allocate_parts(
    engine: Engine, bundle, scored: Path, stage: Path, done: pd.DataFrame, budget: float, margin: float | None
) -> dict:
    from sellerlift.engine.jobs import allocate

    m = float(margin if margin is not None else bundle.manifest.get("dipn", {}).get("margin", 0.4))
    have = done[done["customers"] > 0]
    offsets = np.concatenate([[0], np.cumsum(have["customers"].to_numpy())[:-1]]).astype(np.int64)
    groups = chunks_of(list(zip(have["partition"].astype(int), offsets)), engine.workers)
    sources = [
        (str(scored), [j for j, _ in g], [int(o) for _, o in g], tuple(bundle.levels), m, str(stage)) for g in groups
    ]
    res, _ = allocate(
        engine,
        sources,
        list(bundle.levels),
        shard_cls=ScoreShard,
        budget=budget,
        after=lambda r: r._call("write_offers"),
    )
    return {
        "budget": budget,
        "spend": res.spend,
        "incremental_profit": res.profit,
        "treated": res.treated,
        "margin": m,
        "allocation_rounds": res.rounds,
        "allocation_floats_sent": res.sent_floats,
        "allocation_shards": len(sources),
        "allocation_status": res.status,
    }


__all__ = ["ScoreShard", "allocate_parts"]
