"""Train, evaluate, export and track a sellerlift model: `python train.py [overrides]`.

    python train.py data=seller_file data.source.event_types.checkout=purchase   # add a mapping entry
    python train.py --config-dir /my/configs data=shop     # /my/configs/data/shop.yaml (Hydra's own flag)
    python train.py data=/my/configs/shop.yaml              # a data config file anywhere

A data problem (a bad row, a missing column, a cutoff outside the data, a bad config key) prints
its message, naming the file, row, column or key, and exits with code 2: no traceback.
"""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("SELLERLIFT_ROOT", str(ROOT))
# Extra config directories, inherited by the processes a run starts (sweep trials, DDP ranks).
CONFIG_DIRS_ENV = "SELLERLIFT_CONFIG_DIRS"
# Free-form dictionaries of the data configs: their entries are added or changed without Hydra's `+`.
FREE_FORM = ("data.source.event_types.", "data.source.promotions.", "data.source.layouts.")
EXIT_DATA_ERROR = 2


def _stage_data_file(value: str) -> tuple[str, str]:
    """``data=/path/shop.yaml`` -> (the option name, a config dir holding it as ``data/<name>.yaml``)."""
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        print(
            f"data={value}: no such config file (expected a data config like configs/data/seller_file.yaml)",
            file=sys.stderr,
        )
        sys.exit(EXIT_DATA_ERROR)
    name = path.stem
    while (ROOT / "configs" / "data" / f"{name}.yaml").exists():  # the packaged configs win a name clash
        name = f"{name}_file"
    staged = Path(tempfile.mkdtemp(prefix="sellerlift-config-"))
    atexit.register(shutil.rmtree, staged, True)
    (staged / "data").mkdir()
    (staged / "data" / f"{name}.yaml").symlink_to(path)
    return name, str(staged)


def prepare_argv(argv: list[str]) -> list[str]:
    """What Hydra's command line lacks, applied before Hydra parses it (idempotent: DDP re-launches with it).

    * ``data.source.event_types.<name>=<type>`` (and entries of ``promotions`` / ``layouts``) become
      ``++...``: add-or-override, so the documented form works for names the config does not list yet;
    * ``data=<a .yaml file>`` stages that file as a config option;
    * extra config dirs (``--config-dir`` and staged files) are passed on to the processes a run starts.
    """
    out, dirs, given = [], [d for d in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if d], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            given.append(str(Path(argv[i + 1]).expanduser().resolve()))
            out += [arg, argv[i + 1]]
            i += 2
            continue
        if arg.startswith("--config-dir="):
            given.append(str(Path(arg.split("=", 1)[1]).expanduser().resolve()))
        elif arg.startswith("data=") and arg.endswith((".yaml", ".yml")):
            name, staged = _stage_data_file(arg[len("data=") :])
            dirs.append(staged)
            arg = f"data={name}"
        elif arg.startswith(FREE_FORM) and "=" in arg:
            arg = "++" + arg
        out.append(arg)
        i += 1
    extra = [d for d in dict.fromkeys(dirs) if d not in given]
    if extra and not any(a.startswith("hydra.searchpath=") for a in out):
        # beside the other overrides: argparse takes no positional argument after an option like --cfg
        at = next((j for j, a in enumerate(out) if not a.startswith("-") and "=" in a), len(out))
        out.insert(at, "hydra.searchpath=[" + ",".join(f"file://{d}" for d in extra) + "]")
    if dirs or given:
        os.environ[CONFIG_DIRS_ENV] = os.pathsep.join(dict.fromkeys([*dirs, *given]))
    return out


def data_error_message(err: BaseException) -> str | None:
    """The message of a data or config error anywhere in ``err``'s chain (Hydra wraps constructor errors)."""
    from sellerlift.config_checks import ConfigError
    from sellerlift.schema import DataError

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (DataError, ConfigError, FileNotFoundError)):
            return str(err)
        err = err.__cause__ or err.__context__
    return None


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from sellerlift import sweep
    from sellerlift.data.mapping import fill_data_name

    fill_data_name(cfg)  # data.name null -> from the events file (experiment sellerlift-<that name>)
    if sweep.in_multirun():  # a sweep trial: train it in a fresh process (sellerlift.sweep.run_isolated)
        return sweep.run_isolated(__file__)
    from sellerlift.pipeline import run

    try:
        result = run(cfg)
    except Exception as err:
        message = data_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_DATA_ERROR)
    # What a sweep optimises (configs/train.yaml `optimized_metric`, a validation metric).
    value = result.metrics.get(cfg.get("optimized_metric") or "val/churn_auroc")
    value = None if value is None else float(value)
    sweep.write_result(value)
    return value


if __name__ == "__main__":
    sys.argv[1:] = prepare_argv(sys.argv[1:])
    main()
