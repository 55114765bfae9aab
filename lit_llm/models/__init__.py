"""Backbones: plain `nn.Module`s that the task modules wrap with heads, losses and metrics.

`BACKBONES` maps `model.arch` to its module, class and config class: a new model family is a
module here plus one entry.
"""
import importlib

from torch import nn

from lit_llm.errors import ConfigError
from lit_llm.models.decoding import generate
from lit_llm.models.encoder import Encoder, EncoderConfig
from lit_llm.models.gpt import GPT, GPTConfig, KVCache
from lit_llm.models.hf_io import (
    export_hf_bert,
    export_hf_gpt2,
    hf_special_ids,
    load_hf,
    load_hf_bert,
    load_hf_gpt2,
    load_hf_tokenizer,
)
from lit_llm.models.layers import MLP, Block, SelfAttention

BACKBONES = {  # model.arch -> (module, backbone class, config class)
    "gpt": ("lit_llm.models.gpt", "GPT", "GPTConfig"),                  # causal decoder
    "encoder": ("lit_llm.models.encoder", "Encoder", "EncoderConfig"),  # BERT-style
    "encoder_decoder": ("lit_llm.models.encoder_decoder", "EncoderDecoder", "EncoderDecoderConfig"),  # the Transformer
}


def build_backbone(model_cfg: dict) -> nn.Module:
    """The backbone named by `model.arch` (default "gpt"), built from the `model` config dict."""
    config = backbone_config_class(model_cfg).from_dict(model_cfg)
    module, cls, _ = BACKBONES[config.arch]
    return getattr(importlib.import_module(module), cls)(config)


def backbone_config_class(model_cfg: dict) -> type:
    arch = model_cfg.get("arch", "gpt")
    if arch not in BACKBONES:
        raise ConfigError(f"model.arch={arch!r} is not a backbone; use one of {', '.join(BACKBONES)}")
    module, _, config_cls = BACKBONES[arch]
    return getattr(importlib.import_module(module), config_cls)


def canonical_backbone_config(model_cfg: dict) -> dict:
    """A stored backbone config under today's key names, with today's defaults for fields it lacks
    (checkpoints written before a rename or a new setting compare equal to a fresh config)."""
    return backbone_config_class(model_cfg).from_dict(model_cfg).to_dict()


__all__ = [
    "BACKBONES", "build_backbone", "canonical_backbone_config",
    "GPT", "GPTConfig", "KVCache", "generate",
    "Encoder", "EncoderConfig",
    "Block", "MLP", "SelfAttention",
    "load_hf", "load_hf_bert", "load_hf_gpt2", "load_hf_tokenizer", "hf_special_ids",
    "export_hf_bert", "export_hf_gpt2",
]
