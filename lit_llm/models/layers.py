"""Transformer building blocks shared by every backbone: one attention, one MLP, one block.

- `SelfAttention`: fused q/k/v projection (`c_attn`) and output projection (`c_proj`) around
  PyTorch's `scaled_dot_product_attention`. Causal (GPT: rotary positions, KV cache) or
  bidirectional (BERT: a [B, T] padding mask, 1 = keep, 0 = pad).
- `MLP`: c_fc -> GELU (exact or tanh) -> c_proj, any intermediate size.
- `Block`: attention + MLP with residuals, pre-LN (GPT-2) or post-LN (BERT).
- `BackboneConfig`: what every backbone's config dataclass shares (`from_dict`, renamed keys, `to_dict`).

Module names are the GPT-2 ones (`ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`,
`mlp.c_proj`) whatever the architecture, so checkpoints and the Hugging Face name tables in
`hf_io.py` stay simple.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_llm.errors import renamed_keys, require_known_keys

ACTIVATIONS = ("gelu", "gelu_tanh")          # of encoders' MLP
GATED_ACTIVATIONS = ("swiglu", "geglu")      # silu(gate) * up (Llama), gelu_tanh(gate) * up (T5 v1.1 "gated-gelu")
MLP_ACTIVATIONS = ACTIVATIONS + ("relu",) + GATED_ACTIVATIONS  # relu: the original Transformer's and T5 v1.0's
NORMS = ("layernorm", "rmsnorm")


class BackboneConfig:
    """What every backbone config dataclass shares: `from_dict` (unknown keys are errors, not silently
    dropped: a typo like `n_heads` would otherwise train the default model without a word; keys in
    `RENAMED_KEYS`, e.g. in older checkpoints, are read under their new name with a deprecation warning)
    and `to_dict`."""

    KIND = "a backbone"            # in messages: "model.x is not <KIND> option"
    RENAMED_KEYS: dict[str, str] = {}  # old config key -> new; the old one is read until the next release

    @classmethod
    def from_dict(cls, d: Mapping):
        d = renamed_keys(d, cls.RENAMED_KEYS, "model")
        require_known_keys(d, [f.name for f in fields(cls)], "model", cls.KIND)
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of every layer, preallocated for `max_len` positions.

    Decoding writes one position per step by index assignment into the buffers, so a step
    costs O(1) copies instead of re-concatenating a growing tensor. `length` is the number of
    positions already filled; the model advances it once all layers have written a chunk.
    Keys are stored after the rotary rotation, so cached positions are never rotated again.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 device=None, dtype=None):
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.batch_size = batch_size
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this chunk's keys/values at [length, length+T) and return all filled positions."""
        start, end = self.length, self.length + k.size(2)
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index`, in that order (beam search: the parents of the surviving beams)."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]
        self.batch_size = len(index)


# ----------------------------------------------------------------------------------------------
# Rotary position embeddings: rotate each (x_i, x_{i+d/2}) pair of a query/key by an angle that
# grows with its position, so q·k depends only on the relative distance between tokens.


def rope_cache(block_size: int, head_dim: int, base: float,
               scaling: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (block_size, head_dim) of every position; `scaling` ({"type": "linear" | "llama3", "factor": ...},
    as Hugging Face configs' `rope_scaling`) stretches the frequencies for contexts longer than pretraining's."""
    inv_freq = rope_scaled(1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)), scaling)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (T, hd/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, hd): "rotate half" layout (GPT-NeoX/Llama)
    return angles.cos(), angles.sin()


ROPE_SCALINGS = ("linear", "llama3")


def rope_scaled(inv_freq: torch.Tensor, scaling: dict | None) -> torch.Tensor:
    """Rotary frequencies under `scaling`: "linear" divides them all by `factor` (position interpolation);
    "llama3" divides the low frequencies by `factor`, keeps the high ones and blends in between
    (`low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`), as Llama 3.1 does."""
    if not scaling:
        return inv_freq
    kind, factor = scaling.get("type", scaling.get("rope_type")), float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    if kind != "llama3":
        raise ValueError(f"rope scaling {kind!r} is not one of {list(ROPE_SCALINGS)}")
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_context = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_context / high) & ~(wavelen > old_context / low)
    return torch.where(medium, blended, scaled)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, nh, T, hd); cos/sin: (T, hd) for the positions of x."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


# ----------------------------------------------------------------------------------------------
# Attention.


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, T] mask of 1 (keep) / 0 (pad) -> additive [B, 1, 1, T] bias for SDPA: 0 where kept,
    the dtype's most negative number where padded, broadcast over heads and query positions.

    Additive rather than boolean: a query row whose keys are all padding (an all-pad sequence)
    then gets a uniform softmax instead of NaNs, and the result equals Hugging Face BERT's."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq_len), got {tuple(attention_mask.shape)}")
    keep = attention_mask.to(torch.bool)[:, None, None, :]
    bias = torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill(~keep, torch.finfo(dtype).min)


class SelfAttention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`.

    causal=True: each position sees itself and earlier ones; supports rotary `rope` (cos, sin)
    and a `KVCache`. Right padding needs no mask there (real tokens never see later pads), so a
    padding mask is refused rather than silently half-applied.
    causal=False: every position sees every non-padding position; `attention_mask` is [B, T]
    of 1/0 or an already built additive bias (`padding_bias`), which the encoder builds once
    for all layers.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = True, n_kv_head: int | None = None, qkv_bias: bool | None = None,
                 head_dim: int | None = None, scale: float | None = None):
        super().__init__()
        if head_dim is None and n_embd % n_head != 0:
            raise ValueError(f"n_head={n_head} must divide n_embd={n_embd}")
        self.n_head = n_head
        # grouped-query attention: n_kv_head key/value heads, each shared by n_head / n_kv_head query heads
        self.n_kv_head = n_head if n_kv_head is None else n_kv_head
        if n_head % self.n_kv_head != 0:
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={n_head}")
        # heads of head_dim channels (T5: d_kv, and n_head * head_dim may differ from n_embd)
        self.head_dim = n_embd // n_head if head_dim is None else head_dim
        self.scale = scale  # of q.k: None = 1/sqrt(head_dim); T5 uses 1 (folded into its init)
        self.dropout = dropout
        self.causal = causal
        inner, kv = n_head * self.head_dim, self.n_kv_head * self.head_dim
        self.qkv_sizes = (inner, kv, kv)
        # q, k, v at once (Qwen2: biases on q/k/v only, qkv_bias=True with bias=False)
        self.c_attn = nn.Linear(n_embd, inner + 2 * kv, bias=bias if qkv_bias is None else qkv_bias)
        self.c_proj = nn.Linear(inner, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, rope=None,
                kv_cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.qkv_sizes, dim=2)
        # (B, T, C) -> (B, nh, T, hd): heads become a batch dimension for the attention kernel.
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2) for t in (k, v))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)

        if self.causal:
            if attention_mask is not None and attention_mask.dim() != 4:
                raise ValueError("causal attention takes no padding mask (right padding needs none)")
            if attention_mask is not None:  # an additive (.., T, keys) bias that already holds causality (T5)
                mask, is_causal = attention_mask.to(q.dtype), False
            else:
                mask, is_causal = self._causal_mask(q, kv_cache)
            if kv_cache is not None:
                k, v = kv_cache.update(layer, k, v)
                k, v = k.to(q.dtype), v.to(q.dtype)  # no-op unless the cache dtype differs (autocast)
        else:
            if kv_cache is not None:
                raise ValueError("a KV cache only makes sense for causal attention")
            is_causal = False
            mask = attention_mask
            if mask is not None and mask.dim() == 2:
                mask = padding_bias(mask, q.dtype)
            elif mask is not None and mask.dtype != q.dtype:
                # e.g. a float32 bias under fp16 autocast: clamp so "minus a lot" stays finite.
                mask = mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.n_kv_head != self.n_head,
            scale=self.scale,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_dim)  # re-assemble the heads
        return self.resid_dropout(self.c_proj(y))

    @staticmethod
    def _causal_mask(q: torch.Tensor, kv_cache: KVCache | None):
        # SDPA's is_causal aligns the mask to the top-left corner, which is only right when
        # queries and keys start at the same position. A multi-token chunk appended to a
        # non-empty cache needs the diagonal shifted by the cache length; a single new token may
        # see every cached key, so it needs no mask at all.
        T = q.size(2)
        start = 0 if kv_cache is None else kv_cache.length
        if start == 0:
            return None, T > 1
        if T > 1:
            return torch.ones(T, start + T, dtype=torch.bool, device=q.device).tril(diagonal=start), False
        return None, False


