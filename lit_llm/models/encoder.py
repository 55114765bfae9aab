"""A BERT-style bidirectional encoder with a masked-language-model head.

Embeddings (word + learned position + optional token type, `embedding_size` wide) -> LayerNorm ->
dropout (-> a linear projection to `n_embd` when `embedding_size` differs, as in ELECTRA) -> `n_layer`
blocks (post-LN as in BERT, or pre-LN + a final LayerNorm with `norm_first`) whose attention sees every
non-padding token -> hidden states [B, T, n_embd]. `mlm_logits(hidden)` is BERT's prediction head
(dense -> GELU -> LayerNorm -> decoder tied to the word embeddings, plus a bias); its dense layer maps
n_embd to the embedding width, as ELECTRA's generator head does, so the tied decoder fits. The blocks
are `layers.Block`, the same code as the GPT's, run bidirectionally.

Pre-LN (`norm_first: true`) escapes the masked-LM plateau sooner at a high learning rate (as in
"Cramming", Geiping & Goldstein 2022); it has no Hugging Face BERT equivalent, so export refuses it.

Module names follow the GPT's so that Hugging Face BERT checkpoints map through a flat table
(`hf_io.py`):

    wte                    embeddings.word_embeddings
    wpe                    embeddings.position_embeddings     (RoBERTa: from row position_offset = pad id + 1)
    tte                    embeddings.token_type_embeddings   (absent when type_vocab_size=0)
    ln_emb                 embeddings.LayerNorm
    emb_proj               embeddings_project                 (ELECTRA; only when embedding_size != n_embd)
    blocks.{i}.attn.c_attn encoder.layer.{i}.attention.self.{query,key,value}  (concatenated)
    blocks.{i}.attn.c_proj encoder.layer.{i}.attention.output.dense
    blocks.{i}.ln_1        encoder.layer.{i}.attention.output.LayerNorm
    blocks.{i}.mlp.c_fc    encoder.layer.{i}.intermediate.dense
    blocks.{i}.mlp.c_proj  encoder.layer.{i}.output.dense
    blocks.{i}.ln_2        encoder.layer.{i}.output.LayerNorm
    mlm.dense / mlm.ln     cls.predictions.transform.dense / .LayerNorm
    mlm.decoder            cls.predictions.decoder (weight tied to wte) + cls.predictions.bias
                           (ELECTRA's generator: generator_predictions.{dense,LayerNorm}, generator_lm_head)

BERT's pooler (tanh dense on [CLS]) is not part of the backbone: classification heads live in
the task modules.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

from lit_llm.errors import ConfigError
from lit_llm.models.layers import (
    ACTIVATIONS,
    BackboneConfig,
    Block,
    check_attention_window,
    init_weights,
    padding_bias,
    rope_cache,
    run_block,
)

POS_EMBEDDINGS = ("learned", "rope")


@dataclass
class EncoderConfig(BackboneConfig):
    KIND = "an encoder"
    RENAMED_KEYS = {"pad_token_id": "pad_id"}  # old config key -> new; the old one is read until the next release
    vocab_size: int = 8192
    block_size: int = 512  # max positions (BERT's max_position_embeddings)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    # width of the word/position/type embeddings; None = n_embd. Another width adds a linear projection to n_embd
    # after the embedding LayerNorm (ELECTRA's `embedding_size`; ALBERT-style factorised embeddings)
    embedding_size: int | None = None
    intermediate_size: int | None = None  # MLP width; None -> 4 * n_embd
    dropout: float = 0.1  # BERT's hidden and attention-probability dropout
    type_vocab_size: int = 2  # segment (token type) embeddings; 0 = none
    ln_eps: float = 1e-12
    activation: str = "gelu"  # "gelu" (exact, BERT) | "gelu_tanh"
    pad_id: int | None = 0  # its embedding row starts at zero and gets no gradient
    norm_first: bool = False  # False: post-LN (BERT, exports to HF); True: pre-LN + a final LayerNorm
    pos_embedding: str = "learned"  # "learned" (BERT, exports to HF) | "rope" (rotary, as ModernBERT)
    rope_base: float = 10000.0
    # learned positions start at this row of the table (RoBERTa: pad id + 1 = 2, its 514 rows = 512 + 2)
    position_offset: int = 0
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    # sliding-window (local) attention: each token sees the tokens at most attention_window // 2 positions
    # away on either side (Longformer's window), O(T * window) attention memory; null: full attention
    attention_window: int | None = None
    arch: str = "encoder"  # recorded in checkpoints so a loader can refuse the wrong backbone

    def __post_init__(self) -> None:
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd if _positive_int(self.n_embd) else self.n_embd
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "intermediate_size"):
            value = getattr(self, key)
            if not _positive_int(value):
                raise ConfigError(f"model.{key}={value!r} must be a positive integer")
        if self.embedding_size is not None and not _positive_int(self.embedding_size):
            raise ConfigError(f"model.embedding_size={self.embedding_size!r} must be null (= model.n_embd) or a "
                              "positive integer (the embedding width, projected to model.n_embd)")
        if self.n_embd % self.n_head != 0:
            divisor = max(d for d in range(1, self.n_head + 1) if self.n_embd % d == 0)
            raise ConfigError(
                f"model.n_head={self.n_head} must divide model.n_embd={self.n_embd} "
                f"(each head gets n_embd / n_head channels); pick e.g. n_head={divisor}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"model.dropout={self.dropout!r} must be in [0, 1)")
        t = self.type_vocab_size
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ConfigError(f"model.type_vocab_size={t!r} must be an integer >= 0 (0 = no token types)")
        if not float(self.ln_eps) > 0:
            raise ConfigError(f"model.ln_eps={self.ln_eps!r} must be positive")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation={self.activation!r} is not one of {list(ACTIVATIONS)}")
        o = self.position_offset
        if isinstance(o, bool) or not isinstance(o, int) or o < 0 or (o and self.pos_embedding != "learned"):
            raise ConfigError(f"model.position_offset={o!r} must be an integer >= 0 (and 0 unless pos_embedding=learned)")
        p = self.pad_id
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < self.vocab_size):
            raise ConfigError(
                f"model.pad_id={p!r} must be null or an id in [0, model.vocab_size={self.vocab_size})"
            )
        if not isinstance(self.norm_first, bool):
            raise ConfigError(f"model.norm_first={self.norm_first!r} must be true (pre-LN) or false (post-LN, BERT)")
        if self.pos_embedding not in POS_EMBEDDINGS:
            raise ConfigError(f"model.pos_embedding={self.pos_embedding!r} must be 'learned' or 'rope'")
        if self.pos_embedding == "rope" and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"model.pos_embedding='rope' needs an even head size, but model.n_embd / "
                              f"model.n_head = {self.n_embd // self.n_head}")
        if not float(self.rope_base) > 0:
            raise ConfigError(f"model.rope_base={self.rope_base!r} must be positive")
        if not isinstance(self.activation_checkpointing, bool):
            raise ConfigError(f"model.activation_checkpointing={self.activation_checkpointing!r} must be true or false")
        check_attention_window(self.attention_window)
        if self.arch != "encoder":
            raise ConfigError(f"model.arch={self.arch!r} must be 'encoder' for EncoderConfig")


def _positive_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value > 0


class MLMHead(nn.Module):
    """BERT's masked-LM head: dense -> GELU -> LayerNorm -> decoder (vocab logits, with bias).
    The decoder's weight is the word embedding matrix (tied by `Encoder`), so the dense layer maps
    n_embd to the embedding width (ELECTRA's generator head when they differ)."""

    def __init__(self, n_embd: int, vocab_size: int, ln_eps: float, activation: str, embedding_size: int):
        super().__init__()
        self.dense = nn.Linear(n_embd, embedding_size)
        self.act = nn.GELU(approximate="tanh" if activation == "gelu_tanh" else "none")
        self.ln = nn.LayerNorm(embedding_size, eps=ln_eps)
        self.decoder = nn.Linear(embedding_size, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.ln(self.act(self.dense(hidden))))


class Encoder(nn.Module):
    default_pooling = "cls"  # task.pooling=auto: the first token ([CLS]), where BERT-family models summarise

    def __init__(self, config: EncoderConfig | Mapping):
        super().__init__()
        if not isinstance(config, EncoderConfig):
            config = EncoderConfig.from_dict(config)
        self.config = config
        C = config.n_embd
        E = config.embedding_size or C  # the embeddings' width

        self.wte = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_id)
        self.wpe = nn.Embedding(config.block_size + config.position_offset, E) \
            if config.pos_embedding == "learned" else None
        if config.pos_embedding == "rope":  # relative positions inside attention: nothing to learn
            cos, sin = rope_cache(config.block_size, C // config.n_head, config.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.tte = nn.Embedding(config.type_vocab_size, E) if config.type_vocab_size > 0 else None
        self.ln_emb = nn.LayerNorm(E, eps=config.ln_eps)
        self.drop = nn.Dropout(config.dropout)
        self.emb_proj = nn.Linear(E, C) if E != C else None  # ELECTRA's embeddings_project
        self.blocks = nn.ModuleList(
            Block(C, config.n_head, dropout=config.dropout, bias=True, causal=False, norm_first=config.norm_first,
                  ln_eps=config.ln_eps, activation=config.activation,
                  intermediate_size=config.intermediate_size, window=config.attention_window)
            for _ in range(config.n_layer)
        )
        # Pre-LN leaves the residual stream un-normalised: one LayerNorm after the last block.
        self.ln_f = nn.LayerNorm(C, eps=config.ln_eps) if config.norm_first else None
        self.mlm = MLMHead(C, config.vocab_size, config.ln_eps, config.activation, E)

        self.apply(init_weights)  # BERT: N(0, 0.02), biases 0, LN 1/0, padding row 0
        # Tie after the init, or the decoder's Linear init would overwrite the embedding
        # (and its zero padding row).
        self.mlm.decoder.weight = self.wte.weight  # tied, as in BERT

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> hidden states (B, T, n_embd).

        attention_mask (B, T): 1 for tokens, 0 for padding (any side); None attends everywhere.
        Padding positions get hidden states too (attending to the real tokens); ignore them.
        token_type_ids (B, T): segment ids in [0, type_vocab_size); None means all 0."""
        B, T = input_ids.shape
        if T > self.config.block_size:
            raise ValueError(
                f"Cannot encode {T} tokens: the model has block_size={self.config.block_size} "
                f"positions. Truncate the input to {self.config.block_size} tokens."
            )
        x = self.wte(input_ids)
        rope = None
        if self.wpe is not None:
            offset = self.config.position_offset
            x = x + self.wpe(torch.arange(offset, offset + T, device=input_ids.device))
        else:
            rope = (self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype))
        if self.tte is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.tte(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given, but model.type_vocab_size=0 (no token-type embeddings)")
        x = self.drop(self.ln_emb(x))
        if self.emb_proj is not None:
            x = self.emb_proj(x)
        # Build the additive padding bias once for all layers.
        bias = None if attention_mask is None else padding_bias(attention_mask, x.dtype)
        for block in self.blocks:
            x = run_block(block, self.config.activation_checkpointing, x, attention_mask=bias, rope=rope)
        return x if self.ln_f is None else self.ln_f(x)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., n_embd) -> vocabulary logits (..., vocab_size). Pass only the
        masked positions (hidden[labels != -100]) to save the big vocab matmul elsewhere."""
        return self.mlm(hidden)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; the tied decoder weight is counted once. non_embedding subtracts the
        position and token-type embeddings (the word embedding is also the MLM decoder)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
            if self.tte is not None:
                n -= self.tte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token of the transformer body, the decoder's
        formula (`GPT.flops_per_token`) with bidirectional attention over all T positions:
        6 * (block parameters + embedding projection) + 12 * n_layer * n_embd * T. Embedding lookups
        are free and the task heads are left out (the MLM head's vocabulary matmul runs on masked
        positions only: add 6 * vocab_size * embedding_size per masked token for it)."""
        cfg = self.config
        T = cfg.block_size if seq_len is None else seq_len
        body = sum(p.numel() for p in self.blocks.parameters())
        if self.emb_proj is not None:  # a matmul per token, like a block's
            body += sum(p.numel() for p in self.emb_proj.parameters())
        return 6.0 * body + 12.0 * cfg.n_layer * cfg.n_embd * T

    def train_flops(self, input_len: int, target_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) of one sequence of `input_len` tokens."""
        return input_len * self.flops_per_token(input_len)
