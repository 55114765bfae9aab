"""Hugging Face T5 and BART checkpoints on disk <-> our `EncoderDecoder`.

    model, tokenizer = load_hf_t5("/models/t5-small")     # T5ForConditionalGeneration (v1.0 and v1.1 / flan)
    model, tokenizer = load_hf_bart("/models/bart-base")  # BartForConditionalGeneration / BartModel
    export_hf_t5(model, "/tmp/out", tokenizer)            # T5ForConditionalGeneration.from_pretrained works

Both are our encoder-decoder with the options their configs imply (`encoder_decoder.py`):

    T5    relative-position bias (buckets), RMSNorm without bias, pre-LN + final norms, no linear biases,
          unscaled attention, unscaled embeddings, MLP relu (v1.0) or gated-GELU (v1.1), output layer tied and
          fed n_embd^-0.5 x the decoder output (v1.0) or its own matrix (v1.1); the decoder starts with <pad>.
    BART  learned positions from row 2, one table per stack, LayerNorm after the embeddings, post-LN, GELU,
          tied output layer plus `final_logits_bias`; the decoder starts with </s>.

Names are mapped through flat tables like `hf_io`'s: q/k/v are concatenated into `attn.c_attn`, the
cross-attention's k/v into `cross.c_kv`, T5's gated MLP's wi_0/wi_1 into `mlp.c_fc`. Anything these
families have that our model cannot represent is a ConfigError naming the file and the key.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from tokenizers import Tokenizer

from lit_llm.errors import ConfigError
from lit_llm.models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig
from lit_llm.models.hf_io import (
    _check_model_type,
    _config_errors,
    _load_mapped,
    _require,
    _write_checkpoint,
    hf_special_ids,
    load_hf_tokenizer,
    read_hf_config,
    read_hf_state_dict,
)

# T5's feed_forward_proj -> our MLP activation ("gated-gelu" uses the tanh GELU, transformers' "gelu_new")
_T5_MLPS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gated-gelu": "geglu",
            "gated-gelu_new": "geglu", "gated-silu": "swiglu"}
_OUR_T5_MLPS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "geglu": "gated-gelu",
                "swiglu": "gated-silu"}
_BART_ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
                     "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_OUR_BART_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


# ----------------------------------------------------------------------------------------------
# T5

def t5_config_from_hf(hf: Mapping, path="<config>", untied_output: bool | None = None) -> EncoderDecoderConfig:
    """EncoderDecoderConfig for a T5Config dict. `untied_output`: the weights hold their own lm_head (T5 v1.1);
    None reads config.json's tie_word_embeddings."""
    with _config_errors(path):
        proj = hf.get("feed_forward_proj", "relu")
        _require(path, [("feed_forward_proj", proj, tuple(_T5_MLPS))])
        tied = hf.get("tie_word_embeddings", True) is not False  # T5 v1.0: true, v1.1: false
        if untied_output is None:
            untied_output = not tied
        # transformers 5 writes whether the decoder output is scaled (and ties the output layer whenever the weights
        # hold no lm_head); transformers 4 scaled exactly when tie_word_embeddings
        scale = hf.get("scale_decoder_outputs", tied and not untied_output)
        return EncoderDecoderConfig(
            vocab_size=hf["vocab_size"], block_size=hf.get("n_positions") or 512, n_layer=hf["num_layers"],
            n_decoder_layer=hf.get("num_decoder_layers") or hf["num_layers"], n_head=hf["num_heads"],
            n_embd=hf["d_model"], head_dim=hf["d_kv"], intermediate_size=hf["d_ff"],
            dropout=hf.get("dropout_rate", 0.1), tie_embeddings=True, tie_output=not untied_output,
            scale_output=bool(scale), pos_embedding="relative",
            relative_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_max_distance=hf.get("relative_attention_max_distance", 128), scale_embeddings=False,
            norm="rmsnorm", norm_first=True, bias=False, scale_attention=False, activation=_T5_MLPS[proj],
            ln_eps=hf.get("layer_norm_epsilon", 1e-6), pad_id=None)


