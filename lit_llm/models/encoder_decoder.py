"""The encoder-decoder Transformer (Vaswani et al., 2017), pre-LN, built from the shared blocks.

- Encoder: `layers.Block(causal=False, norm_first=True)` (the same attention and MLP as the GPT
  and the BERT encoder), a final LayerNorm.
- Decoder: `DecoderBlock` = causal self-attention (`layers.SelfAttention`, KV cache) +
  cross-attention over the encoder's output (`CrossAttention`) + MLP, each pre-LN with a residual.
- Embeddings: one token embedding for source, target and output (`tie_embeddings=True`, the
  paper's three-way sharing) or separate source / target embeddings (target and output still tied);
  scaled by sqrt(n_embd) plus fixed sinusoidal positions (`pos_embedding="sinusoidal"`, the
  paper's) or learned positions.

Decoding state (`Seq2SeqCache`): the decoder's self-attention KV cache grows one position per
step; the cross-attention keys/values of the encoder output are computed once per layer and
reused; `reorder(indices)` follows the beams of a beam search.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_llm.errors import ConfigError
from lit_llm.models.layers import (
    MLP,
    BackboneConfig,
    Block,
    KVCache,
    SelfAttention,
    init_weights,
    padding_bias,
    run_block,
)

POS_EMBEDDINGS = ("sinusoidal", "learned")


@dataclass
class EncoderDecoderConfig(BackboneConfig):
    KIND = "an encoder-decoder"
    RENAMED_KEYS = {"pad_token_id": "pad_id"}  # old config key -> new; the old one is read until the next release
    vocab_size: int = 8192
    block_size: int = 256          # maximum source and target length
    n_layer: int = 3               # encoder layers
    n_decoder_layer: int | None = None  # decoder layers (None: n_layer)
    n_head: int = 4
    n_embd: int = 256
    intermediate_size: int | None = None  # None: 4 * n_embd
    dropout: float = 0.1
    tie_embeddings: bool = True    # one embedding for source, target and output (else source separate)
    pos_embedding: str = "sinusoidal"
    activation: str = "gelu"
    ln_eps: float = 1e-5
    pad_id: int = 0                # its embedding rows start at zero
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    arch: str = "encoder_decoder"

    def __post_init__(self) -> None:
        if self.n_decoder_layer is None:
            self.n_decoder_layer = self.n_layer
        for key in ("vocab_size", "block_size", "n_layer", "n_decoder_layer", "n_head", "n_embd"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model.{key}={value!r} must be a positive integer")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_head={self.n_head} must divide model.n_embd={self.n_embd}")
        if self.pos_embedding not in POS_EMBEDDINGS:
            raise ConfigError(f"model.pos_embedding={self.pos_embedding!r} is not one of {list(POS_EMBEDDINGS)}")
        if self.pos_embedding == "sinusoidal" and self.n_embd % 2:
            raise ConfigError(f"model.pos_embedding=sinusoidal needs an even model.n_embd, got {self.n_embd}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"model.dropout={self.dropout!r} must be in [0, 1)")
        if not isinstance(self.activation_checkpointing, bool):
            raise ConfigError(f"model.activation_checkpointing={self.activation_checkpointing!r} must be true or false")
        if self.arch != "encoder_decoder":
            raise ConfigError(f"model.arch={self.arch!r} must be 'encoder_decoder' for EncoderDecoderConfig")


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    """The paper's PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...): (n, dim)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * inv), torch.cos(pos * inv)
    return pe


