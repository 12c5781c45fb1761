"""What a logged offer led to, read off the events: hand-made logs with known answers."""

import numpy as np
import pandas as pd

from sellerlift.offer_outcomes import later_coupons, offer_outcomes


def _log():
    ts = pd.to_datetime
    offers = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "a"],
            "ts": ts(["2024-01-01", "2024-01-20", "2024-02-10", "2024-01-05", "2024-05-01"]),
            "discount_pct": [10, 0, 30, 20, 5],
            "cost": [1.0, 0.0, 3.0, 2.0, 0.5],
        }
    )
    events = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "b"],
            "ts": ts(["2024-01-03", "2024-01-25", "2024-02-11", "2024-06-01", "2024-01-06"]),
            "event_type": ["purchase", "purchase", "purchase", "purchase", "visit"],
            "amount": [9.0, 20.0, 7.0, 50.0, 0.0],
        }
    )
    return events, offers


def test_offer_outcomes_split_the_window_from_the_months_after_it():
    events, offers = _log()
    got = offer_outcomes(events, offers.iloc[[0, 3]], 90, 7, all_offers=offers)
    # a: 9 in the window (+ its 1 discount), 20 and 7 after it (+ the later coupon's 3)
    assert got["net_90d"].tolist() == [36.0, 0.0]
    assert got["gross_90d"].tolist() == [40.0, 2.0]
    assert got["gross_7d"].tolist() == [10.0, 2.0]
    assert got["retained_90d"].tolist() == [True, False]


def test_later_coupons_count_the_coupons_after_the_offer_within_its_follow_up():
    _, offers = _log()
    got = later_coupons(offers, offers, 90)
    # a on Jan 1: the 30 % coupon of Feb 10 (the Jan 20 control is no coupon, May 1 is past 90 days)
    # a on Feb 10: the 5 % coupon of May 1 (80 days later); b: none; a on May 1: none
    np.testing.assert_allclose(got, [[1, 1.0], [1, 1.0], [1, 5 / 30], [0, 0], [0, 0]])
    assert got.dtype == np.float32
