"""Validate a composed run config before any work starts; every problem names its key.

:func:`check` is the first thing :func:`sellerlift.pipeline.run` does: a negative
learning rate, an unknown model, a budget below zero, split fractions that do not
sum to 1 or a label horizon longer than the simulated future fail in
milliseconds, before data is simulated, an MLflow run is opened or a checkpoint
is written. All problems are reported at once::

    ConfigError: invalid configuration (nothing was run):
      - model.module.lr = -0.001: must be a finite number > 0
      - data.split = [0.5, 0.2, 0.2]: must be three non-negative fractions summing to 1 (sum 0.9)

Rules by key name apply anywhere in the tree (``lr``/``learning_rate`` > 0,
anything under a ``budget*`` key >= 0, ``max_len``/``batch_size`` >= 1, ...), so
config groups added later are covered without code here. Uses OmegaConf and
the standard library only (the ``_target_`` checks import the named modules).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

RESUME_MODES = ("auto",)


class ConfigError(ValueError):
    """The composed config cannot run; ``problems`` is a list of (key, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = ["invalid configuration (nothing was run):"] + [f"  - {k}: {m}" for k, m in problems]
        super().__init__("\n".join(lines))

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.problems]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive(v) -> bool:
    return _is_number(v) and math.isfinite(v) and v > 0


def _non_negative(v) -> bool:
    return _is_number(v) and math.isfinite(v) and v >= 0


def _int_at_least(n: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= n


# leaf key -> (predicate, what it must be, None allowed)
RULES: dict[str, tuple[Any, str, bool]] = {
    "lr": (_positive, "a finite number > 0", False),
    "learning_rate": (_positive, "a finite number > 0", False),
    "weight_decay": (_non_negative, "a finite number >= 0", False),
    "smooth_weight": (_non_negative, "a finite number >= 0", False),
    "max_len": (_int_at_least(1), "an integer >= 1", False),
    "batch_size": (_int_at_least(1), "an integer >= 1", False),
    "max_epochs": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and (v >= 1 or v == -1),
        "an integer >= 1 (or -1: no limit)",
        True,
    ),
    "dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)", False),
    "patience": (_int_at_least(0), "an integer >= 0", False),
    "num_workers": (_int_at_least(0), "an integer >= 0", False),
    "gradient_clip_val": (_non_negative, "a number >= 0", True),
    "top_fraction": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]", False),
    "rct_fraction": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]", False),
    "seed": (_int_at_least(0), "an integer >= 0", False),
    "split_seed": (_int_at_least(0), "an integer >= 0", False),
}
for _name in (
    "n_customers",
    "n_sellers",
    "n_estimators",
    "num_layers",
    "d_model",
    "hidden",
    "head_hidden",
    "n_heads",
    "dim_feedforward",
    "chunk_size",
    "max_offers",
    "max_eval_offers",
    "max_rows",
    "num_leaves",
):
    RULES[_name] = (_int_at_least(1), "an integer >= 1", False)
