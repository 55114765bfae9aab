"""A GPT-2 style decoder-only language model, readable top to bottom, with the Llama options.

Pre-LayerNorm transformer blocks, causal self-attention through PyTorch's fused
`scaled_dot_product_attention`, learned or rotary (RoPE) positions, GPT-2 initialisation and
an optional key/value cache for fast generation. The Llama family (Llama, Mistral, Qwen2, SmolLM)
is the same model with `norm=rmsnorm`, `mlp=swiglu`, `pos_embedding=rope` (+ `rope_scaling`),
grouped-query attention (`n_kv_head`), `bias=false` (Qwen2: `qkv_bias=true`) and untied or tied
output embeddings: `conf/model/llama_tiny.yaml`, `smollm_135m.yaml`, `qwen2_0_5b.yaml`. The attention, MLP and block live in
`layers.py`, shared with the BERT-style `Encoder`. Plain `nn.Module`: no Lightning, no
transformers; the task modules (`lit_llm.tasks.clm`) add the loss and the optimiser.

References: nanoGPT's model.py (structure, init, FLOPs), GPT-2 (pre-LN, GELU-tanh, tied
embeddings), RoFormer / GPT-NeoX (rotary embeddings, "rotate half" convention).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

from lit_llm.errors import ConfigError
from lit_llm.models.layers import (
    NORMS,
    ROPE_SCALINGS,
    BackboneConfig,  # KVCache and apply_rope are re-exported
    Block,
    KVCache,  # noqa: F401
    apply_rope,  # noqa: F401
    check_attention_window,
    init_weights,
    norm_layer,
    rope_cache,
    run_block,
)

POS_EMBEDDINGS = ("learned", "rope")
MLPS = ("gelu", "swiglu")  # GPT-2's tanh-GELU MLP, Llama's gated SiLU


@dataclass
class GPTConfig(BackboneConfig):
    KIND = "a GPT"
    RENAMED_KEYS = {"tie_weights": "tie_embeddings"}  # old config key -> new; the old one is read until the next release
    vocab_size: int = 8192
    block_size: int = 256  # max context length
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm; False is slightly faster and as good
    pos_embedding: str = "learned"  # "learned" | "rope"
    rope_base: float = 10000.0
    tie_embeddings: bool = True  # lm_head shares its weight with the token embedding
    norm: str = "layernorm"  # "layernorm" (GPT-2) | "rmsnorm" (Llama)
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # "gelu" (GPT-2's tanh GELU) | "swiglu" (Llama)
    intermediate_size: int | None = None  # the MLP's width; null: 4 * n_embd
    n_kv_head: int | None = None  # grouped-query attention: key/value heads (null: n_head)
    qkv_bias: bool | None = None  # biases of the q/k/v projection (null: as `bias`; Qwen2: true with bias=false)
    rope_scaling: dict | None = None  # {"type": "linear" | "llama3", "factor": ..., ...} (HF configs' rope_scaling)
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    # sliding-window attention: each token sees itself and the attention_window - 1 before it (Mistral's
    # sliding_window), O(T * window) attention memory; null: full causal attention
    attention_window: int | None = None
    arch: str = "gpt"  # recorded in checkpoints so a loader can refuse the wrong backbone

    def __post_init__(self) -> None:
        # Fail here, with the config key in the message, rather than deep inside a matmul.
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model.{key}={value!r} must be a positive integer")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"model.n_head={self.n_head} must divide model.n_embd={self.n_embd} "
                f"(each head gets n_embd / n_head channels); pick e.g. n_head="
                f"{_largest_divisor_at_most(self.n_embd, self.n_head)}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"model.dropout={self.dropout!r} must be in [0, 1)")
        if self.pos_embedding not in POS_EMBEDDINGS:
            raise ConfigError(
                f"model.pos_embedding={self.pos_embedding!r} is not one of {list(POS_EMBEDDINGS)}"
            )
        if self.pos_embedding == "rope":
            head_dim = self.n_embd // self.n_head
            if head_dim % 2 != 0:
                raise ConfigError(
                    f"model.pos_embedding='rope' needs an even head size, but "
                    f"model.n_embd={self.n_embd} / model.n_head={self.n_head} = {head_dim}"
                )
            if not float(self.rope_base) > 0:
                raise ConfigError(f"model.rope_base={self.rope_base!r} must be positive")
        if not isinstance(self.activation_checkpointing, bool):
            raise ConfigError(f"model.activation_checkpointing={self.activation_checkpointing!r} must be true or false")
        self._check_llama_options()
        check_attention_window(self.attention_window)
        if self.arch != "gpt":
            raise ConfigError(f"model.arch={self.arch!r} must be 'gpt' for GPTConfig")


    def _check_llama_options(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"model.norm={self.norm!r} is not one of {list(NORMS)}")
        if self.mlp not in MLPS:
            raise ConfigError(f"model.mlp={self.mlp!r} is not one of {list(MLPS)}")
        if not float(self.norm_eps) > 0:
            raise ConfigError(f"model.norm_eps={self.norm_eps!r} must be positive")
        for key in ("intermediate_size", "n_kv_head"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"model.{key}={value!r} must be a positive integer or null")
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            raise ConfigError(f"model.n_kv_head={self.n_kv_head} must divide model.n_head={self.n_head} "
                              "(each key/value head serves n_head / n_kv_head query heads)")
        if self.rope_scaling:
            kind = self.rope_scaling.get("type", self.rope_scaling.get("rope_type"))
            if self.pos_embedding != "rope" or kind not in ROPE_SCALINGS:
                raise ConfigError(f"model.rope_scaling={self.rope_scaling!r}: needs model.pos_embedding=rope and a "
                                  f"type of {list(ROPE_SCALINGS)}")


def _largest_divisor_at_most(n: int, k: int) -> int:
    return max(d for d in range(1, k + 1) if n % d == 0)


# ----------------------------------------------------------------------------------------------
# The model.


def document_positions(document_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] positions that restart at 0 where `document_ids` changes along a row."""
    T = document_ids.size(1)
    index = torch.arange(T, device=document_ids.device).expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values  # where each run began
    return index - first


