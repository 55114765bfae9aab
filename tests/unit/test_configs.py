"""Every experiment, trainer, debug and logger config composes, resolves and instantiates; the shared
defaults (task/optim, report) compose to the values each task and pipeline had, and the debug modes set
what they exist for."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR

EXPERIMENTS = sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in Path(CONF_DIR, "trainer").glob("*.yaml"))
TASKS = sorted(p.stem for p in Path(CONF_DIR, "task").glob("*.yaml"))

# task.optim of each task config: conf/task/optim/adamw.yaml plus the task's own values
_ADAMW = {"lr": 1.0e-3, "weight_decay": 0.01, "betas": [0.9, 0.98], "eps": 1.0e-6, "warmup_steps": 100,
          "min_lr_ratio": 0.0, "decay_steps": 0, "backbone_lr_scale": 1.0, "warmup_ratio": 0.0, "layer_decay": 1.0}
TASK_OPTIM = {
    "clm": {**_ADAMW, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1.0e-8, "min_lr_ratio": 0.1},
    "mlm": {**_ADAMW, "min_lr_ratio": 0.1},
    "classification": {**_ADAMW, "lr": 5.0e-4, "warmup_steps": 50},
    "qa": {**_ADAMW, "lr": 5.0e-4},
    "seq2seq": {**_ADAMW, "warmup_steps": 200},
    "sft": {**_ADAMW, "lr": 2.0e-5, "weight_decay": 0.0, "warmup_steps": 0, "warmup_ratio": 0.03},
    "dpo": {**_ADAMW, "lr": 5.0e-6, "weight_decay": 0.0, "warmup_steps": 0, "warmup_ratio": 0.1},
}
TASK_OF_TARGET = {"CausalLMTask": "clm", "MaskedLMTask": "mlm", "ClassificationTask": "classification",
                  "QuestionAnsweringTask": "qa", "Seq2SeqTask": "seq2seq", "SFTTask": "sft", "DPOTask": "dpo"}
# experiments that change task.optim (the others keep their task's)
EXPERIMENT_OPTIM = {
    "quickstart": {"lr": 3.0e-3, "warmup_steps": 50},
    "shakespeare_gpt": {"lr": 2.0e-3, "warmup_steps": 50},
    "shakespeare_gpt_bpe": {"lr": 2.0e-3, "warmup_steps": 50},
    "gutenberg_gpt": {"lr": 1.0e-3, "warmup_steps": 200},
    "instruct_mix_gpt": {"lr": 5.0e-4},
    # the fine-tuning recipes: a pretrained body's lr, warmup as a share of the run (tests/integration/test_recipes.py)
    "finetune_sst2": {"lr": 1.0e-4, "warmup_steps": 0, "warmup_ratio": 0.1},
    "finetune_tydiqa": {"lr": 1.0e-4, "warmup_steps": 0, "warmup_ratio": 0.1},
    "finetune_samsum": {"lr": 1.0e-4, "warmup_steps": 0, "warmup_ratio": 0.06},
    "finetune_multi30k": {"lr": 1.0e-4, "warmup_steps": 0, "warmup_ratio": 0.06},
    "finetune_shakespeare": {"lr": 3.0e-4, "warmup_steps": 0, "warmup_ratio": 0.06},
    "sst2_pretraining_value": {"lr": 5.0e-4, "warmup_steps": 0, "warmup_ratio": 0.1},
    "sst2_tapt_mlm": {"lr": 2.0e-4, "warmup_steps": 50},
    "sst2_distill": {"lr": 1.0e-3},
    "rte_bert": {"lr": 5.0e-4, "warmup_steps": 0, "warmup_ratio": 0.1},
    "rte_bert_pretrained": {"lr": 5.0e-4, "warmup_steps": 0, "warmup_ratio": 0.1},
}
# values an experiment requires on the command line (a `???` in the recipe)
REQUIRED = {"sst2_pretraining_value": ["study.mlm_run=/runs/mlm"]}
REPORT = {"enabled": True, "resamples": 1000, "confidence": 0.95, "seed": 0, "examples": 3,
          "interpret": {"enabled": True, "examples": 3, "max_tokens": 48, "attention": "both", "projection": "auto",
                        "projection_max": 2000, "attributions": "grad_x_input", "ig_steps": 16}}


def _leaves(cfg) -> dict:
    """{dotted key: value} of every leaf of a config (lists are leaves), interpolations unresolved."""
    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(walk(OmegaConf.to_container(cfg, resolve=False), ""))


def test_required_experiments_exist():
    assert {"quickstart", "shakespeare_gpt", "gutenberg_gpt"} <= set(EXPERIMENTS)
    assert {"cpu", "gpu", "ddp", "ddp_sim"} <= set(TRAINERS)
    assert {"fast_dev_run", "overfit", "limit"} <= {p.stem for p in Path(CONF_DIR, "debug").glob("*.yaml")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(compose_train, experiment):
    cfg = compose_train([f"experiment={experiment}", *REQUIRED.get(experiment, [])], tiny=False)
    OmegaConf.resolve(cfg)  # every interpolation resolves (paths, seeds, package files)
    assert cfg.task_name == experiment
    dm = instantiate(cfg.data, cache_dir=cfg.paths.cache_dir, _convert_="all")
    key, length = dm.max_sequence_length()
    assert key.startswith("data.") and length <= cfg.model.block_size


@pytest.mark.parametrize("limit, steps, every", [(500, 48, 16), (2000, 189, 63), (8000, 750, 250)])
def test_pretraining_study_budget_follows_the_labelled_data(compose_train, limit, steps, every):
    """3 epochs over the labelled subset (batches of 32, the last one short), validation once an epoch; the starts
    differ only in model.init_from, and both read the MLM run's tokenizer."""
    cfgs = {start: compose_train(["experiment=sst2_pretraining_value", "study.mlm_run=/runs/mlm", f"start={start}",
                                  f"data.train_limit={limit}"], tiny=False) for start in ("scratch", "mlm")}
    for cfg in cfgs.values():
        assert (cfg.trainer.max_steps, cfg.trainer.val_check_interval) == (steps, every)
        assert cfg.tokenizer.path == "/runs/mlm/tokenizer.json" and cfg.callbacks.model_checkpoint.monitor == "val/acc"
    assert cfgs["scratch"].model.init_from is None and cfgs["mlm"].model.init_from == "/runs/mlm"
    a, b = (_leaves(cfgs[s]) for s in ("scratch", "mlm"))
    assert {k for k in a if a[k] != b[k]} == {"model.init_from"}
    with pytest.raises(Exception, match="study.mlm_run"):  # a missing run is named at once
        compose_train(["experiment=sst2_pretraining_value"], tiny=False).tokenizer.path


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


