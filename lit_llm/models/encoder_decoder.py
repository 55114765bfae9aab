"""The encoder-decoder Transformer (Vaswani et al., 2017), built from the shared blocks; with the options
that T5 and BART checkpoints need (`hf_seq2seq.py` imports and exports them).

- Encoder: `layers.Block(causal=False)` (the same attention and MLP as the GPT and the BERT encoder),
  pre-LN + a final norm (`norm_first: true`: ours, T5) or post-LN (`norm_first: false`: BART).
- Decoder: `DecoderBlock` = causal self-attention (`layers.SelfAttention`, KV cache) + cross-attention
  over the encoder's output (`CrossAttention`) + MLP, each with a residual, pre- or post-LN.
- Embeddings: one token embedding for source, target and output (`tie_embeddings=True`, the paper's
  three-way sharing) or separate source / target embeddings; the output layer is the target embedding
  (`tie_output: true`) or its own matrix (T5 v1.1). Scaled by sqrt(n_embd) (`scale_embeddings`, the
  paper's; T5 and BART-base do not) plus positions:
    "sinusoidal"  fixed, the paper's;
    "learned"     a table per position (BART: one for each stack, `tie_positions: false`, read from row
                  `position_offset` = 2), optionally followed by a LayerNorm (`embedding_norm`, BART);
    "relative"    none on the input; T5's bucketed relative-position bias added to the attention scores
                  (`relative_buckets`, `relative_max_distance`; one table per stack, shared by its layers).
- Norms `layernorm` or `rmsnorm` (T5: no mean, no bias), linear biases (`bias`), attention heads of
  `head_dim` channels (T5's d_kv) scaled by 1/sqrt(head_dim) or not at all (`scale_attention: false`, T5),
  MLP `relu` / `gelu` / `gelu_tanh` / `geglu` (T5 v1.1) / `swiglu`.

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
    MLP_ACTIVATIONS,
    NORMS,
    BackboneConfig,
    Block,
    KVCache,
    SelfAttention,
    init_weights,
    norm_layer,
    padding_bias,
    run_block,
)

POS_EMBEDDINGS = ("sinusoidal", "learned", "relative")


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
    head_dim: int | None = None    # channels per head (None: n_embd / n_head; T5's d_kv)
    intermediate_size: int | None = None  # None: 4 * n_embd
    dropout: float = 0.1
    tie_embeddings: bool = True    # one embedding for source, target and output (else source separate)
    tie_output: bool = True        # the output layer is the target embedding (false: its own, T5 v1.1)
    scale_output: bool = False     # decoder output x n_embd^-0.5 before the output layer (T5 v1.0)
    output_bias: bool = False      # a bias on the logits (BART's final_logits_bias)
    pos_embedding: str = "sinusoidal"  # "sinusoidal" | "learned" | "relative" (T5)
    position_offset: int = 0       # learned positions start at this row (BART: 2)
    tie_positions: bool = True     # learned: one table for both stacks (false: one each, BART)
    relative_buckets: int = 32     # relative: T5's bucket count and the distance of the last bucket
    relative_max_distance: int = 128
    scale_embeddings: bool = True  # token embeddings x sqrt(n_embd) (the paper's; T5 and BART-base: false)
    embedding_norm: bool = False   # a LayerNorm after embedding + positions, one per stack (BART)
    norm: str = "layernorm"        # "layernorm" | "rmsnorm" (T5)
    norm_first: bool = True        # pre-LN + final norms (ours, T5) | post-LN (BART)
    bias: bool = True              # biases in linear layers and LayerNorms (T5: none)
    scale_attention: bool = True   # scores / sqrt(head_dim) (T5: no scaling, folded into its init)
    activation: str = "gelu"       # relu | gelu | gelu_tanh | geglu (T5 v1.1) | swiglu
    ln_eps: float = 1e-5
    pad_id: int | None = 0         # its embedding rows start at zero and get no gradient (null: none, T5)
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    arch: str = "encoder_decoder"

    def __post_init__(self) -> None:
        if self.n_decoder_layer is None:
            self.n_decoder_layer = self.n_layer
        for key in ("vocab_size", "block_size", "n_layer", "n_decoder_layer", "n_head", "n_embd",
                    "relative_buckets", "relative_max_distance"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model.{key}={value!r} must be a positive integer")
        if self.head_dim is not None and (isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int)
                                          or self.head_dim <= 0):
            raise ConfigError(f"model.head_dim={self.head_dim!r} must be null (n_embd / n_head) or a positive integer")
        if self.head_dim is None and self.n_embd % self.n_head:
            raise ConfigError(f"model.n_head={self.n_head} must divide model.n_embd={self.n_embd} "
                              "(or set model.head_dim)")
        if self.pos_embedding not in POS_EMBEDDINGS:
            raise ConfigError(f"model.pos_embedding={self.pos_embedding!r} is not one of {list(POS_EMBEDDINGS)}")
        if self.pos_embedding == "sinusoidal" and self.n_embd % 2:
            raise ConfigError(f"model.pos_embedding=sinusoidal needs an even model.n_embd, got {self.n_embd}")
        o = self.position_offset
        if isinstance(o, bool) or not isinstance(o, int) or o < 0 or (o and self.pos_embedding != "learned"):
            raise ConfigError(f"model.position_offset={o!r} must be an integer >= 0 (and 0 unless "
                              "pos_embedding=learned)")
        if self.activation not in MLP_ACTIVATIONS:
            raise ConfigError(f"model.activation={self.activation!r} is not one of {list(MLP_ACTIVATIONS)}")
        if self.norm not in NORMS:
            raise ConfigError(f"model.norm={self.norm!r} is not one of {list(NORMS)}")
        p = self.pad_id
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < self.vocab_size):
            raise ConfigError(f"model.pad_id={p!r} must be null or an id in [0, model.vocab_size={self.vocab_size})")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"model.dropout={self.dropout!r} must be in [0, 1)")
        for key in ("activation_checkpointing", "tie_embeddings", "tie_output", "scale_output", "output_bias",
                    "tie_positions", "scale_embeddings", "embedding_norm", "norm_first", "bias", "scale_attention"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"model.{key}={getattr(self, key)!r} must be true or false")
        if self.arch != "encoder_decoder":
            raise ConfigError(f"model.arch={self.arch!r} must be 'encoder_decoder' for EncoderDecoderConfig")


def relative_position_bucket(relative: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """T5's buckets of (key position - query position): half of them exact for small distances, the
    rest logarithmically wider up to `max_distance`; bidirectional (encoder) splits them by sign, the
    causal decoder only sees keys at or before the query."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        relative = relative.abs()
    else:
        relative = -relative.clamp(max=0)
    exact = num_buckets // 2
    large = exact + (torch.log(relative.float() / exact) / math.log(max_distance / exact)
                     * (num_buckets - exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(relative < exact, relative, large)


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    """The paper's PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...): (n, dim)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * inv), torch.cos(pos * inv)
    return pe


class CrossAttention(nn.Module):
    """Queries from the decoder, keys/values from the encoder output (computed once: `memory_kv`)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 head_dim: int | None = None, scale: float | None = None):
        super().__init__()
        self.n_head, self.dropout, self.scale = n_head, dropout, scale
        self.head_dim = n_embd // n_head if head_dim is None else head_dim
        inner = n_head * self.head_dim
        self.c_q = nn.Linear(n_embd, inner, bias=bias)
        self.c_kv = nn.Linear(n_embd, 2 * inner, bias=bias)
        self.c_proj = nn.Linear(inner, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, _ = memory.shape
        k, v = self.c_kv(memory).chunk(2, dim=2)
        return tuple(t.view(B, S, self.n_head, self.head_dim).transpose(1, 2) for t in (k, v))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], memory_bias: torch.Tensor | None):
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        mask = memory_bias if memory_bias is None or memory_bias.dtype == q.dtype else memory_bias.to(q.dtype)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0, scale=self.scale)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1)))