class MLP(nn.Module):
    """Position-wise feed-forward: c_fc (n_embd -> intermediate) -> GELU -> c_proj -> dropout.

    activation "gelu_tanh" is GPT-2's approximation, "gelu" the exact erf form BERT uses: an
    imported checkpoint only reproduces its outputs with the GELU it was trained with; "relu" is the
    original Transformer's (and T5 v1.0's). Gated: c_fc computes gate and up projections at once
    (2 x intermediate), then "swiglu" (Llama) silu(gate) * up, "geglu" (T5 v1.1) gelu_tanh(gate) * up."""

    def __init__(self, n_embd: int, bias: bool = True, dropout: float = 0.0,
                 activation: str = "gelu_tanh", intermediate_size: int | None = None):
        super().__init__()
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {list(MLP_ACTIVATIONS)}")
        hidden = 4 * n_embd if intermediate_size is None else intermediate_size
        self.gated = activation in GATED_ACTIVATIONS
        self.c_fc = nn.Linear(n_embd, 2 * hidden if self.gated else hidden, bias=bias)
        self.act = {"swiglu": nn.SiLU(), "relu": nn.ReLU(), "gelu": nn.GELU()}.get(activation, nn.GELU("tanh"))
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            return self.dropout(self.c_proj(self.act(gate) * up))
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


