"""Write examples/seller_events.csv: simulated customers in the shape of a typical shop export.

    .venv/bin/python examples/make_seller_file.py

Foreign on purpose: other column names, the shop's own event names, string customer ids,
ISO timestamps in UTC, order values only on orders (empty elsewhere), two shops.
``examples/seller_events.mapping.yaml`` (and ``configs/data/seller_file.yaml``) map it back.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.sim import SimulatorConfig, simulate

HERE = Path(__file__).resolve().parent
NAMES = {  # contract type -> what the shop calls it
    "visit": "session_start",
    "view": "product_view",
    "add_to_cart": "basket_add",
    "purchase": "order",
    "email_open": "newsletter_open",
    "support_contact": "support_ticket",
    "coupon_redeem": "voucher_used",
}


def main(n_customers: int = 240, seed: int = 7, out: Path = HERE / "seller_events.csv") -> Path:
    sim = simulate(SimulatorConfig(n_customers=n_customers, n_sellers=2, seed=seed), progress=False)
    ev = sim.events
    rng = np.random.default_rng(seed)
    df = ev.assign(
        customer=[f"C{int(c):05d}" for c in ev["customer_id"]],
        shop=np.where(ev["seller_id"].to_numpy() == 0, "north", "south"),
        when=ev["ts"].dt.tz_localize("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        action=ev["event_type"].astype(str).map(NAMES),
        value=np.where(ev["event_type"].astype(str) == "purchase", ev["amount"].round(2), np.nan),
        items=pd.array(
            np.where(ev["event_type"].astype(str) == "purchase", ev.get("quantity", 1), np.nan), dtype="Int64"
        ),
    )
    df = df[["customer", "shop", "when", "action", "value", "items"]]
    df.columns = ["Customer ID", "Shop", "Event Time", "Action", "Order Value (EUR)", "Items"]
    df = df.iloc[rng.permutation(len(df))].sort_values("Event Time", kind="stable")  # exports come by time
    df.to_csv(out, index=False, float_format="%.2f")
    print(f"wrote {out}: {len(df):,} rows, {df['Customer ID'].nunique()} customers, {out.stat().st_size / 1e6:.2f} MB")
    return out


if __name__ == "__main__":
    main()
