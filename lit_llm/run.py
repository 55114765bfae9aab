"""Training: config -> model config, data + tokenizer, task, trainer -> fit, test -> run directory.

`train(cfg)` is the list of those steps; each is a function below. It never reads Hydra globals
except through `cfg` itself, so tests call it with a composed config and a temporary
`paths.output_dir`. Evaluating a saved checkpoint is `lit_llm.evaluation.evaluate`; what a tested
run writes and prints is `lit_llm.reporting.run_report`.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

import lit_llm
from lit_llm.builders import (
    attach_tokenizer,
    build_datamodule,
    build_trainer,
    callback_of,
    container,
    instantiate,
    resolve_model_config,
    resolve_precision,
)
from lit_llm.callbacks import GenerateSamples, SpeedMonitor
from lit_llm.checkpointing import (
    Pretrained,
    check_compatible,
    export_safetensors,
    load_backbone_weights,
    load_pretrained,
    load_pretrained_encoder,
    merge_backbone_config,
    resolve_ckpt_path,
)
from lit_llm.errors import ConfigError
from lit_llm.faults import (
    FaultSettings,
    NonFiniteGuard,
    RunStopped,
    SignalStop,
    clear_stale_temp_files,
    earlier_attempt,
    is_rank_zero,
    resume_checkpoint,
    run_dir_lock,
)
from lit_llm.peft import peft_base_reference
from lit_llm.reporting.compute import pretraining_flops
from lit_llm.reporting.metadata import run_metadata
from lit_llm.reporting.run_report import flat_metrics, print_summary, report_settings, write_results, write_run_report
from lit_llm.tokenization import get_tokenizer, load_tokenizer, tokenizer_fingerprint
from lit_llm.utils_io import atomic_write_json, atomic_write_text

log = logging.getLogger("lit_llm")


@dataclass
class ModelSettings:
    """The backbone config to build, and where its weights come from."""

    config: dict                        # the `model` config (vocab_size filled in once the tokenizer is known)
    init_from: str | None = None        # model.init_from: pretrained weights (a run, a .ckpt, hf:<dir>)
    pretrained: Pretrained | None = None
    ckpt_path: str | None = None        # resume from this checkpoint


@dataclass
class RunState:
    """What the steps of a run share once it has started."""

    out_dir: Path
    started: float
    meta: dict                          # run.json
    tokenizer_fingerprint: str
    metrics: dict[str, float] = field(default_factory=dict)
    stopper: SignalStop | None = None   # the signals that stop the run (lit_llm.faults)
    guard: NonFiniteGuard | None = None  # the non-finite loss check
    attempt: dict | None = None         # what the run directory's run.json said before this run
    precision: dict | None = None       # trainer.precision as configured and resolved, and why (run.json)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (or resume) a model as `cfg` says; write the run directory; return flat metrics.

    The run holds its directory's lock throughout (a second run there is refused), and a signal or a
    non-finite loss ends it as `lit_llm.faults` describes."""
    started = time.time()
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} must be an integer, e.g. seed=1234")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    faults = FaultSettings.from_config(cfg.get("faults"))
    run = RunState(out_dir, started, {}, "", stopper=SignalStop(faults, out_dir / "checkpoints"),
                   guard=NonFiniteGuard(faults))
    with run_dir_lock(out_dir), run.stopper.installed():
        if is_rank_zero():
            clear_stale_temp_files(out_dir)
            run.attempt = earlier_attempt(out_dir)
            run.meta = {"status": "running", "task_name": cfg.get("task_name"), "seed": cfg.seed,
                        "output_dir": str(out_dir), "started": _clock(started),
                        "command": [sys.executable, *sys.argv]}
            atomic_write_json(out_dir / "run.json", run.meta)  # replaced by start_run's once the run is built
        trainer = None
        try:
            pl.seed_everything(cfg.seed, workers=True)
            run.precision = resolve_precision(cfg.trainer, cfg.paths.cache_dir).to_dict()  # auto -> concrete, first
            settings = model_settings(cfg)                                       # cheap checks first
            check_distill(cfg.task)
            dm, tokenizer, run.tokenizer_fingerprint = data_and_tokenizer(cfg, settings)
            task = build_task(cfg, settings, dm, tokenizer, run.tokenizer_fingerprint)
            trainer = build_trainer(cfg.trainer, out_dir, cfg.get("callbacks"), cfg.get("logger"),
                                    extra_callbacks=[run.stopper, run.guard])
            start_run(cfg, settings, trainer, task, dm, tokenizer, run)
            fit_and_test(cfg, trainer, task, dm, settings.ckpt_path, run)
            if trainer.is_global_zero:
                write_outputs(cfg, trainer, task, run)
        except BaseException as e:  # the run directory says how the run ended, whatever happened
            stopped = run.stopper.interrupted or (e if isinstance(e, RunStopped) else None)
            if is_rank_zero() and run.meta:
                run.meta.update(status=stopped.status if stopped else "failed",
                                error=f"{type(stopped or e).__name__}: {stopped or e}"[:2000],
                                seconds=round(time.time() - run.started, 1), skipped_batches=run.guard.skipped,
                                **({"global_step": trainer.global_step} if trainer is not None else {}))
                atomic_write_json(out_dir / "run.json", run.meta)
            if stopped is not None and stopped is not e:
                raise stopped from None  # Lightning's SIGTERMException (a SystemExit) -> our Interrupted
            raise
    return run.metrics


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# -- 1. model config --------------------------------------------------------------------------------
def model_settings(cfg: DictConfig) -> ModelSettings:
    """The `model` config, merged with `model.init_from`'s architecture (or, with `model.init_encoder_from`, a
    pretrained encoder's inside a fresh encoder-decoder: run.json's init_from then names the encoder); the resume
    checkpoint."""
    model_cfg = container(cfg.model)
    init_from = model_cfg.pop("init_from", None)
    # the fine-tuning recipes (finetune_*) say `init_from: required`: a `???` would not replace the model
    # config's `init_from: null` (OmegaConf merges keep a value over a missing one)
    if init_from in ("required", "???") and not model_cfg.get("init_encoder_from"):
        examples = {"encoder": "hf:google-bert/bert-base-uncased", "encoder_decoder": "hf:google-t5/t5-small"}
        raise ConfigError(
            f"model.init_from is required: {cfg.get('task_name')} fine-tunes a pretrained model; give one, e.g. "
            f"model.init_from={examples.get(model_cfg.get('arch'), 'hf:openai-community/gpt2')} (a Hugging Face model "
            "in the local cache, or hf:<dir>) or model.init_from=<a pretraining run's directory or .ckpt>")
    if init_from in ("required", "???"):  # model.init_encoder_from satisfies a recipe too
        init_from = None
    ckpt_path = resolve_ckpt_path(resume_checkpoint(cfg.get("ckpt_path"), Path(cfg.paths.output_dir)))
    pretrained = load_pretrained(init_from) if init_from else None
    init_encoder_from = model_cfg.pop("init_encoder_from", None)
    if init_encoder_from:  # a pretrained encoder inside a fresh encoder-decoder
        if init_from:
            raise ConfigError(f"model.init_from={init_from} and model.init_encoder_from={init_encoder_from}: give one "
                              "(init_from: a whole model; init_encoder_from: an encoder for a new encoder-decoder)")
        pretrained, init_from = load_pretrained_encoder(init_encoder_from, model_cfg), init_encoder_from
    if pretrained is not None:
        model_cfg, changed = merge_backbone_config(model_cfg, pretrained)
        if changed:
            log.info("model: architecture taken from model.init_from (%s)", ", ".join(changed))
    return ModelSettings(model_cfg, init_from, pretrained, ckpt_path)


