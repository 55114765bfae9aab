"""Evaluation of a saved checkpoint (`pipelines/evaluate.py`): checkpoint -> its task, data and tokenizer
-> test -> metrics.json, report, run.json.

Everything comes from the checkpoint: its task kind (looked up in `lit_llm.tasks.TASKS`), backbone,
tokenizer and the run's data settings. `data=<name>` evaluates on another dataset of the same task,
`split=` on another split, `+data.<key>=...` edits the checkpoint's data config. The trainer is built
as training builds it (`lit_llm.builders.build_trainer`). `precision=int8` evaluates the checkpoint with its
linear layers quantized to int8 (`lit_llm.compression.quantize_int8`, CPU only); every evaluation reports its
test examples/s (run.json `inference`), so precisions can be compared.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

import lit_llm
from lit_llm.builders import attach_tokenizer, build_datamodule, build_trainer, container
from lit_llm.checkpointing import read_checkpoint, resolve_ckpt_path
from lit_llm.errors import ConfigError
from lit_llm.reporting.metadata import run_metadata
from lit_llm.reporting.run_report import print_summary, report_settings, write_results, write_run_report
from lit_llm.tasks import TASKS, TaskSpec, task_spec
from lit_llm.tokenization import tokenizer_fingerprint, tokenizer_from_str
from lit_llm.utils_io import atomic_write_json


@dataclass
class Checkpoint:
    """A task checkpoint and what it says about its run."""

    path: str
    content: dict       # torch.load of the .ckpt
    spec: TaskSpec      # its task kind's registry entry
    stored: dict        # the run settings saved with it (data, seed, precision, ...)

    @property
    def meta(self) -> dict:
        return self.content["lit_llm"]


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate a checkpoint on its test sets (or `split`); write metrics.json and the report into
    `paths.output_dir`; return the flat metrics."""
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    ckpt = open_checkpoint(cfg.get("ckpt_path"))
    seed = cfg.get("seed") if cfg.get("seed") is not None else (ckpt.stored.get("seed") or 0)
    pl.seed_everything(seed, workers=True)
    data_cfg = eval_data_config(cfg, ckpt.stored, ckpt.meta["backbone_config"], seed)
    ckpt.spec.check_data(data_cfg, f"ckpt_path={ckpt.path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    dm, tok_fp = eval_data(cfg, ckpt, data_cfg)
    task = load_task(cfg, ckpt, dm)
    trainer_cfg = eval_trainer_config(cfg, ckpt.stored)
    if is_int8(cfg):
        from lit_llm.compression import quantize_int8

        quantize_int8(task, f"ckpt_path={ckpt.path}")
    speed = ThroughputCounter()
    trainer = build_trainer(trainer_cfg, out_dir, extra_callbacks=[speed])
    metrics = {}
    for result in trainer.test(task, datamodule=dm, verbose=False):
        metrics.update({k: float(v) for k, v in result.items()})
    metrics = dict(sorted(metrics.items()))
    inference = {"precision": "int8" if is_int8(cfg) else str(trainer_cfg["precision"]), **speed.summary()}
    write_eval_outputs(cfg, ckpt, task, dm, data_cfg, metrics, out_dir, started, seed, tok_fp, inference)
    return metrics


class ThroughputCounter(pl.Callback):
    """Test examples (rows of `input_ids`) and seconds from the first test batch to the end of the last."""

    def __init__(self):
        self.examples, self.start, self.end = 0, None, None

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.start is None:
            self.start = time.perf_counter()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        # rows of the batch's first tensor (input_ids; a DPO batch has chosen_*/rejected_* keys instead)
        self.examples += next((int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor) and v.dim()), 0)
        self.end = time.perf_counter()

    def summary(self) -> dict:
        seconds = (self.end - self.start) if self.start is not None and self.end is not None else 0.0
        return {"examples": self.examples, "seconds": round(seconds, 3),
                "examples_per_s": round(self.examples / seconds, 2) if seconds > 0 else None,
                "threads": torch.get_num_threads()}


def eval_checkpoint_path(spec: str | None) -> str:
    """`ckpt_path` of pipelines/evaluate.py: a .ckpt file, or a run directory (the checkpoint its
    test used, `best_checkpoint` in run.json, else checkpoints/last.ckpt)."""
    if not spec:
        raise ConfigError("ckpt_path is required: pipelines/evaluate.py ckpt_path=<run dir or .ckpt file>")
    p = Path(spec)
    run_json = p / "run.json"
    if p.is_dir() and run_json.is_file():
        best = json.loads(run_json.read_text()).get("best_checkpoint")
        if best and Path(best).is_file():
            return best
    return resolve_ckpt_path(spec)