def norm_layer(kind: str, n_embd: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """"layernorm" (GPT-2, BERT) or "rmsnorm" (Llama: no mean subtraction, no bias)."""
    if kind == "rmsnorm":
        return nn.RMSNorm(n_embd, eps=eps)
    if kind != "layernorm":
        raise ValueError(f"norm={kind!r} is not one of {list(NORMS)}")
    return nn.LayerNorm(n_embd, eps=eps, bias=bias)


class Block(nn.Module):
    """Attention + MLP, each with a residual connection.

    norm_first=True (pre-LN, GPT-2): x + attn(ln_1(x)), then x + mlp(ln_2(x)); the residual
    stream stays un-normalised, which trains stably without warmup tricks.
    norm_first=False (post-LN, original transformer / BERT): ln_1(x + attn(x)), then
    ln_2(x + mlp(x)).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = True, norm_first: bool = True, ln_eps: float = 1e-5,
                 activation: str = "gelu_tanh", intermediate_size: int | None = None, norm: str = "layernorm",
                 n_kv_head: int | None = None, qkv_bias: bool | None = None, head_dim: int | None = None,
                 scale: float | None = None):
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = norm_layer(norm, n_embd, ln_eps, bias)
        self.attn = SelfAttention(n_embd, n_head, dropout=dropout, bias=bias, causal=causal, n_kv_head=n_kv_head,
                                  qkv_bias=qkv_bias, head_dim=head_dim, scale=scale)
        self.ln_2 = norm_layer(norm, n_embd, ln_eps, bias)
        self.mlp = MLP(n_embd, bias=bias, dropout=dropout, activation=activation,
                       intermediate_size=intermediate_size)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, rope=None,
                kv_cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attn(self.ln_1(x), attention_mask, rope, kv_cache, layer)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, attention_mask, rope, kv_cache, layer))
        return self.ln_2(x + self.mlp(x))


def run_block(block: nn.Module, checkpointing: bool, *args, **kwargs) -> torch.Tensor:
    """`block(*args, **kwargs)`, or with activation checkpointing (`model.activation_checkpointing`):
    the block's inner activations are not kept for backward but recomputed there, trading ~1/3 more
    compute for memory that no longer grows with n_layer x seq_len x width (only each block's input
    is kept). Only while training with gradients; never with a KV cache (generation)."""
    if checkpointing and block.training and torch.is_grad_enabled() and kwargs.get("kv_cache") is None:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2/BERT initialisation, for `model.apply`: weights ~ N(0, std), biases 0, LayerNorm 1/0,
    an embedding's padding row 0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.RMSNorm):
        nn.init.ones_(module.weight)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:  # bias=False models
            nn.init.zeros_(module.bias)
