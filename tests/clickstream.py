"""A small generated clickstream in a shop's own shape (not the example file): its own column and event names,
integer user ids, epoch-millisecond times, no order values. Users join in monthly cohorts and some stop."""

import numpy as np
import pandas as pd

# The app's event names and what they mean in the contract.
NAMES = {
    "screen_view": "view",
    "app_launch": "visit",
    "cart_add": "add_to_cart",
    "checkout_done": "purchase",
    "push_open": "email_open",
    "helpdesk": "support_contact",
}
MIX = [0.45, 0.25, 0.12, 0.08, 0.07, 0.03]
MAPPING = {
    "columns": {
        "customer_id": "uid",
        "ts": "when_ms",
        "event_type": "what",
        "amount": None,
        "seller_id": None,
        "quantity": None,
    },
    "event_types": NAMES,
    "timestamp_format": "epoch_ms",
}


def clickstream(n_users: int = 400, days: int = 180, seed: int = 0, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start)
    join = rng.uniform(0, days - 20, n_users)
    stop = join + rng.exponential(120, n_users)
    rate = rng.lognormal(-0.6, 0.7, n_users)  # events per active day
    rows = []
    for u in range(n_users):
        end = min(stop[u], days)
        n = max(1, rng.poisson(rate[u] * (end - join[u])))
        when = np.sort(rng.uniform(join[u], end, n))
        what = rng.choice(list(NAMES), size=n, p=MIX)
        what[0] = "app_launch"
        for w, d in zip(what, when):
            rows.append(
                (
                    5000 + u,
                    int(
                        (t0 + pd.Timedelta(days=float(d)) - pd.Timestamp("1970-01-01")) // pd.Timedelta(milliseconds=1)
                    ),
                    w,
                )
            )
    df = pd.DataFrame(rows, columns=["uid", "when_ms", "what"])
    return df.sort_values("when_ms", kind="stable").reset_index(drop=True)
