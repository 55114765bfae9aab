"""Backbones: plain `nn.Module`s that the task modules wrap with heads, losses and metrics."""
from lit_llm.models.encoder import Encoder, EncoderConfig
from lit_llm.models.generation import generate
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

__all__ = [
    "GPT", "GPTConfig", "KVCache", "generate",
    "Encoder", "EncoderConfig",
    "Block", "MLP", "SelfAttention",
    "load_hf", "load_hf_bert", "load_hf_gpt2", "load_hf_tokenizer", "hf_special_ids",
    "export_hf_bert", "export_hf_gpt2",
]
