"""Every option of every config group composes and instantiates."""


import pytest
from conftest import CONFIGS, compose_config
from hydra.utils import instantiate


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("model", options("model"))
def test_model_options_instantiate(model, tmp_path):
    cfg = compose_config([f"model={model}"], root=tmp_path)
    module = instantiate(cfg.model.module)
    assert cfg.model.name == model
    assert sum(p.numel() for p in module.parameters()) > 1000


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options_instantiate(trainer, tmp_path):
    cfg = compose_config([f"trainer={trainer}"], root=tmp_path)
    t = instantiate(cfg.trainer, _partial_=True)(logger=False, enable_checkpointing=False)
    assert t.max_epochs >= 1


@pytest.mark.parametrize("group", ["callbacks", "logger", "data", "paths", "hydra"])
def test_other_groups_compose(group, tmp_path):
    for option in options(group):
        cfg = compose_config([f"{group}={option}"], root=tmp_path)
        assert cfg is not None


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}"], root=tmp_path)
    assert cfg.model.name in options("model")


def test_callbacks_instantiate(tmp_path):
    cfg = compose_config([], root=tmp_path)
    names = {type(instantiate(c)).__name__ for c in cfg.callbacks.values()}
    assert {"EarlyStopping", "ModelCheckpoint", "RichProgressBar"} <= names


def test_mlflow_store_is_under_root_unless_env_overrides(tmp_path, monkeypatch):
    cfg = compose_config([], root=tmp_path)
    assert cfg.logger.tracking_uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5555")
    assert compose_config([], root=tmp_path).logger.tracking_uri == "http://127.0.0.1:5555"


def test_bad_learning_rate_fails_naming_the_key(tmp_path):
    cfg = compose_config(["model.module.lr=-0.1"], root=tmp_path)
    with pytest.raises(Exception, match="lr"):
        instantiate(cfg.model.module)
