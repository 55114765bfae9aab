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


def test_gpu_strategy_configs_compose(compose_train):
    """trainer=fsdp / ddp_multinode need GPUs to run; here they compose and their strategy builds."""
    from pytorch_lightning.strategies import FSDPStrategy

    from lit_llm.strategies import transformer_blocks

    assert {"fsdp", "ddp_multinode", "gpu", "ddp"} <= set(TRAINERS)
    cfg = compose_train(["experiment=gutenberg_gpt", "trainer=fsdp", "trainer.strategy.activation_checkpointing=true"],
                        tiny=False)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    # each transformer block is one FSDP unit, and (when asked) is recomputed in backward
    assert set(strategy.kwargs["auto_wrap_policy"]._module_classes) == transformer_blocks()
    assert set(strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes) == transformer_blocks()
    assert strategy._state_dict_type == "full"  # checkpoints that pipelines/evaluate.py loads on one device
    cfg = compose_train(["experiment=gutenberg_gpt", "trainer=ddp_multinode"], tiny=False)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.strategy) == (2, 8, "ddp")


def test_slurm_multinode_launcher_composes(tmp_path):
    """The SLURM recipe (hydra-submitit-launcher): nodes and tasks per node follow the trainer, so
    Lightning's SLURM environment sees one task per GPU on every node."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=gutenberg_gpt", "hydra/launcher=slurm_ddp", "trainer=ddp_multinode",
                                          "trainer.num_nodes=4", "trainer.devices=8",
                                          "hydra.launcher.partition=gpu", f"paths.output_dir={tmp_path}"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (4, 8, 8)
    assert launcher.partition == "gpu" and launcher.signal_delay_s > 0
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    known = set(OmegaConf.structured(SlurmQueueConf).keys())
    assert set(launcher.keys()) <= known  # every key is a submitit option (a typo would be rejected by Hydra too)
