"""Backbones: plain `nn.Module`s that the task modules wrap with heads, losses and metrics."""
from lit_llm.models.generation import generate
from lit_llm.models.gpt import GPT, GPTConfig, KVCache

__all__ = ["GPT", "GPTConfig", "KVCache", "generate"]