# what each debug mode exists for: every key it sets, and nothing else
DEBUG_SETTINGS = {
    # one training and one validation batch, no test: does the code run at all?
    "fast_dev_run": {"trainer.fast_dev_run": True, "test": False},
    # one batch again and again, no weight decay nor warmup: can the model learn at all?
    "overfit": {"trainer.overfit_batches": 1, "trainer.max_steps": 100, "trainer.val_check_interval": 50,
                "trainer.limit_val_batches": 1, "task.optim.warmup_steps": 0, "task.optim.weight_decay": 0.0,
                "test": False},
    # a short complete run, test included
    "limit": {"trainer.max_steps": 20, "trainer.val_check_interval": 10, "trainer.limit_val_batches": 2,
              "trainer.limit_test_batches": 2, "task.optim.warmup_steps": 2},
}


@pytest.mark.parametrize("experiment", ["quickstart", "sst2_bert"])
@pytest.mark.parametrize("debug", sorted(DEBUG_SETTINGS))
def test_debug_configs_set_what_they_exist_for(compose_train, debug, experiment):
    """A debug mode applies over any experiment (it comes after it in train.yaml's defaults): its keys win over
    the recipe's, and it changes nothing else (task_name aside, so that its runs go under outputs/debug/)."""
    assert set(DEBUG_SETTINGS) == {p.stem for p in Path(CONF_DIR, "debug").glob("*.yaml")}
    plain = _leaves(compose_train([f"experiment={experiment}"], tiny=False))
    cfg = compose_train([f"experiment={experiment}", f"debug={debug}"], tiny=False)
    assert cfg.task_name == "debug"
    debugged = _leaves(cfg)
    changed = {k: v for k, v in debugged.items() if plain.get(k, "<absent>") != v}
    expected = DEBUG_SETTINGS[debug]
    assert {k: v for k, v in changed.items() if k != "task_name"} == {k: v for k, v in expected.items()
                                                                       if plain.get(k, "<absent>") != v}
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key
    assert set(debugged) - set(plain) <= set(expected)  # only keys of its own are new


@pytest.mark.parametrize("task", sorted(TASK_OPTIM))
def test_task_optim_is_the_shared_adamw_plus_the_tasks_own(compose_train, task):
    assert TASKS == sorted(TASK_OPTIM)
    cfg = compose_train([f"task={task}"], tiny=False)
    assert OmegaConf.to_container(cfg.task.optim) == TASK_OPTIM[task]
    assert list(cfg.task.optim) == list(_ADAMW)  # one key order for every task (conf/task/optim/adamw.yaml)
    from lit_llm.tasks.base import OptimConfig

    OptimConfig(**cfg.task.optim)  # every key is an OptimConfig field


def test_optim_defaults_in_code_are_the_shared_config_file():
    from dataclasses import asdict

    from lit_llm.tasks.base import OptimConfig

    shared = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "task" / "optim" / "adamw.yaml"))
    assert asdict(OptimConfig()) == {**shared, "betas": tuple(shared["betas"])}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_optim(compose_train, experiment):
    cfg = compose_train([f"experiment={experiment}", *REQUIRED.get(experiment, [])], tiny=False)
    task = TASK_OF_TARGET[cfg.task._target_.rsplit(".", 1)[-1]]
    assert OmegaConf.to_container(cfg.task.optim) == {**TASK_OPTIM[task], **EXPERIMENT_OPTIM.get(experiment, {})}


def test_optim_overrides_from_the_command_line(compose_train):
    cfg = compose_train(["experiment=sst2_bert", "task.optim.lr=2e-3", "task.optim.betas=[0.8,0.9]"], tiny=False)
    assert cfg.task.optim == {**TASK_OPTIM["classification"], "lr": 2e-3, "betas": [0.8, 0.9]}


def test_report_settings_are_shared_by_train_and_eval(compose_train, compose_eval, tmp_path):
    assert OmegaConf.to_container(compose_train([], tiny=False).report) == REPORT
    quiet = {**REPORT, "interpret": {**REPORT["interpret"], "enabled": False}}  # the compose_eval fixture's
    assert OmegaConf.to_container(compose_eval([], tmp_path).report) == quiet
    overrides = ["report.resamples=50", "report.enabled=false"]
    assert compose_train(overrides, tiny=False).report == {**REPORT, "resamples": 50, "enabled": False}
    assert compose_eval(overrides, tmp_path).report == {**quiet, "resamples": 50, "enabled": False}


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