class DecoderBlock(nn.Module):
    """Pre-LN: x + self_attn(ln_1(x)) [causal, cached]; x + cross_attn(ln_cross(x), memory); x + mlp(ln_2(x)).
    Post-LN (BART): ln_1(x + self_attn(x)); ln_cross(x + cross_attn(x, memory)); ln_2(x + mlp(x))."""

    def __init__(self, cfg: EncoderDecoderConfig):
        super().__init__()
        C, scale = cfg.n_embd, attention_scale(cfg)
        self.norm_first = cfg.norm_first
        self.ln_1 = norm_layer(cfg.norm, C, cfg.ln_eps, cfg.bias)
        self.attn = SelfAttention(C, cfg.n_head, dropout=cfg.dropout, bias=cfg.bias, causal=True,
                                  head_dim=cfg.head_dim, scale=scale)
        self.ln_cross = norm_layer(cfg.norm, C, cfg.ln_eps, cfg.bias)
        self.cross = CrossAttention(C, cfg.n_head, dropout=cfg.dropout, bias=cfg.bias, head_dim=cfg.head_dim,
                                    scale=scale)
        self.ln_2 = norm_layer(cfg.norm, C, cfg.ln_eps, cfg.bias)
        self.mlp = MLP(C, bias=cfg.bias, dropout=cfg.dropout, activation=cfg.activation,
                       intermediate_size=cfg.intermediate_size)

    def forward(self, x, memory_kv, memory_bias, self_bias=None, kv_cache: KVCache | None = None, layer: int = 0):
        if self.norm_first:
            x = x + self.attn(self.ln_1(x), self_bias, kv_cache=kv_cache, layer=layer)
            x = x + self.cross(self.ln_cross(x), memory_kv, memory_bias)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, self_bias, kv_cache=kv_cache, layer=layer))
        x = self.ln_cross(x + self.cross(x, memory_kv, memory_bias))
        return self.ln_2(x + self.mlp(x))