# -- 2. data and tokenizer --------------------------------------------------------------------------
def data_and_tokenizer(cfg: DictConfig, settings: ModelSettings):
    """(data module set up for fit, tokenizer, its fingerprint): the tokenizer is trained on the training
    split only (cached), or comes with `model.init_from`; `model.vocab_size` is sized from it."""
    dm = build_datamodule(cfg.data, cfg.paths.cache_dir, settings.config["block_size"])
    dm.load_raw()
    tok_cfg = container(cfg.tokenizer)
    pretrained = settings.pretrained
    if pretrained is not None:
        tokenizer = pretrained.tokenizer
        tok_fp = tokenizer_fingerprint(tokenizer)
        check_init_tokenizer(tok_cfg, tokenizer, settings.init_from)
        log.info("tokenizer: the one saved with model.init_from (%d tokens); tokenizer.* is not used",
                 tokenizer.get_vocab_size())
    else:
        tokenizer, tok_fp = get_tokenizer(texts=dm.train_texts, fingerprint=dm.data_fingerprint,
                                          cache_dir=cfg.paths.cache_dir, **tok_cfg)
    tok_fp, added = attach_tokenizer(dm, tokenizer, tok_fp, pretrained.special_ids if pretrained is not None else None,
                                     pretrained.chat_template if pretrained is not None else None)
    settings.config = resolve_model_config(settings.config, tokenizer.get_vocab_size(), source=settings.init_from,
                                           added_tokens=len(added))
    dm.prepare_data()
    dm.setup("fit")
    return dm, tokenizer, tok_fp