def t5_name_table(cfg: EncoderDecoderConfig) -> dict[str, tuple[str, ...]]:
    """Our EncoderDecoder's state-dict names -> T5ForConditionalGeneration's."""
    table: dict[str, tuple[str, ...]] = {
        "wte.weight": ("shared.weight",),
        "rel_enc.weight": ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",),
        "rel_dec.weight": ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",),
        "ln_enc.weight": ("encoder.final_layer_norm.weight",),
        "ln_dec.weight": ("decoder.final_layer_norm.weight",),
        "lm_head.weight": ("shared.weight",) if cfg.tie_output else ("lm_head.weight",),
    }
    gated = cfg.activation in ("geglu", "swiglu")
    wi = ("wi_0", "wi_1") if gated else ("wi",)

    def mlp(ours: str, hf: str) -> None:
        table[f"{ours}.mlp.c_fc.weight"] = tuple(f"{hf}.DenseReluDense.{w}.weight" for w in wi)
        table[f"{ours}.mlp.c_proj.weight"] = (f"{hf}.DenseReluDense.wo.weight",)

    for stack, n, ours in (("encoder", cfg.n_layer, "encoder"), ("decoder", cfg.n_decoder_layer, "decoder")):
        for i in range(n):
            hf, me = f"{stack}.block.{i}.layer", f"{ours}.{i}"
            table[f"{me}.ln_1.weight"] = (f"{hf}.0.layer_norm.weight",)
            table[f"{me}.attn.c_attn.weight"] = tuple(f"{hf}.0.SelfAttention.{p}.weight" for p in "qkv")
            table[f"{me}.attn.c_proj.weight"] = (f"{hf}.0.SelfAttention.o.weight",)
            if stack == "encoder":
                table[f"{me}.ln_2.weight"] = (f"{hf}.1.layer_norm.weight",)
                mlp(me, f"{hf}.1")
            else:
                table[f"{me}.ln_cross.weight"] = (f"{hf}.1.layer_norm.weight",)
                table[f"{me}.cross.c_q.weight"] = (f"{hf}.1.EncDecAttention.q.weight",)
                table[f"{me}.cross.c_kv.weight"] = tuple(f"{hf}.1.EncDecAttention.{p}.weight" for p in "kv")
                table[f"{me}.cross.c_proj.weight"] = (f"{hf}.1.EncDecAttention.o.weight",)
                table[f"{me}.ln_2.weight"] = (f"{hf}.2.layer_norm.weight",)
                mlp(me, f"{hf}.2")
    return table


def load_hf_t5(path: str | Path) -> tuple[EncoderDecoder, Tokenizer | None]:
    """A T5 checkpoint directory (T5ForConditionalGeneration, T5Model, v1.0 / v1.1 / flan) -> (EncoderDecoder in
    eval mode, its tokenizer or None)."""
    path = Path(path)
    hf = read_hf_config(path)
    _check_model_type(path, hf, "t5")
    state = read_hf_state_dict(path)
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    head = state.get("lm_head.weight")
    untied = head is not None and not (state.get("shared.weight") is not None and torch.equal(head, state["shared.weight"]))
    config = t5_config_from_hf(hf, path, untied_output=untied)
    model = EncoderDecoder(config)
    _load_mapped(model, state, t5_name_table(config), set(), path, what="")
    return model.eval(), load_hf_tokenizer(path)


def is_t5(cfg: EncoderDecoderConfig) -> bool:
    return cfg.pos_embedding == "relative"


def t5_hf_config(model: EncoderDecoder, ids: Mapping[str, int] | None = None) -> dict:
    """config.json of a T5ForConditionalGeneration with `model`'s architecture; ConfigError for settings T5 lacks."""
    cfg, ids = model.config, ids or {}
    _exportable(cfg, "T5", {"tie_embeddings": True, "scale_embeddings": False, "norm": "rmsnorm", "norm_first": True,
                            "bias": False, "scale_attention": False, "embedding_norm": False, "output_bias": False,
                            "activation": tuple(_OUR_T5_MLPS)})
    return {
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "is_encoder_decoder": True,
        "vocab_size": cfg.vocab_size, "d_model": cfg.n_embd, "d_kv": model.decoder[0].attn.head_dim,
        "d_ff": model.decoder[0].mlp.c_proj.in_features, "num_layers": cfg.n_layer,
        "num_decoder_layers": cfg.n_decoder_layer, "num_heads": cfg.n_head,
        "relative_attention_num_buckets": cfg.relative_buckets,
        "relative_attention_max_distance": cfg.relative_max_distance, "dropout_rate": cfg.dropout,
        "layer_norm_epsilon": cfg.ln_eps, "feed_forward_proj": _OUR_T5_MLPS[cfg.activation],
        # transformers 4 reads tie_word_embeddings as "tied and scaled" (v1.0) or "untied, unscaled" (v1.1);
        # transformers 5 reads scale_decoder_outputs, and the mixed cases too
        "tie_word_embeddings": cfg.tie_output, "scale_decoder_outputs": cfg.scale_output, "n_positions": cfg.block_size,
        "pad_token_id": ids.get("<pad>"), "eos_token_id": ids.get("<eos>"),
        "decoder_start_token_id": ids.get("<bos>", ids.get("<pad>")),
    }


def t5_state_dict(model: EncoderDecoder) -> dict[str, torch.Tensor]:
    """`model`'s weights under T5ForConditionalGeneration's names (q/k/v, k/v and wi_0/wi_1 split back apart)."""
    return _mapped_state(model, t5_name_table(model.config))