class CrossAttention(nn.Module):
    """Queries from the decoder, keys/values from the encoder output (computed once: `memory_kv`)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.n_head, self.head_dim, self.dropout = n_head, n_embd // n_head, dropout
        self.c_q = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_kv = nn.Linear(n_embd, 2 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, C = memory.shape
        k, v = self.c_kv(memory).split(C, dim=2)
        return tuple(t.view(B, S, self.n_head, self.head_dim).transpose(1, 2) for t in (k, v))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], memory_bias: torch.Tensor | None):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        mask = memory_bias if memory_bias is None or memory_bias.dtype == q.dtype else memory_bias.to(q.dtype)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class DecoderBlock(nn.Module):
    """x + self_attn(ln_1(x)) [causal, cached]; x + cross_attn(ln_cross(x), memory); x + mlp(ln_2(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, ln_eps: float, activation: str,
                 intermediate_size: int | None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=ln_eps)
        self.attn = SelfAttention(n_embd, n_head, dropout=dropout, causal=True)
        self.ln_cross = nn.LayerNorm(n_embd, eps=ln_eps)
        self.cross = CrossAttention(n_embd, n_head, dropout=dropout)
        self.ln_2 = nn.LayerNorm(n_embd, eps=ln_eps)
        self.mlp = MLP(n_embd, dropout=dropout, activation=activation, intermediate_size=intermediate_size)

    def forward(self, x, memory_kv, memory_bias, kv_cache: KVCache | None = None, layer: int = 0):
        x = x + self.attn(self.ln_1(x), kv_cache=kv_cache, layer=layer)
        x = x + self.cross(self.ln_cross(x), memory_kv, memory_bias)
        return x + self.mlp(self.ln_2(x))


class Seq2SeqCache:
    """What decoding keeps between steps: the self-attention KV cache, the cross-attention K/V
    of every decoder layer (computed once) and the source padding bias."""

    def __init__(self, self_cache: KVCache, memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
                 memory_bias: torch.Tensor | None):
        self.self_cache, self.memory_kv, self.memory_bias = self_cache, memory_kv, memory_bias

    @property
    def length(self) -> int:
        return self.self_cache.length

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (beam search: the parents of the surviving beams), in that order."""
        self.self_cache.reorder(index)
        self.memory_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.memory_kv]
        if self.memory_bias is not None:
            self.memory_bias = self.memory_bias.index_select(0, index)


class EncoderDecoder(nn.Module):
    def __init__(self, config: EncoderDecoderConfig | Mapping):
        super().__init__()
        if not isinstance(config, EncoderDecoderConfig):
            config = EncoderDecoderConfig.from_dict(config)
        self.config = cfg = config
        C = cfg.n_embd
        self.wte = nn.Embedding(cfg.vocab_size, C, padding_idx=cfg.pad_id)  # target (+ source if tied)
        self.wte_src = None if cfg.tie_embeddings else nn.Embedding(cfg.vocab_size, C, padding_idx=cfg.pad_id)
        if cfg.pos_embedding == "learned":
            self.wpe = nn.Embedding(cfg.block_size, C)
        else:
            self.wpe = None
            self.register_buffer("pe", sinusoidal_positions(cfg.block_size, C), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(
            Block(C, cfg.n_head, dropout=cfg.dropout, causal=False, norm_first=True, ln_eps=cfg.ln_eps,
                  activation=cfg.activation, intermediate_size=cfg.intermediate_size)
            for _ in range(cfg.n_layer))
        self.ln_enc = nn.LayerNorm(C, eps=cfg.ln_eps)
        self.decoder = nn.ModuleList(
            DecoderBlock(C, cfg.n_head, cfg.dropout, cfg.ln_eps, cfg.activation, cfg.intermediate_size)
            for _ in range(cfg.n_decoder_layer))
        self.ln_dec = nn.LayerNorm(C, eps=cfg.ln_eps)
        self.lm_head = nn.Linear(C, cfg.vocab_size, bias=False)
        self.apply(init_weights)
        # Embeddings ~ N(0, 1/n_embd), as in the paper's implementations (fairseq, tensor2tensor): scaled
        # by sqrt(n_embd) on input they have unit variance, like the sinusoidal positions they are added to
        # (with GPT-2's 0.02 the positions would drown the tokens), and as the tied output layer they give
        # logits of unit scale from the final LayerNorm.
        for table in (self.wte, self.wte_src):
            if table is not None:
                nn.init.normal_(table.weight, mean=0.0, std=C ** -0.5)
                with torch.no_grad():
                    table.weight[cfg.pad_id].zero_()
        self.lm_head.weight = self.wte.weight  # the output layer is the target embedding (tied)
        depth = cfg.n_layer + cfg.n_decoder_layer
        for name, p in self.named_parameters():  # residual projections, as GPT-2
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * depth))

    # -- pieces
    def _embed(self, ids: torch.Tensor, table: nn.Embedding, start: int = 0) -> torch.Tensor:
        T = ids.size(1)
        if start + T > self.config.block_size:
            raise ValueError(f"Cannot embed {start + T} positions: the model has block_size="
                             f"{self.config.block_size}; truncate the input.")
        pos = torch.arange(start, start + T, device=ids.device)
        pe = self.wpe(pos) if self.wpe is not None else self.pe[start : start + T]
        return self.drop(table(ids) * math.sqrt(self.config.n_embd) + pe)

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) source ids (+ 1/0 padding mask) -> (B, S, C) memory."""
        x = self._embed(src_ids, self.wte_src if self.wte_src is not None else self.wte)
        bias = None if src_mask is None else padding_bias(src_mask, x.dtype)
        for block in self.encoder:
            x = run_block(block, self.config.activation_checkpointing, x, attention_mask=bias)
        return self.ln_enc(x)

    def new_cache(self, memory: torch.Tensor, src_mask: torch.Tensor | None, max_len: int | None = None) -> Seq2SeqCache:
        cfg = self.config
        max_len = cfg.block_size if max_len is None else min(max_len, cfg.block_size)
        B = memory.size(0)
        self_cache = KVCache(cfg.n_decoder_layer, B, cfg.n_head, max_len, cfg.n_embd // cfg.n_head,
                             device=memory.device, dtype=memory.dtype)
        memory_kv = [block.cross.memory_kv(memory) for block in self.decoder]
        bias = None if src_mask is None else padding_bias(src_mask, memory.dtype)
        return Seq2SeqCache(self_cache, memory_kv, bias)

    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor | None = None, src_mask: torch.Tensor | None = None,
               cache: Seq2SeqCache | None = None) -> torch.Tensor:
        """Target ids (B, T) (with a cache: the ones after the cached positions) -> logits (B, T, V)."""
        if cache is None:
            if memory is None:
                raise ValueError("decode needs the encoder memory or a cache")
            memory_kv = [block.cross.memory_kv(memory) for block in self.decoder]
            bias = None if src_mask is None else padding_bias(src_mask, memory.dtype)
            start = 0
        else:
            memory_kv, bias, start = cache.memory_kv, cache.memory_bias, cache.length
        x = self._embed(tgt_ids, self.wte, start)
        kv = cache.self_cache if cache is not None else None
        ckpt = self.config.activation_checkpointing
        for i, block in enumerate(self.decoder):
            x = run_block(block, ckpt, x, memory_kv[i], bias, kv_cache=kv, layer=i)
        if kv is not None:
            kv.advance(tgt_ids.size(1))
        return self.lm_head(self.ln_dec(x))

    def forward(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: (B, S) source, (B, T) decoder input -> (B, T, V) logits."""
        return self.decode(tgt_ids, self.encode(src_ids, src_mask), src_mask)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def train_flops(self, input_len: int, target_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) of one (source of S tokens, target of T tokens) pair,
        counted as `GPT.flops_per_token` does: 6 x parameters x the tokens each matmul sees, plus
        12 x n_embd x (positions attended) per layer: encoder self-attention S x S, decoder
        self-attention T x T and cross-attention T x S. The cross-attention key/value projections run
        on the S memory tokens, the output layer (tied embedding) on the T targets."""
        cfg, C = self.config, self.config.n_embd
        S, T = input_len, (input_len if target_len is None else target_len)
        enc = sum(p.numel() for p in self.encoder.parameters()) + sum(p.numel() for p in self.ln_enc.parameters())
        cross_kv = sum(p.numel() for b in self.decoder for p in b.cross.c_kv.parameters())
        dec = sum(p.numel() for p in self.decoder.parameters()) - cross_kv
        head = cfg.vocab_size * C
        matmuls = 6.0 * (enc * S + cross_kv * S + (dec + head) * T)
        attention = 12.0 * C * (cfg.n_layer * S * S + cfg.n_decoder_layer * (T * T + T * S))
        return matmuls + attention


__all__ = ["EncoderDecoderConfig", "EncoderDecoder", "CrossAttention", "DecoderBlock", "Seq2SeqCache",
           "sinusoidal_positions"]
