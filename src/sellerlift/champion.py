"""The champion: which registered model version services use, moved only on improvement.

After every registered run the pipeline calls :func:`check_run`: it compares the
run's validation metric (``champion.metric``, e.g. ``val/churn_auroc``) with the
run of the version that holds the alias (``champion.alias``, default
``champion``) of the registered model (``tracking.registered_model``) and moves
the alias to the new version only if it is better by more than
``champion.min_delta`` in ``champion.direction``. Either way the decision and
its reason are recorded:

* run tags ``champion.decision`` (promoted | kept | skipped) and ``champion.reason``;
* model version tags ``champion.decision``, ``champion.reason``, ``champion.metric``
  and ``sellerlift.bundle_dir`` (the bundle directory of that version's run, so a
  server or batch job can load ``@champion`` without knowing run ids);
* on promotion, the version also gets ``champion.promoted_at`` and
  ``champion.previous_version``.

From the command line (``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` picks the store)::

    python -m sellerlift.champion show                 # who holds the alias, with metric and bundle
    python -m sellerlift.champion bundle               # just the champion's bundle directory
    python -m sellerlift.champion promote --version 7 --reason "rollback after incident"
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BUNDLE_TAG = "sellerlift.bundle_dir"
DEFAULT_MODEL = "sellerlift-sequence"
DEFAULT_ALIAS = "champion"


@dataclass
class Decision:
    decision: str  # "promoted" | "kept" | "skipped"
    reason: str
    version: str | None = None  # the run's model version
    previous_version: str | None = None  # who held the alias before
    value: float | None = None
    champion_value: float | None = None
    model: str = DEFAULT_MODEL
    alias: str = DEFAULT_ALIAS

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    def summary(self) -> str:
        return f"{self.decision}: {self.reason}"


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def is_better(value: float, incumbent: float, direction: str = "maximize", min_delta: float = 0.0) -> bool:
    """Strictly better than the incumbent by more than ``min_delta`` (ties keep the incumbent)."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"champion.direction must be 'maximize' or 'minimize', got {direction!r}")
    if value is None or not math.isfinite(value):
        return False
    if incumbent is None or not math.isfinite(incumbent):
        return True
    return value > incumbent + min_delta if direction == "maximize" else value < incumbent - min_delta


