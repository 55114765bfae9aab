"""Transformer building blocks shared by every backbone: one attention, one MLP, one block.

- `SelfAttention`: fused q/k/v projection (`c_attn`) and output projection (`c_proj`) around
  PyTorch's `scaled_dot_product_attention`. Causal (GPT: rotary positions, KV cache) or
  bidirectional (BERT: a [B, T] padding mask, 1 = keep, 0 = pad).
- `MLP`: c_fc -> GELU (exact or tanh) -> c_proj, any intermediate size.
- `Block`: attention + MLP with residuals, pre-LN (GPT-2) or post-LN (BERT).
- `BackboneConfig`: what every backbone's config dataclass shares (`from_dict`, renamed keys, `to_dict`).
- Sliding-window (local) attention, `model.attention_window`: `window_keep` is the rule (the one place that
  defines it), `local_attention` its blocked kernel, O(T * window) memory instead of O(T^2).

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

from lit_llm.errors import ConfigError, renamed_keys, require_known_keys

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
    Positions at and after `length` hold whatever was there (zeros at first, stale rows after a `reorder`):
    nothing reads them before `update` writes them.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 device=None, dtype=None):
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.batch_size = batch_size
        self.max_len = max_len
        self.length = 0
        self._spare: torch.Tensor | None = None  # `reorder`'s target buffer, the one a layer gave up last

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
        """Keep batch rows `index`, in that order (beam search: the parents of the surviving beams; greedy
        decoding: the rows still running). Only the filled positions are copied (half the buffer on average over
        a generation), into a buffer the previous layer gave up: with the batch size unchanged (beam search) no
        step allocates, and at most one layer's buffer exists beyond the cache, as with index_select."""
        filled = self.length
        for buffers in (self.k, self.v):
            for i, old in enumerate(buffers):
                new = self._spare
                if new is None or new.shape != (len(index), *old.shape[1:]) or new.dtype != old.dtype:
                    new = old.new_empty((len(index), *old.shape[1:]))
                torch.index_select(old[:, :, :filled], 0, index, out=new[:, :, :filled])
                buffers[i], self._spare = new, old
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