def open_checkpoint(spec: str | None) -> Checkpoint:
    """The checkpoint `ckpt_path` names, refused unless pipelines/train.py wrote it."""
    path = eval_checkpoint_path(spec)
    content = read_checkpoint(path)
    meta = content.get("lit_llm")
    if not meta or meta.get("task") not in TASKS or not meta.get("tokenizer_json"):
        raise ConfigError(f"ckpt_path={path} is not a lit-llm task checkpoint (no 'lit_llm' metadata with a "
                          "task and a tokenizer); give a .ckpt written by pipelines/train.py")
    return Checkpoint(path, content, task_spec(meta["task"], f"ckpt_path={path}"), stored_run_config(path, meta))


def stored_run_config(ckpt_path: str, meta: dict) -> dict:
    """The run settings saved in the checkpoint, or (older checkpoints) the run directory's
    .hydra/config.yaml beside checkpoints/."""
    if meta.get("run_config"):
        return meta["run_config"]
    hydra_cfg = Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    if hydra_cfg.is_file():
        saved = OmegaConf.load(hydra_cfg)
        return {"task_name": saved.get("task_name"), "seed": saved.get("seed"),
                "optimized_metric": saved.get("optimized_metric"),
                "data": OmegaConf.to_container(saved.data, resolve=False), "data_resolved": None,
                "trainer": {"precision": str(saved.trainer.get("precision"))}}
    raise ConfigError(f"ckpt_path={ckpt_path} holds no run settings (an older checkpoint, away from its run "
                      "directory): choose the data with data=<name>, e.g. data=sst2")


def eval_data_config(cfg: DictConfig, stored: dict, backbone_config: dict, seed: int) -> dict:
    """data= (a whole data config) replaces the checkpoint's; +data.<key>=... edits it."""
    given = cfg.get("data")
    if given is not None and "_target_" in given:
        node = OmegaConf.create({"paths": cfg.paths, "seed": seed, "model": backbone_config,
                                 "data": OmegaConf.to_container(given, resolve=False)})
        return container(node.data)
    edits = container(given) if given is not None else {}
    try:  # the saved config re-resolved here: ${paths.data_dir} may live elsewhere on this machine
        node = OmegaConf.create({"paths": cfg.paths, "seed": seed, "model": backbone_config, "data": stored["data"]})
        data = container(node.data)
    except Exception:  # noqa: BLE001 - an interpolation this config cannot resolve: use the run's values
        if not stored.get("data_resolved"):
            raise
        data = dict(stored["data_resolved"])
    unknown = sorted(set(edits) - set(data))
    if unknown:
        raise ConfigError(f"data.{unknown[0]} is not a setting of the checkpoint's data config "
                          f"({data.get('_target_')}); known: {', '.join(sorted(data))}")
    return {**data, **edits}


def eval_data(cfg: DictConfig, ckpt: Checkpoint, data_cfg: dict):
    """(data module set up for test with the checkpoint's tokenizer, tokenizer fingerprint)."""
    dm = build_datamodule(data_cfg, cfg.paths.cache_dir)
    dm.load_raw()
    tokenizer = tokenizer_from_str(ckpt.meta["tokenizer_json"])
    tok_fp = tokenizer_fingerprint(tokenizer)
    tok_fp, _ = attach_tokenizer(dm, tokenizer, tok_fp, ckpt.stored.get("special_ids"), ckpt.stored.get("chat_template"))
    if cfg.get("split"):
        dm.set_test_split(cfg.split)
    if cfg.get("batch_size"):
        dm.set_eval_batch_size(int(cfg.batch_size))
    dm.prepare_data()
    dm.setup("test")
    return dm, tok_fp