def export_hf_t5(model: EncoderDecoder, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write `model` as a T5ForConditionalGeneration checkpoint (+ tokenizer files when given one)."""
    ids = hf_special_ids(tokenizer) if tokenizer is not None else {}
    return _write_checkpoint(path, t5_hf_config(model, ids), t5_state_dict(model), tokenizer)


# ----------------------------------------------------------------------------------------------
# BART

BART_POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding: positions start at row 2


def bart_config_from_hf(hf: Mapping, path="<config>") -> EncoderDecoderConfig:
    """EncoderDecoderConfig for a BartConfig dict; ConfigError for what our model cannot represent."""
    with _config_errors(path):
        act = hf.get("activation_function", "gelu")
        _require(path, [
            ("activation_function", act, tuple(_BART_ACTIVATIONS)),
            ("decoder_attention_heads", hf["decoder_attention_heads"], (hf["encoder_attention_heads"],)),
            ("decoder_ffn_dim", hf["decoder_ffn_dim"], (hf["encoder_ffn_dim"],)),
            ("normalize_before", hf.get("normalize_before", False), (False,)),
            ("add_final_layer_norm", hf.get("add_final_layer_norm", False), (False,)),
        ])
        return EncoderDecoderConfig(
            vocab_size=hf["vocab_size"], block_size=hf["max_position_embeddings"], n_layer=hf["encoder_layers"],
            n_decoder_layer=hf["decoder_layers"], n_head=hf["encoder_attention_heads"], n_embd=hf["d_model"],
            intermediate_size=hf["encoder_ffn_dim"], dropout=hf.get("dropout", 0.1), tie_embeddings=True,
            tie_output=True, output_bias=True, pos_embedding="learned", position_offset=BART_POSITION_OFFSET,
            tie_positions=False, scale_embeddings=bool(hf.get("scale_embedding", False)), embedding_norm=True,
            norm="layernorm", norm_first=False, bias=True, activation=_BART_ACTIVATIONS[act], ln_eps=1e-5,
            pad_id=hf.get("pad_token_id", 1))


def bart_name_table(cfg: EncoderDecoderConfig) -> dict[str, tuple[str, ...]]:
    """Our EncoderDecoder's state-dict names -> BartForConditionalGeneration's (without the `model.` prefix)."""
    table: dict[str, tuple[str, ...]] = {
        "wte.weight": ("shared.weight",), "lm_head.weight": ("shared.weight",),
        "wpe.weight": ("encoder.embed_positions.weight",), "wpe_dec.weight": ("decoder.embed_positions.weight",),
        "final_logits_bias": ("final_logits_bias",),
    }
    for p in ("weight", "bias"):
        table[f"ln_emb_enc.{p}"] = (f"encoder.layernorm_embedding.{p}",)
        table[f"ln_emb_dec.{p}"] = (f"decoder.layernorm_embedding.{p}",)
    for stack, n in (("encoder", cfg.n_layer), ("decoder", cfg.n_decoder_layer)):
        for i in range(n):
            hf, me = f"{stack}.layers.{i}", f"{stack}.{i}"
            for p in ("weight", "bias"):
                table[f"{me}.attn.c_attn.{p}"] = tuple(f"{hf}.self_attn.{x}_proj.{p}" for x in "qkv")
                table[f"{me}.attn.c_proj.{p}"] = (f"{hf}.self_attn.out_proj.{p}",)
                table[f"{me}.ln_1.{p}"] = (f"{hf}.self_attn_layer_norm.{p}",)
                table[f"{me}.mlp.c_fc.{p}"] = (f"{hf}.fc1.{p}",)
                table[f"{me}.mlp.c_proj.{p}"] = (f"{hf}.fc2.{p}",)
                table[f"{me}.ln_2.{p}"] = (f"{hf}.final_layer_norm.{p}",)
                if stack == "decoder":
                    table[f"{me}.cross.c_q.{p}"] = (f"{hf}.encoder_attn.q_proj.{p}",)
                    table[f"{me}.cross.c_kv.{p}"] = tuple(f"{hf}.encoder_attn.{x}_proj.{p}" for x in "kv")
                    table[f"{me}.cross.c_proj.{p}"] = (f"{hf}.encoder_attn.out_proj.{p}",)
                    table[f"{me}.ln_cross.{p}"] = (f"{hf}.encoder_attn_layer_norm.{p}",)
    return table


def load_hf_bart(path: str | Path) -> tuple[EncoderDecoder, Tokenizer | None]:
    """A BART checkpoint directory (BartForConditionalGeneration or BartModel) -> (EncoderDecoder in eval mode,
    its tokenizer or None). A checkpoint without final_logits_bias (BartModel) gets zeros, as transformers does."""
    path = Path(path)
    hf = read_hf_config(path)
    _check_model_type(path, hf, "bart")
    state = {k.removeprefix("model."): v for k, v in read_hf_state_dict(path).items()}
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    config = bart_config_from_hf(hf, path)
    model = EncoderDecoder(config)
    _load_mapped(model, state, bart_name_table(config), {"final_logits_bias"}, path, what="final_logits_bias")
    return model.eval(), load_hf_tokenizer(path)


def is_bart(cfg: EncoderDecoderConfig) -> bool:
    return cfg.pos_embedding == "learned" and cfg.position_offset == BART_POSITION_OFFSET and cfg.embedding_norm


def bart_hf_config(model: EncoderDecoder, ids: Mapping[str, int] | None = None) -> dict:
    """config.json of a BartForConditionalGeneration with `model`'s architecture."""
    cfg, ids = model.config, ids or {}
    _exportable(cfg, "BART", {"tie_embeddings": True, "tie_output": True, "output_bias": True,
                              "tie_positions": False, "norm": "layernorm", "norm_first": False, "bias": True,
                              "scale_attention": True, "head_dim": (None, cfg.n_embd // cfg.n_head),
                              "activation": tuple(_OUR_BART_ACTIVATIONS), "ln_eps": 1e-5})
    ffn = model.decoder[0].mlp.c_proj.in_features
    return {
        "architectures": ["BartForConditionalGeneration"], "model_type": "bart", "is_encoder_decoder": True,
        "vocab_size": cfg.vocab_size, "d_model": cfg.n_embd, "max_position_embeddings": cfg.block_size,
        "encoder_layers": cfg.n_layer, "decoder_layers": cfg.n_decoder_layer,
        "encoder_attention_heads": cfg.n_head, "decoder_attention_heads": cfg.n_head,
        "encoder_ffn_dim": ffn, "decoder_ffn_dim": ffn, "activation_function": _OUR_BART_ACTIVATIONS[cfg.activation],
        "dropout": cfg.dropout, "attention_dropout": 0.0, "activation_dropout": 0.0,
        "scale_embedding": cfg.scale_embeddings, "tie_word_embeddings": True,
        "pad_token_id": ids.get("<pad>", cfg.pad_id), "bos_token_id": ids.get("<cls>", ids.get("<bos>")),
        "eos_token_id": ids.get("<eos>"), "decoder_start_token_id": ids.get("<eos>"),  # BART's decoder starts with </s>
        "forced_eos_token_id": ids.get("<eos>"),
    }


def export_hf_bart(model: EncoderDecoder, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write `model` as a BartForConditionalGeneration checkpoint (+ tokenizer files when given one)."""
    ids = hf_special_ids(tokenizer) if tokenizer is not None else {}
    return _write_checkpoint(path, bart_hf_config(model, ids), bart_state_dict(model), tokenizer)


def bart_state_dict(model: EncoderDecoder) -> dict[str, torch.Tensor]:
    """`model`'s weights under BartForConditionalGeneration's names (q/k/v and k/v split back apart)."""
    state = {("" if k == "final_logits_bias" else "model.") + k: v
             for k, v in _mapped_state(model, bart_name_table(model.config)).items()}
    state["lm_head.weight"] = state["model.shared.weight"]
    return state


# ----------------------------------------------------------------------------------------------

def _mapped_state(model: torch.nn.Module, table: Mapping[str, tuple[str, ...]]) -> dict[str, torch.Tensor]:
    """Our weights under the names of `table` (concatenated ones split back apart)."""
    ours, state = model.state_dict(), {}
    for name, hf_names in table.items():
        for hf_name, part in zip(hf_names, ours[name].chunk(len(hf_names), dim=0)):
            state[hf_name] = part
    return state


def _exportable(cfg: EncoderDecoderConfig, family: str, needed: Mapping[str, object]) -> None:
    """ConfigError naming every model.* setting the `family` format cannot hold."""
    wrong = [f"model.{k}={getattr(cfg, k)!r} (needs {v if isinstance(v, tuple) else repr(v)})"
             for k, v in needed.items() if (getattr(cfg, k) not in v if isinstance(v, tuple) else getattr(cfg, k) != v)]
    if wrong:
        raise ConfigError(f"this encoder-decoder has no {family} equivalent: {'; '.join(wrong)}")


__all__ = ["load_hf_t5", "export_hf_t5", "t5_config_from_hf", "t5_name_table", "t5_state_dict", "t5_hf_config", "is_t5",
           "load_hf_bart", "export_hf_bart", "bart_config_from_hf", "bart_name_table", "bart_state_dict", "bart_hf_config",
           "is_bart"]
