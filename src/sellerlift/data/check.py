"""``python -m sellerlift.data check``: validate an events file against its mapping without training.

    python -m sellerlift.data check --mapping configs/data/seller_file.yaml /data/shop_events.csv
    python -m sellerlift.data check --mapping my.mapping.yaml my_events.csv --churn-days 30
    python -m sellerlift.data check events.parquet                    # a file already in the contract's shape
    python -m sellerlift.data check --mapping configs/data/cdnow.yaml   # the file the config names

The first thing to run on a new export. It reads the file exactly as ``train.py`` and the
batch scorer will (same mapping, same code) and prints: rows, customers, sellers, the date
range, the event types (and which of the file's names became which), every unmapped event
name with a block to paste into the mapping, order values, what the cutoff keeps (customers
and events before / after it, who is left out and why), whether the label horizons fit, the
label rates at the cutoff, and the promotions file when the mapping has one.
Exit code 0: the file is ready to train on; 2: it is not (each problem names the file, row,
column and config key).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.data.files import KEY, FileSource
from sellerlift.data.mapping import event_types_block
from sellerlift.schema import EVENT_TYPES, DataError, SchemaError

EXIT_OK, EXIT_PROBLEMS = 0, 2
FEW_POSITIVES = 30  # fewer positive labels than this: metrics on a 15 % test split mean little


@dataclass
class Report:
    """What ``check`` found: facts (name, value) in order, then problems and warnings."""

    path: Path
    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unmapped: dict[str, int] = field(default_factory=dict)
    events: pd.DataFrame | None = None
    policy: str = "error"  # the mapping's unknown_event_types
    mapping: str | None = None
    mapping_is_data_config: bool = False  # a configs/data-style file (train.py data=<it>), not a bare mapping

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, name: str, value) -> None:
        self.facts.append((name, str(value)))


def _source(events: Path | None, mapping: str | None, overrides: dict) -> FileSource:
    if mapping:
        return FileSource.from_yaml(mapping, path=str(events) if events else None, **overrides)
    if events is None:
        raise DataError("no events file: give its path (and --mapping for a file in your own shape)")
    return FileSource.contract_shaped(events, **overrides)


def check_file(
    events: str | Path | None,
    mapping: str | None = None,
    cutoff: str | None = None,
    intent_days: int | None = None,
    churn_days: int | None = None,
) -> Report:
    """Read, map and validate ``events`` (default: the mapping's own ``path``) as training would; never raises
    for a data problem."""
    path = Path(events) if events else Path(mapping or "events")
    report = Report(path, mapping=mapping)
    if mapping and Path(mapping).is_file():
        head = Path(mapping).read_text(errors="replace")
        report.mapping_is_data_config = "_target_:" in head and "source:" in head
    overrides = {"cutoff": cutoff} if cutoff else {}
    try:
        src = _source(Path(events) if events else None, mapping, overrides)
    except (DataError, FileNotFoundError, TypeError) as err:
        report.problems.append(f"mapping {mapping}: {err}" if isinstance(err, TypeError) else str(err))
        return report
    if events is None:
        if src.path is None:
            report.problems.append(f"no events file: {mapping} sets no {KEY}.path; give the file's path")
            return report
        path = report.path = src.path
    horizons = dict(src.horizons) or {"intent_days": 7, "churn_days": 90}
    if intent_days:
        horizons["intent_days"] = int(intent_days)
    if churn_days:
        horizons["churn_days"] = int(churn_days)
    src.horizons = horizons
    try:
        raw = src.read_raw(path)
    except (DataError, FileNotFoundError) as err:
        report.problems.append(str(err))
        return report
    report.add("file", f"{path} ({len(raw):,} rows, {len(raw.columns)} columns)")
    report.add("mapping", f"{mapping or '(none: contract column names)'}; data set name '{src.name}'")

    policy = report.policy = src.unknown_event_types
    src.unknown_event_types = "drop"  # look past unmapped names to report everything else too
    src.unmapped, src.dropped_rows, src.dropped_names = {}, 0, {}
    try:
        ev = src.map_frame(raw, str(path))
    except SchemaError as err:
        report.unmapped = dict(src.unmapped)
        _unmapped(report, src, policy)
        report.problems.append(str(err))
        if not mapping and "is not in the file" in str(err):
            report.problems.append(
                "no --mapping: the file must use the contract's column names. Map yours in a copy "
                "of configs/data/seller_file.yaml (or examples/seller_events.mapping.yaml) and "
                "pass it with --mapping"
            )
        return report
    report.unmapped = dict(src.unmapped)
    _unmapped(report, src, policy)
    ev = ev.sort_values(["customer_id", "ts"], kind="stable").reset_index(drop=True)
    report.events = ev
    _describe_events(report, src, raw, ev)
    if len(ev):
        _cutoff(report, src, ev, horizons)
    _promotions(report, src)
    return report


def _unmapped(report: Report, src: FileSource, policy: str) -> None:
    if not report.unmapped:
        return
    n = sum(report.unmapped.values())
    names = ", ".join(f"{k!r} ({v:,})" for k, v in sorted(report.unmapped.items(), key=lambda kv: -kv[1]))
    if policy == "drop":
        report.warnings.append(
            f"{n:,} row(s) with {len(report.unmapped)} unmapped event name(s) will be dropped "
            f"({KEY}.unknown_event_types=drop): {names}"
        )
    else:
        report.problems.append(
            f"{len(report.unmapped)} event name(s) in {n:,} row(s) are not mapped: {names}. Add "
            f"them to {KEY}.event_types (the block printed above) or set "
            f"{KEY}.unknown_event_types=drop"
        )


def _describe_events(report: Report, src: FileSource, raw: pd.DataFrame, ev: pd.DataFrame) -> None:
    unmapped = sum(report.unmapped.values())
    dropped = sum(src.dropped_names.values()) + (unmapped if report.policy == "drop" else 0)
    notes = [
        f"{dropped:,} dropped (names mapped to drop, or unknown_event_types=drop)" if dropped else "",
        f"{unmapped:,} with unmapped names left out of the counts below"
        if unmapped and report.policy == "error"
        else "",
    ]
    report.add("events", f"{len(ev):,} (after mapping)" + "".join(f"; {n}" for n in notes if n))
    report.add("customers", f"{ev['customer_id'].nunique():,} (ids: {ev['customer_id'].dtype})")
    report.add("sellers", f"{ev['seller_id'].nunique():,}")
    if len(ev):
        span = (ev["ts"].max() - ev["ts"].min()).days
        report.add("date range", f"{ev['ts'].min().floor('s')} .. {ev['ts'].max().floor('s')} UTC ({span:,} days)")
    counts = ev["event_type"].value_counts()
    types = ", ".join(f"{t} {int(counts.get(t, 0)):,}" for t in EVENT_TYPES if counts.get(t, 0))
    report.add("event types", types or "none")
    if src.event_type_constant:
        report.add(
            "event names", f"none in the file: every row is a {src.event_type_constant} ({KEY}.event_type_constant)"
        )
    elif src.event_types:
        col = src.columns["event_type"]
        names = raw[col].astype("string").str.strip().value_counts()
        shown = [
            f"{name} -> {src.event_types.get(name, name)} ({int(c):,})"
            for name, c in names.items()
            if src.event_types.get(name, name) in EVENT_TYPES
        ][:12]
        report.add(f"'{col}' names", "; ".join(shown))
    purchases = ev["event_type"] == "purchase"
    if not purchases.any():
        report.problems.append(
            "no purchase events: intent and churn are read from purchases; map the file's "
            f"purchase name to purchase in {KEY}.event_types"
        )
    elif (ev.loc[purchases, "amount"] == 0).all():
        amount = src.columns.get("amount")
        report.add(
            "order values",
            ("none" if not amount else f"all 0 in '{amount}'") + ": models use counts and "
            "timing only; segments are named without money words",
        )
    else:
        amounts = ev.loc[purchases, "amount"]
        report.add(
            "order values",
            f"{int((amounts > 0).sum()):,} of {int(purchases.sum()):,} purchases, median "
            f"{amounts[amounts > 0].median():,.2f}",
        )


def _cutoff(report: Report, src: FileSource, ev: pd.DataFrame, horizons: dict) -> None:
    from sellerlift.labels import make_labels

    try:
        cutoff = src.cutoff_for(ev)
    except DataError as err:
        report.problems.append(str(err))
        return
    cov = src.coverage(ev, cutoff)
    lines = src.describe_coverage(cov, report.path.name)
    report.add("cutoff", f"{cutoff.date()} ({KEY}.cutoff={src.cutoff_cfg})")
    report.add(
        "before the cutoff",
        f"{cov.customers_before:,} of {cov.customers:,} customers, {cov.events_before:,} events (history)",
    )
    report.add(
        "on or after it",
        f"{cov.events_after:,} events (the labels' future); {cov.customers_excluded:,} "
        "customers have no history before it",
    )
    if len(lines) > 1:
        report.warnings.append(lines[1].removeprefix(f"data {report.path.name}: "))
    if cov.customers_before < src.min_customers:
        report.problems.append(
            f"only {cov.customers_before} customer(s) have events before the cutoff "
            f"{cutoff.date()}; training needs >= {src.min_customers} ({KEY}.min_customers): "
            f"choose another {KEY}.cutoff"
        )
    end = cov.last
    fits = []
    for key, days in sorted(horizons.items()):
        need = cutoff + pd.Timedelta(days=int(days))
        ok = end >= need - pd.Timedelta(days=1)
        fits.append(f"{key}={days}: {'fits' if ok else 'does NOT fit'} (needs data until {need.date()})")
        if not ok:
            report.problems.append(
                f"data.horizons.{key}={days} does not fit: the labels need events until "
                f"{need.date()} but the data ends {end.date()}; use an earlier {KEY}.cutoff "
                f"or a shorter horizon"
            )
    report.add("horizons", f"data ends {end.date()}; " + "; ".join(fits))
    if cov.customers_before and all(
        end >= cutoff + pd.Timedelta(days=int(d)) - pd.Timedelta(days=1) for d in horizons.values()
    ):
        customers = np.sort(ev.loc[ev["ts"] < cutoff, "customer_id"].unique())
        lab = make_labels(
            ev,
            cutoff,
            customers,
            intent_days=int(horizons.get("intent_days", 7)),
            churn_days=int(horizons.get("churn_days", 90)),
            check=False,
        )
        pos = {k: int(lab[k].sum()) for k in ("intent", "churn")}
        report.add(
            "labels at the cutoff",
            f"intent {pos['intent']:,} of {len(lab):,} ({lab['intent'].mean():.1%}), "
            f"churn {pos['churn']:,} ({lab['churn'].mean():.1%})",
        )
        for k, n in pos.items():
            rest = len(lab) - n
            if min(n, rest) < FEW_POSITIVES:
                report.warnings.append(
                    f"only {min(n, rest)} customers on one side of the {k} label: test metrics "
                    "on a 15 % split will be noise (more customers, or another cutoff/horizon)"
                )


def _promotions(report: Report, src: FileSource) -> None:
    if not (src.promotions or src.promotions_path):
        return
    try:
        promos = src.load_promotions()
    except (DataError, FileNotFoundError) as err:
        report.problems.append(f"promotions: {err}")
        return
    levels = promos["discount_pct"].value_counts().sort_index()
    rnd = f", randomised {promos['randomized'].mean():.0%}" if "randomized" in promos else ", no randomised flag"
    report.add(
        "promotions",
        f"{len(promos):,} offers to {promos['customer_id'].nunique():,} customers, "
        f"{promos['ts'].min().date()} .. {promos['ts'].max().date()}, converted "
        f"{promos['converted'].mean():.1%}{rnd}; levels "
        + ", ".join(f"{int(lv)}% {int(c):,}" for lv, c in levels.items()),
    )


# --------------------------------------------------------------------------- output


def print_report(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 120)  # logs and pipes: one wide table
    table = Table(title=f"sellerlift data check: {report.path.name}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in report.facts:
        table.add_row(name, value)
    if report.facts:
        console.print(table)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}", soft_wrap=True, highlight=False)
    if report.unmapped:
        console.print(
            f"Unmapped event names, ready to paste under {KEY} of your data config (or at the top level "
            "of a mapping file); check each guess, replace every ???:",
            highlight=False,
        )
        console.print(event_types_block(report.unmapped), markup=False, highlight=False, soft_wrap=True)
    for p in report.problems:
        console.print("[red]problem:[/] ", end="")
        console.print(p, markup=False, highlight=False, soft_wrap=True)
    if report.ok:
        how = "data=<your data config>"
        if report.mapping_is_data_config:
            m = Path(report.mapping).resolve()
            how = (
                f"data={m.stem}"
                if m.parent.name == "data" and m.parent.parent.name == "configs"
                else f"data={report.mapping}"
            )
        console.print(f"[green]ok[/]: {report.path.name} is ready to train on (python train.py {how})", highlight=False)
    else:
        console.print(f"[red]{len(report.problems)} problem(s)[/]: fix them and run the check again", highlight=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sellerlift.data check",
        description="Validate an events file against its mapping, without training.",
    )
    ap.add_argument(
        "events",
        nargs="?",
        help="the events file: CSV/TXT/TSV (optionally .gz), Parquet or a directory "
        "of parts (default: the mapping's data.source.path)",
    )
    ap.add_argument(
        "--mapping",
        help="a data config (configs/data/*.yaml) or a mapping file "
        "(examples/*.mapping.yaml); default: contract column names",
    )
    ap.add_argument("--cutoff", help="auto or a date (default: the mapping's data.source.cutoff)")
    ap.add_argument("--intent-days", type=int, help="intent horizon (default: the mapping's data.horizons, else 7)")
    ap.add_argument("--churn-days", type=int, help="churn horizon (default: the mapping's data.horizons, else 90)")
    args = ap.parse_args(argv)
    report = check_file(args.events, args.mapping, args.cutoff, args.intent_days, args.churn_days)
    print_report(report)
    return EXIT_OK if report.ok else EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
