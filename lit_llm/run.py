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
    task.run_config = {  # saved in every checkpoint: pipelines/evaluate.py rebuilds the data from it
        "task_name": cfg.get("task_name"), "seed": cfg.seed, "optimized_metric": cfg.get("optimized_metric"),
        "data": OmegaConf.to_container(cfg.data, resolve=False),
        "data_resolved": _container(cfg.data),
        "special_ids": pretrained.special_ids if pretrained is not None else None,
        "trainer": {"precision": str(cfg.trainer.get("precision")), "accelerator": cfg.trainer.get("accelerator")},
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
        write_results(out_dir, task, metrics, meta)
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
        if cfg.get("test", True) and _report_settings(cfg)["enabled"] and not trainer.fast_dev_run:
            tested = (ckpt_cb.best_model_path or None) if ckpt_cb is not None else None
            csv_file = out_dir / "metrics.csv"
            write_run_report(cfg, task, metrics, meta, source="train", checkpoint=tested, out_dir=out_dir,
                             started=started, metrics_csv=csv_file if csv_file.is_file() else None,
                             world_size=trainer.world_size)
        sampler = next((c for c in callbacks if hasattr(c, "last_sample")), None)
        print_summary(out_dir, metrics, meta, getattr(sampler, "last_sample", None))
    return metrics


def write_results(out_dir: Path, task, metrics: dict, meta: dict) -> None:
    """metrics.json, the task's predictions and confusion matrix; the metric definitions into `meta`."""
    atomic_write_json(out_dir / "metrics.json", metrics)
    if hasattr(task, "write_predictions"):  # QA: predictions.json; seq2seq: predictions.jsonl
        task.write_predictions(out_dir)
    if getattr(task, "metric_info", None):
        meta["metric_info"] = task.metric_info  # e.g. the sacreBLEU signature
    if getattr(task, "confusion", None) is not None:
        atomic_write_json(out_dir / "test_confusion_matrix.json",
                          {"labels": task.label_names, "rows_true_cols_predicted": task.confusion})


REPORT_DEFAULTS = {"enabled": True, "resamples": 1000, "confidence": 0.95, "seed": 0, "examples": 3}


def _report_settings(cfg: DictConfig) -> dict:
    settings = {**REPORT_DEFAULTS, **_container(cfg.get("report") or {})}
    if not isinstance(settings["resamples"], int) or settings["resamples"] < 1:
        raise ConfigError(f"report.resamples={settings['resamples']!r} must be a positive integer")
    if not 0.0 < float(settings["confidence"]) < 1.0:
        raise ConfigError(f"report.confidence={settings['confidence']!r} must be in (0, 1), e.g. 0.95")
    return settings


def write_run_report(cfg: DictConfig, task, metrics: dict, meta: dict, *, source: str, checkpoint: str | None,
                     out_dir: Path, started: float, metrics_csv: Path | None, world_size: int = 1) -> dict:
    """report.json + report.md (+ plots) of a tested task (see lit_llm.reporting.report)."""
    from datetime import datetime, timezone

    from lit_llm.reporting.report import build_report, write_report

    notes = []
    records = task.records
    if world_size > 1:  # each process saw a part of the test set: no per-example statistics
        records = {}
        notes.append(f"tested on {world_size} processes: no per-example intervals; run pipelines/evaluate.py "
                     "on the checkpoint for them")
    settings = _report_settings(cfg)
    provenance = {k: meta.get(k) for k in ("command", "cwd", "git", "versions", "device")}
    report = build_report(
        source=source, kind=task.task_kind, task_name=cfg.get("task_name"), metrics=metrics, records=records,
        fingerprints=task.test_fingerprints, config=_container(cfg), provenance=provenance, checkpoint=checkpoint,
        out_dir=out_dir, settings=settings, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        wall_s=time.time() - started, metric_info=getattr(task, "metric_info", None) or meta.get("metric_info"),
        num_labels=getattr(getattr(task, "head", None), "out_features", None),
        label_names=getattr(task, "label_names", None), confusion=getattr(task, "confusion", None),
        metrics_csv=metrics_csv, seq2seq_metric=getattr(task, "metric", None),
        optimized_metric=cfg.get("optimized_metric"), notes=notes)
    write_report(out_dir, report)
    log.info("report: %s", out_dir / "report.md")
    return report


def print_summary(out_dir: Path, metrics: dict, meta: dict, sample: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"lit-llm run: {out_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    console.print(table)
    perf = meta.get("perf") or {}
    if "tokens_per_s" in perf:
        from lit_llm.callbacks import format_perf

        console.print(format_perf(perf), markup=False, highlight=False)
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


# -- evaluation of a checkpoint ----------------------------------------------------------------
TASK_CLASSES = {
    "clm": "lit_llm.tasks.clm.CausalLMTask",
    "mlm": "lit_llm.tasks.mlm.MaskedLMTask",
    "classification": "lit_llm.tasks.classification.ClassificationTask",
    "qa": "lit_llm.tasks.qa.QuestionAnsweringTask",
    "seq2seq": "lit_llm.tasks.seq2seq.Seq2SeqTask",
}
# which data modules (and corpus objectives) each task reads
TASK_DATA = {
    "clm": ("CorpusDataModule", "clm"), "mlm": ("CorpusDataModule", "mlm"),
    "classification": ("ClassificationDataModule", None), "qa": ("QADataModule", None),
    "seq2seq": ("Seq2SeqDataModule", None),
}
DATA_EXAMPLES = {"clm": "data=tinyshakespeare", "mlm": "data=gutenberg +data.objective=mlm",
                 "classification": "data=sst2", "qa": "data=squad", "seq2seq": "data=multi30k_de_en"}


def eval_checkpoint_path(spec: str | None) -> str:
    """`ckpt_path` of pipelines/evaluate.py: a .ckpt file, or a run directory (the checkpoint its
    test used, `best_checkpoint` in run.json, else checkpoints/last.ckpt)."""
    if not spec:
        raise ConfigError("ckpt_path is required: pipelines/evaluate.py ckpt_path=<run dir or .ckpt file>")
    p = Path(spec)
    if p.is_dir():
        run_json = p / "run.json"
        if run_json.is_file():
            import json

            best = json.loads(run_json.read_text()).get("best_checkpoint")
            if best and Path(best).is_file():
                return best
    return resolve_ckpt_path(spec)


def _stored_run_config(ckpt_path: str, meta: dict) -> dict:
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


def _eval_data_config(cfg: DictConfig, stored: dict, backbone_config: dict, seed: int) -> dict:
    """data= (a whole data config) replaces the checkpoint's; +data.<key>=... edits it."""
    given = cfg.get("data")
    if given is not None and "_target_" in given:
        node = OmegaConf.create({"paths": cfg.paths, "seed": seed, "model": backbone_config,
                                 "data": OmegaConf.to_container(given, resolve=False)})
        return _container(node.data)
    edits = _container(given) if given is not None else {}
    try:  # the saved config re-resolved here: ${paths.data_dir} may live elsewhere on this machine
        node = OmegaConf.create({"paths": cfg.paths, "seed": seed, "model": backbone_config, "data": stored["data"]})
        data = _container(node.data)
    except Exception:  # noqa: BLE001 - an interpolation this config cannot resolve: use the run's values
        if not stored.get("data_resolved"):
            raise
        data = dict(stored["data_resolved"])
    unknown = sorted(set(edits) - set(data))
    if unknown:
        raise ConfigError(f"data.{unknown[0]} is not a setting of the checkpoint's data config "
                          f"({data.get('_target_')}); known: {', '.join(sorted(data))}")
    return {**data, **edits}


def check_task_data(kind: str, data_cfg: dict, ckpt_path: str) -> None:
    """A checkpoint only evaluates on data of its task: a QA model cannot score SST-2."""
    target = str(data_cfg.get("_target_", ""))
    wanted, objective = TASK_DATA[kind]
    got = target.rsplit(".", 1)[-1]
    ok = got == wanted and (objective is None or data_cfg.get("objective", "clm") == objective)
    if kind == "seq2seq" and got == "CorpusDataModule" and data_cfg.get("objective") == "denoise":
        ok = True
    if not ok:
        what = got + (f" with data.objective={data_cfg.get('objective', 'clm')}" if got == "CorpusDataModule" else "")
        raise ConfigError(f"ckpt_path={ckpt_path} is a {kind} checkpoint but the data config is {what or target!r}, "
                          f"which {kind} cannot evaluate; choose {kind} data, e.g. {DATA_EXAMPLES[kind]}")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate a checkpoint on its test sets (or `split`); write metrics.json and the report into
    `paths.output_dir`; return the flat metrics. Everything comes from the checkpoint."""
    import importlib

    from tokenizers import Tokenizer

    from lit_llm.checkpointing import read_checkpoint

    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    ckpt_path = eval_checkpoint_path(cfg.get("ckpt_path"))
    ckpt = read_checkpoint(ckpt_path)
    meta_ckpt = ckpt.get("lit_llm")
    if not meta_ckpt or meta_ckpt.get("task") not in TASK_CLASSES or not meta_ckpt.get("tokenizer_json"):
        raise ConfigError(f"ckpt_path={ckpt_path} is not a lit-llm task checkpoint (no 'lit_llm' metadata with a "
                          "task and a tokenizer); give a .ckpt written by pipelines/train.py")
    kind = meta_ckpt["task"]
    stored = _stored_run_config(ckpt_path, meta_ckpt)
    seed = cfg.get("seed") if cfg.get("seed") is not None else (stored.get("seed") or 0)
    pl.seed_everything(seed, workers=True)
    data_cfg = _eval_data_config(cfg, stored, meta_ckpt["backbone_config"], seed)
    check_task_data(kind, data_cfg, ckpt_path)
    out_dir.mkdir(parents=True, exist_ok=True)

    dm = instantiate(data_cfg, cache_dir=cfg.paths.cache_dir, _convert_="all")
    dm.load_raw()
    tokenizer = Tokenizer.from_str(meta_ckpt["tokenizer_json"])
    tok_fp = tokenizer_fingerprint(tokenizer)
    if stored.get("special_ids"):
        dm.set_tokenizer(tokenizer, tok_fp, special_ids=stored["special_ids"])
    else:
        dm.set_tokenizer(tokenizer, tok_fp)
    split = cfg.get("split")
    if split:
        raw = dm.load_raw()
        if kind in ("clm", "mlm"):  # corpora: train, validation (= heldout) and each eval_files corpus by name
            have = ["train", "validation", *dm.test_names[1:]]
        else:
            have = sorted(raw)
        if split not in have:
            raise ConfigError(f"split={split!r} is not a split of this data (splits: {', '.join(have)}); "
                              "use one of them, or split=null for the data's test sets")
        dm.test_names = [split]
    if cfg.get("batch_size"):
        dm.eval_batch_size = int(cfg.batch_size)
    dm.prepare_data()
    dm.setup("test")

    module, _, name = TASK_CLASSES[kind].rpartition(".")
    task_cls = getattr(importlib.import_module(module), name)
    overrides = {}
    if cfg.get("generation"):
        if kind != "seq2seq":
            raise ConfigError(f"generation.* options are for seq2seq checkpoints; ckpt_path={ckpt_path} is {kind}")
        overrides["generation"] = {**ckpt["hyper_parameters"].get("generation", {}), **_container(cfg.generation)}
    task = task_cls.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=False, **overrides)
    if kind == "classification" and list(task.label_names) != list(dm.label_names):
        raise ConfigError(f"ckpt_path={ckpt_path} classifies {task.label_names} but the data's classes are "
                          f"{dm.label_names}; evaluate on data with the same label_names")
    precision = cfg.get("precision") or (stored.get("trainer") or {}).get("precision") or "32-true"
    trainer = pl.Trainer(accelerator=cfg.get("accelerator") or "auto", devices=1, precision=precision,
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         limit_test_batches=cfg.get("limit_batches") or 1.0,
                         enable_progress_bar=bool(cfg.get("progress_bar", True)), deterministic=False)
    results = trainer.test(task, datamodule=dm, verbose=False)
    metrics = {}
    for result in results:
        metrics.update({k: float(v) for k, v in result.items()})
    metrics = dict(sorted(metrics.items()))

    meta = {"task_name": stored.get("task_name"), "checkpoint": ckpt_path, "seed": seed,
            **run_metadata(lit_llm.project_root()),
            "data": {"fingerprint": dm.data_fingerprint, "tokenizer_fingerprint": tok_fp, **dm.stats}}
    meta.pop("_git_diff")
    write_results(out_dir, task, metrics, meta)
    cfg_for_report = OmegaConf.create({**_container(cfg), "task_name": stored.get("task_name"),
                                       "optimized_metric": stored.get("optimized_metric"), "data": data_cfg})
    csv_file = Path(ckpt_path).resolve().parent.parent / "metrics.csv"
    if _report_settings(cfg)["enabled"]:
        write_run_report(cfg_for_report, task, metrics, meta, source="evaluate", checkpoint=ckpt_path,
                         out_dir=out_dir, started=started, metrics_csv=csv_file if csv_file.is_file() else None)
    meta.update(status="completed", seconds=round(time.time() - started, 1))
    atomic_write_json(out_dir / "run.json", meta)
    print_summary(out_dir, metrics, meta, None)
    return metrics
