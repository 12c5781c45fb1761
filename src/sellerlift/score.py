"""Batch scoring for nightly jobs: an events file in, one row of scores per customer out.

    python -m sellerlift.score --bundle bundles/<run id> --events events.parquet --as-of 2026-01-01 \\
        --out scores.parquet
    python -m sellerlift.score --bundle @champion --events examples/seller_events.csv \\
        --mapping examples/seller_events.mapping.yaml --out scores.csv
    python -m sellerlift.score ... --budget 5000          # + the discount to offer (bundles with a DIPN)

Output columns: ``customer_id, seller_id, as_of, intent_<d>d, churn_<d>d, segment, segment_id,
n_events, cold_start, prior`` (the fields of the server's ``/v1/score``; the two probabilities are named
after the bundle's horizons, ``intent_7d`` / ``churn_90d`` by default), plus, when the bundle has a
promotion model, ``conversion_<level>pct`` for every discount level and, with ``--budget``,
``discount_pct, expected_spend, expected_incremental_profit``.

How it runs: the server's runtime (:class:`sellerlift.runtime.Runtime`: the bundle's fitted feature
spec, onnxruntime, segments), no torch. Memory stays bounded on any file size: pass 1
reads the file in row chunks, maps and validates each chunk (errors name the file's row and
column) and spills it into hash partitions by customer (only when the file is larger than one
partition); pass 2 scores one partition at a time, in chunks of ``--chunk-customers``, appending
to the output. Only a budget allocation keeps per-customer curves (K floats each) in memory, since
the budget couples all customers. Rows come out grouped by partition, not sorted.

Models are per data set: ``@champion`` is the champion of the data set being scored (the mapping
file's ``name`` / ``data.name``, or ``--data``), and a bundle trained on another data set is refused,
naming both (``--allow-other-data`` scores anyway, with a warning).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.data.files import FileSource
from sellerlift.runtime import BundleError, Runtime
from sellerlift.runtime.bundle import data_mismatch, registered_model_name


class ScoreError(RuntimeError):
    pass


def data_name_of_mapping(mapping: str | Path | None) -> str | None:
    """The data set a mapping file describes: ``data.name`` of a data config, else its ``name`` (None if unnamed)."""
    if not mapping:
        return None
    import yaml

    try:
        doc = yaml.safe_load(Path(mapping).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None  # the file source reports an unreadable mapping itself
    node = doc.get("data", doc) if isinstance(doc, dict) else {}
    for cand in (node.get("name"), (node.get("source") or {}).get("name")):
        if isinstance(cand, str) and cand and "${" not in cand:
            return cand
    return None


def resolve_bundle(spec: str, tracking_uri: str | None = None, data: str | None = None) -> Path:
    """A bundle directory, or ``@alias`` (of data set ``data``'s registered model) / ``models:/<name>@<alias>``."""
    if spec.startswith("@") or spec.startswith("models:/"):
        from mlflow.tracking import MlflowClient

        from sellerlift.champion import DEFAULT_MODEL, champion_bundle_dir, champions, default_tracking_uri

        client = MlflowClient(tracking_uri or default_tracking_uri())
        if spec.startswith("@"):
            alias = spec[1:]
            if not data:
                have = sorted(champions(client, DEFAULT_MODEL, alias))
                raise ScoreError(f"{spec}: champions are per data set; say which: --data NAME (or a mapping with "
                                 f"`name:` / `data.name:`); registered models with @{alias}: {have or 'none'}")
            name = registered_model_name(DEFAULT_MODEL, data)
        else:
            name, _, alias = spec[len("models:/"):].partition("@")
        path = champion_bundle_dir(client, name, alias)
        if path is None:
            raise ScoreError(f"{name}@{alias}: no such alias with a bundle in {client.tracking_uri} "
                             "(train a registered model first: `make train`)")
        return path
    return Path(spec)


def load_bundle(path: str | Path, threads: int = 1) -> Runtime:
    """Load and verify (sha256 of every file; the signature when a key is set) a bundle."""
    try:
        return Runtime.load(path, source="--bundle", threads=threads)
    except (BundleError, FileNotFoundError) as err:
        raise ScoreError(str(err)) from None


def check_data(rt: Runtime, data: str | None, allow_other_data: bool = False, console=None) -> str | None:
    """Refuse (or, with ``allow_other_data``, warn loudly) when the bundle was trained on a data set other than
    ``data``; returns the warning given, if any."""
    why = data_mismatch(dict(rt.manifest), data, "the file being scored")
    if why is None:
        if not data and rt.data and console is not None:
            console.print(f"[yellow]note:[/] the bundle was trained on data set '{rt.data}'; the scored file's data "
                          "set is unknown (no `name` in the mapping): pass --data NAME to check they match")
        return None
    if not allow_other_data:
        raise ScoreError(f"{rt.bundle_dir}: {why}; or pass --allow-other-data to score with it anyway")
    if console is not None:
        console.print(f"[bold red]WARNING:[/] {why}. Scoring anyway (--allow-other-data).", soft_wrap=True)
    return why


# --------------------------------------------------------------------------- scoring one chunk


def score_events(rt: Runtime, events: pd.DataFrame, as_of: pd.Timestamp,
                 customers: np.ndarray | None = None) -> pd.DataFrame:
    """Scores of ``customers`` (default: everyone in ``events``) from contract events, as of ``as_of``."""
    if customers is None:
        customers = np.sort(pd.unique(events["customer_id"].to_numpy()))
    feats = rt.features_of(events, as_of, customers=customers)
    scores = rt.score(feats)
    n = len(customers)
    before = events["ts"].to_numpy() < np.datetime64(as_of)
    pos = pd.Index(customers).get_indexer(events["customer_id"].to_numpy()[before])
    n_events = np.bincount(pos[pos >= 0], minlength=n)
    last_seller = (events.loc[before, ["customer_id", "seller_id"]].groupby("customer_id", sort=False)["seller_id"]
                   .last())
    out = pd.DataFrame({"customer_id": customers, "seller_id": last_seller.reindex(customers).to_numpy(),
                        "as_of": as_of, **{k: scores[k] for k in rt.outputs}})
    seg = rt.assign_segments(feats)
    out["segment"], out["segment_id"] = (seg[1], seg[0].astype(np.int64)) if seg is not None else (None, -1)
    out["n_events"] = n_events.astype(np.int64)
    out["cold_start"] = n_events == 0
    out["prior"] = scores["prior"]
    if rt.promotion is not None:
        from sellerlift.promotion_features import order_value

        curve = rt.curves(feats, scores)
        for j, lvl in enumerate(rt.levels):
            out[f"conversion_{lvl}pct"] = curve[:, j]
        out["_value"] = order_value(feats, float(rt.manifest.get("dipn", {}).get("value_fallback", 0.0)))
    return out


# --------------------------------------------------------------------------- the file, in bounded memory


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


def score_file(bundle: Runtime, events_path: str | Path, out: str | Path, as_of: str | None = None,
               mapping: str | None = None, budget: float | None = None, value_col: str | None = None,
               margin: float | None = None, chunk_rows: int = 1_000_000, partition_rows: int = 2_000_000,
               chunk_customers: int = 50_000, progress: bool = True, console=None) -> dict:
    """Score every customer of ``events_path``; see the module docstring. Returns a summary dict."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    events_path, out = Path(events_path), Path(out)
    if budget is not None and bundle.promotion is None:
        console.print(f"[yellow]--budget ignored:[/] bundle {bundle.bundle_dir} has no promotion model (dipn)")
        budget = None
    src = _source(events_path, mapping)
    est = _estimate_rows(src, events_path)
    k = max(1, math.ceil(est / max(partition_rows, 1)))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sellerlift-score-") as tmp, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=not progress, transient=False) as bar:
        # ---- pass 1: read, map, validate, partition by customer
        read = bar.add_task(f"read {events_path.name}", total=est or None)
        parts: list[list[pd.DataFrame]] = [[] for _ in range(k)]
        writers: dict[int, object] = {}
        n_rows, last_ts, offset, id_kind = 0, None, 0, {}
        for raw, ev, _ in _mapped_chunks(src, events_path, chunk_rows, id_kind):
            if value_col:
                if value_col not in raw.columns:
                    raise ScoreError(f"--value-col {value_col!r}: no such column in {events_path}; "
                                     f"found {list(raw.columns)}")
                ev[value_col] = pd.to_numeric(raw[value_col].to_numpy(), errors="coerce")
            offset += len(raw)
            n_rows += len(ev)
            mx = ev["ts"].max()
            last_ts = mx if last_ts is None or mx > last_ts else last_ts
            if k == 1:
                parts[0].append(ev)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                b = _bucket_of(ev["customer_id"], k)
                for j in np.unique(b):
                    t = pa.Table.from_pandas(ev.loc[b == j], preserve_index=False)
                    if j not in writers:
                        writers[j] = pq.ParquetWriter(str(Path(tmp) / f"part-{j:05d}.parquet"), t.schema)
                    writers[j].write_table(t.cast(writers[j].schema))
            bar.update(read, advance=len(raw), total=max(est, offset))
        for w in writers.values():
            w.close()
        bar.update(read, total=offset, completed=offset)
        if n_rows == 0:
            raise ScoreError(f"{events_path}: no events")
        cutoff = (pd.Timestamp(as_of) if as_of else pd.Timestamp(last_ts).normalize() + pd.Timedelta(days=1))
        if cutoff.tzinfo is not None:
            cutoff = cutoff.tz_convert("UTC").tz_localize(None)

        # ---- pass 2: score partition by partition, customer chunk by customer chunk
        task = bar.add_task(f"score as of {cutoff.date()}", total=n_rows)
        writer = _Writer(out if budget is None else Path(tmp) / "scores.parquet")
        alloc_p, alloc_v, alloc_s = [], [], []
        n_customers = 0
        for j in range(k):
            if k == 1:
                ev = pd.concat(parts[0], ignore_index=True)
                parts[0] = []
            else:
                f = Path(tmp) / f"part-{j:05d}.parquet"
                if not f.exists():
                    continue
                ev = pd.read_parquet(f)
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
                ids = np.asarray(uniq[c0:c0 + chunk_customers])
                scores = score_events(bundle, chunk, cutoff, customers=ids)
                if value_col:
                    hist = chunk[chunk["ts"].to_numpy() < np.datetime64(cutoff)]
                    v = hist.groupby("customer_id")[value_col].last().reindex(ids).to_numpy(dtype=np.float64)
                    if "_value" in scores:
                        scores["_value"] = np.where(np.isfinite(v), v, scores["_value"].to_numpy())
                if budget is not None:
                    alloc_p.append(scores[[f"conversion_{lvl}pct" for lvl in bundle.levels]].to_numpy(np.float64))
                    alloc_v.append(scores["_value"].to_numpy(np.float64))
                    alloc_s.append(len(scores))
                writer.write(scores.drop(columns=["_value"], errors="ignore"))
                n_customers += len(scores)
                bar.update(task, advance=hi - lo)
        writer.close()

        summary = {"customers": n_customers, "events": n_rows, "as_of": str(cutoff.date()), "out": str(out),
                   "partitions": k, "bundle": str(bundle.bundle_dir), "run_id": bundle.run_id}
        if budget is not None:
            summary.update(_allocate_and_write(bundle, writer.path, out, np.concatenate(alloc_p),
                                               np.concatenate(alloc_v), budget, margin))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def _allocate_and_write(bundle: Runtime, scores_path: Path, out: Path, p: np.ndarray, value: np.ndarray,
                        budget: float, margin: float | None) -> dict:
    """Budgeted allocation over every customer (Lagrangian), then the scores with the chosen level."""
    import pyarrow.parquet as pq

    from sellerlift.runtime import allocate_offers

    m = float(margin if margin is not None else bundle.manifest.get("dipn", {}).get("margin", 0.4))
    margin_arr = np.full(len(value), m)
    offers = allocate_offers(p, value, margin_arr, bundle.levels, budget=float(budget))
    a = offers.allocation
    writer, pos = _Writer(out), 0
    for batch in pq.ParquetFile(scores_path).iter_batches(batch_size=100_000):
        df = batch.to_pandas()
        sl = slice(pos, pos + len(df))
        df["discount_pct"] = offers.level_pct[sl]
        df["expected_spend"] = offers.spend[sl]
        df["expected_incremental_profit"] = offers.profit[sl]
        writer.write(df)
        pos += len(df)
    writer.close()
    return {"budget": float(budget), "spend": float(a.spend), "incremental_profit": float(a.profit),
            "treated": int((a.level_index > 0).sum()), "margin": m}


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sellerlift.score",
                                 description="Score every customer of an events file with a sellerlift bundle.")
    ap.add_argument("--bundle", required=True,
                    help="bundle directory, or @champion (the champion of the data set scored) / "
                         "models:/sellerlift-sequence-<data>@champion (MLflow registry)")
    ap.add_argument("--data", help="the data set being scored (data.name; default: the mapping's name): picks "
                                   "@champion's registered model and is checked against the bundle's")
    ap.add_argument("--allow-other-data", action="store_true",
                    help="score with a bundle trained on another data set (a loud warning instead of an error)")
    ap.add_argument("--events", required=True, help="events file: CSV, Parquet or a directory of Parquet parts")
    ap.add_argument("--mapping", help="column/event-name mapping (examples/seller_events.mapping.yaml or a data "
                                      "config like configs/data/seller_file.yaml); default: contract column names")
    ap.add_argument("--as-of", help="score as of this date/time (events at or after it are ignored); "
                                    "default: the day after the last event")
    ap.add_argument("--out", required=True, help="output file: .parquet or .csv")
    ap.add_argument("--budget", type=float, help="discount budget to allocate (bundles with a promotion model)")
    ap.add_argument("--value-col", help="column of the events file with the customer's expected order value "
                                        "(default: the observed mean basket)")
    ap.add_argument("--margin", type=float, help="profit margin for the allocation (default: the bundle's)")
    ap.add_argument("--chunk-customers", type=int, default=50_000, help="customers per model call batch group")
    ap.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows read at a time")
    ap.add_argument("--partition-rows", type=int, default=2_000_000,
                    help="events per partition in pass 2 (bounds memory)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    ap.add_argument("--tracking-uri", help="MLflow store for @alias bundles (default: MLFLOW_TRACKING_URI or ./mlruns)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from rich.console import Console

    console = Console(stderr=True)
    try:
        data = args.data or data_name_of_mapping(args.mapping)
        bundle_dir = resolve_bundle(args.bundle, args.tracking_uri, data)
        bundle = load_bundle(bundle_dir, threads=args.threads)
        check_data(bundle, data, args.allow_other_data, console)
        console.print(f"[bold]bundle[/] {bundle_dir} (run {bundle.run_id}, model {bundle.manifest.get('model')}, "
                      f"data set {bundle.data or '?'}, outputs {'/'.join(bundle.outputs)}, segments: "
                      f"{'yes' if bundle.segments else 'no'}, promotion model: {'yes' if bundle.promotion else 'no'})")
        s = score_file(bundle, args.events, args.out, as_of=args.as_of, mapping=args.mapping, budget=args.budget,
                       value_col=args.value_col, margin=args.margin, chunk_rows=args.chunk_rows,
                       partition_rows=args.partition_rows, chunk_customers=args.chunk_customers,
                       progress=not args.no_progress, console=console)
    except (ScoreError, FileNotFoundError, ValueError) as err:  # SchemaError is a ValueError
        console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        return 2
    console.print(f"[bold]scored[/] {s['customers']:,} customers ({s['events']:,} events) as of {s['as_of']} "
                  f"in {s['seconds']:.1f}s -> {s['out']}")
    if "budget" in s:
        console.print(f"[bold]allocation[/] budget {s['budget']:,.2f}: {s['treated']:,} customers get a discount, "
                      f"expected spend {s['spend']:,.2f}, incremental profit {s['incremental_profit']:,.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