def document_mask(document_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, T, T] attention bias: 0 where key j <= query i lies in i's document, the dtype's minimum
    elsewhere (each query sees at least itself, so no row is all masked)."""
    T = document_ids.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=document_ids.device).tril()
    keep = (document_ids[:, :, None] == document_ids[:, None, :]) & causal
    bias = torch.zeros(keep.shape, dtype=dtype, device=document_ids.device)
    return bias.masked_fill(~keep, torch.finfo(dtype).min)[:, None]


class GPT(nn.Module):
    default_pooling = "last"  # task.pooling=auto: the last real token, the only one that has read the whole text

    def __init__(self, config: GPTConfig | Mapping):
        super().__init__()
        if not isinstance(config, GPTConfig):
            config = GPTConfig.from_dict(config)
        self.config = config

        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_embedding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        else:
            self.wpe = None
            # Non-persistent: derived from the config, so they stay out of checkpoints and
            # state dicts but still follow the model across .to(device).
            cos, sin = rope_cache(config.block_size, config.n_embd // config.n_head, config.rope_base,
                                  config.rope_scaling)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(config.dropout)
        # Pre-LN causal blocks with GPT-2's tanh GELU (or Llama's SwiGLU and RMSNorm), so imported weights
        # behave the same.
        self.blocks = nn.ModuleList(
            Block(config.n_embd, config.n_head, dropout=config.dropout, bias=config.bias,
                  causal=True, norm_first=True, ln_eps=config.norm_eps, norm=config.norm,
                  activation="swiglu" if config.mlp == "swiglu" else "gelu_tanh",
                  intermediate_size=config.intermediate_size, n_kv_head=config.n_kv_head, qkv_bias=config.qkv_bias,
                  window=config.attention_window)
            for _ in range(config.n_layer)
        )
        self.ln_f = norm_layer(config.norm, config.n_embd, config.norm_eps, config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Input and output embeddings share one matrix: fewer parameters and, for small
            # models, better perplexity (Press & Wolf, 2017).
            self.lm_head.weight = self.wte.weight

        self.apply(init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layer)
        # (two per block), so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        """An empty cache for up to `max_len` positions (default: block_size), on the model's
        device and dtype unless told otherwise."""
        cfg = self.config
        max_len = cfg.block_size if max_len is None else max_len
        if not 0 < max_len <= cfg.block_size:
            raise ValueError(f"KV cache max_len={max_len} must be in [1, block_size={cfg.block_size}]")
        ref = self.wte.weight
        return KVCache(cfg.n_layer, batch_size, cfg.n_kv_head or cfg.n_head, max_len, cfg.n_embd // cfg.n_head,
                       device=ref.device if device is None else device,
                       dtype=ref.dtype if dtype is None else dtype)

    def forward(self, input_ids: torch.Tensor, kv_cache: KVCache | None = None, *,
                attention_mask: torch.Tensor | None = None, document_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, vocab_size). With a cache, input_ids are the tokens
        that follow the cached ones: their positions start at the cache length.
        `attention_mask` is accepted and ignored; `document_ids`: see `hidden_states`."""
        return self.lm_head(self.hidden_states(input_ids, attention_mask, kv_cache=kv_cache, document_ids=document_ids))

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      kv_cache: KVCache | None = None, document_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> the final LayerNorm's output (B, T, n_embd), what `lm_head` reads
        (task heads, e.g. classification on the last real token, start here).

        `attention_mask` ([B, T], 1 = token, 0 = padding) is accepted so every backbone takes the
        same batch, and ignored: with right padding, causal attention never lets a real token
        see the pads after it, so real positions are exact without a mask (pad positions hold
        garbage that losses and heads must skip). Left padding is NOT supported.

        `document_ids` ([B, T] ints): several documents packed into one row (supervised fine-tuning). A token
        then attends only to earlier tokens of its own document, and positions restart at 0 with each document,
        so every document is computed exactly as if it were alone (tests/unit/test_sft.py checks it)."""
        B, T = input_ids.shape
        if attention_mask is not None and tuple(attention_mask.shape) != (B, T):
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {(B, T)}")
        start = 0 if kv_cache is None else kv_cache.length
        if start + T > self.config.block_size:
            where = f" after {start} cached tokens" if start else ""
            raise ValueError(
                f"Cannot forward {T} tokens{where}: the model's context is block_size="
                f"{self.config.block_size} positions. Crop the input to the last "
                f"{self.config.block_size - start} tokens."
            )
        if kv_cache is not None:
            if kv_cache.batch_size != B:
                raise ValueError(f"KV cache was made for batch size {kv_cache.batch_size}, got {B}")
            if start + T > kv_cache.max_len:
                raise ValueError(f"KV cache is full: {start} + {T} tokens > max_len={kv_cache.max_len}")

        x = self.wte(input_ids)
        mask = None
        if document_ids is not None:
            if kv_cache is not None or tuple(document_ids.shape) != (B, T):
                raise ValueError(f"document_ids must be (batch, seq_len)={(B, T)} and used without a KV cache")
            pos, mask = document_positions(document_ids), document_mask(document_ids, x.dtype)
        else:
            pos = torch.arange(start, start + T, device=input_ids.device)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(pos)
        elif document_ids is not None:  # (B, T, hd) -> (B, 1, T, hd): broadcast over heads
            rope = (self.rope_cos[pos].to(x.dtype)[:, None], self.rope_sin[pos].to(x.dtype)[:, None])
        else:
            rope = (self.rope_cos[start:start + T].to(x.dtype), self.rope_sin[start:start + T].to(x.dtype))
        x = self.drop(x)
        ckpt = self.config.activation_checkpointing
        for i, block in enumerate(self.blocks):
            x = run_block(block, ckpt, x, attention_mask=mask, rope=rope, kv_cache=kv_cache, layer=i)
        if kv_cache is not None:
            kv_cache.advance(T)  # every layer wrote positions [start, start+T)
        return self.ln_f(x)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; tied weights are counted once (parameters() de-duplicates them).
        non_embedding subtracts the position embedding, as nanoGPT does: the token embedding
        stays in because (when tied) it is also the output layer's weight."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token, as in PaLM appendix B / nanoGPT:
        6 * N for the weight matmuls (2 forward, 4 backward, N = non-embedding parameters)
        plus 12 * n_layer * n_embd * T for attention scores and the weighted sum over T keys
        (2 matmuls of n_embd * T each per token, x2 multiply-add, x3 forward + backward).
        Multiply by tokens per second and divide by the peak FLOP/s to get MFU."""
        cfg = self.config
        T = cfg.block_size if seq_len is None else seq_len
        matmul_params = self.num_params(non_embedding=True)
        if not cfg.tie_embeddings:  # the untied input embedding is a lookup, not a matmul
            matmul_params -= self.wte.weight.numel()
        return 6.0 * matmul_params + 12.0 * cfg.n_layer * cfg.n_embd * T

    def train_flops(self, input_len: int, target_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) of one sequence of `input_len` tokens."""
        return input_len * self.flops_per_token(input_len)