def load_task(cfg: DictConfig, ckpt: Checkpoint, dm):
    """The checkpoint's task (its class from the registry), with `generation.*` options over its own;
    refused when the data does not give it what it was trained with (e.g. other class names)."""
    hparams = ckpt.content["hyper_parameters"]
    overrides = {}
    if cfg.get("generation"):
        if "generation" not in hparams:
            raise ConfigError(f"generation.* options are for tasks that generate text (seq2seq); "
                              f"ckpt_path={ckpt.path} is {ckpt.spec.kind}")
        overrides["generation"] = {**hparams.get("generation", {}), **container(cfg.generation)}
    task = ckpt.spec.task_class().load_from_checkpoint(ckpt.path, map_location="cpu", weights_only=True, **overrides)
    for key, value in dm.task_arguments().items():  # the constructor arguments the data gives, as trained
        if key not in task.hparams:  # kept only for training (classification's class_counts)
            continue
        trained = task.hparams[key]
        if (list(trained) if isinstance(trained, (list, tuple)) else trained) != value:
            raise ConfigError(f"ckpt_path={ckpt.path} was trained with {key}={trained} but the data gives "
                              f"{key}={value}; evaluate on data with the same {key}")
    return task


def is_int8(cfg: DictConfig) -> bool:
    return str(cfg.get("precision")) == "int8"


def eval_trainer_config(cfg: DictConfig, stored: dict) -> dict:
    """A one-device test-only trainer in the training run's precision (or `precision=`); `precision=int8`: a
    float32 trainer on the CPU around the int8 model (a ConfigError for another accelerator)."""
    precision = cfg.get("precision") or (stored.get("trainer") or {}).get("precision") or "32-true"
    accelerator = cfg.get("accelerator") or "auto"
    if is_int8(cfg):
        if accelerator not in ("auto", "cpu"):
            raise ConfigError(f"precision=int8 runs on the CPU only (int8 linear layers for CPU inference), not "
                              f"accelerator={accelerator}; use accelerator=cpu, or precision=bf16-mixed on a GPU")
        precision, accelerator = "32-true", "cpu"
    elif str(precision) == "auto":
        from lit_llm.builders import resolve_precision

        cache_dir = (cfg.get("paths") or {}).get("cache_dir")
        precision = resolve_precision({"precision": precision, "accelerator": accelerator}, cache_dir).precision
    return {"_target_": "pytorch_lightning.Trainer", "accelerator": accelerator, "devices": 1,
            "precision": precision, "enable_checkpointing": False, "enable_model_summary": False,
            "limit_test_batches": cfg.get("limit_batches") or 1.0,
            "enable_progress_bar": bool(cfg.get("progress_bar", True)), "deterministic": False}


def write_eval_outputs(cfg: DictConfig, ckpt: Checkpoint, task, dm, data_cfg: dict, metrics: dict,
                       out_dir: Path, started: float, seed: int, tok_fp: str, inference: dict | None = None) -> None:
    """metrics.json, the task's outputs, the report, run.json (with `inference`: precision, examples/s);
    prints the summary."""
    meta = {"task_name": ckpt.stored.get("task_name"), "checkpoint": ckpt.path, "seed": seed,
            **({"inference": inference} if inference else {}),
            **run_metadata(lit_llm.project_root()),
            "data": {"fingerprint": dm.data_fingerprint, "tokenizer_fingerprint": tok_fp, **dm.stats}}
    meta.pop("_git_diff")
    write_results(out_dir, task, metrics, meta)
    settings = report_settings(cfg.get("report"))
    if settings["enabled"]:
        config = {**container(cfg), "task_name": ckpt.stored.get("task_name"),
                  "optimized_metric": ckpt.stored.get("optimized_metric"), "data": data_cfg}
        csv_file = Path(ckpt.path).resolve().parent.parent / "metrics.csv"
        write_run_report(task, metrics, meta, settings=settings, config=config, source="evaluate",
                         checkpoint=ckpt.path, out_dir=out_dir, started=started,
                         metrics_csv=csv_file if csv_file.is_file() else None)
    meta.update(status="completed", seconds=round(time.time() - started, 1))
    atomic_write_json(out_dir / "run.json", meta)
    print_summary(out_dir, metrics, meta, None)
    if inference and inference.get("examples_per_s"):
        print(f"inference: {inference['precision']}, {inference['examples']} test examples in "
              f"{inference['seconds']:.2f} s = {inference['examples_per_s']:.1f} examples/s "
              f"({inference['threads']} threads)")


__all__ = ["evaluate", "eval_checkpoint_path", "open_checkpoint", "stored_run_config", "eval_data_config",
           "eval_data", "load_task", "eval_trainer_config", "write_eval_outputs", "Checkpoint",
           "ThroughputCounter", "is_int8"]
