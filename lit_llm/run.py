"""Orchestration: config -> tokenizer, data, model, task, trainer -> files. Returns metrics.

`train(cfg)` never reads Hydra globals except through `cfg` itself, so tests call it with a
composed config and a temporary `paths.output_dir`.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate as _hydra_instantiate
from omegaconf import DictConfig, OmegaConf

import lit_llm
from lit_llm.checkpointing import (AtomicCheckpointIO, check_compatible, export_safetensors, load_backbone_weights,
                                  load_pretrained, merge_backbone_config, resolve_ckpt_path)
from lit_llm.errors import ConfigError
from lit_llm.metrics.baselines import unigram_perplexity
from lit_llm.reporting.metadata import run_metadata
from lit_llm.tokenization import get_tokenizer, load_tokenizer, tokenizer_fingerprint
from lit_llm.utils_io import atomic_write_json, atomic_write_text

log = logging.getLogger("lit_llm")

# Lightning warnings that are expected here and would only alarm: the run directory already holds
# run.json/tokenizer.json when the CSV logger starts (it deletes nothing but an old metrics.csv).
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")

VOCAB_MULTIPLE = 64  # embedding rows rounded up for faster matmuls (nanoGPT's 50257 -> 50304)


def instantiate(node, *args, **kwargs):
    """`hydra.utils.instantiate`, re-raising our ConfigError (which names the key and the fix)
    instead of Hydra's wrapper around it."""
    try:
        return _hydra_instantiate(node, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def check_context(data_block_size: int, model_block_size: int, key: str = "data.block_size") -> None:
    if data_block_size > model_block_size:
        raise ConfigError(
            f"{key}={data_block_size} is longer than the model's context "
            f"model.block_size={model_block_size}; lower {key} or raise model.block_size")


def data_length(data_cfg) -> tuple[str, int]:
    """The data's longest sequence and its key: block_size (corpora), max_length (classification,
    QA) or the longer of max_source_length / max_target_length (seq2seq)."""
    if data_cfg.get("objective") == "denoise":  # source and target are a block + <eos>
        return "data.block_size (+1 for <eos>, data.objective=denoise)", data_cfg["block_size"] + 1
    for key in ("block_size", "max_length"):
        if data_cfg.get(key):
            return f"data.{key}", data_cfg[key]
    lengths = {k: data_cfg.get(k) or 0 for k in ("max_source_length", "max_target_length")}
    key = max(lengths, key=lengths.get)
    return f"data.{key}", lengths[key]


def resolve_model_config(model_cfg: dict, vocab_size: int, data_block_size: int, source: str | None = None) -> dict:
    """Fills `model.vocab_size: null` from the tokenizer and checks that data fits the model."""
    check_context(data_block_size, model_cfg["block_size"])
    model_cfg = dict(model_cfg)
    if model_cfg.get("vocab_size") is None:
        model_cfg["vocab_size"] = -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    elif model_cfg["vocab_size"] < vocab_size:
        if source:
            raise ConfigError(
                f"model.init_from={source} has {model_cfg['vocab_size']} embeddings but its tokenizer "
                f"{vocab_size} tokens; the checkpoint and its tokenizer do not belong together")
        raise ConfigError(
            f"the tokenizer has {vocab_size} tokens but model.vocab_size={model_cfg['vocab_size']} "
            f"embeddings; set model.vocab_size=null (sized from the tokenizer) or >= {vocab_size}, "
            "or lower tokenizer.vocab_size")
    return model_cfg


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


def _tokens(blocks: np.ndarray) -> np.ndarray:
    """Predicted tokens of a packed split: the labels of every [n, block_size + 1] block."""
    return blocks[:, 1:]


def _flat(callback_metrics: dict) -> dict[str, float]:
    # timings (perf/*) go to run.json, so metrics.json is identical for identical deterministic runs
    # (the learning rate, lr-*, is in metrics.csv)
    return {k: float(v) for k, v in callback_metrics.items()
            if "/" in k and not k.startswith(("perf/", "lr-"))}


def train(cfg: DictConfig) -> dict[str, float]:
    """Pretrain (or resume) a model as `cfg` says; write the run directory; return flat metrics."""
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)

    # Cheap checks first: a wrong size or path must not cost a tokenization pass.
    model_cfg = _container(cfg.model)
    init_from = model_cfg.pop("init_from", None)
    seq_key, seq_len = data_length(cfg.data)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"))
    pretrained = load_pretrained(init_from) if init_from else None
    if pretrained is not None:
        model_cfg, changed = merge_backbone_config(model_cfg, pretrained)
        if changed:
            log.info("model: architecture taken from model.init_from (%s)", ", ".join(changed))
    check_context(seq_len, model_cfg["block_size"], seq_key)

    # Data and tokenizer: the tokenizer is trained on the training split only, or comes with init_from.
    dm = instantiate(cfg.data, cache_dir=cfg.paths.cache_dir, _convert_="all")
    dm.load_raw()
    tok_cfg = _container(cfg.tokenizer)
    if pretrained is not None:
        tokenizer = pretrained.tokenizer
        tok_fp = tokenizer_fingerprint(tokenizer)
        check_init_tokenizer(tok_cfg, tokenizer, init_from)
        log.info("tokenizer: the one saved with model.init_from (%d tokens); tokenizer.* is not used",
                 tokenizer.get_vocab_size())
    else:
        tokenizer, tok_fp = get_tokenizer(texts=dm.train_texts, fingerprint=dm.data_fingerprint,
                                          cache_dir=cfg.paths.cache_dir, **tok_cfg)
    model_cfg = resolve_model_config(model_cfg, tokenizer.get_vocab_size(), seq_len, source=init_from)
    if pretrained is not None and pretrained.special_ids:
        dm.set_tokenizer(tokenizer, tok_fp, special_ids=pretrained.special_ids)
    else:
        dm.set_tokenizer(tokenizer, tok_fp)
    dm.prepare_data()
    dm.setup("fit")

    task_args = {"num_labels": dm.num_labels, "label_names": dm.label_names} if hasattr(dm, "num_labels") else {}
    task = instantiate(cfg.task, model=model_cfg, tokenizer_json=tokenizer.to_str(), _convert_="all", **task_args)
    if pretrained is not None:
        log.info(load_backbone_weights(task.backbone, pretrained))
    if ckpt_path:
        check_compatible(ckpt_path, task.config.to_dict(), tok_fp)
    baselines = {}
    if task.task_kind == "clm":  # what a model that ignores context reaches on the same tokens
        train_tokens, vocab = _tokens(dm.blocks["train"]), tokenizer.get_vocab_size()
        baselines["baseline/unigram_ppl"] = unigram_perplexity(train_tokens, _tokens(dm.blocks["validation"]), vocab)
        for name in dm.test_names[1:]:  # extra evaluation corpora get their own reference point
            baselines[f"baseline/{name}/unigram_ppl"] = unigram_perplexity(
                train_tokens, _tokens(dm.blocks[f"eval_{name}"]), vocab)

    callbacks = [instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values()
                 if c is not None and "_target_" in c]
    loggers = [instantiate(c, _convert_="all") for c in (cfg.get("logger") or {}).values()
               if c is not None and "_target_" in c]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      plugins=[AtomicCheckpointIO()], default_root_dir=str(out_dir),
                                      _convert_="all")

    meta = {
        "status": "running",
        "task_name": cfg.get("task_name"),
        "seed": cfg.seed,
        "output_dir": str(out_dir),
        "ckpt_path": ckpt_path,
        "init_from": init_from,
        **run_metadata(lit_llm.project_root()),
        "data": {"fingerprint": dm.data_fingerprint, "tokenizer_fingerprint": tok_fp,
                 "vocab_size": tokenizer.get_vocab_size(), **dm.stats},
        "model": {**model_cfg, "params": task.backbone.num_params(),
                  "params_non_embedding": task.backbone.num_params(non_embedding=True)},
        "baselines": baselines,
    }
    git_diff = meta.pop("_git_diff")
    if trainer.is_global_zero:
        if git_diff:
            atomic_write_text(out_dir / "git.diff", git_diff)
        atomic_write_text(out_dir / "tokenizer.json", tokenizer.to_str())
        atomic_write_json(out_dir / "run.json", meta)

    try:
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
    except BaseException as e:  # the run directory says how the run ended, whatever happened
        if trainer.is_global_zero:
            meta.update(status="failed", error=f"{type(e).__name__}: {e}"[:2000],
                        seconds=round(time.time() - started, 1), global_step=trainer.global_step)
            atomic_write_json(out_dir / "run.json", meta)
        raise
    metrics = _flat(trainer.callback_metrics)
    if not trainer.fast_dev_run and getattr(task, "last_val_step", None) != trainer.global_step:
        trainer.validate(task, datamodule=dm, verbose=False)  # report the final weights
        metrics.update(_flat(trainer.callback_metrics))
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and not trainer.fast_dev_run and ckpt_cb.dirpath:
        trainer.save_checkpoint(str(Path(ckpt_cb.dirpath) / "last.ckpt"))

    if cfg.get("test", True):
        best = ckpt_cb.best_model_path if ckpt_cb is not None and not trainer.fast_dev_run else ""
        for result in trainer.test(task, datamodule=dm, ckpt_path=best or None, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})
    metrics.update(baselines)
    metrics = dict(sorted(metrics.items()))

    if trainer.is_global_zero:
        atomic_write_json(out_dir / "metrics.json", metrics)
        if hasattr(task, "write_predictions"):  # QA: predictions.json; seq2seq: predictions.jsonl
            task.write_predictions(out_dir)
        if getattr(task, "metric_info", None):
            meta["metric_info"] = task.metric_info  # e.g. the sacreBLEU signature
        if getattr(task, "confusion", None) is not None:
            atomic_write_json(out_dir / "test_confusion_matrix.json",
                              {"labels": task.label_names, "rows_true_cols_predicted": task.confusion})
        # after test() the task holds the best checkpoint's weights; without test, the final ones
        tested_best = bool(cfg.get("test", True) and ckpt_cb is not None and ckpt_cb.best_model_path)
        export_safetensors(task.backbone, out_dir / "model.safetensors")
        meta["exported_weights"] = {"file": "model.safetensors",
                                    "from": ckpt_cb.best_model_path if tested_best else "final weights"}
        speed = next((c for c in callbacks if hasattr(c, "summary")), None)
        meta.update(status="completed", seconds=round(time.time() - started, 1),
                    global_step=trainer.global_step, perf=getattr(speed, "summary", {}),
                    best_checkpoint=(ckpt_cb.best_model_path if ckpt_cb else None))
        atomic_write_json(out_dir / "run.json", meta)
        sampler = next((c for c in callbacks if hasattr(c, "last_sample")), None)
        print_summary(out_dir, metrics, meta, getattr(sampler, "last_sample", None))
    return metrics


def print_summary(out_dir: Path, metrics: dict, meta: dict, sample: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"lit-llm run: {out_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    perf = meta.get("perf") or {}
    if "tokens_per_s" in perf:
        table.add_row("perf/tokens_per_s", f"{perf['tokens_per_s']:.0f}")
    console.print(table)
    if "val/ppl" in metrics and "baseline/unigram_ppl" in metrics:
        ratio = metrics["baseline/unigram_ppl"] / metrics["val/ppl"]
        console.print(f"validation perplexity {metrics['val/ppl']:.2f} vs {metrics['baseline/unigram_ppl']:.2f} "
                      f"for a unigram model of the same tokens ({ratio:.1f}x lower)")
    if sample:
        console.print("[bold]generated sample[/bold] (final weights):")
        console.print(sample, markup=False, highlight=False)


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a Hydra sweeper optimises (`optimized_metric`), or None when unset."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name} is not among the run's metrics: {sorted(metrics)}")
    return metrics[name]
