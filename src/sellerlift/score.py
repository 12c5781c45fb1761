"""Batch scoring for nightly jobs: an events file in, one row of scores per customer out.

    python -m sellerlift.score --bundle bundles/<run id> --events events.parquet --as-of 2026-01-01 \\
        --out scores.parquet
    python -m sellerlift.score --bundle @champion --events examples/seller_events.csv \\
        --mapping examples/seller_events.mapping.yaml --out scores.csv
    python -m sellerlift.score ... --budget 5000          # + the discount to offer (bundles with a DIPN)
    python -m sellerlift.score ... --budget 5000 --weight 1 --max-discount 20 --seller-tiers tiers.json \
        --tier-budgets '{"gold": 3000, "silver": 2000}'   # the 90-day objective under tiers and caps

Output columns: ``customer_id, seller_id, as_of, intent_<d>d, churn_<d>d`` (named after the bundle's
horizons, ``intent_7d`` / ``churn_90d`` by default), ``value_<d>d, purchases_<d>d, loyalty`` (bundles with
the customer-value head), ``segment, segment_id, n_events, cold_start, prior`` (the fields of the server's
``/v1/score``), plus, when the bundle has a promotion model, ``conversion_<level>pct`` for every discount
level; with the enduring model also ``retention_<H>d_<level>pct``, ``value_<H>d_<level>pct`` (the fields of
``/v1/promotions/curves``) and ``action_segment, action_segment_id`` when the bundle has them; with a budget
(``--budget``, ``--seller-budgets`` or ``--tier-budgets``) ``discount_pct, expected_spend,
expected_incremental_profit, [expected_enduring_value,] objective`` under the objective weight and the
constraints of ``/v1/promotions/allocate`` (:mod:`sellerlift.score_allocate`).

How it runs: the server's runtime (:class:`sellerlift.runtime.Runtime`: the bundle's fitted feature
spec, onnxruntime, segments), no torch. Memory stays bounded on any file size: pass 1
reads the file in row chunks, maps and validates each chunk (errors name the file's row and
column) and spills it into hash partitions by customer (only when the file is larger than one
partition); pass 2 scores one partition at a time, in chunks of ``--chunk-customers``, appending
to the output. Only a budget allocation keeps per-customer curves (K floats each) in memory, since
the budget couples all customers. Rows come out grouped by partition, not sorted.

Models are per data set: ``@champion`` is the champion of the data set being scored (``--data``, else
the mapping file's ``name`` / ``data.name``, else the events file's name: ``shop_events.csv`` ->
``shop_events``, as training names an unnamed data set), and a bundle trained on another data set is refused,
naming both (``--allow-other-data`` scores anyway, with a warning).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from sellerlift.engine import JobFailed
from sellerlift.runtime import BundleError, Runtime
from sellerlift.runtime.bundle import data_mismatch, newest_bundle, registered_model_name
from sellerlift.score_allocate import AllocationOptions, Collected, allocate_and_write, mapping_arg
from sellerlift.score_parts import (  # noqa: F401 - score_events, _mapped_chunks: this module's names since before
    ScoreError,
    _mapped_chunks,
    _source,
    _Writer,
    cutoff_of,
    n_partitions,
    partition_events,
    public,
    read_partition,
    score_events,
    score_partition,
)


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
                raise ScoreError(
                    f"{spec}: champions are per data set; say which: --data NAME (or a mapping with "
                    f"`name:` / `data.name:`); registered models with @{alias}: {have or 'none'}"
                )
            name = registered_model_name(DEFAULT_MODEL, data)
        else:
            name, _, alias = spec[len("models:/") :].partition("@")
        path = champion_bundle_dir(client, name, alias)
        if path is None:
            newest = newest_bundle(Path("bundles"), data) if data else None
            hint = (
                f"; the newest bundle trained on '{data}' is {newest}: pass --bundle {newest} (a run whose "
                "splits are too small to measure, guards.min_positives, trains but never becomes champion)"
                if newest is not None
                else " (train a registered model first: `make train`)"
            )
            raise ScoreError(f"{name}@{alias}: no such alias with a bundle in {client.tracking_uri}{hint}")
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
            console.print(
                f"[yellow]note:[/] the bundle was trained on data set '{rt.data}'; the scored file's data "
                "set is unknown (no `name` in the mapping): pass --data NAME to check they match"
            )
        return None
    if not allow_other_data:
        raise ScoreError(f"{rt.bundle_dir}: {why}; or pass --allow-other-data to score with it anyway")
    if console is not None:
        console.print(f"[bold red]WARNING:[/] {why}. Scoring anyway (--allow-other-data).", soft_wrap=True)
    return why


def score_file(
    bundle: Runtime,
    events_path: str | Path,
    out: str | Path,
    as_of: str | None = None,
    mapping: str | None = None,
    budget: float | None = None,
    value_col: str | None = None,
    margin: float | None = None,
    chunk_rows: int = 1_000_000,
    partition_rows: int = 2_000_000,
    chunk_customers: int = 50_000,
    progress: bool = True,
    console=None,
    allocation: AllocationOptions | None = None,
) -> dict:
    """Score every customer of ``events_path``; see the module docstring. Returns a summary dict.

    ``allocation``: the objective weight and constraints of the budget allocation (``budget`` and ``margin``
    fill its ``budget`` / ``margin`` when it has none)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    events_path, out = Path(events_path), Path(out)
    opts = allocation or AllocationOptions()
    if opts.budget is None:
        opts.budget = budget
    if opts.margin is None:
        opts.margin = margin
    if opts.wanted and bundle.promotion is None:
        console.print(f"[yellow]--budget ignored:[/] bundle {bundle.bundle_dir} has no promotion model (dipn)")
        opts = AllocationOptions()
    if opts.wanted:
        opts.check(bundle)
    budget = opts.budget if opts.wanted else None
    src = _source(events_path, mapping)
    est, k = n_partitions(src, events_path, partition_rows)
    t0 = time.perf_counter()
    timings = {}
    with (
        tempfile.TemporaryDirectory(prefix="sellerlift-score-") as tmp,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not progress,
            transient=False,
        ) as bar,
    ):
        # ---- pass 1: read, map, validate, partition by customer
        read = bar.add_task(f"read {events_path.name}", total=est or None)
        seen = [0]

        def advance(rows):
            seen[0] += rows
            bar.update(read, advance=rows, total=max(est, seen[0]))

        one = partition_events(
            src, events_path, k, None if k == 1 else Path(tmp), chunk_rows, value_col, advance=advance
        )
        bar.update(read, total=one.rows_read, completed=one.rows_read)
        if one.n_rows == 0:
            raise ScoreError(f"{events_path}: no events")
        cutoff = cutoff_of(as_of, one.last_ts)
        timings["partition_s"] = time.perf_counter() - t0

        # ---- pass 2: score partition by partition, customer chunk by customer chunk
        t1 = time.perf_counter()
        task = bar.add_task(f"score as of {cutoff.date()}", total=one.n_rows)
        writer = _Writer(out if not opts.wanted else Path(tmp) / "scores.parquet")
        collected = Collected(tuple(bundle.levels))
        n_customers = 0
        for j in range(k):
            if k == 1:
                ev = pd.concat(one.frames, ignore_index=True)
                one.frames = []
            else:
                ev = read_partition(Path(tmp), j)
                if ev is None:
                    continue
            for scores, used in score_partition(bundle, ev, cutoff, chunk_customers, one.id_kind, value_col):
                if opts.wanted:
                    collected.add(bundle, scores)
                writer.write(public(scores))
                n_customers += len(scores)
                bar.update(task, advance=used)
        writer.close()
        timings["score_s"] = time.perf_counter() - t1

        summary = {
            "customers": n_customers,
            "events": one.n_rows,
            "as_of": str(cutoff.date()),
            "out": str(out),
            "partitions": k,
            "bundle": str(bundle.bundle_dir),
            "run_id": bundle.run_id,
        }
        if opts.wanted:
            t2 = time.perf_counter()
            summary.update(allocate_and_write(bundle, writer.path, out, collected, opts, _Writer))
            timings["allocate_s"] = time.perf_counter() - t2
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    summary["timings"] = {key: round(v, 3) for key, v in timings.items()}
    summary["engine"] = "local"
    return summary


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sellerlift.score",
        description="Score every customer of an events file with a sellerlift bundle.",
    )
    ap.add_argument(
        "--bundle",
        required=True,
        help="bundle directory, or @champion (the champion of the data set scored) / "
        "models:/sellerlift-sequence-<data>@champion (MLflow registry)",
    )
    ap.add_argument(
        "--data",
        help="the data set being scored (data.name; default: the mapping's name, else the "
        "events file's name): picks @champion's registered model and is checked against "
        "the bundle's",
    )
    ap.add_argument(
        "--allow-other-data",
        action="store_true",
        help="score with a bundle trained on another data set (a loud warning instead of an error)",
    )
    ap.add_argument("--events", required=True, help="events file: CSV, Parquet or a directory of Parquet parts")
    ap.add_argument(
        "--mapping",
        help="column/event-name mapping (examples/seller_events.mapping.yaml or a data "
        "config like configs/data/seller_file.yaml); default: contract column names",
    )
    ap.add_argument(
        "--as-of",
        help="score as of this date/time (events at or after it are ignored); default: the day after the last event",
    )
    ap.add_argument("--out", required=True, help="output file: .parquet or .csv")
    ap.add_argument("--budget", type=float, help="discount budget to allocate (bundles with a promotion model)")
    ap.add_argument(
        "--weight",
        type=float,
        default=0.0,
        help="objective weight: 0 = the week's profit (default), 1 = the 90-day profit (needs the "
        "enduring model); the same as /v1/promotions/allocate",
    )
    ap.add_argument(
        "--enduring-value",
        choices=["margin", "retention"],
        default="margin",
        help="what --weight values beyond the week: margin (the margin on the revenue after it, default) or "
        "retention (the retention after it, valued at a kept customer's CLV: needs the value head)",
    )
    ap.add_argument("--seller-budgets", help="budget per seller: JSON ('{\"s1\": 100}') or a .json/.yaml file")
    ap.add_argument("--seller-tiers", help="tier of each seller: JSON or a .json/.yaml file")
    ap.add_argument("--tier-budgets", help="budget per seller tier: JSON or a .json/.yaml file")
    ap.add_argument("--max-discount", type=float, help="highest discount (percent) any customer may get")
    ap.add_argument(
        "--segment-max-discount",
        help="highest discount (percent) per segment (the action segment "
        "when the bundle has them, else the RFM segment): JSON or a file",
    )
    ap.add_argument("--max-incentive", type=float, help="most expected incentive (money) per customer")
    ap.add_argument(
        "--spread-penalty",
        type=float,
        default=0.0,
        help="penalty per squared unit of a customer's expected incentive (fairness; default 0)",
    )
    ap.add_argument(
        "--value-col",
        help="column of the events file with the customer's expected order value (default: the observed mean basket)",
    )
    ap.add_argument("--margin", type=float, help="profit margin for the allocation (default: the bundle's)")
    ap.add_argument("--chunk-customers", type=int, default=50_000, help="customers per model call batch group")
    ap.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows read at a time")
    ap.add_argument(
        "--partition-rows", type=int, default=2_000_000, help="events per partition in pass 2 (bounds memory)"
    )
    ap.add_argument(
        "--threads", type=int, help="onnxruntime threads per process (default: 2 in-process, 1 per Ray actor)"
    )
    ap.add_argument(
        "--engine",
        choices=["local", "ray"],
        help="local: this process (default; SELLERLIFT_ENGINE); "
        "ray: partition + Ray Data actors on the cluster at RAY_ADDRESS (or a local one started now); "
        "writes a directory of Parquet parts",
    )
    ap.add_argument("--address", help="Ray cluster address (default RAY_ADDRESS; none: start a local Ray)")
    ap.add_argument("--actors", type=int, help="Ray scoring actors (default: one per CPU of the cluster)")
    ap.add_argument(
        "--track",
        action="store_true",
        help="log the job (engine, nodes, per-stage timings, rows) as an MLflow run in experiment sellerlift-jobs",
    )
    ap.add_argument("--tracking-uri", help="MLflow store for @alias bundles (default: MLFLOW_TRACKING_URI or ./mlruns)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from rich.console import Console

    console = Console(stderr=True)
    try:
        data = args.data or data_name_of_mapping(args.mapping)
        if not data:  # an unnamed mapping: the data set is named after the events file, as training names it
            from sellerlift.data.mapping import default_name

            data = default_name(args.events)
            console.print(
                f"[bold]data set[/] {data} (from the events file's name, as `train.py` names an unnamed "
                "data set; --data NAME to choose)"
            )
        bundle_dir = resolve_bundle(args.bundle, args.tracking_uri, data)
        from sellerlift.engine import engine_name

        engine_kind = engine_name(args.engine)
        bundle = load_bundle(bundle_dir, threads=args.threads or 2)
        check_data(bundle, data, args.allow_other_data, console)
        console.print(
            f"[bold]bundle[/] {bundle_dir} (run {bundle.run_id}, model {bundle.manifest.get('model')}, "
            f"data set {bundle.data or '?'}, outputs {'/'.join(bundle.outputs)}, segments: "
            f"{'yes' if bundle.segments else 'no'}, promotion model: {'yes' if bundle.promotion else 'no'})"
        )
        opts = dict(
            as_of=args.as_of,
            mapping=args.mapping,
            budget=args.budget,
            value_col=args.value_col,
            margin=args.margin,
            chunk_rows=args.chunk_rows,
            partition_rows=args.partition_rows,
            chunk_customers=args.chunk_customers,
            progress=not args.no_progress,
            console=console,
        )
        alloc = AllocationOptions(
            budget=args.budget,
            weight=args.weight,
            margin=args.margin,
            seller_budgets=mapping_arg(args.seller_budgets, "--seller-budgets"),
            seller_tiers=mapping_arg(args.seller_tiers, "--seller-tiers"),
            tier_budgets=mapping_arg(args.tier_budgets, "--tier-budgets"),
            max_discount=args.max_discount,
            segment_max_discount=mapping_arg(args.segment_max_discount, "--segment-max-discount"),
            max_incentive=args.max_incentive,
            spread_penalty=args.spread_penalty,
            enduring_value=args.enduring_value,
        )
        extra = [
            f
            for f, v in (
                ("--weight", alloc.weight),
                ("--seller-budgets", alloc.seller_budgets),
                ("--seller-tiers", alloc.seller_tiers),
                ("--tier-budgets", alloc.tier_budgets),
                ("--max-discount", alloc.max_discount),
                ("--segment-max-discount", alloc.segment_max_discount),
                ("--max-incentive", alloc.max_incentive),
                ("--spread-penalty", alloc.spread_penalty),
                ("--enduring-value", alloc.enduring_value != "margin"),
            )
            if v
        ]
        if engine_kind != "local" and extra:
            raise ScoreError(
                f"{', '.join(extra)}: only with --engine local (the Ray engine allocates a total "
                "budget on the week's profit)"
            )
        if engine_kind == "local":
            s = score_file(bundle, args.events, args.out, allocation=alloc, **opts)
        else:
            from sellerlift.engine import get_engine
            from sellerlift.engine.scoring import score_file as score_on

            with get_engine(engine_kind, address=args.address, progress=not args.no_progress) as engine:
                console.print(f"[bold]engine[/] {engine.describe()}")
                s = score_on(
                    bundle, args.events, args.out, engine=engine, threads=args.threads or 1, actors=args.actors, **opts
                )
        if args.track:
            from sellerlift.engine.jobs import log_job

            run = log_job({**s, "job": "score"}, args.tracking_uri)
            console.print(
                f"[bold]MLflow[/] run {run} (experiment sellerlift-jobs)"
                if run
                else "[yellow]--track:[/] mlflow is not installed; nothing logged"
            )
    except (ScoreError, FileNotFoundError, ValueError) as err:  # SchemaError and AllocationError are ValueErrors
        console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except JobFailed as err:  # the job could not finish: nothing was written under --out
        console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        return 3
    console.print(
        f"[bold]scored[/] {s['customers']:,} customers ({s['events']:,} events) as of {s['as_of']} "
        f"in {s['seconds']:.1f}s -> {s['out']}"
    )
    if "treated" in s:
        budget = "no total cap" if s.get("budget") is None else f"budget {s['budget']:,.2f}"
        end = "" if s.get("enduring_value") is None else f", enduring value {s['enduring_value']:,.2f}"
        console.print(
            f"[bold]allocation[/] {budget}, weight {s.get('weight', 0):g}: {s['treated']:,} customers get "
            f"a discount, expected spend {s['spend']:,.2f}, incremental profit "
            f"{s['incremental_profit']:,.2f}{end}, spread {s.get('spread', 0):,.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