def attention_scale(cfg: EncoderDecoderConfig) -> float | None:
    """SDPA's `scale`: None (1/sqrt(head_dim)) unless the model does not scale its scores (T5: 1)."""
    return None if cfg.scale_attention else 1.0


class Seq2SeqCache:
    """What decoding keeps between steps: the self-attention KV cache, the cross-attention K/V
    of every decoder layer (computed once) and the source padding bias."""

    def __init__(self, self_cache: KVCache, memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
                 memory_bias: torch.Tensor | None):
        self.self_cache, self.memory_kv, self.memory_bias = self_cache, memory_kv, memory_bias

    @property
    def length(self) -> int:
        return self.self_cache.length

    def reorder(self, index: torch.Tensor, memory: bool = True) -> None:
        """Keep rows `index` (beam search: the parents of the surviving beams), in that order. memory=False: the
        rows only move among the beams of one source (beam search's reorder), whose cross-attention keys/values
        and source bias are the same, so those stay as they are (a third of the copying saved per step)."""
        self.self_cache.reorder(index)
        if not memory:
            return
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
        self.wpe = self.wpe_dec = None  # learned positions: encoder's (and the decoder's when tied), decoder's
        if cfg.pos_embedding == "learned":
            self.wpe = nn.Embedding(cfg.block_size + cfg.position_offset, C)
            if not cfg.tie_positions:
                self.wpe_dec = nn.Embedding(cfg.block_size + cfg.position_offset, C)
        elif cfg.pos_embedding == "sinusoidal":
            self.register_buffer("pe", sinusoidal_positions(cfg.block_size, C), persistent=False)
        # relative: T5's bias tables, (bucket -> one bias per head), one per stack
        relative = cfg.pos_embedding == "relative"
        self.rel_enc = nn.Embedding(cfg.relative_buckets, cfg.n_head) if relative else None
        self.rel_dec = nn.Embedding(cfg.relative_buckets, cfg.n_head) if relative else None
        self.ln_emb_enc = nn.LayerNorm(C, eps=cfg.ln_eps) if cfg.embedding_norm else None
        self.ln_emb_dec = nn.LayerNorm(C, eps=cfg.ln_eps) if cfg.embedding_norm else None
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(
            Block(C, cfg.n_head, dropout=cfg.dropout, bias=cfg.bias, causal=False, norm_first=cfg.norm_first,
                  ln_eps=cfg.ln_eps, activation=cfg.activation, intermediate_size=cfg.intermediate_size,
                  norm=cfg.norm, head_dim=cfg.head_dim, scale=attention_scale(cfg))
            for _ in range(cfg.n_layer))
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_decoder_layer))
        # pre-LN leaves the residual streams un-normalised: one norm after each stack
        self.ln_enc = norm_layer(cfg.norm, C, cfg.ln_eps, cfg.bias) if cfg.norm_first else None
        self.ln_dec = norm_layer(cfg.norm, C, cfg.ln_eps, cfg.bias) if cfg.norm_first else None
        self.lm_head = nn.Linear(C, cfg.vocab_size, bias=False)
        if cfg.output_bias:  # a buffer, as BART's final_logits_bias: kept at its checkpoint's value
            self.register_buffer("final_logits_bias", torch.zeros(1, cfg.vocab_size))
        self.apply(init_weights)
        # Embeddings ~ N(0, 1/n_embd), as in the paper's implementations (fairseq, tensor2tensor): scaled
        # by sqrt(n_embd) on input they have unit variance, like the sinusoidal positions they are added to
        # (with GPT-2's 0.02 the positions would drown the tokens), and as the tied output layer they give
        # logits of unit scale from the final LayerNorm.
        for table in (self.wte, self.wte_src):
            if table is not None:
                nn.init.normal_(table.weight, mean=0.0, std=C ** -0.5)
                if cfg.pad_id is not None:
                    with torch.no_grad():
                        table.weight[cfg.pad_id].zero_()
        if cfg.tie_output:
            self.lm_head.weight = self.wte.weight  # the output layer is the target embedding (tied)
        depth = cfg.n_layer + cfg.n_decoder_layer
        for name, p in self.named_parameters():  # residual projections, as GPT-2
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * depth))

    # -- pieces
    def _embed(self, ids: torch.Tensor, decoder: bool, start: int = 0) -> torch.Tensor:
        cfg, T = self.config, ids.size(1)
        if start + T > cfg.block_size:
            raise ValueError(f"Cannot embed {start + T} positions: the model has block_size="
                             f"{cfg.block_size}; truncate the input.")
        table = self.wte if decoder or self.wte_src is None else self.wte_src
        x = table(ids) * math.sqrt(cfg.n_embd) if cfg.scale_embeddings else table(ids)
        if cfg.pos_embedding == "learned":
            wpe = self.wpe_dec if decoder and self.wpe_dec is not None else self.wpe
            x = x + wpe(torch.arange(start, start + T, device=ids.device) + cfg.position_offset)
        elif cfg.pos_embedding == "sinusoidal":
            x = x + self.pe[start : start + T]
        norm = self.ln_emb_dec if decoder else self.ln_emb_enc
        return self.drop(x if norm is None else norm(x))

    def _relative_bias(self, table: nn.Embedding, q_start: int, T: int, S: int, decoder: bool) -> torch.Tensor:
        """T5's position bias (1, n_head, T, S) of queries at [q_start, q_start + T) over keys [0, S); the
        decoder's holds causality too (-inf-like above the diagonal)."""
        cfg, device = self.config, table.weight.device
        q = torch.arange(q_start, q_start + T, device=device)[:, None]
        rel = torch.arange(S, device=device)[None, :] - q
        buckets = relative_position_bucket(rel, not decoder, cfg.relative_buckets, cfg.relative_max_distance)
        bias = table(buckets).permute(2, 0, 1).unsqueeze(0)
        if decoder:
            bias = bias.masked_fill(rel > 0, torch.finfo(bias.dtype).min)
        return bias

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) source ids (+ 1/0 padding mask) -> (B, S, C) memory."""
        x = self._embed(src_ids, decoder=False)
        bias = None if src_mask is None else padding_bias(src_mask, x.dtype)
        if self.rel_enc is not None:
            S = src_ids.size(1)
            rel = self._relative_bias(self.rel_enc, 0, S, S, decoder=False).to(x.dtype)
            bias = rel if bias is None else (rel + bias).clamp(min=torch.finfo(x.dtype).min)
        for block in self.encoder:
            x = run_block(block, self.config.activation_checkpointing, x, attention_mask=bias)
        return x if self.ln_enc is None else self.ln_enc(x)

    def new_cache(self, memory: torch.Tensor, src_mask: torch.Tensor | None, max_len: int | None = None) -> Seq2SeqCache:
        cfg = self.config
        max_len = cfg.block_size if max_len is None else min(max_len, cfg.block_size)
        B = memory.size(0)
        head_dim = self.decoder[0].attn.head_dim
        self_cache = KVCache(cfg.n_decoder_layer, B, cfg.n_head, max_len, head_dim,
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
        T = tgt_ids.size(1)
        x = self._embed(tgt_ids, decoder=True, start=start)
        self_bias = None if self.rel_dec is None else self._relative_bias(self.rel_dec, start, T, start + T, True)
        kv = cache.self_cache if cache is not None else None
        ckpt = self.config.activation_checkpointing
        for i, block in enumerate(self.decoder):
            x = run_block(block, ckpt, x, memory_kv[i], bias, self_bias, kv_cache=kv, layer=i)
        if kv is not None:
            kv.advance(T)
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden states -> vocabulary logits."""
        if self.ln_dec is not None:
            x = self.ln_dec(x)
        if self.config.scale_output:
            x = x * self.config.n_embd ** -0.5
        logits = self.lm_head(x)
        return logits + self.final_logits_bias.to(logits.dtype) if self.config.output_bias else logits

    def forward(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: (B, S) source, (B, T) decoder input -> (B, T, V) logits."""
        return self.decode(tgt_ids, self.encode(src_ids, src_mask), src_mask)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(t.weight.numel() for t in (self.wpe, self.wpe_dec) if t is not None)
        return n

    def train_flops(self, input_len: int, target_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) of one (source of S tokens, target of T tokens) pair,
        counted as `GPT.flops_per_token` does: 6 x parameters x the tokens each matmul sees, plus
        12 x n_embd x (positions attended) per layer: encoder self-attention S x S, decoder
        self-attention T x T and cross-attention T x S. The cross-attention key/value projections run
        on the S memory tokens, the output layer (tied embedding) on the T targets."""
        cfg, C = self.config, self.config.n_embd
        S, T = input_len, (input_len if target_len is None else target_len)
        enc = sum(p.numel() for p in self.encoder.parameters())
        cross_kv = sum(p.numel() for b in self.decoder for p in b.cross.c_kv.parameters())
        dec = sum(p.numel() for p in self.decoder.parameters()) - cross_kv
        head = cfg.vocab_size * C
        matmuls = 6.0 * (enc * S + cross_kv * S + (dec + head) * T)
        inner = cfg.n_head * self.decoder[0].attn.head_dim  # = n_embd unless model.head_dim says otherwise
        attention = 12.0 * inner * (cfg.n_layer * S * S + cfg.n_decoder_layer * (T * T + T * S))
        return matmuls + attention


# the encoder settings a pretrained BERT-style encoder decides; the decoder's depth and the dropout stay the config's
ENCODER_DECIDES = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "intermediate_size", "activation",
                   "ln_eps", "pad_id", "norm_first", "position_offset")


