"""Every experiment, trainer, debug and logger config composes, resolves and instantiates."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR

EXPERIMENTS = sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in Path(CONF_DIR, "trainer").glob("*.yaml"))


def test_required_experiments_exist():
    assert {"quickstart", "shakespeare_gpt", "gutenberg_gpt"} <= set(EXPERIMENTS)
    assert {"cpu", "gpu", "ddp", "ddp_sim"} <= set(TRAINERS)
    assert {"fast_dev_run", "overfit", "limit"} <= {p.stem for p in Path(CONF_DIR, "debug").glob("*.yaml")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(compose_train, experiment):
    cfg = compose_train([f"experiment={experiment}"], tiny=False)
    OmegaConf.resolve(cfg)  # every interpolation resolves (paths, seeds, package files)
    assert cfg.task_name == experiment
    from lit_llm.run import data_length

    assert data_length(cfg.data)[1] <= cfg.model.block_size
    instantiate(cfg.data, cache_dir=cfg.paths.cache_dir, _convert_="all")


def test_data_dir_follows_environment(compose_train, monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir

    monkeypatch.setenv("LIT_LLM_DATA_DIR", str(tmp_path))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=shakespeare_gpt", "paths.output_dir=x"])
    assert cfg.data.files == f"{tmp_path}/tinyshakespeare/input.txt"


@pytest.mark.parametrize("trainer", ["cpu", "ddp_sim", "default"])
def test_cpu_trainers_instantiate(compose_train, trainer):
    cfg = compose_train([f"trainer={trainer}"], tiny=False)
    t = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert t.num_devices == (2 if trainer == "ddp_sim" else 1)


@pytest.mark.parametrize("debug", ["fast_dev_run", "overfit", "limit"])
def test_debug_configs_compose(compose_train, debug):
    cfg = compose_train(["experiment=quickstart", f"debug={debug}"], tiny=False)
    assert cfg.task_name == "debug"


def test_quickstart_corpus_ships_with_the_package(compose_train):
    cfg = compose_train(["experiment=quickstart", "paths.data_dir=/nonexistent"], tiny=False)
    assert Path(cfg.data.files).is_file()