def window_keep(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int, causal: bool) -> torch.Tensor:
    """[len(q_pos), len(k_pos)] bool: which keys each query may see under `model.attention_window=window`.

    causal: key j is visible from query i iff i - window < j <= i, i.e. itself and the window - 1 tokens
    before it (Mistral's `sliding_window`). Bidirectional: iff |i - j| <= window // 2, i.e. window // 2 keys
    on each side plus itself (Longformer's window). Positions are absolute (a KV cache's queries start
    at the cache length)."""
    d = q_pos[:, None] - k_pos[None, :]
    return ((d >= 0) & (d < window)) if causal else (d.abs() <= window // 2)


def check_attention_window(window) -> None:
    """`model.attention_window` must be null (full attention) or a positive integer: a ConfigError naming it."""
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
        raise ConfigError(f"model.attention_window={window!r} must be null (full attention) or a positive integer "
                          "(the sliding window's size in tokens, e.g. 256)")


def window_covers(n_keys: int, window: int | None, causal: bool) -> bool:
    """True when the window hides nothing in a sequence of `n_keys` tokens: attention is then the full one."""
    return window is None or (n_keys <= window if causal else n_keys - 1 <= window // 2)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, causal: bool,
                    key_bias: torch.Tensor | None = None, dropout_p: float = 0.0,
                    scale: float | None = None) -> torch.Tensor:
    """SDPA restricted to `window_keep`, computed in blocks so memory grows as O(T * window), not O(T^2).

    q: (B, H, T, D); k, v: (B, Hk, T, D), the same positions as q (Hk divides H: grouped-query attention);
    key_bias: None or an additive per-key bias broadcastable to (B, 1, 1, T) (`padding_bias`). The queries are
    split into chunks of c = window (causal) or window // 2 (bidirectional) positions; the keys a chunk may
    see lie in its own chunk and the one before (and after, bidirectional), so each chunk attends to
    2c (3c) keys through one small band mask. A query whose every key is masked (a pad token that sees only
    pads) gets a uniform softmax over its chunk's keys: its output is garbage, as pad positions' always are."""
    B, H, T, D = q.shape
    Hk = k.size(1)
    c = window if causal else max(window // 2, 1)
    span = 2 if causal else 3  # chunks of keys per chunk of queries
    n = -(-T // c)
    pad = n * c - T
    left, right = c, pad + (0 if causal else c)  # key padding: a chunk before (and after) the sequence

    def neighbours(t: torch.Tensor, value: float = 0.0) -> torch.Tensor:  # (..., T, X) -> (..., n, span * c, X)
        t = F.pad(t, (0, 0, left, right), value=value).unflatten(-2, (n + span - 1, c))
        return torch.cat([t[..., i:i + n, :, :] for i in range(span)], dim=-2)

    minus = torch.finfo(q.dtype).min
    qc = F.pad(q, (0, 0, 0, pad)).view(B, H, n, c, D).transpose(1, 2).reshape(B * n, H, c, D)
    kc, vc = (neighbours(t).transpose(1, 2).reshape(B * n, Hk, span * c, D) for t in (k, v))
    # additive bias (B * n, 1, c, span * c): keys outside the sequence, padded keys, keys outside the band
    kb = torch.zeros(1, T, dtype=q.dtype, device=q.device) if key_bias is None else \
        key_bias.reshape(-1, T).to(q.dtype).clamp(min=minus)
    kb = neighbours(kb[..., None], value=minus)[..., 0]  # (B or 1, n, span * c)
    pos = torch.arange(span * c, device=q.device)  # a chunk's keys start one chunk before its queries
    band = window_keep(pos[c:2 * c], pos, window, causal)  # (c, span * c), the same for every chunk
    bias = kb[:, :, None, :].masked_fill(~band, minus).expand(B, n, c, span * c).reshape(B * n, 1, c, span * c)
    y = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=bias, dropout_p=dropout_p, scale=scale,
                                       enable_gqa=Hk != H)
    return y.view(B, n, H, c, D).transpose(1, 2).reshape(B, H, n * c, D)[:, :, :T]


class SelfAttention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`.

    causal=True: each position sees itself and earlier ones; supports rotary `rope` (cos, sin)
    and a `KVCache`. Right padding needs no mask there (real tokens never see later pads), so a
    padding mask is refused rather than silently half-applied.
    causal=False: every position sees every non-padding position; `attention_mask` is [B, T]
    of 1/0 or an already built additive bias (`padding_bias`), which the encoder builds once
    for all layers.
    window (`model.attention_window`): each query sees only the keys `window_keep` allows. Whole sequences
    with no mask or a per-key padding bias go through `local_attention` (O(T * window) memory); a full
    [.., T, keys] bias (packed documents, T5) and the steps after a KV cache's first chunk take the dense
    path with the band added to the mask. The cache keeps every position (it is not trimmed to the window):
    older keys are masked. When the window covers the whole sequence this is the full attention, same path.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = True, n_kv_head: int | None = None, qkv_bias: bool | None = None,
                 head_dim: int | None = None, scale: float | None = None, window: int | None = None):
        super().__init__()
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
            raise ValueError(f"attention window={window!r} must be a positive integer or None (full attention)")
        self.window = window
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

        start = 0 if kv_cache is None else kv_cache.length
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
        if not window_covers(k.size(2), self.window, self.causal):
            y = self._windowed(q, k, v, attention_mask if self.causal else mask, start)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal,
                dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.n_kv_head != self.n_head,
                scale=self.scale,
            )
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_dim)  # re-assemble the heads
        return self.resid_dropout(self.c_proj(y))

    def _windowed(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                  start: int) -> torch.Tensor:
        """Attention under the window. `mask`: None, a per-key bias (B, 1, 1, keys) or a full additive
        (.., T, keys) bias; queries sit at positions [start, start + T) and keys at [0, keys)."""
        dropout = self.dropout if self.training else 0.0
        per_key = mask is None or mask.size(-2) == 1
        if start == 0 and per_key and k.size(2) == q.size(2):
            return local_attention(q, k, v, self.window, self.causal, key_bias=mask, dropout_p=dropout,
                                   scale=self.scale)
        T, S = q.size(2), k.size(2)
        keep = window_keep(torch.arange(start, start + T, device=q.device), torch.arange(S, device=q.device),
                           self.window, self.causal)
        minus = torch.finfo(q.dtype).min
        band = torch.zeros(T, S, dtype=q.dtype, device=q.device).masked_fill(~keep, minus)
        bias = band if mask is None else (mask.to(q.dtype) + band).clamp(min=minus)  # min + min = -inf: clamp
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=self.scale,
                                              enable_gqa=self.n_kv_head != self.n_head)

    @staticmethod
    def _causal_mask(q: torch.Tensor, kv_cache: KVCache | None):
        # SDPA's is_causal aligns the mask to the top-left corner, which is only right when
        # queries and keys start at the same position. A multi-token chunk appended to a
        # non-empty cache needs the diagonal shifted by the cache length; a single new token may
        # see every cached key, so it needs no mask at all.
        T = q.size(2)
        start = 0 if kv_cache is None else kv_cache.length
        if start == 0:  # (a lone query's causal mask hides nothing: `True`, not `T > 1`, which torch.compile
            return None, True  # would trace as a symbolic bool that SDPA refuses, breaking the graph)
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
                 scale: float | None = None, window: int | None = None):
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = norm_layer(norm, n_embd, ln_eps, bias)
        self.attn = SelfAttention(n_embd, n_head, dropout=dropout, bias=bias, causal=causal, n_kv_head=n_kv_head,
                                  qkv_bias=qkv_bias, head_dim=head_dim, scale=scale, window=window)
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
