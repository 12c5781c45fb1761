"""The batch scorer's two passes as reusable pieces (no CLI, no engine): what ``python -m sellerlift.score`` runs in
this process and what the Ray engine runs on its workers (:mod:`sellerlift.engine.scoring`), so both write the same
rows.

* pass 1, :func:`partition_events`: read a file (or several, in order) in row chunks, map and validate each chunk
  (errors name the file, row and column), and spill the events into ``k`` hash partitions by customer
  (:func:`n_partitions` picks ``k`` from the file's size, :func:`_bucket_of` the partition of a customer);
* pass 2, :func:`score_partition`: one partition's events sorted by customer and time, scored customer chunk by
  customer chunk with the shared runtime (:func:`score_events`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.data.files import FileSource
from sellerlift.runtime import Runtime


class ScoreError(RuntimeError):
    pass


# --------------------------------------------------------------------------- scoring one chunk


def score_events(
    rt: Runtime, events: pd.DataFrame, as_of: pd.Timestamp, customers: np.ndarray | None = None
) -> pd.DataFrame:
    """Scores of ``customers`` (default: everyone in ``events``) from contract events, as of ``as_of``."""
    if customers is None:
        customers = np.sort(pd.unique(events["customer_id"].to_numpy()))
    feats = rt.features_of(events, as_of, customers=customers)
    scores = rt.score(feats)
    n = len(customers)
    before = events["ts"].to_numpy() < np.datetime64(as_of)
    pos = pd.Index(customers).get_indexer(events["customer_id"].to_numpy()[before])
    n_events = np.bincount(pos[pos >= 0], minlength=n)
    last_seller = (
        events.loc[before, ["customer_id", "seller_id"]].groupby("customer_id", sort=False)["seller_id"].last()
    )
    out = pd.DataFrame(
        {
            "customer_id": customers,
            "seller_id": last_seller.reindex(customers).to_numpy(),
            "as_of": as_of,
            **{k: scores[k] for k in (*rt.outputs, *rt.value_outputs)},
        }
    )
    loyalty = rt.loyalty(scores)
    if loyalty is not None:
        out["loyalty"] = loyalty
    seg = rt.assign_segments(feats)
    out["segment"], out["segment_id"] = (seg[1], seg[0].astype(np.int64)) if seg is not None else (None, -1)
    out["n_events"] = n_events.astype(np.int64)
    out["cold_start"] = n_events == 0
    out["prior"] = scores["prior"]
    if rt.promotion is not None:
        curve = rt.curves(feats, scores)
        for j, lvl in enumerate(rt.levels):
            out[f"conversion_{lvl}pct"] = curve[:, j]
        if rt.enduring is not None:
            end = rt.enduring_response(feats, scores)
            h = rt.enduring.horizon_days
            for j, lvl in enumerate(rt.levels):
                out[f"retention_{h}d_{lvl}pct"] = end["retention"][:, j]
            for j, lvl in enumerate(rt.levels):
                out[f"value_{h}d_{lvl}pct"] = end["revenue"][:, j]
            for j, lvl in enumerate(rt.levels):  # internal: what the allocation's enduring value needs
                out[f"_later_{lvl}pct"] = end["later_revenue"][:, j]
            kept = rt.kept_value(scores, 1.0)  # times the margin: the CLV of a kept customer
            if kept is not None:
                out["_kept"] = kept
            act = rt.assign_action_segments(feats, scores, curve, end)
            if act is not None:
                out["action_segment"], out["action_segment_id"] = act[1], act[0].astype(np.int64)
        out["_value"] = rt.basket(feats)
    return out


def public(scores: pd.DataFrame) -> pd.DataFrame:
    """The scores without the internal columns (``_value``, ``_later_*``: pass 2's allocation reads them)."""
    return scores.drop(columns=[c for c in scores.columns if str(c).startswith("_")])


# --------------------------------------------------------------------------- pass 1 and pass 2


def _source(events: Path, mapping: str | None) -> FileSource:
    if mapping:
        return FileSource.from_yaml(mapping, path=str(events))
    return FileSource.contract_shaped(events)  # every contract column the file has maps onto itself


def _mapped_chunks(src: FileSource, path: Path, chunk_rows: int, ids: dict):
    """(raw chunk, its contract events, rows before it) over the whole file, in bounded memory.

    Every unmapped event name of the file is reported at once (not only the first chunk's). With
    ``id_type: auto`` a text file is mapped with text ids chunk by chunk; afterwards ``ids[column]`` says
    per id column whether every id of the file was a canonical integer (then the scores carry integer ids).
    """
    from sellerlift.data.mapping import UnmappedEventNames, is_parquet, unmapped_problem
    from sellerlift.io import ids_from_text

    defer = src.id_type == "auto" and not is_parquet(path)
    id_cols = [c for c in ("customer_id", "seller_id") if src.columns.get(c)]
    ids.update({c: defer for c in id_cols})
    unmapped, rows, offset = None, [], 0
    for raw in src.iter_raw(path, chunk_rows):
        try:
            if unmapped is None:
                ev = src.map_frame(raw, str(path), row_offset=offset, id_type="str" if defer else None)
                for c in id_cols if defer else ():
                    ids[c] = ids[c] and ids_from_text(ev[c].astype("string")).dtype == np.int64
                yield raw, ev, offset
            else:  # after the first unmapped name: only count the rest of the file's names
                rows.append(src.unmapped_rows(raw) + offset)
        except UnmappedEventNames as err:
            unmapped = err
            rows.append(err.problems[0].rows)
        offset += len(raw)
    if unmapped is not None:
        problem = unmapped_problem(np.concatenate(rows), src.unmapped, "data.source")
        problem.column = unmapped.problems[0].column  # the file's column name, as in the first chunk's error
        raise UnmappedEventNames(unmapped.source, "events", [problem], counts=dict(src.unmapped))


def _estimate_rows(src: FileSource, path: Path) -> int:
    n = src.count_rows(path)
    if n is not None:
        return n
    with open(path, "rb") as f:
        sample = f.read(1 << 20)
    lines = max(sample.count(b"\n") - 1, 1)
    return int(path.stat().st_size / (len(sample) / lines)) if sample else 0


def _bucket_of(customer_id: pd.Series, k: int) -> np.ndarray:
    ids = customer_id.astype(str).to_numpy(dtype=object)
    return (pd.util.hash_array(ids, categorize=True) % np.uint64(k)).astype(np.int64)


class _Writer:
    """Append frames to one Parquet or CSV file."""

    def __init__(self, path: Path):
        self.path, self.pq, self.n = path, None, 0
        self.csv = path.suffix.lower() in (".csv", ".gz")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.partial")
        self.tmp.unlink(missing_ok=True)

    def write(self, df: pd.DataFrame) -> None:
        if self.csv:
            df.to_csv(self.tmp, mode="a", header=self.n == 0, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self.pq is None:
                self.pq = pq.ParquetWriter(str(self.tmp), table.schema)
            self.pq.write_table(table.cast(self.pq.schema))
        self.n += len(df)

    def close(self) -> None:
        if self.pq is not None:
            self.pq.close()
        if self.n:
            self.tmp.replace(self.path)  # the output appears complete or not at all


def n_partitions(src: FileSource, path: Path, partition_rows: int) -> tuple[int, int]:
    """(estimated rows, number of hash partitions) of the events at ``path``."""
    est = _estimate_rows(src, path)
    return est, max(1, math.ceil(est / max(partition_rows, 1)))


def part_name(j: int, group: int | None = None) -> str:
    """Partition ``j``'s spill file (``group``: one of several writers of the same partition, in input order)."""
    return f"part-{j:05d}.parquet" if group is None else f"part-{j:05d}-{group:05d}.parquet"


@dataclass
class PassOne:
    """What pass 1 learned about the file: rows, the last event, which id columns are all integers."""

    n_rows: int = 0
    rows_read: int = 0
    last_ts: object = None
    id_kind: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)  # k == 1 and no spill directory: the mapped events themselves

    def merge(self, other: PassOne) -> PassOne:
        last = [t for t in (self.last_ts, other.last_ts) if t is not None]
        kinds = dict(self.id_kind)
        for c, whole in other.id_kind.items():
            kinds[c] = kinds.get(c, True) and whole
        return PassOne(
            self.n_rows + other.n_rows,
            self.rows_read + other.rows_read,
            max(last) if last else None,
            kinds,
            self.frames + other.frames,
        )


def partition_events(
    src: FileSource,
    paths,
    k: int,
    spill: Path | None,
    chunk_rows: int,
    value_col: str | None = None,
    group: int | None = None,
    advance=None,
) -> PassOne:
    """Pass 1 over ``paths`` (one path or several, read in order): map, validate and spill by customer.

    With ``k == 1`` and ``spill`` None the mapped chunks are kept in memory (``PassOne.frames``); otherwise
    partition j's events go to ``spill / part_name(j, group)``. ``advance(rows)`` is called after every chunk.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    out = PassOne()
    writers: dict[int, object] = {}
    try:
        for path in paths:
            kinds: dict = {}  # per file: is every id of this column an integer (text files with id_type auto)
            for raw, ev, _ in _mapped_chunks(src, path, chunk_rows, kinds):
                if value_col:
                    if value_col not in raw.columns:
                        raise ScoreError(
                            f"--value-col {value_col!r}: no such column in {path}; found {list(raw.columns)}"
                        )
                    ev[value_col] = pd.to_numeric(raw[value_col].to_numpy(), errors="coerce")
                out.rows_read += len(raw)
                out.n_rows += len(ev)
                mx = ev["ts"].max()
                out.last_ts = mx if out.last_ts is None or mx > out.last_ts else out.last_ts
                if k == 1 and spill is None:
                    out.frames.append(ev)
                else:
                    b = _bucket_of(ev["customer_id"], k) if k > 1 else np.zeros(len(ev), dtype=np.int64)
                    for j in np.unique(b):
                        t = pa.Table.from_pandas(ev.loc[b == j], preserve_index=False)
                        if j not in writers:
                            writers[j] = pq.ParquetWriter(str(spill / part_name(int(j), group)), t.schema)
                        writers[j].write_table(t.cast(writers[j].schema))
                if advance is not None:
                    advance(len(raw))
            for c, whole in kinds.items():
                out.id_kind[c] = out.id_kind.get(c, True) and whole
    finally:
        for w in writers.values():
            w.close()
    return out


def cutoff_of(as_of: str | None, last_ts) -> pd.Timestamp:
    """``as_of``, else the day after the last event (naive UTC)."""
    cutoff = pd.Timestamp(as_of) if as_of else pd.Timestamp(last_ts).normalize() + pd.Timedelta(days=1)
    if cutoff.tzinfo is not None:
        cutoff = cutoff.tz_convert("UTC").tz_localize(None)
    return cutoff


def read_partition(spill: Path, j: int) -> pd.DataFrame | None:
    """Partition ``j``'s spilled events (one file, or one per pass-1 writer in input order); None if empty."""
    one = spill / part_name(j)
    files = [one] if one.exists() else sorted(spill.glob(f"part-{j:05d}-*.parquet"))
    if not files:
        return None
    if len(files) == 1:
        return pd.read_parquet(files[0])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def score_partition(
    bundle: Runtime,
    ev: pd.DataFrame,
    cutoff: pd.Timestamp,
    chunk_customers: int,
    id_kind: dict,
    value_col: str | None = None,
):
    """Pass 2 over one partition: yields (scores with ``_value`` when the bundle has curves, events used) per
    customer chunk, customers in id order."""
    for c in [c for c, whole in id_kind.items() if whole]:  # every id is an integer: keep them integers
        ev[c] = ev[c].astype("int64")
    codes, uniq = pd.factorize(ev["customer_id"], sort=True)
    order = np.lexsort((ev["ts"].to_numpy(), codes))
    ev = ev.iloc[order].reset_index(drop=True)
    codes = codes[order]
    starts = np.searchsorted(codes, np.arange(0, len(uniq), chunk_customers))
    ends = np.append(starts[1:], len(codes))
    for c0, lo, hi in zip(range(0, len(uniq), chunk_customers), starts, ends):
        chunk = ev.iloc[lo:hi]
        ids = np.asarray(uniq[c0 : c0 + chunk_customers])
        scores = score_events(bundle, chunk, cutoff, customers=ids)
        if value_col:
            hist = chunk[chunk["ts"].to_numpy() < np.datetime64(cutoff)]
            v = hist.groupby("customer_id")[value_col].last().reindex(ids).to_numpy(dtype=np.float64)
            if "_value" in scores:
                scores["_value"] = np.where(np.isfinite(v), v, scores["_value"].to_numpy())
        yield scores, hi - lo
