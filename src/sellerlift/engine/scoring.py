"""Batch scoring on an engine: the single-process scorer's two passes, spread over workers, the same rows out.

``python -m sellerlift.score --engine ray ...`` (or :func:`score_file` with a :class:`RayEngine`):

1. **partition** (tasks): the input files (one file, or the Parquet parts of a directory, in order) are split
   into contiguous groups; each task maps and validates its group in row chunks and spills the events into the
   scorer's ``k`` hash partitions by customer (``k`` as the single-process scorer picks it), one file per
   (partition, group), so a partition's rows keep the order of the input;
2. **score** (Ray Data): a dataset of the ``k`` partitions goes through ``map_batches`` with a pool of
   stateful actors (:class:`PartitionScorer`): each loads and verifies the bundle once (``Runtime.load``,
   sha256 of every file, the signature when a key is set; checked against the driver's manifest hash), then
   scores whole partitions with the scorer's own pass-2 code (``score_parts.score_partition``: same sort,
   same customer chunks) and writes ``part-<j>.parquet`` atomically;
3. **allocate** (``--budget``, actors): the curves stay in the parts; one allocation shard per group of
   partitions solves its share of the budget with the driver bisecting the multiplier
   (:mod:`sellerlift.allocate.sharded`), then writes its parts with the chosen discount
   (:mod:`sellerlift.engine.score_allocate`).

The output is a directory of Parquet parts (``part-00000.parquet`` ...) in partition order: read in name order,
its rows are the single-process scorer's file, row for row. It appears under ``--out`` only when every
partition is done (a staging directory renamed at the end); a retried partition rewrites the same part.
With the local engine the same code runs in this process.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pandas as pd

from sellerlift.engine.base import Engine, JobFailed, chunks_of, staged_output
from sellerlift.engine.score_allocate import allocate_parts
from sellerlift.score_parts import (
    PassOne,
    ScoreError,
    _source,
    _Writer,
    cutoff_of,
    n_partitions,
    part_name,
    partition_events,
    public,
    read_partition,
    score_partition,
)

SCORED = "_scored"  # parts with the allocation's inputs (``_value``), before the discounts are added
SPILL = "_spill"


def input_files(path: Path) -> list[Path]:
    """The files of ``path`` in the order the single-process scorer reads them."""
    if path.is_dir():
        import pyarrow.dataset as ds

        return [Path(f) for f in ds.dataset(str(path), format="parquet").files]
    return [path]


def _partition_group(
    events_path: str,
    mapping: str | None,
    k: int,
    spill: str,
    chunk_rows: int,
    value_col: str | None,
    job: tuple[int, list[str]],
) -> PassOne:
    group, files = job
    src = _source(Path(events_path), mapping)
    return partition_events(src, files, k, Path(spill), chunk_rows, value_col, group=group)


class PartitionScorer:
    """A Ray Data actor (or an object in this process): the bundle loaded and verified once, then partitions.

    ``__call__`` takes a batch of partition numbers and returns one summary row per partition scored.
    """

    def __init__(
        self,
        bundle_dir: str,
        manifest_sha256: str,
        threads: int,
        spill: str,
        out: str,
        cutoff: str,
        chunk_customers: int,
        id_kind: dict,
        value_col: str | None,
        keep_value: bool,
    ):
        from sellerlift.runtime import BundleError, Runtime

        t0 = time.perf_counter()
        self.rt = Runtime.load(bundle_dir, source="worker", threads=threads)
        if self.rt.manifest_sha256 != manifest_sha256:
            raise BundleError(
                f"{bundle_dir}: the bundle changed since the job started (manifest sha256 "
                f"{self.rt.manifest_sha256[:12]} on this worker, {manifest_sha256[:12]} on the driver)"
            )
        self.load_s = time.perf_counter() - t0
        self.spill, self.out = Path(spill), Path(out)
        self.cutoff = pd.Timestamp(cutoff)
        self.chunk_customers, self.id_kind, self.value_col = chunk_customers, id_kind, value_col
        self.keep_value = keep_value
        self.node = _node_id()

    def score(self, j: int) -> dict:
        t0 = time.perf_counter()
        ev = read_partition(self.spill, j)
        if ev is None:
            return {
                "partition": j,
                "customers": 0,
                "events": 0,
                "seconds": 0.0,
                "node": self.node,
                "peak_rss_mib": _peak_rss_mib(),
            }
        n_events = len(ev)
        writer = _Writer(self.out / part_name(j))
        n = 0
        for scores, _ in score_partition(self.rt, ev, self.cutoff, self.chunk_customers, self.id_kind, self.value_col):
            writer.write(scores if self.keep_value else public(scores))
            n += len(scores)
        writer.close()
        return {
            "partition": j,
            "customers": n,
            "events": n_events,
            "seconds": time.perf_counter() - t0,
            "node": self.node,
            "peak_rss_mib": _peak_rss_mib(),
        }

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame([self.score(int(j)) for j in batch["partition"]])


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _node_id() -> str:
    """The Ray node this runs on ("local" outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except ImportError:
        return "local"


def score_file(
    bundle,
    events_path,
    out,
    *,
    engine: Engine,
    as_of: str | None = None,
    mapping: str | None = None,
    budget: float | None = None,
    value_col: str | None = None,
    margin: float | None = None,
    chunk_rows: int = 1_000_000,
    partition_rows: int = 2_000_000,
    chunk_customers: int = 50_000,
    threads: int = 1,
    actors: int | None = None,
    progress: bool = True,
    console=None,
) -> dict:
    """Score every customer of ``events_path`` on ``engine``; see the module doc. ``bundle``: a loaded Runtime
    (the driver's, checked for the data set) whose directory the workers load again. Returns a summary."""
    from rich.console import Console

    console = console or Console(stderr=True)
    # workers do not share this process's working directory: every path they see is absolute
    events_path, out = Path(events_path).absolute(), Path(out).absolute()
    mapping = str(Path(mapping).absolute()) if mapping and Path(mapping).exists() else mapping
    if out.suffix.lower() in (".csv", ".gz"):
        raise ScoreError(
            f"--out {out}: the {engine.name} engine writes partitioned Parquet (a directory of parts); "
            "give a .parquet name or a directory"
        )
    if budget is not None and bundle.promotion is None:
        console.print(f"[yellow]--budget ignored:[/] bundle {bundle.bundle_dir} has no promotion model (dipn)")
        budget = None
    src = _source(events_path, mapping)
    est, k = n_partitions(src, events_path, partition_rows)
    files = input_files(events_path)
    t0 = time.perf_counter()
    timings, rows = {}, {}
    try:
        with staged_output(out) as stage:
            spill = stage / SPILL
            spill.mkdir()
            groups = chunks_of([str(f) for f in files], 2 * engine.workers)
            fn = partial(_partition_group, str(events_path), mapping, k, str(spill), chunk_rows, value_col)
            parts = engine.map(fn, list(enumerate(groups)), desc=f"partition {events_path.name}")
            one = PassOne()
            for p in parts:
                one = one.merge(p)
            if one.n_rows == 0:
                raise ScoreError(f"{events_path}: no events")
            cutoff = cutoff_of(as_of, one.last_ts)
            timings["partition_s"] = time.perf_counter() - t0
            rows["events"] = one.n_rows

            t1 = time.perf_counter()
            scored = stage / SCORED if budget is not None else stage
            scored.mkdir(exist_ok=True)
            args = dict(
                bundle_dir=str(Path(bundle.bundle_dir).absolute()),
                manifest_sha256=bundle.manifest_sha256,
                threads=threads,
                spill=str(spill),
                out=str(scored),
                cutoff=str(cutoff),
                chunk_customers=chunk_customers,
                id_kind=dict(one.id_kind),
                value_col=value_col,
                keep_value=budget is not None,
            )
            done = _score_partitions(engine, k, args, actors, progress, one.n_rows)
            timings["score_s"] = time.perf_counter() - t1
            _remove(spill)
            done = done.sort_values("partition").reset_index(drop=True)
            rows["customers"] = int(done["customers"].sum())
            _unify_schemas(scored, done)
            summary = {
                "job": "score",
                "customers": rows["customers"],
                "events": one.n_rows,
                "as_of": str(cutoff.date()),
                "out": str(out),
                "partitions": k,
                "bundle": str(bundle.bundle_dir),
                "run_id": bundle.run_id,
                "nodes_used": int(done["node"].nunique()),
                "partition_seconds": [round(float(x), 3) for x in done["seconds"]],
                "partition_events": [int(x) for x in done["events"]],
                "worker_peak_rss_mib": float(done["peak_rss_mib"].max()),
            }
            if budget is not None:
                t2 = time.perf_counter()
                summary.update(allocate_parts(engine, bundle, scored, stage, done, float(budget), margin))
                _remove(scored)
                timings["allocate_s"] = time.perf_counter() - t2
    except JobFailed:
        raise
    except (ScoreError, FileNotFoundError, ValueError):
        raise
    except Exception as err:  # a Ray Data failure after its retries: say which job, no output written
        raise JobFailed(
            f"scoring {events_path} failed ({type(err).__name__}: {str(err).splitlines()[-1][:500]}); "
            f"nothing was written to {out}"
        ) from err
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    summary["timings"] = {key: round(v, 3) for key, v in timings.items()}
    summary["rows"] = rows
    summary.update(engine.describe())
    return summary


def _score_partitions(engine: Engine, k: int, args: dict, actors: int | None, progress: bool, total_events: int):
    """Pass 2: every partition through a PartitionScorer; one summary row per partition."""
    from sellerlift.engine.base import progress_bar

    if engine.name == "local":
        scorer = PartitionScorer(**args)
        bar, desc, _ = progress_bar(progress, "score", total_events)
        out = []
        with bar:
            task = bar.add_task(desc, total=total_events)
            for j in range(k):
                out.append(scorer.score(j))
                bar.advance(task, out[-1]["events"])
        return pd.DataFrame(out)
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    n = max(1, min(k, actors or engine.workers))
    ds = ray.data.from_items([{"partition": j} for j in range(k)], override_num_blocks=k)
    ds = ds.map_batches(
        PartitionScorer,
        fn_constructor_kwargs=args,
        batch_size=1,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=n),
        num_cpus=1,
    )
    bar, desc, _ = progress_bar(progress, f"score ({n} actors)", total_events)
    out = []
    with bar:
        task = bar.add_task(desc, total=total_events)
        for row in ds.iter_rows():
            out.append(dict(row))
            bar.advance(task, int(row["events"]))
    if len(out) != k:
        raise JobFailed(f"scoring: {len(out)} of {k} partitions came back")
    return pd.DataFrame(out)


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _unify_schemas(folder: Path, done: pd.DataFrame) -> None:
    """Parts that inferred another schema than the first part (the single-process file has one) are cast to it."""
    import pyarrow.parquet as pq

    names = [folder / part_name(int(j)) for j in done.loc[done["customers"] > 0, "partition"]]
    if len(names) < 2:
        return
    first = pq.read_schema(names[0])
    for f in names[1:]:
        if not pq.read_schema(f).equals(first):
            table = pq.read_table(f).cast(first)
            tmp = f.with_name(f".{f.name}.cast")
            pq.write_table(table, tmp)
            tmp.replace(f)


__all__ = ["PartitionScorer", "score_file"]
