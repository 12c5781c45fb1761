"""The champion: which registered model version services use, moved only on improvement.

After every registered run the pipeline calls :func:`check_run`: it compares the
run's validation metric (``champion.metric``, e.g. ``val/churn_auroc``) with the
run of the version that holds the alias (``champion.alias``, default
``champion``) of the registered model and moves the alias to the new version
only if it is better by more than ``champion.min_delta`` in ``champion.direction``.

The registry is per data set: with ``tracking.per_data_set`` (the default) a run on
data set ``cdnow`` registers into ``sellerlift-sequence-cdnow`` (:func:`registry_name`),
so a model trained on one data set never becomes the champion of another. Even
within one registered model a run is never compared with (or promoted over) a
champion trained on another data set (tag ``data.name``), and a run whose splits
were too small to measure (tag ``guards.small_data``, see ``guards.*``) is skipped.
Either way the decision and its reason are recorded:

* run tags ``champion.decision`` (promoted | kept | skipped) and ``champion.reason``;
* model version tags ``champion.decision``, ``champion.reason``, ``champion.metric``
  and ``sellerlift.bundle_dir`` (the bundle directory of that version's run, so a
  server or batch job can load ``@champion`` without knowing run ids);
* on promotion, the version also gets ``champion.promoted_at`` and
  ``champion.previous_version``.

From the command line (``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` picks the store)::

    python -m sellerlift.champion show                 # every data set's champion, with metric and bundle
    python -m sellerlift.champion show --data cdnow    # one data set's
    python -m sellerlift.champion bundle --data cdnow  # just its bundle directory
    python -m sellerlift.champion promote --data cdnow --version 7 --reason "rollback after incident"
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sellerlift.runtime.bundle import registered_model_name

BUNDLE_TAG = "sellerlift.bundle_dir"
DEFAULT_MODEL = "sellerlift-sequence"
DEFAULT_ALIAS = "champion"
DATA_TAG = "data.name"  # the data set a run trained on (set by the pipeline)
SMALL_DATA_TAG, SMALL_DATA_REASON_TAG = "guards.small_data", "guards.reason"  # set when a split is too small


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


def registry_name(cfg, data: str | None) -> str:
    """The registered model a run on data set ``data`` registers into (``tracking.registered_model``, and
    ``-<data>`` appended when ``tracking.per_data_set``, the default)."""
    tcfg = cfg.get("tracking") or {}
    base = str(tcfg.get("registered_model", DEFAULT_MODEL))
    return registered_model_name(base, data) if tcfg.get("per_data_set", True) else base


def check_run(
    client, run_id: str, cfg, bundle_dir: str | Path | None = None, data: str | None = None
) -> Decision | None:
    """Compare ``run_id`` with the champion and move the alias if it is better (see module doc).

    ``cfg`` is the run's config (``champion`` and ``tracking`` sections); ``data`` the run's data set
    (default: the run's ``data.name`` tag). Returns None when the run registered no version of the
    model (``tracking.register=false``, or a model=dipn run).
    """
    ccfg = cfg.get("champion") or {}
    if data is None:
        data = client.get_run(run_id).data.tags.get(DATA_TAG)
    model = registry_name(cfg, data)
    return check(
        client,
        run_id,
        model=model,
        alias=str(ccfg.get("alias", DEFAULT_ALIAS)),
        metric=str(ccfg.get("metric", "val/churn_auroc")),
        direction=str(ccfg.get("direction", "maximize")),
        min_delta=float(ccfg.get("min_delta", 0.0)),
        bundle_dir=bundle_dir,
    )


def check(
    client,
    run_id: str,
    model: str = DEFAULT_MODEL,
    alias: str = DEFAULT_ALIAS,
    metric: str = "val/churn_auroc",
    direction: str = "maximize",
    min_delta: float = 0.0,
    bundle_dir: str | Path | None = None,
) -> Decision | None:
    mv = _version_of_run(client, model, run_id)
    if mv is None:
        client.set_tag(run_id, "champion.decision", "skipped")
        client.set_tag(run_id, "champion.reason", f"this run registered no version of {model}")
        return None
    version = str(mv.version)
    if bundle_dir is not None:
        client.set_model_version_tag(model, version, BUNDLE_TAG, str(Path(bundle_dir).resolve()))
        client.set_tag(run_id, BUNDLE_TAG, str(Path(bundle_dir).resolve()))
    run = client.get_run(run_id)
    value = run.data.metrics.get(metric)
    base = dict(model=model, alias=alias, version=version, value=value)
    champ = current_champion(client, model, alias)
    stays = f"{model}@{alias} stays {'v' + str(champ.version) if champ else 'unset'}"
    champ_run = client.get_run(champ.run_id) if champ is not None and str(champ.version) != version else None
    data, champ_data = run.data.tags.get(DATA_TAG), champ_run.data.tags.get(DATA_TAG) if champ_run else None

    if run.data.tags.get(SMALL_DATA_TAG) == "true":
        d = Decision(
            "skipped",
            f"too small to measure ({run.data.tags.get(SMALL_DATA_REASON_TAG, 'guards')}); {stays}",
            previous_version=str(champ.version) if champ else None,
            **base,
        )
    elif champ_run is not None and data and champ_data and data != champ_data:
        d = Decision(
            "skipped",
            f"v{version} was trained on data set '{data}' but champion v{champ.version} on "
            f"'{champ_data}': validation metrics of different data are not comparable and a "
            f"model of one data set must not serve another; {stays} (register per data set: "
            "tracking.per_data_set=true)",
            previous_version=str(champ.version),
            **base,
        )
    elif value is None or not math.isfinite(value):
        d = Decision(
            "kept",
            f"this run has no finite {metric}; {model}@{alias} stays {'v' + str(champ.version) if champ else 'unset'}",
            previous_version=str(champ.version) if champ else None,
            **base,
        )
    elif champ is None:
        d = Decision("promoted", f"first {model}@{alias}: v{version} with {metric}={value:.4f}", **base)
    elif str(champ.version) == version:
        d = Decision("kept", f"v{version} already holds @{alias}", previous_version=version, **base)
    else:
        champ_value = champ_run.data.metrics.get(metric)  # same metric, champion's run
        prev = str(champ.version)
        if champ_value is None:
            d = Decision(
                "promoted",
                f"v{version} {metric}={value:.4f}; the champion v{prev} has no {metric} to compare with",
                previous_version=prev,
                **base,
            )
        elif is_better(value, champ_value, direction, min_delta):
            d = Decision(
                "promoted",
                f"v{version} {metric}={value:.4f} beats champion v{prev} ({champ_value:.4f}, "
                f"{direction}, min_delta={min_delta:g})",
                previous_version=prev,
                champion_value=champ_value,
                **base,
            )
        else:
            d = Decision(
                "kept",
                f"v{version} {metric}={value:.4f} does not beat champion v{prev} "
                f"({champ_value:.4f}, {direction}, min_delta={min_delta:g})",
                previous_version=prev,
                champion_value=champ_value,
                **base,
            )
        fp, champ_fp = run.data.tags.get("data.fingerprint"), champ_run.data.tags.get("data.fingerprint")
        if fp and champ_fp and fp != champ_fp:  # same data set, another extract (new events, another cutoff)
            d.reason += f"; note: the champion's data fingerprint is {champ_fp}, this run's {fp}"

    if d.promoted:
        client.set_registered_model_alias(model, alias, version)
        extra = {"champion.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if d.previous_version:
            extra["champion.previous_version"] = d.previous_version
        _tag_both(client, None, model, version, extra)
    _tag_both(
        client,
        run_id,
        model,
        version,
        {"champion.decision": d.decision, "champion.reason": d.reason, "champion.metric": metric},
    )
    return d


def promote(
    client, version: str, model: str = DEFAULT_MODEL, alias: str = DEFAULT_ALIAS, reason: str = "promoted by hand"
) -> Decision:
    """Move the alias to ``version`` unconditionally (a rollback or a manual decision), recorded as such."""
    mv = client.get_model_version(model, str(version))
    champ = current_champion(client, model, alias)
    prev = str(champ.version) if champ else None
    client.set_registered_model_alias(model, alias, str(version))
    tags = {
        "champion.decision": "promoted",
        "champion.reason": f"manual: {reason}",
        "champion.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if prev:
        tags["champion.previous_version"] = prev
    _tag_both(client, mv.run_id, model, str(version), tags)
    return Decision(
        "promoted", tags["champion.reason"], version=str(version), previous_version=prev, model=model, alias=alias
    )


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


def champions(client, base: str = DEFAULT_MODEL, alias: str = DEFAULT_ALIAS) -> dict[str, object]:
    """``{registered model: version holding alias}`` for ``base`` and every per-data-set ``base-<data>``."""
    from mlflow.exceptions import MlflowException

    try:
        models = client.search_registered_models(f"name LIKE '{base}%'", max_results=1000)
    except MlflowException:
        return {}
    out = {}
    for rm in sorted(models, key=lambda m: m.name):
        if rm.name != base and not rm.name.startswith(f"{base}-"):
            continue
        mv = current_champion(client, rm.name, alias)
        if mv is not None:
            out[rm.name] = mv
    return out


def _show(client, model: str, mv, bundle: Path | None, alias: str) -> None:
    run = client.get_run(mv.run_id)
    metric = mv.tags.get("champion.metric", "val/churn_auroc")
    data = run.data.tags.get(DATA_TAG, "—")
    print(f"{model}@{alias}: version {mv.version} (run {mv.run_id}), data set {data}")
    print(
        f"  {metric} = {_fmt(run.data.metrics.get(metric))}   test/churn_auroc = "
        f"{_fmt(run.data.metrics.get('test/churn_auroc'))}"
    )
    print(f"  reason: {mv.tags.get('champion.reason', '—')}")
    print(f"  bundle: {bundle or '—'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sellerlift.champion", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["show", "bundle", "promote"])
    ap.add_argument(
        "--data",
        help="the data set (data.name): its registered model is <model>-<data>; show without "
        "it lists every data set's champion",
    )
    ap.add_argument("--model", default=DEFAULT_MODEL, help="registered model (the base name when --data is given)")
    ap.add_argument("--alias", default=DEFAULT_ALIAS)
    ap.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else sqlite:///./mlruns/mlflow.db"
    )
    ap.add_argument("--version", help="promote: the model version to move the alias to")
    ap.add_argument("--reason", default="promoted by hand", help="promote: recorded as the reason")
    args = ap.parse_args(argv)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri or default_tracking_uri())
    model = registered_model_name(args.model, args.data)
    if args.command == "show" and not args.data:
        found = champions(client, args.model, args.alias)
        if not found:
            print(
                f"{args.model}[-<data>]@{args.alias}: not set for any data set (train a registered model: "
                "`make train`)",
                file=sys.stderr,
            )
            return 1
        for name, mv in found.items():
            _show(client, name, mv, champion_bundle_dir(client, name, args.alias), args.alias)
        return 0
    if args.command == "promote":
        if not args.version:
            ap.error("promote needs --version N")
        d = promote(client, args.version, model, args.alias, args.reason)
        was = f"v{d.previous_version}" if d.previous_version else "unset"
        print(f"{model}@{args.alias} -> v{d.version} (was {was})")
        return 0
    mv = current_champion(client, model, args.alias)
    if mv is None:
        others = ", ".join(champions(client, args.model, args.alias)) or "none"
        print(
            f"{model}@{args.alias}: not set (champions: {others}; pass --data NAME, or train on that data: "
            "`python train.py data=NAME`)",
            file=sys.stderr,
        )
        return 1
    bundle = champion_bundle_dir(client, model, args.alias)
    if args.command == "bundle":
        print(bundle or "")
        return 0 if bundle else 1
    _show(client, model, mv, bundle, args.alias)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
