"""Objects of a run built from configuration, shared by training (`lit_llm.run`) and checkpoint
evaluation (`lit_llm.evaluation`): instantiation with our errors, the model config checked against
the tokenizer and the data, a data module with its tokenizer attached, and the Lightning trainer."""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate as _hydra_instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from lit_llm.checkpointing import AtomicCheckpointIO
from lit_llm.errors import ConfigError
from lit_llm.perf import PrecisionChoice, choose_precision

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


def container(node) -> dict:
    """A config node as a plain, resolved dict; a required value (`???`) left unset is a ConfigError naming it."""
    if not isinstance(node, DictConfig):
        return dict(node)
    try:
        return OmegaConf.to_container(node, resolve=True)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as e:
        missing = re.search(r"Missing mandatory value: (\S+)", str(e))
        key = missing.group(1) if missing else getattr(e, "full_key", "?")
        via = f" ({e.full_key} refers to it)" if getattr(e, "full_key", None) not in (None, key) else ""
        raise ConfigError(f"{key} is required{via}: give {key}=<value> on the command line "
                          "(the recipe's comment says what it names)") from None


# -- the model config ----------------------------------------------------------------------------
def check_context(data_length: int, model_block_size: int, key: str = "data.block_size") -> None:
    if data_length > model_block_size:
        raise ConfigError(
            f"{key}={data_length} is longer than the model's context "
            f"model.block_size={model_block_size}; lower {key} or raise model.block_size")


def resolve_model_config(model_cfg: dict, vocab_size: int, source: str | None = None, added_tokens: int = 0) -> dict:
    """Fills `model.vocab_size: null` from the tokenizer (rounded up to a multiple of 64) and checks
    that the embeddings cover the tokenizer. `added_tokens` were added to a pretrained tokenizer (chat markers):
    the embeddings grow to cover them (`checkpointing.load_backbone_weights` fills the new rows)."""
    model_cfg = dict(model_cfg)
    rounded = -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    if model_cfg.get("vocab_size") is None:
        model_cfg["vocab_size"] = rounded
    elif added_tokens and model_cfg["vocab_size"] < vocab_size <= model_cfg["vocab_size"] + added_tokens:
        log.info("model: vocab_size %d -> %d for the %d added tokens", model_cfg["vocab_size"], rounded, added_tokens)
        model_cfg["vocab_size"] = rounded
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


# -- data ----------------------------------------------------------------------------------------
def build_datamodule(data_cfg, cache_dir: str, model_block_size: int | None = None) -> pl.LightningDataModule:
    """The data module of `data_cfg` (nothing read yet); with `model_block_size`, the data's longest
    sequence is checked against it first, so a wrong length costs no tokenization pass."""
    dm = instantiate(data_cfg, cache_dir=cache_dir, _convert_="all")
    if model_block_size is not None:
        key, length = dm.max_sequence_length()
        check_context(length, model_block_size, key)
    return dm


def attach_tokenizer(dm, tokenizer, tokenizer_fingerprint: str, special_ids: Mapping[str, int] | None,
                     chat_template: str | None = None) -> tuple[str, list[str]]:
    """Give the (loaded) data module its tokenizer; `special_ids` name a foreign tokenizer's special tokens.
    Conversation data (`dm.uses_chat_template`) first gets its chat template (`data.chat_template`, else
    `chat_template`: the pretrained tokenizer's own or the one a checkpoint was trained with, else ChatML), and the
    ChatML markers are added to a tokenizer that lacks them. Returns (the tokenizer's fingerprint, tokens added)."""
    added: list[str] = []
    if dm.uses_chat_template:
        from lit_llm.chat_template import add_chat_tokens, run_template
        from lit_llm.tokenization import tokenizer_fingerprint as fingerprint_of

        names = run_template({"special_ids": special_ids}, tokenizer).special_tokens
        template = dm.resolve_chat_template(chat_template, names)
        added = add_chat_tokens(tokenizer, template)
        if added:
            tokenizer_fingerprint = fingerprint_of(tokenizer)
            log.info("tokenizer: added the chat template's tokens %s (ids %d..%d)", added,
                     tokenizer.get_vocab_size() - len(added), tokenizer.get_vocab_size() - 1)
        dm.set_chat_template(template)
    if special_ids:
        dm.set_tokenizer(tokenizer, tokenizer_fingerprint, special_ids=special_ids)
    else:
        dm.set_tokenizer(tokenizer, tokenizer_fingerprint)
    return tokenizer_fingerprint, added