def check_init_tokenizer(tok_cfg: dict, tokenizer, init_from: str) -> None:
    """With init_from, an explicitly configured tokenizer file must be the checkpoint's own:
    data tokenized differently from pretraining would be silently wrong."""
    if tok_cfg.get("kind") != "pretrained" or not tok_cfg.get("path"):
        return
    configured = load_tokenizer(tok_cfg["path"])
    if configured.to_str() != tokenizer.to_str():
        raise ConfigError(
            f"tokenizer.path={tok_cfg['path']} differs from the tokenizer saved with model.init_from={init_from} "
            f"({configured.get_vocab_size()} vs {tokenizer.get_vocab_size()} tokens); drop tokenizer=pretrained "
            "to use the checkpoint's tokenizer")


# -- 3. task ------------------------------------------------------------------------------------------
def check_distill(task_cfg: DictConfig) -> None:
    """`task.distill`, checked before any data is read: valid settings, a task that takes part, a teacher file."""
    from lit_llm.distill import distill_config

    node = task_cfg.get("distill") if "distill" in task_cfg else None
    spec = distill_config(OmegaConf.to_container(node) if isinstance(node, DictConfig) else node)
    if spec is None:
        return
    task_class = get_class(task_cfg._target_)
    if not task_class.supports_distill:
        raise ConfigError(f"task.distill: {task_class.task_kind} does not support distillation (classification and "
                          "clm do); drop task/distill")
    resolve_ckpt_path(spec.teacher, "task.distill.teacher")


def build_task(cfg: DictConfig, settings: ModelSettings, dm, tokenizer, tok_fp: str):
    """The task (LightningModule) of `cfg.task` on the backbone, with the pretrained weights loaded and
    the run settings that go into its checkpoints."""
    task = instantiate(cfg.task, model=settings.config, tokenizer_json=tokenizer.to_str(), _convert_="all",
                       **dm.task_arguments())
    if settings.pretrained is not None:
        log.info(load_backbone_weights(task.backbone, settings.pretrained))
        task.on_pretrained_loaded()
    if task.peft is not None:  # LoRA: checkpoints keep the adapters and name the frozen base instead of copying it
        if settings.pretrained is None or cfg.model.get("init_encoder_from"):
            raise ConfigError("task.peft=lora trains adapters on a pretrained model: give model.init_from=<run dir | "
                              ".ckpt | hf:...> (with model.init_encoder_from the decoder is new and must train fully; "
                              "use task.peft=none)")
        task.peft_base = peft_base_reference(settings.pretrained.source, settings.pretrained.state_dict, task.backbone)
        log.info("task.peft=lora: %s of %s backbone parameters train (%s)", f"{task.peft_summary['trainable']:,}",
                 f"{task.peft_summary['total']:,}", ", ".join(task.peft_summary["targets"][:6]) + " ...")
    if settings.ckpt_path:
        check_compatible(settings.ckpt_path, task.config.to_dict(), tok_fp)
    task.run_config = {  # saved in every checkpoint: pipelines/evaluate.py rebuilds the data from it
        "task_name": cfg.get("task_name"), "seed": cfg.seed, "optimized_metric": cfg.get("optimized_metric"),
        "data": OmegaConf.to_container(cfg.data, resolve=False),
        "data_resolved": container(cfg.data),
        "special_ids": settings.pretrained.special_ids if settings.pretrained is not None else None,
        # the pretrained tokenizer's Jinja chat template, kept for chat and instruction tuning
        "chat_template": (dm.chat_template.source if dm.uses_chat_template else
                          settings.pretrained.chat_template if settings.pretrained is not None else None),
        "trainer": {"precision": str(cfg.trainer.get("precision")), "accelerator": cfg.trainer.get("accelerator")},
    }
    return task