def _version_of_run(client, model: str, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{model}' and run_id='{run_id}'")
    except MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


def current_champion(client, model: str = DEFAULT_MODEL, alias: str = DEFAULT_ALIAS):
    """The model version holding ``alias``, or None (no alias, or no such registered model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def _tag_both(client, run_id: str | None, model: str, version: str | None, tags: dict[str, str]) -> None:
    for k, v in tags.items():
        if run_id:
            client.set_tag(run_id, k, v)
        if version is not None:
            client.set_model_version_tag(model, version, k, v)


def check_run(client, run_id: str, cfg, bundle_dir: str | Path | None = None) -> Decision | None:
    """Compare ``run_id`` with the champion and move the alias if it is better (see module doc).

    ``cfg`` is the run's config (``champion`` and ``tracking`` sections). Returns None when the
    run registered no version of the model (``tracking.register=false``, or a model=dipn run).
    """
    ccfg = cfg.get("champion") or {}
    model = str((cfg.get("tracking") or {}).get("registered_model", DEFAULT_MODEL))
    return check(client, run_id, model=model, alias=str(ccfg.get("alias", DEFAULT_ALIAS)),
                 metric=str(ccfg.get("metric", "val/churn_auroc")), direction=str(ccfg.get("direction", "maximize")),
                 min_delta=float(ccfg.get("min_delta", 0.0)), bundle_dir=bundle_dir)


def check(client, run_id: str, model: str = DEFAULT_MODEL, alias: str = DEFAULT_ALIAS,
          metric: str = "val/churn_auroc", direction: str = "maximize", min_delta: float = 0.0,
          bundle_dir: str | Path | None = None) -> Decision | None:
    mv = _version_of_run(client, model, run_id)
    if mv is None:
        client.set_tag(run_id, "champion.decision", "skipped")
        client.set_tag(run_id, "champion.reason", f"this run registered no version of {model}")
        return None
    version = str(mv.version)
    if bundle_dir is not None:
        client.set_model_version_tag(model, version, BUNDLE_TAG, str(Path(bundle_dir).resolve()))
        client.set_tag(run_id, BUNDLE_TAG, str(Path(bundle_dir).resolve()))
    value = client.get_run(run_id).data.metrics.get(metric)
    base = dict(model=model, alias=alias, version=version, value=value)
    champ = current_champion(client, model, alias)

    if value is None or not math.isfinite(value):
        d = Decision("kept", f"this run has no finite {metric}; {model}@{alias} stays "
                             f"{'v' + str(champ.version) if champ else 'unset'}",
                     previous_version=str(champ.version) if champ else None, **base)
    elif champ is None:
        d = Decision("promoted", f"first {model}@{alias}: v{version} with {metric}={value:.4f}", **base)
    elif str(champ.version) == version:
        d = Decision("kept", f"v{version} already holds @{alias}", previous_version=version, **base)
    else:
        champ_value = client.get_run(champ.run_id).data.metrics.get(metric)  # same metric, champion's run
        prev = str(champ.version)
        if champ_value is None:
            d = Decision("promoted", f"v{version} {metric}={value:.4f}; the champion v{prev} has no {metric} "
                                     "to compare with", previous_version=prev, **base)
        elif is_better(value, champ_value, direction, min_delta):
            d = Decision("promoted", f"v{version} {metric}={value:.4f} beats champion v{prev} ({champ_value:.4f}, "
                                     f"{direction}, min_delta={min_delta:g})", previous_version=prev,
                         champion_value=champ_value, **base)
        else:
            d = Decision("kept", f"v{version} {metric}={value:.4f} does not beat champion v{prev} "
                                 f"({champ_value:.4f}, {direction}, min_delta={min_delta:g})",
                         previous_version=prev, champion_value=champ_value, **base)

    if d.promoted:
        client.set_registered_model_alias(model, alias, version)
        extra = {"champion.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if d.previous_version:
            extra["champion.previous_version"] = d.previous_version
        _tag_both(client, None, model, version, extra)
    _tag_both(client, run_id, model, version,
              {"champion.decision": d.decision, "champion.reason": d.reason, "champion.metric": metric})
    return d


def promote(client, version: str, model: str = DEFAULT_MODEL, alias: str = DEFAULT_ALIAS,
            reason: str = "promoted by hand") -> Decision:
    """Move the alias to ``version`` unconditionally (a rollback or a manual decision), recorded as such."""
    mv = client.get_model_version(model, str(version))
    champ = current_champion(client, model, alias)
    prev = str(champ.version) if champ else None
    client.set_registered_model_alias(model, alias, str(version))
    tags = {"champion.decision": "promoted", "champion.reason": f"manual: {reason}",
            "champion.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if prev:
        tags["champion.previous_version"] = prev
    _tag_both(client, mv.run_id, model, str(version), tags)
    return Decision("promoted", tags["champion.reason"], version=str(version), previous_version=prev,
                    model=model, alias=alias)


def champion_bundle_dir(client, model: str = DEFAULT_MODEL, alias: str = DEFAULT_ALIAS) -> Path | None:
    """The bundle directory of ``model@alias`` (version tag, else ``bundles/<run id>`` next to the store)."""
    mv = current_champion(client, model, alias)
    if mv is None:
        return None
    tagged = mv.tags.get(BUNDLE_TAG)
    if tagged:
        return Path(tagged)
    run = client.get_run(mv.run_id)
    return Path(run.data.tags.get(BUNDLE_TAG, "")) if run.data.tags.get(BUNDLE_TAG) else None


def default_tracking_uri(root: str | Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(root or os.environ.get("SELLERLIFT_ROOT") or Path.cwd()).resolve()
    return f"sqlite:///{root}/mlruns/mlflow.db"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sellerlift.champion", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["show", "bundle", "promote"])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--alias", default=DEFAULT_ALIAS)
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else sqlite:///./mlruns/mlflow.db")
    ap.add_argument("--version", help="promote: the model version to move the alias to")
    ap.add_argument("--reason", default="promoted by hand", help="promote: recorded as the reason")
    args = ap.parse_args(argv)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri or default_tracking_uri())
    if args.command == "promote":
        if not args.version:
            ap.error("promote needs --version N")
        d = promote(client, args.version, args.model, args.alias, args.reason)
        was = f"v{d.previous_version}" if d.previous_version else "unset"
        print(f"{args.model}@{args.alias} -> v{d.version} (was {was})")
        return 0
    mv = current_champion(client, args.model, args.alias)
    if mv is None:
        print(f"{args.model}@{args.alias}: not set (train a registered model: `make train`)", file=sys.stderr)
        return 1
    bundle = champion_bundle_dir(client, args.model, args.alias)
    if args.command == "bundle":
        print(bundle or "")
        return 0 if bundle else 1
    run = client.get_run(mv.run_id)
    metric = mv.tags.get("champion.metric", "val/churn_auroc")
    print(f"{args.model}@{args.alias}: version {mv.version} (run {mv.run_id})")
    print(f"  {metric} = {_fmt(run.data.metrics.get(metric))}   test/churn_auroc = "
          f"{_fmt(run.data.metrics.get('test/churn_auroc'))}")
    print(f"  reason: {mv.tags.get('champion.reason', '—')}")
    print(f"  bundle: {bundle or '—'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