# -- the trainer ---------------------------------------------------------------------------------
def resolve_precision(trainer_cfg, cache_dir: str | Path | None = None) -> PrecisionChoice:
    """`trainer.precision=auto` made concrete once, before anything reads it: `trainer_cfg` gets the chosen value,
    so the trainer, the checkpoints' run settings, SpeedMonitor's peak and evaluation all see bf16-mixed or 32-true
    (`lit_llm.perf.choose_precision` decides; its CPU probe is cached in `cache_dir`). Logs one line; an unknown
    precision is a ConfigError."""
    choice = choose_precision(trainer_cfg.get("precision", "32-true"), trainer_cfg.get("accelerator", "auto"), cache_dir)
    if choice.configured == "auto":
        trainer_cfg["precision"] = choice.precision
        log.info("trainer.precision=auto -> %s: %s", choice.precision, choice.reason)
    return choice


def build_trainer(trainer_cfg, out_dir: Path, callbacks_cfg=None, logger_cfg=None,
                  extra_callbacks: list | None = None) -> pl.Trainer:
    """`trainer_cfg` (a `pytorch_lightning.Trainer` config) with the configured callbacks, `extra_callbacks`
    (those every run has: `lit_llm.faults`) and loggers (none: no logger) and atomic checkpoint writes."""
    def build(group) -> list[Any]:
        return [instantiate(c, _convert_="all") for c in (group or {}).values() if c is not None and "_target_" in c]

    check_trainer_numbers(trainer_cfg)
    resolve_precision(trainer_cfg)  # a no-op once train()/evaluate() resolved it (with their cache)
    loggers = build(logger_cfg)
    return instantiate(trainer_cfg, callbacks=build(callbacks_cfg) + list(extra_callbacks or []), logger=loggers or False,
                       plugins=[AtomicCheckpointIO()], default_root_dir=str(out_dir), _convert_="all")


# trainer settings that take numbers (int: a count of steps/batches; "number": an int count or a float fraction)
TRAINER_NUMBERS = {"max_steps": "int", "max_epochs": "int", "min_steps": "int", "min_epochs": "int",
                   "num_nodes": "int", "accumulate_grad_batches": "int", "log_every_n_steps": "int",
                   "num_sanity_val_steps": "int", "check_val_every_n_epoch": "int",
                   "val_check_interval": "number", "limit_train_batches": "number", "limit_val_batches": "number",
                   "limit_test_batches": "number", "overfit_batches": "number", "gradient_clip_val": "number"}


def check_trainer_numbers(trainer_cfg) -> None:
    """A ConfigError naming a `trainer.*` count or fraction given as something else (trainer.max_steps=abc), which
    Lightning would report as a TypeError deep inside its loops."""
    for key, kind in TRAINER_NUMBERS.items():
        value = trainer_cfg.get(key)
        if value is None:
            continue
        ok = not isinstance(value, bool) and (isinstance(value, int) if kind == "int" else isinstance(value, (int, float)))
        if not ok:
            need = "an integer" if kind == "int" else "a number (an integer count or a fraction)"
            raise ConfigError(f"trainer.{key}={value!r} must be {need} or null")


def callback_of(trainer: pl.Trainer, cls: type):
    """The trainer's first callback of type `cls`, or None."""
    return next((c for c in trainer.callbacks if isinstance(c, cls)), None)


__all__ = ["instantiate", "container", "check_context", "resolve_model_config", "build_datamodule",
           "attach_tokenizer", "resolve_precision", "build_trainer", "callback_of", "VOCAB_MULTIPLE"]