for _name in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
    RULES[_name] = (_non_negative, "a number >= 0", True)


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every problem of ``cfg`` (by dotted key); return None if it can run."""
    problems: list[tuple[str, str]] = []
    leaves = _leaves(cfg, "", problems)
    for key, value in leaves.items():
        name = key.rsplit(".", 1)[-1]
        if isinstance(value, list):
            value = [v for v in value if not isinstance(v, (list, dict))]
            if name in RULES and value and all(RULES[name][0](v) for v in value):
                continue
            if name in RULES and value:
                problems.append((key, f"{value!r}: every element must be {RULES[name][1]}"))
            continue
        if name in RULES:
            ok, what, none_ok = RULES[name]
            if value is None and none_ok:
                continue
            if not ok(value):
                problems.append((key, f"{value!r} must be {what}"))
        is_budget = "budget" in key.lower() and value is not None and not isinstance(value, str)
        if is_budget and not _non_negative(value):
            problems.append((key, f"{value!r}: a budget must be a finite number >= 0 (or null: unrestricted)"))
        if key.endswith("_days") and value is not None and not _int_at_least(0)(value):
            problems.append((key, f"{value!r} must be a whole number of days >= 0"))
    _check_model(cfg, problems)
    _check_targets(cfg, "", problems)
    _check_data(cfg, problems)
    _check_resume(cfg, problems)
    _check_misc(cfg, problems)
    if problems:
        seen, unique = set(), []
        for p in problems:
            if p not in seen:
                seen.add(p)
                unique.append(p)
        raise ConfigError(unique)


# --------------------------------------------------------------------------- walking the tree


def _leaves(node, prefix: str, problems: list) -> dict[str, Any]:
    """Dotted key -> resolved scalar (lists are leaves too); interpolation failures become problems."""
    out: dict[str, Any] = {}
    if isinstance(node, DictConfig):
        keys = list(node.keys())
    elif isinstance(node, ListConfig):
        keys = range(len(node))
    else:
        return out
    for key in keys:
        path = f"{prefix}.{key}" if prefix and isinstance(key, str) else (f"{prefix}[{key}]" if prefix else str(key))
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, key):
            problems.append((path, "is required (???) but not set"))
            continue
        try:
            value = node[key]
        except Exception as err:
            problems.append((path, f"cannot be resolved ({type(err).__name__}: {str(err).splitlines()[0][:200]})"))
            continue
        if isinstance(value, DictConfig):
            out.update(_leaves(value, path, problems))
        elif isinstance(value, ListConfig):
            try:
                out[path] = OmegaConf.to_container(value, resolve=True)
            except Exception as err:
                problems.append((path, f"cannot be resolved ({type(err).__name__}: {err})"))
                continue
            if isinstance(key, str) and "budget" in key.lower():
                out.update(_leaves(value, path, problems))
        else:
            out[path] = value
    return out


def _get(cfg, key: str, default=None):
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=False)
    except Exception:
        return default


def _locate(path: str):
    """Import ``a.b.c`` as a module attribute (what Hydra's instantiate and get_method do)."""
    module, _, attr = path.rpartition(".")
    if not module:
        raise ImportError(f"{path!r} is not a dotted path like package.module.name")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _check_callable(key: str, path, problems: list) -> None:
    if not isinstance(path, str) or not path:
        problems.append((key, f"{path!r} must be a dotted path to a function"))
        return
    try:
        obj = _locate(path)
    except Exception as err:
        problems.append((key, f"{path!r} cannot be imported ({type(err).__name__}: {err})"))
        return
    if not callable(obj):
        problems.append((key, f"{path!r} is not callable"))


def _check_targets(node, prefix: str, problems: list) -> None:
    """Every ``_target_`` in the tree must import (a typo fails now, not after the data is built)."""
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_target_":
                target = _get(node, "_target_")
                _check_callable(path, target, problems)
                continue
            try:
                child = node[key]
            except Exception:
                continue
            if isinstance(child, (DictConfig, ListConfig)):
                _check_targets(child, path, problems)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            try:
                child = node[i]
            except Exception:
                continue
            if isinstance(child, (DictConfig, ListConfig)):
                _check_targets(child, f"{prefix}[{i}]", problems)


# --------------------------------------------------------------------------- groups


def known_models() -> list[str]:
    """Names of the model configs (configs/model/*.yaml), or [] when the configs are not beside the package."""
    folder = Path(__file__).resolve().parents[2] / "configs" / "model"
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _check_model(cfg, problems: list) -> None:
    model = _get(cfg, "model")
    if model is None:
        problems.append(("model", "no model configured; choose one with model=<name>"))
        return
    name = _get(cfg, "model.name")
    known = known_models()
    if not isinstance(name, str) or not name:
        problems.append(("model.name", f"{name!r} must be a non-empty name"))
    elif known and name not in known:
        problems.append(("model.name", f"unknown model {name!r}; known: {known} (choose with model=<name>)"))
    stage = _get(cfg, "model.stage")
    if stage is None:
        problems.append(("model.stage", "missing: the function that trains this model"))
    else:
        _check_callable("model.stage", stage, problems)
    for i, extra in enumerate(_get(cfg, "extras") or []):
        _check_callable(f"extras[{i}]", extra, problems)


def _check_data(cfg, problems: list) -> None:
    split = _get(cfg, "data.split")
    if split is not None:
        values = list(split) if isinstance(split, (list, ListConfig)) else None
        if (
            values is None
            or len(values) != 3
            or not all(_non_negative(v) for v in values)
            or abs(sum(values) - 1.0) > 1e-6
        ):
            total = sum(v for v in values if _is_number(v)) if values else None
            problems.append(
                (
                    "data.split",
                    f"{OmegaConf.to_container(split) if isinstance(split, ListConfig) else split}"
                    f": must be three non-negative fractions (train, val, test) summing to 1"
                    + (f" (sum {total:g})" if total is not None else ""),
                )
            )
    horizons = _get(cfg, "data.horizons")
    if horizons is not None:
        for key, days in horizons.items():
            if not _int_at_least(1)(days):
                problems.append((f"data.horizons.{key}", f"{days!r} must be a whole number of days >= 1"))
    source = _get(cfg, "data.source")
    target = _get(cfg, "data.source._target_") if source is not None else None
    if target == "sellerlift.data.sources.SimulatorSource" and horizons is not None:
        _check_simulator(cfg, horizons, problems)


def _check_simulator(cfg, horizons, problems: list) -> None:
    """The labels look ``max(horizons)`` days past the cutoff: the simulated future must be that long."""
    from sellerlift.sim import SimulatorConfig

    fields = SimulatorConfig.__dataclass_fields__
    future = _get(cfg, "data.source.future_days", fields["future_days"].default)
    numeric = {k: v for k, v in horizons.items() if _int_at_least(1)(v)}
    if numeric and _is_number(future):
        key, days = max(numeric.items(), key=lambda kv: kv[1])
        if days > future:
            problems.append(
                (
                    f"data.horizons.{key}",
                    f"{days} days is longer than the data: the simulator's future "
                    f"after the cutoff is data.source.future_days={future} days",
                )
            )
    kwargs = {
        k: v
        for k, v in OmegaConf.to_container(cfg.data.source, resolve=False).items()
        if k in fields and not (isinstance(v, str) and "${" in v)
    }
    try:
        SimulatorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    except (ValueError, TypeError) as err:
        problems.append(("data.source", str(err)))


def _check_resume(cfg, problems: list) -> None:
    resume = _get(cfg, "resume")
    if resume is None or resume is False:
        return
    if not isinstance(resume, str):
        problems.append(("resume", f"{resume!r} must be null, 'auto' or the path of a checkpoint (.ckpt)"))
    elif resume not in RESUME_MODES and not Path(resume).is_file():
        problems.append(("resume", f"{resume!r} is neither 'auto' nor an existing checkpoint file"))


def _check_misc(cfg, problems: list) -> None:
    k_min, k_max = _get(cfg, "segments.k_min"), _get(cfg, "segments.k_max")
    if _is_number(k_min) and _is_number(k_max) and not 2 <= k_min <= k_max:
        problems.append(("segments.k_min", f"k_min={k_min}, k_max={k_max}: need 2 <= k_min <= k_max"))
    if _get(cfg, "logger") is not None:
        uri = _get(cfg, "logger.tracking_uri")
        if uri is not None and (not isinstance(uri, str) or not uri.strip()):
            problems.append(("logger.tracking_uri", f"{uri!r} must be a tracking URI (sqlite:///..., http://...)"))
    root = _get(cfg, "paths.root_dir")
    if isinstance(root, str) and root and not Path(root).is_dir():
        problems.append(("paths.root_dir", f"{root!r} is not a directory"))