def from_encoder(encoder_config: Mapping, encoder_state: Mapping[str, torch.Tensor],
                 settings: Mapping, source: str = "model.init_encoder_from") -> tuple[dict, dict[str, torch.Tensor]]:
    """A pretrained `Encoder` (BERT, RoBERTa, DistilBERT; our MLM runs) as the encoder of an encoder-decoder:
    (EncoderDecoderConfig dict, the weights it brings). The encoder-decoder takes the encoder's shape and style
    (learned positions, the embedding LayerNorm, post- or pre-LN, its GELU) for both stacks; the encoder's
    blocks, word embedding (shared with the decoder and the output layer), positions and embedding LayerNorm are
    loaded; the decoder, its positions and embedding LayerNorm, and the cross-attention start fresh. `settings`
    (the model config) keeps its n_decoder_layer and dropout. BERT's token-type embedding of segment 0, which
    every token gets, is folded into the positions: the outputs are the encoder's own."""
    enc = dict(encoder_config)
    if enc.get("arch") != "encoder":
        raise ConfigError(f"{source}: a model.arch={enc.get('arch')} checkpoint is not an encoder (BERT-style); "
                          "use model.init_from for a whole encoder-decoder")
    if enc.get("pos_embedding", "learned") != "learned":
        raise ConfigError(f"{source}: an encoder with pos_embedding={enc['pos_embedding']!r} has no "
                          "encoder-decoder equivalent (learned positions only)")
    if enc.get("embedding_size") not in (None, enc["n_embd"]):
        raise ConfigError(f"{source}: an ELECTRA-style encoder (embedding_size={enc['embedding_size']} != "
                          f"n_embd={enc['n_embd']}) has no encoder-decoder equivalent")
    config = {key: enc[key] for key in ENCODER_DECIDES}
    config.update(
        arch="encoder_decoder", n_decoder_layer=settings.get("n_decoder_layer") or enc["n_layer"],
        dropout=settings.get("dropout", enc.get("dropout", 0.1)), pos_embedding="learned", tie_positions=False,
        embedding_norm=True, scale_embeddings=False, tie_embeddings=True, tie_output=True, norm="layernorm",
        bias=True, scale_attention=True, head_dim=None,
        activation_checkpointing=settings.get("activation_checkpointing", False))
    config = EncoderDecoderConfig.from_dict(config).to_dict()
    state = {"wte.weight": encoder_state["wte.weight"], "wpe.weight": encoder_state["wpe.weight"].clone(),
             "ln_emb_enc.weight": encoder_state["ln_emb.weight"], "ln_emb_enc.bias": encoder_state["ln_emb.bias"]}
    if "tte.weight" in encoder_state:
        state["wpe.weight"] += encoder_state["tte.weight"][0]
    for name, value in encoder_state.items():
        if name.startswith("blocks."):
            state["encoder." + name.removeprefix("blocks.")] = value
        elif name.startswith("ln_f."):
            state["ln_enc." + name.removeprefix("ln_f.")] = value
    return config, state


__all__ = ["EncoderDecoderConfig", "EncoderDecoder", "CrossAttention", "DecoderBlock", "Seq2SeqCache",
           "sinusoidal_positions", "relative_position_bucket", "from_encoder"]