# -- 4. run start: run.json, tokenizer.json, git.diff ---------------------------------------------------
def start_run(cfg: DictConfig, settings: ModelSettings, trainer: pl.Trainer, task, dm, tokenizer,
              run: RunState) -> RunState:
    """Record what the run is (seed, config, provenance, data, model, baselines) before it trains."""
    run.meta = {
        "status": "running",
        "task_name": cfg.get("task_name"),
        "seed": cfg.seed,
        "output_dir": str(run.out_dir),
        "started": _clock(run.started),
        "ckpt_path": settings.ckpt_path,
        "init_from": settings.init_from,
        **run_metadata(lit_llm.project_root()),
        "data": {"fingerprint": dm.data_fingerprint, "tokenizer_fingerprint": run.tokenizer_fingerprint,
                 "vocab_size": tokenizer.get_vocab_size(), **dm.stats},
        "model": {**settings.config, "params": task.backbone.num_params(),
                  "params_non_embedding": task.backbone.num_params(non_embedding=True)},
        "parameters": {"trainable": sum(p.numel() for p in task.parameters() if p.requires_grad),
                       "total": sum(p.numel() for p in task.parameters()),
                       "peft": task.peft.to_dict() if task.peft is not None else None},
        "baselines": task.baselines(dm),
        "precision": run.precision,
    }
    if run.attempt is not None and settings.ckpt_path:  # resumed: the attempts before this one
        run.meta["attempts"] = [*run.attempt["earlier"], run.attempt["this"]]
    git_diff = run.meta.pop("_git_diff")
    if trainer.is_global_zero:
        if git_diff:
            atomic_write_text(run.out_dir / "git.diff", git_diff)
        atomic_write_text(run.out_dir / "tokenizer.json", tokenizer.to_str())
        atomic_write_json(run.out_dir / "run.json", run.meta)
    return run


# -- 5. fit and test --------------------------------------------------------------------------------------
def fit_and_test(cfg: DictConfig, trainer: pl.Trainer, task, dm, ckpt_path: str | None, run: RunState) -> None:
    """Fit, validate the final weights, save last.ckpt, then test
    the best checkpoint; the metrics go into `run.metrics`."""
    trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)  # a failure: train() records it in run.json
    metrics = flat_metrics(trainer.callback_metrics)
    if not trainer.fast_dev_run and task.last_val_step != trainer.global_step:
        trainer.validate(task, datamodule=dm, verbose=False)  # report the final weights
        metrics.update(flat_metrics(trainer.callback_metrics))
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and not trainer.fast_dev_run and ckpt_cb.dirpath:
        trainer.save_checkpoint(str(Path(ckpt_cb.dirpath) / "last.ckpt"))
    if cfg.get("test", True):
        for result in trainer.test(task, datamodule=dm, ckpt_path=best_checkpoint(trainer) or None, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})
    metrics.update(run.meta["baselines"])
    run.metrics = dict(sorted(metrics.items()))


def best_checkpoint(trainer: pl.Trainer) -> str:
    """The best checkpoint of the fit ("" when there is none, e.g. fast_dev_run)."""
    ckpt_cb = trainer.checkpoint_callback
    return ckpt_cb.best_model_path if ckpt_cb is not None and not trainer.fast_dev_run else ""


# -- 6. outputs: metrics.json, predictions, model.safetensors, run.json, report, summary -------------------
def write_outputs(cfg: DictConfig, trainer: pl.Trainer, task, run: RunState) -> None:
    """Everything a finished run leaves (rank 0 only); prints the summary."""
    tested = cfg.get("test", True)
    best = best_checkpoint(trainer)
    write_results(run.out_dir, task, run.metrics, run.meta)
    # after test() the task holds the best checkpoint's weights; without test, the final ones
    export_safetensors(task.backbone, run.out_dir / "model.safetensors")
    run.meta["exported_weights"] = {"file": "model.safetensors", "from": best if tested and best else "final weights"}
    speed = callback_of(trainer, SpeedMonitor)
    compute = speed.compute if speed is not None else None
    if compute is not None:  # what the pretrained start cost (lit-llm runs only)
        compute["pretraining_flops"] = pretraining_flops(run.meta.get("init_from"))
    run.meta.update(status="completed", seconds=round(time.time() - run.started, 1),
                    global_step=trainer.global_step, perf=speed.summary if speed is not None else {},
                    compute=compute, skipped_batches=run.guard.skipped,
                    best_checkpoint=(trainer.checkpoint_callback.best_model_path
                                     if trainer.checkpoint_callback else None))
    atomic_write_json(run.out_dir / "run.json", run.meta)
    settings = report_settings(cfg.get("report"))
    if tested and settings["enabled"] and not trainer.fast_dev_run:
        csv_file = run.out_dir / "metrics.csv"
        write_run_report(task, run.metrics, run.meta, settings=settings, config=container(cfg), source="train",
                         checkpoint=best or None, out_dir=run.out_dir, started=run.started,
                         metrics_csv=csv_file if csv_file.is_file() else None, world_size=trainer.world_size)
    sampler = callback_of(trainer, GenerateSamples)
    print_summary(run.out_dir, run.metrics, run.meta, sampler.last_sample if sampler is not None else None)


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a Hydra sweeper optimises (`optimized_metric`), or None when unset."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name} is not among the run's metrics: {sorted(metrics)}")
    return metrics[name]


__all__ = ["train", "optimized_value", "model_settings", "data_and_tokenizer", "build_task", "start_run",
           "fit_and_test", "write_outputs", "ModelSettings", "RunState"]
