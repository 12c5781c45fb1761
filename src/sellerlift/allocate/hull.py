"""Per-customer upper concave hulls of the (spend, objective) points, as flat arrays of segments.

For a multiplier ``lam >= 0`` the Lagrangian choice ``argmax_k objective - lam * spend`` is "take every
segment with slope > lam" (exact ties go to the cheaper level), so the solver works on segments only.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1 << 17  # customers per chunk when building hulls: bounds temporaries


def _hull_chunk(pt, st):
    """Upper concave hull from level 0 by gift wrapping, for a chunk.

    pt, st: profit and spend, transposed [K, m] so that every step is a short
    loop over levels of 1-D vector ops (reductions over a length-K axis are
    slow in NumPy). Each step only works on customers whose hull goes on.
    Returns slope [m, K-1] (gain per unit spend; 0 = no segment), cost [m, K-1]
    (extra spend of each segment) and vert [m, K] (level after j segments).
    """
    k, m = pt.shape
    slope, cost = np.zeros((m, k - 1)), np.zeros((m, k - 1))
    vert = np.zeros((m, k), dtype=np.int8)
    idx = np.arange(m)
    s0, p0 = np.zeros(m), np.zeros(m)  # current vertex: level 0 is (0, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(k - 1):
            pa, sa = (pt, st) if j == 0 else (pt[:, idx], st[:, idx])
            best, nxt = np.zeros(len(idx)), np.zeros(len(idx), np.intp)
            # highest level first, strict ">": equal slopes keep the higher
            # level (a collinear extra vertex would be harmless anyway)
            for c in range(k - 1, 0, -1):
                ds = sa[c] - s0
                sl = (pa[c] - p0) / ds
                better = (ds > 0) & (sl > best)  # costs more and pays more
                best = np.where(better, sl, best)
                nxt = np.where(better, c, nxt)
            has = best > 0
            rows, r = idx[has], np.flatnonzero(has)
            nxt = nxt[has]
            ns, np_ = sa[nxt, r], pa[nxt, r]
            slope[rows, j], cost[rows, j], vert[rows, j + 1] = best[has], ns - s0[has], nxt
            idx, s0, p0 = rows, ns, np_
            if not len(idx):
                break
    for j in range(k - 1):  # past its hull's end a customer stays put
        vert[:, j + 1] = np.where(slope[:, j] > 0, vert[:, j + 1], vert[:, j])
    return slope, cost, vert


class Hull:
    """All customers' hull segments as flat arrays, in customer then hull order.

    Customers have ~1-3 segments, so flat arrays are smaller and faster than
    dense [n, K-1] ones. Built in chunks to bound temporaries.
    """

    def __init__(self, values):
        n, k = values.shape
        self.values, self.d = values, values.d
        self.vert = np.zeros((n, k), dtype=np.int8)
        nseg = np.zeros(n, dtype=np.int64)
        parts = []
        for a in range(0, n, _CHUNK):
            sl = slice(a, min(a + _CHUNK, n))
            pr, sp = values.rows(sl)
            s, c, self.vert[sl] = _hull_chunk(pr.T.astype(np.float64), sp.T.astype(np.float64))
            has = s > 0
            nseg[sl] = has.sum(axis=1)
            parts.append((s[has], c[has]))
        self.slope = np.concatenate([q[0] for q in parts]) if parts else np.zeros(0)
        self.cost = np.concatenate([q[1] for q in parts]) if parts else np.zeros(0)
        self.nseg = nseg
        self.start = np.concatenate([[0], np.cumsum(nseg)])
        self.cust = np.repeat(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64), nseg)

    def count(self, thr):
        """Segments taken per customer: those with slope > thr (per segment)."""
        return np.bincount(self.cust[self.slope > thr], minlength=len(self.nseg))

    def level(self, cnt):
        return self.vert[np.arange(len(cnt)), cnt].astype(np.intp)

    def evaluate(self, level):
        return self.values.at(level)
