"""The batch scorer's allocation (``--budget`` and friends): the server's ``/v1/promotions/allocate`` on a file.

Pass 2 of :mod:`sellerlift.score` keeps, per customer, the curve (K floats), the order value, the enduring
model's revenue after the offer's window and retention per level (K floats each, when the bundle has it; the
value head's kept-customer value), the seller and the segment;
:func:`allocate_and_write` then solves one allocation over every customer with the same objective and
constraints as the server (:func:`sellerlift.runtime.allocate_offers`: ``weight`` 0 = the week's profit,
1 = the 90-day profit; total / per-seller / per-tier budgets, a maximum discount per customer or per
segment, a spread penalty, a maximum incentive) and writes the scores again with the chosen level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.runtime import Runtime
from sellerlift.runtime.enduring import ENDURING_VALUES


class AllocationError(ValueError):
    """An allocation option that cannot be used (named, with the value and what was expected)."""


def mapping_arg(text: str | None, what: str) -> dict | None:
    """A mapping given on the command line: inline JSON (``'{"s1": 100}'``) or a .json / .yaml file."""
    if text is None:
        return None
    p = Path(text)
    try:
        if p.suffix.lower() in (".json", ".yaml", ".yml") and p.is_file():
            import yaml

            doc = yaml.safe_load(p.read_text())
        else:
            doc = json.loads(text)
    except (OSError, ValueError) as err:
        raise AllocationError(f"{what} {text!r}: expected a JSON object or a .json/.yaml file ({err})") from None
    if not isinstance(doc, dict):
        raise AllocationError(f"{what} {text!r}: expected a mapping (JSON object), got {type(doc).__name__}")
    return {str(k): v for k, v in doc.items()}


@dataclass
class AllocationOptions:
    budget: float | None = None
    weight: float = 0.0
    margin: float | None = None
    seller_budgets: dict | None = None
    seller_tiers: dict | None = None
    tier_budgets: dict | None = None
    max_discount: float | None = None
    segment_max_discount: dict | None = None
    max_incentive: float | None = None
    spread_penalty: float = 0.0
    enduring_value: str = "margin"  # runtime.enduring.ENDURING_VALUES: the margin after the week, or retention

    @property
    def wanted(self) -> bool:
        """Allocate at all: a total, per-seller or per-tier budget was given."""
        return self.budget is not None or self.seller_budgets is not None or self.tier_budgets is not None

    def check(self, rt: Runtime) -> None:
        if not 0.0 <= float(self.weight) <= 1.0:
            raise AllocationError(
                f"--weight {self.weight}: expected a number in [0, 1] (0 = the week's profit, 1 = the 90-day profit)"
            )
        if self.weight > 0 and rt.enduring is None:
            raise AllocationError(
                f"--weight {self.weight}: bundle {rt.bundle_dir} has no enduring model (enduring.onnx); expected 0"
            )
        if self.enduring_value not in ENDURING_VALUES:
            raise AllocationError(f"--enduring-value {self.enduring_value!r}: expected one of {ENDURING_VALUES}")
        if self.weight > 0 and self.enduring_value == "retention" and rt.value is None:
            raise AllocationError(
                f"--enduring-value retention: bundle {rt.bundle_dir} has no value head (value_<d>d) to value a kept "
                "customer with; use margin"
            )
        if self.segment_max_discount is not None and rt.segments is None and rt.action_segments is None:
            raise AllocationError("--segment-max-discount: the bundle has no segments to cap by")


@dataclass
class Collected:
    """What the allocation needs of every scored customer, gathered chunk by chunk in pass 2."""

    levels: tuple
    curves: list = field(default_factory=list)
    value: list = field(default_factory=list)
    later: list = field(default_factory=list)
    retention: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    seller: list = field(default_factory=list)
    segment: list = field(default_factory=list)

    def add(self, rt: Runtime, scores: pd.DataFrame) -> None:
        self.curves.append(scores[[f"conversion_{lvl}pct" for lvl in self.levels]].to_numpy(np.float64))
        self.value.append(scores["_value"].to_numpy(np.float64))
        if rt.enduring is not None:
            h = rt.enduring.horizon_days
            self.later.append(scores[[f"_later_{lvl}pct" for lvl in self.levels]].to_numpy(np.float64))
            self.retention.append(scores[[f"retention_{h}d_{lvl}pct" for lvl in self.levels]].to_numpy(np.float64))
            if "_kept" in scores:
                self.kept.append(scores["_kept"].to_numpy(np.float64))
        self.seller.append(np.array([_seller_key(s) for s in scores["seller_id"].tolist()], dtype=object))
        col = "action_segment" if "action_segment" in scores else "segment"
        self.segment.append(scores[col].to_numpy(dtype=object) if col in scores else np.full(len(scores), None))


def _seller_key(s) -> str | None:
    """A seller id as the budgets name it (a string; 5.0 from a column with gaps is "5"); None when missing."""
    if s is None or (isinstance(s, float) and not np.isfinite(s)) or s is pd.NA:
        return None
    if isinstance(s, float) and s.is_integer():
        return str(int(s))
    return str(s)


def _sellers(opts: AllocationOptions, seller: np.ndarray):
    if opts.seller_budgets is None and opts.seller_tiers is None:
        return None, None, None, None
    if any(s is None for s in seller):
        raise AllocationError(
            "--seller-budgets / --seller-tiers: some customers have no seller_id (no event "
            "before the as-of time names one)"
        )
    known = sorted(set(seller.tolist()))
    sb = None
    if opts.seller_budgets is not None:
        unknown = sorted(set(opts.seller_budgets) - set(known))
        missing = [s for s in known if s not in opts.seller_budgets]
        if unknown or missing:
            raise AllocationError(
                f"--seller-budgets: no customer of seller(s) {unknown[:5]} in the file; no budget "
                f"for seller(s) {missing[:5]}"
                if unknown and missing
                else f"--seller-budgets: no customer of seller(s) {unknown[:5]} in the file"
                if unknown
                else f"--seller-budgets: no budget for seller(s) {missing[:5]}"
            )
        sb = {k: float(v) for k, v in opts.seller_budgets.items()}
    tiers, tb = None, None
    if opts.seller_tiers is not None:
        missing = [s for s in known if s not in opts.seller_tiers]
        if missing:
            raise AllocationError(f"--seller-tiers: no tier for seller(s) {missing[:5]}")
        tiers = {s: str(opts.seller_tiers[s]) for s in known}
    if opts.tier_budgets is not None:
        if tiers is None:
            raise AllocationError("--tier-budgets: needs --seller-tiers (the tier of every seller)")
        used = sorted(set(tiers.values()))
        missing = [t for t in used if t not in opts.tier_budgets]
        if missing:
            raise AllocationError(f"--tier-budgets: no budget for tier(s) {missing[:5]}")
        tb = {t: float(opts.tier_budgets[t]) for t in used}
    return seller, sb, tiers, tb


def allocate_and_write(
    rt: Runtime, scores_path: Path, out: Path, got: Collected, opts: AllocationOptions, writer_cls
) -> dict:
    """One allocation over every customer (Lagrangian), then the scores with ``discount_pct``, ``expected_spend``,
    ``expected_incremental_profit`` (the week's), ``expected_enduring_value`` (with the enduring model) and
    ``objective``. Returns the summary (budget, spend, incremental profit, enduring value, spread, ...)."""
    import pyarrow.parquet as pq

    from sellerlift.runtime import allocate_offers
    from sellerlift.runtime.enduring import enduring_value

    p, value = np.concatenate(got.curves), np.concatenate(got.value)
    m = float(opts.margin if opts.margin is not None else rt.margin)
    margin = np.full(len(value), m)
    end = None
    if rt.enduring is not None:
        response = {"later_revenue": np.concatenate(got.later), "retention": np.concatenate(got.retention)}
        kept = m * np.concatenate(got.kept) if got.kept else None
        if opts.enduring_value == "margin" or kept is not None:
            end = enduring_value(response, margin, opts.enduring_value, kept)
    seller, sb, tiers, tb = _sellers(opts, np.concatenate(got.seller))
    segment, caps = None, None
    if opts.segment_max_discount is not None:
        segment = np.concatenate(got.segment)
        present = set(segment.tolist())
        unknown = [k for k in opts.segment_max_discount if k not in present]
        if unknown:
            raise AllocationError(
                f"--segment-max-discount: no customer in segment(s) {unknown[:5]}; segments: "
                f"{sorted(map(str, present))[:10]}"
            )
        caps = {k: float(v) for k, v in opts.segment_max_discount.items()}
    try:
        offers = allocate_offers(
            p,
            value,
            margin,
            rt.levels,
            budget=opts.budget,
            seller=seller,
            seller_budgets=sb,
            enduring=end,
            weight=float(opts.weight),
            seller_tier=tiers,
            tier_budgets=tb,
            max_discount=opts.max_discount,
            segment=segment,
            segment_max_discount=caps,
            spread_penalty=float(opts.spread_penalty),
            max_incentive=opts.max_incentive,
        )
    except ValueError as err:
        raise AllocationError(f"allocation: {err}") from None
    a = offers.allocation
    writer, pos = writer_cls(out), 0
    for batch in pq.ParquetFile(scores_path).iter_batches(batch_size=100_000):
        df = batch.to_pandas()
        sl = slice(pos, pos + len(df))
        df["discount_pct"] = offers.level_pct[sl]
        df["expected_spend"] = offers.spend[sl]
        df["expected_incremental_profit"] = offers.profit[sl]
        if offers.enduring is not None:
            df["expected_enduring_value"] = offers.enduring[sl]
        df["objective"] = offers.objective[sl]
        writer.write(df)
        pos += len(df)
    writer.close()
    return {
        "budget": None if opts.budget is None else float(opts.budget),
        "weight": float(opts.weight),
        "spend": float(a.spend),
        "incremental_profit": float(offers.profit.sum()),
        "enduring_value": None if offers.enduring is None else float(offers.enduring.sum()),
        "objective": float(a.profit),
        "spread": float(offers.spread),
        "treated": int((a.level_index > 0).sum()),
        "margin": m,
        "seller_spend": a.seller_spend,
        "tier_spend": a.tier_spend,
    }
