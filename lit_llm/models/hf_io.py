"""Hugging Face-format checkpoints on disk <-> our backbones (BERT, RoBERTa, DistilBERT, ELECTRA <-> `Encoder`;
GPT-2, Llama, Mistral, Qwen2 <-> `GPT`; T5 and BART <-> `EncoderDecoder` live in `hf_seq2seq.py`).

    encoder, tokenizer = load_hf_bert("/models/bert-base-uncased")   # config.json + weights (+ tokenizer)
    gpt, tokenizer = load_hf_gpt2("/models/gpt2")
    backbone, tokenizer = load_hf("/models/any")                     # dispatch on config.json's model_type (HF_LOADERS)
    name, out = export_hf(backbone, "/tmp/out", tokenizer)            # the family's format, e.g. ("T5", out)
    export_hf_bert(encoder, "/tmp/out", tokenizer)                   # BertForMaskedLM.from_pretrained works
    export_hf_gpt2(gpt, "/tmp/out", tokenizer)                       # GPT2LMHeadModel.from_pretrained works

Loaders read local directories (`resolve_hf` turns `hf:<org>/<name>` into one: the local cache, or a download when
the hub is reachable) and `transformers` is not needed at run time:
weights come from `model.safetensors` or `pytorch_model.bin` (sharded `*.index.json` too), names
are mapped through flat tables (`bert_name_table`, `gpt2_name_table`). BertModel, BertForMaskedLM
and BertForPreTraining checkpoints load, with or without the `bert.` prefix; a checkpoint without
an MLM head leaves ours freshly initialised (logged); the pooler and NSP head are dropped (logged).
RoBERTa, DistilBERT and ELECTRA are the same body under other names: ELECTRA's `embedding_size` is
`EncoderConfig.embedding_size` (+ `embeddings_project`), its generator (ElectraForMaskedLM) head is our
MLM head, and the discriminator's replaced-token head (ElectraForPreTraining) is dropped (logged).
GPT-2's Conv1D layers store weights as (in, out): they are transposed to and from nn.Linear.
Anything we cannot represent exactly (relative positions, another activation, an untied MLM
decoder, ...) is a `ConfigError` naming `model.init_from`, the file and the key.

Loaded models are returned in eval mode, like `from_pretrained`.

SPECIAL TOKENS. Our own tokenizers put `<pad> <unk> <bos> <eos> <mask> <cls> <sep>` at ids 0..6
(`lit_llm.tokenization.special_ids`). Hugging Face vocabularies do not: BERT uses `[PAD]`=0,
`[UNK]`=100, `[CLS]`=101, `[SEP]`=102, `[MASK]`=103; GPT-2 has only `<|endoftext|>`=50256. The
loaders return the tokenizer as it is (a `tokenizers.Tokenizer`: from `tokenizer.json`, else
built from BERT's `vocab.txt` or GPT-2 / RoBERTa's `vocab.json` + `merges.txt`), and `hf_special_ids(tokenizer_or_dir)` gives the ids it uses,
keyed by OUR names, e.g. `{"<pad>": 0, "<unk>": 100, "<cls>": 101, "<sep>": 102, "<mask>": 103}`,
so code written against `special_ids()` works with a pretrained vocabulary by swapping the call.
Roles the vocabulary lacks (BERT has no `<bos>`/`<eos>`) are absent from the dict. Also unlike
ours, HF tokenizers usually carry a post-processor that adds `[CLS] ... [SEP]` on `encode()`:
pass `add_special_tokens=False` when inserting the ids yourself.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from lit_llm.errors import ConfigError
from lit_llm.models.encoder import Encoder, EncoderConfig
from lit_llm.models.gpt import GPT, GPTConfig
from lit_llm.tokenization import tokenizer_from_file
from lit_llm.utils_io import atomic_write_text

log = logging.getLogger("lit_llm")

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "distilbert", "gpt2", "llama", "mistral", "qwen2", "t5", "bart", "electra")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")

# HF activation names -> ours. "gelu_new"/"gelu_pytorch_tanh" are the same tanh approximation.
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
                   "gelu_pytorch_tanh": "gelu_tanh"}
_OUR_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}

# Our special-token names -> the tokenizer_config / special_tokens_map key, and the token strings
# tried (in order) when a directory does not say.
_ROLES = {
    "<pad>": ("pad_token", ["[PAD]", "<pad>", "<|pad|>"]),
    "<unk>": ("unk_token", ["[UNK]", "<unk>", "<|endoftext|>"]),
    "<bos>": ("bos_token", ["<bos>", "<s>", "<|endoftext|>"]),
    "<eos>": ("eos_token", ["<eos>", "</s>", "<|endoftext|>"]),
    "<mask>": ("mask_token", ["[MASK]", "<mask>"]),
    "<cls>": ("cls_token", ["[CLS]", "<cls>", "<s>"]),
    "<sep>": ("sep_token", ["[SEP]", "<sep>", "</s>"]),
}


def _error(path, msg: str) -> ConfigError:
    return ConfigError(f"model.init_from={path}: {msg}")


# ----------------------------------------------------------------------------------------------
# Reading a checkpoint directory.


def read_hf_config(path: str | Path) -> dict:
    """config.json of a checkpoint directory, as a dict (ConfigError if missing or not JSON)."""
    path = Path(path)
    if not path.exists():
        raise _error(path, "no such directory (expected a Hugging Face checkpoint directory "
                           "with config.json and model.safetensors or pytorch_model.bin)")
    if not path.is_dir():
        raise _error(path, "is not a directory (a Hugging Face checkpoint is a directory holding "
                           "config.json and model.safetensors or pytorch_model.bin)")
    file = path / "config.json"
    if not file.is_file():
        raise _error(path, f"{file} is missing: not a Hugging Face checkpoint directory")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise _error(path, f"cannot read {file}: {e}") from e


def read_hf_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors or pytorch_model.bin (either may be sharded), on CPU."""
    path = Path(path)
    for name in WEIGHT_FILES:
        file = path / name
        if not file.is_file():
            continue
        try:
            if name.endswith(".index.json"):
                shards = sorted(set(json.loads(file.read_text(encoding="utf-8"))["weight_map"].values()))
                state = {}
                for shard in shards:
                    state.update(_read_weights(path / shard))
                return state
            return _read_weights(file)
        except Exception as e:  # a corrupt or truncated file: say which one
            raise _error(path, f"cannot read weights from {file}: {e}") from e
    raise _error(path, f"no weights in {path}: expected one of {', '.join(WEIGHT_FILES)}")


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        return load_file(str(file), device="cpu")
    return torch.load(file, map_location="cpu", weights_only=True)


def _check_model_type(path, hf: dict, expected: str) -> None:
    model_type = hf.get("model_type")
    if model_type != expected:
        hint = (f" (use load_hf_{'gpt2' if model_type == 'gpt2' else 'bert'})"
                if model_type in SUPPORTED_MODEL_TYPES else "")
        raise _error(path, f"config.json has model_type={model_type!r}, expected {expected!r}{hint}; "
                           f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}")


# ----------------------------------------------------------------------------------------------
# Tokenizers and special tokens.


def load_hf_tokenizer(path: str | Path) -> Tokenizer | None:
    """tokenizer.json as it is, else a BERT WordPiece tokenizer built from vocab.txt (+ the
    lower-casing settings of tokenizer_config.json / config.json), else a GPT-2 / RoBERTa byte-level BPE
    built from vocab.json + merges.txt (`byte_level_bpe_from_files`), else None."""
    path = Path(path)
    if (path / "tokenizer.json").is_file():
        try:
            return tokenizer_from_file(path / "tokenizer.json")
        except Exception as e:
            raise _error(path, f"cannot read {path / 'tokenizer.json'}: {e}") from e
    if (path / "vocab.txt").is_file():
        settings = {**_read_json(path / "config.json"), **_read_json(path / "tokenizer_config.json")}
        return wordpiece_from_vocab(path / "vocab.txt", settings)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        settings = {**_read_json(path / "special_tokens_map.json"), **_read_json(path / "tokenizer_config.json")}
        settings.setdefault("model_type", _read_json(path / "config.json").get("model_type"))
        return byte_level_bpe_from_files(path / "vocab.json", path / "merges.txt", settings)
    log.info("no tokenizer.json, vocab.txt or vocab.json + merges.txt in %s: returning no tokenizer", path)
    return None


def wordpiece_from_vocab(vocab_file: str | Path, settings: Mapping | None = None) -> Tokenizer:
    """A BERT tokenizer from vocab.txt (one token a line, id = line number), the way
    transformers' BertTokenizerFast builds it: BertNormalizer (lowercase = `do_lower_case`,
    default True), BertPreTokenizer, WordPiece with `##` continuations, `[CLS] $A [SEP]` post-processor.
    `settings` holds tokenizer_config.json keys (do_lower_case, strip_accents,
    tokenize_chinese_chars, unk_token, cls_token, ...)."""
    settings = dict(settings or {})
    vocab: dict[str, int] = {}
    with open(vocab_file, encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line.rstrip("\n")] = i
    tokens = {role: _token_str(settings.get(key)) or default for role, key, default in (
        ("unk", "unk_token", "[UNK]"), ("cls", "cls_token", "[CLS]"), ("sep", "sep_token", "[SEP]"),
        ("pad", "pad_token", "[PAD]"), ("mask", "mask_token", "[MASK]"))}

    tok = Tokenizer(models.WordPiece(vocab, unk_token=tokens["unk"], max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
        strip_accents=settings.get("strip_accents"),
        lowercase=settings.get("do_lower_case", True),
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    present = [t for t in (tokens["pad"], tokens["unk"], tokens["cls"], tokens["sep"], tokens["mask"])
               if t in vocab]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in present])
    cls, sep = tokens["cls"], tokens["sep"]
    if cls in vocab and sep in vocab:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
        )
    return tok


# tokenizer_config.json's tokenizer_class (without "Fast") -> the post-processor transformers gives it when it builds
# the tokenizer from vocab.json + merges.txt (convert_slow_tokenizer's GPT2Converter / RobertaConverter)
_BYTE_LEVEL_CLASSES = {"GPT2Tokenizer": "gpt2", "CodeGenTokenizer": "gpt2", "RobertaTokenizer": "roberta",
                       "BartTokenizer": "roberta", "LongformerTokenizer": "roberta", "LEDTokenizer": "roberta",
                       "MvpTokenizer": "roberta"}
_ROBERTA_MODEL_TYPES = ("roberta", "bart", "longformer", "led", "mvp")  # when tokenizer_config.json names no class


def byte_level_bpe_from_files(vocab_file: str | Path, merges_file: str | Path, settings: Mapping | None = None) -> Tokenizer:
    """A GPT-2 / RoBERTa tokenizer from vocab.json + merges.txt, the way transformers builds it without a
    tokenizer.json: byte-level BPE, ByteLevel pre-tokenizer (`add_prefix_space`, default false) and decoder, the
    special tokens that tokenizer_config.json / special_tokens_map.json declare (and `added_tokens_decoder`), and
    the post-processor of `tokenizer_class` (else of config.json's `model_type`): RoBERTa's `<s> a </s></s> b </s>`
    (RobertaProcessing with `trim_offsets`, default true), GPT-2's optional `add_bos_token` / `add_eos_token`
    template (none by default). `settings` holds those files' keys (+ "model_type")."""
    settings = dict(settings or {})
    where = Path(vocab_file).parent / "tokenizer_config.json"
    cls = str(settings.get("tokenizer_class") or "").removesuffix("Fast")
    if cls and cls not in _BYTE_LEVEL_CLASSES:
        raise ConfigError(f"{where}: tokenizer_class={cls!r} is not a byte-level BPE lit-llm can build from "
                          f"vocab.json + merges.txt (it can: {', '.join(_BYTE_LEVEL_CLASSES)}); save the tokenizer "
                          "with a tokenizer.json (transformers' save_pretrained writes one)")
    family = _BYTE_LEVEL_CLASSES.get(cls) or ("roberta" if settings.get("model_type") in _ROBERTA_MODEL_TYPES
                                              else "gpt2")
    try:
        vocab, merges = models.BPE.read_file(str(vocab_file), str(merges_file))
    except Exception as e:
        raise ConfigError(f"cannot read {vocab_file} / {merges_file} as a BPE vocabulary and merges: {e}") from e
    tok = Tokenizer(models.BPE(vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False))
    prefix_space = bool(settings.get("add_prefix_space", False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(_declared_special_tokens(settings))
    token = {role: _token_str(settings.get(f"{role}_token")) for role in ("bos", "eos", "cls", "sep")}
    if family == "roberta":
        cls_tok, sep_tok = token["cls"] or "<s>", token["sep"] or "</s>"
        if tok.token_to_id(cls_tok) is None or tok.token_to_id(sep_tok) is None:
            raise ConfigError(f"{where}: a RoBERTa tokenizer needs its cls token {cls_tok!r} and sep token "
                              f"{sep_tok!r} in {vocab_file}; name the right ones (cls_token, sep_token)")
        tok.post_processor = processors.RobertaProcessing(
            (sep_tok, tok.token_to_id(sep_tok)), (cls_tok, tok.token_to_id(cls_tok)),
            trim_offsets=bool(settings.get("trim_offsets", True)), add_prefix_space=prefix_space)
        return tok
    bos = token["bos"] if settings.get("add_bos_token") and token["bos"] else None
    eos = token["eos"] if settings.get("add_eos_token") and token["eos"] else None
    single = " ".join([f"{bos}:0"] * bool(bos) + ["$A:0"] + [f"{eos}:0"] * bool(eos))
    pair = " ".join([single] + [f"{bos}:1"] * bool(bos) + ["$B:1"] + [f"{eos}:1"] * bool(eos))
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, tok.token_to_id(t)) for t in dict.fromkeys([bos, eos]) if t])
    return tok


def _declared_special_tokens(settings: Mapping) -> list[AddedToken]:
    """The special tokens a tokenizer_config.json / special_tokens_map.json declares, with their flags: entries of
    `added_tokens_decoder` (by id), then the `*_token` roles and `additional_special_tokens`."""
    out: dict[str, AddedToken] = {}
    decoder = settings.get("added_tokens_decoder") or {}
    entries = [decoder[k] for k in sorted(decoder, key=int)] if isinstance(decoder, Mapping) else []
    entries += [settings.get(f"{role}_token") for role in ("bos", "eos", "unk", "sep", "pad", "cls", "mask")]
    extra = settings.get("additional_special_tokens") or settings.get("extra_special_tokens") or []
    entries += list(extra.values() if isinstance(extra, Mapping) else extra)  # a list, or v5's named dict
    for entry in entries:
        content = _token_str(entry)
        if content is None or content in out:
            continue
        flags = entry if isinstance(entry, Mapping) else {}
        out[content] = AddedToken(content, single_word=bool(flags.get("single_word", False)),
                                  lstrip=bool(flags.get("lstrip", False)), rstrip=bool(flags.get("rstrip", False)),
                                  normalized=bool(flags.get("normalized", False)), special=flags.get("special", True))
    return list(out.values())


def hf_special_ids(tokenizer_or_dir: Tokenizer | str | Path) -> dict[str, int]:
    """Ids of the special tokens a (Hugging Face) tokenizer uses, keyed by our names:
    {"<pad>": 0, "<unk>": 100, "<cls>": 101, "<sep>": 102, "<mask>": 103} for BERT,
    {"<unk>": 50256, "<bos>": 50256, "<eos>": 50256} for GPT-2; roles it lacks are absent.

    Given a directory, the token strings named in tokenizer_config.json / special_tokens_map.json
    win; otherwise the usual strings are looked up ([PAD], <pad>, [CLS], <s>, <|endoftext|>, ...).
    Our own tokenizers give the same ids as `lit_llm.tokenization.special_ids`."""
    declared: dict[str, str] = {}
    if isinstance(tokenizer_or_dir, Tokenizer):
        tokenizer = tokenizer_or_dir
    else:
        path = Path(tokenizer_or_dir)
        tokenizer = load_hf_tokenizer(path)
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            for key, value in _read_json(path / name).items():
                if _token_str(value):
                    declared[key] = _token_str(value)
        if tokenizer is None:  # no vocabulary: config.json's ids are all there is
            hf = _read_json(path / "config.json")
            return {ours: hf[f"{key[:-6]}_token_id"] for ours, (key, _) in _ROLES.items()
                    if isinstance(hf.get(f"{key[:-6]}_token_id"), int)}
    ids = {}
    for ours, (key, candidates) in _ROLES.items():
        for token in ([declared[key]] if key in declared else []) + candidates:
            idx = tokenizer.token_to_id(token)
            if idx is not None:
                ids[ours] = idx
                break
    if not isinstance(tokenizer_or_dir, Tokenizer):
        # an encoder-decoder's decoder starts from config.json's decoder_start_token_id (T5: <pad>, BART: </s>):
        # that is the <bos> our seq2seq data and generation put first
        start = _read_json(Path(tokenizer_or_dir) / "config.json").get("decoder_start_token_id")
        if isinstance(start, int):
            ids["<bos>"] = start
    return ids


def hf_chat_template(path: str | Path) -> str | None:
    """The Jinja chat template of a Hugging Face tokenizer directory (tokenizer_config.json `chat_template`, or
    the newer chat_template.jinja / chat_template.json files), None when it has none. A list of named
    templates gives the one named "default"."""
    path = Path(path)
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    template = _read_json(path / "chat_template.json").get("chat_template") or \
        _read_json(path / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _token_str(value) -> str | None:
    """A special token in tokenizer_config.json is a string or {"content": ..., ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# ----------------------------------------------------------------------------------------------
# BERT.


# ElectraConfig's defaults where they differ from BertConfig's (a config.json may leave them out)
_ELECTRA_DEFAULTS = {"embedding_size": 128, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024}


def bert_config_from_hf(hf: Mapping, path="<config>") -> EncoderConfig:
    """EncoderConfig for a BertConfig, RobertaConfig or ElectraConfig dict (RoBERTa: positions from row pad id + 1,
    one token type; ELECTRA: `embedding_size`, None when it equals hidden_size); ConfigError for what our Encoder
    cannot represent."""
    where = "config.json has"
    electra = hf.get("model_type") == "electra"
    if electra:
        hf = {**_ELECTRA_DEFAULTS, **hf}

    def need(key, allowed, default):
        value = hf.get(key, default)
        if value not in allowed:
            raise _error(path, f"{where} {key}={value!r}; lit-llm's Encoder supports only "
                               f"{' or '.join(map(repr, allowed))}")
        return value

    need("position_embedding_type", ("absolute",), "absolute")
    need("is_decoder", (False,), False)
    need("add_cross_attention", (False,), False)
    need("tie_word_embeddings", (True,), True)  # the MLM decoder is the word embedding matrix
    act = need("hidden_act", tuple(_HF_ACTIVATIONS), "gelu")
    roberta = hf.get("model_type") == "roberta"
    offset = hf.get("pad_token_id", 1) + 1 if roberta else 0
    try:
        return EncoderConfig(
            vocab_size=hf["vocab_size"],
            block_size=hf.get("max_position_embeddings", 512) - offset,
            position_offset=offset,
            n_layer=hf.get("num_hidden_layers", 12),
            n_head=hf.get("num_attention_heads", 12),
            n_embd=hf.get("hidden_size", 768),
            embedding_size=hf["embedding_size"] if electra and hf["embedding_size"] != hf["hidden_size"] else None,
            intermediate_size=hf.get("intermediate_size", 3072),
            dropout=hf.get("hidden_dropout_prob", 0.1),
            type_vocab_size=hf.get("type_vocab_size", 1 if roberta else 2),
            ln_eps=hf.get("layer_norm_eps", 1e-12),
            activation=_HF_ACTIVATIONS[act],
            pad_id=hf.get("pad_token_id", 1 if roberta else 0),
        )
    except KeyError as e:
        raise _error(path, f"config.json lacks {e.args[0]!r}") from e
    except ConfigError as e:
        raise _error(path, f"config.json cannot be represented: {e}") from e


def bert_name_table(config: EncoderConfig) -> dict[str, tuple[str, ...]]:
    """Our Encoder's state-dict names -> the HF BertForMaskedLM names without the `bert.`
    prefix. A tuple of three is q, k, v, concatenated (dim 0) into our fused c_attn."""
    table: dict[str, tuple[str, ...]] = {
        "wte.weight": ("embeddings.word_embeddings.weight",),
        "wpe.weight": ("embeddings.position_embeddings.weight",),
        "ln_emb.weight": ("embeddings.LayerNorm.weight",),
        "ln_emb.bias": ("embeddings.LayerNorm.bias",),
    }
    if config.embedding_size not in (None, config.n_embd):  # ELECTRA
        table["emb_proj.weight"], table["emb_proj.bias"] = ("embeddings_project.weight",), ("embeddings_project.bias",)
    if config.type_vocab_size > 0:
        table["tte.weight"] = ("embeddings.token_type_embeddings.weight",)
    for i in range(config.n_layer):
        ours, hf = f"blocks.{i}.", f"encoder.layer.{i}."
        for w in ("weight", "bias"):
            table[f"{ours}attn.c_attn.{w}"] = tuple(f"{hf}attention.self.{n}.{w}" for n in ("query", "key", "value"))
            table[f"{ours}attn.c_proj.{w}"] = (f"{hf}attention.output.dense.{w}",)
            table[f"{ours}ln_1.{w}"] = (f"{hf}attention.output.LayerNorm.{w}",)
            table[f"{ours}mlp.c_fc.{w}"] = (f"{hf}intermediate.dense.{w}",)
            table[f"{ours}mlp.c_proj.{w}"] = (f"{hf}output.dense.{w}",)
            table[f"{ours}ln_2.{w}"] = (f"{hf}output.LayerNorm.{w}",)
    for w in ("weight", "bias"):
        table[f"mlm.dense.{w}"] = (f"cls.predictions.transform.dense.{w}",)
        table[f"mlm.ln.{w}"] = (f"cls.predictions.transform.LayerNorm.{w}",)
    table["mlm.decoder.bias"] = ("cls.predictions.bias",)
    # mlm.decoder.weight is wte.weight (tied): not in the table.
    return table


# RobertaForMaskedLM names -> BertForMaskedLM's (the same layers, other names)
_ROBERTA_NAMES = (("lm_head.dense.", "cls.predictions.transform.dense."),
                  ("lm_head.layer_norm.", "cls.predictions.transform.LayerNorm."),
                  ("lm_head.decoder.bias", "cls.predictions.decoder.bias"), ("lm_head.bias", "cls.predictions.bias"))


# ElectraForMaskedLM (generator) names -> BertForMaskedLM's; generator_lm_head.weight is the tied word embedding
_ELECTRA_NAMES = (("generator_predictions.dense.", "cls.predictions.transform.dense."),
                  ("generator_predictions.LayerNorm.", "cls.predictions.transform.LayerNorm."),
                  ("generator_lm_head.bias", "cls.predictions.bias"))


# DistilBertForMaskedLM names -> BertForMaskedLM's
_DISTILBERT_NAMES = (
    (re.compile(r"^transformer\.layer\.(\d+)\."), r"encoder.layer.\1."), (".attention.q_lin.", ".attention.self.query."),
    (".attention.k_lin.", ".attention.self.key."), (".attention.v_lin.", ".attention.self.value."),
    (".attention.out_lin.", ".attention.output.dense."), (".sa_layer_norm.", ".attention.output.LayerNorm."),
    (".ffn.lin1.", ".intermediate.dense."), (".ffn.lin2.", ".output.dense."), (".output_layer_norm.", ".output.LayerNorm."),
    (re.compile(r"^vocab_transform\."), "cls.predictions.transform.dense."),
    (re.compile(r"^vocab_layer_norm\."), "cls.predictions.transform.LayerNorm."),
    (re.compile(r"^vocab_projector\.bias$"), "cls.predictions.bias"))


def _distilbert_config_as_bert(hf: Mapping, path) -> dict:
    """A DistilBertConfig dict under BertConfig's keys (no token types; learned positions only)."""
    if hf.get("sinusoidal_pos_embds"):
        raise _error(path, "config.json has sinusoidal_pos_embds=true; lit-llm's Encoder supports only learned "
                           "positions (false)")
    keys = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
            "hidden_dim": "intermediate_size", "dropout": "hidden_dropout_prob", "activation": "hidden_act"}
    return {**{keys.get(k, k): v for k, v in hf.items()}, "type_vocab_size": 0, "layer_norm_eps": 1e-12}


def _normalise_bert_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        key = key.removeprefix("bert.").removeprefix("roberta.").removeprefix("electra.")
        if key.startswith("distilbert.") or key.startswith(("vocab_transform.", "vocab_layer_norm.", "vocab_projector.")):
            key = key.removeprefix("distilbert.")
            for old, new in _DISTILBERT_NAMES:
                key = old.sub(new, key) if isinstance(old, re.Pattern) else key.replace(old, new)
        for other, bert in _ROBERTA_NAMES + _ELECTRA_NAMES:
            key = key.replace(other, bert) if key.startswith(other) else key
        # Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = value
    # cls.predictions.decoder.bias is an alias of cls.predictions.bias in transformers.
    if "cls.predictions.bias" not in out and "cls.predictions.decoder.bias" in out:
        out["cls.predictions.bias"] = out["cls.predictions.decoder.bias"]
    return out


def load_hf_bert(path: str | Path) -> tuple[Encoder, Tokenizer | None]:
    """A BERT checkpoint directory -> (Encoder in eval mode, its tokenizer or None).
    See `hf_special_ids` for the tokenizer's [CLS]/[SEP]/[PAD]/[MASK] ids."""
    path = Path(path)
    hf = read_hf_config(path)
    if hf.get("model_type") == "distilbert":
        hf = _distilbert_config_as_bert(hf, path)
    elif hf.get("model_type") not in ("roberta", "electra"):
        _check_model_type(path, hf, "bert")
    config = bert_config_from_hf(hf, path)
    state = _normalise_bert_names(read_hf_state_dict(path))
    if hf.get("model_type") == "electra":
        _check_electra_heads(path, hf, config, state)
    model = Encoder(config)
    optional = {k for k in bert_name_table(config) if k.startswith("mlm.")}
    _load_mapped(model, state, bert_name_table(config), optional, path, what="MLM head")
    model.mlm.decoder.weight = model.wte.weight  # keep the tie (load_state_dict copies in place)
    return model.eval(), load_hf_tokenizer(path)


def _check_electra_heads(path, hf: Mapping, config: EncoderConfig, state: Mapping[str, torch.Tensor]) -> None:
    """ElectraForPreTraining's replaced-token head is not ours: dropped (logged). ElectraForMaskedLM's generator head
    always applies exact GELU, whatever hidden_act says: ours follows hidden_act, so it must be gelu."""
    if any(k.startswith("discriminator_predictions.") for k in state):
        log.info("%s: dropped the ELECTRA discriminator head (discriminator_predictions.*, replaced-token "
                 "detection); the encoder body is loaded", path)
    if any(k.startswith("cls.predictions.") for k in state) and config.activation != "gelu":
        raise _error(path, f"config.json has hidden_act={hf.get('hidden_act')!r}, but ELECTRA's generator head "
                           "applies exact GELU, which lit-llm's MLM head matches only with hidden_act 'gelu'")


def encoder_hf_format(config: EncoderConfig) -> str:
    """The Hugging Face family an encoder exports as: "electra" (embedding_size != n_embd: a projected embedding),
    "roberta" (positions from row pad id + 1) or "bert"."""
    if config.embedding_size not in (None, config.n_embd):
        return "electra"
    return "roberta" if config.position_offset > 0 else "bert"


def export_hf_bert(encoder: Encoder, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write `encoder` as a BertForMaskedLM checkpoint (config.json, model.safetensors, and
    tokenizer.json + tokenizer_config.json when given a tokenizer); RobertaForMaskedLM for the RoBERTa
    position layout, ElectraForMaskedLM (a generator: body + MLM head) when model.embedding_size differs from
    model.n_embd. BertModel/ElectraModel.from_pretrained load it too (BERT's pooler, which we do not have, is
    then freshly initialised)."""
    cfg = encoder.config
    if cfg.norm_first:
        raise ConfigError("model.norm_first=true (a pre-LN encoder) has no Hugging Face BERT equivalent, "
                          "which is post-LN; only norm_first=false encoders export to the BERT format")
    if cfg.attention_window is not None:
        raise ConfigError(f"model.attention_window={cfg.attention_window} has no Hugging Face BERT equivalent (BERT, "
                          "RoBERTa and ELECTRA attend to the whole sequence); only model.attention_window=null "
                          "encoders export")
    if cfg.pos_embedding != "learned":
        raise ConfigError(f"model.pos_embedding={cfg.pos_embedding!r} has no Hugging Face BERT equivalent (BERT "
                          "learns absolute positions); only pos_embedding=learned encoders export to the BERT format")
    family = encoder_hf_format(cfg)
    if cfg.position_offset and cfg.position_offset != (cfg.pad_id or 0) + 1:
        raise ConfigError(f"model.position_offset={cfg.position_offset} with model.pad_id={cfg.pad_id}: only the "
                          "RoBERTa layout (offset = pad id + 1) has a Hugging Face equivalent")
    if family == "electra" and cfg.position_offset:
        raise ConfigError(f"model.embedding_size={cfg.embedding_size} exports as ELECTRA, which has no position "
                          f"offset, but model.position_offset={cfg.position_offset}; set it to 0")
    if family == "electra" and cfg.activation != "gelu":
        raise ConfigError(f"model.activation={cfg.activation!r}: ELECTRA's generator head (model.embedding_size is "
                          "set) always applies exact GELU; use model.activation=gelu to export as ELECTRA")
    renames = {"roberta": _ROBERTA_NAMES, "electra": _ELECTRA_NAMES, "bert": ()}[family]
    ours = encoder.state_dict()
    state = {}
    for name, hf_names in bert_name_table(cfg).items():
        prefix = "" if name.startswith("mlm.") else f"{family}."
        parts = ours[name].chunk(len(hf_names), dim=0)
        for hf_name, part in zip(hf_names, parts):
            for other, bert_name in renames:
                hf_name = hf_name.replace(bert_name, other) if hf_name.startswith(bert_name) else hf_name
            state[prefix + hf_name] = part
    type_vocab_size = cfg.type_vocab_size
    if type_vocab_size == 0:
        # HF BERT always adds a token-type embedding; a single zero row adds nothing.
        type_vocab_size = 1
        state[f"{family}.embeddings.token_type_embeddings.weight"] = \
            torch.zeros(1, ours["wte.weight"].shape[1], dtype=ours["wte.weight"].dtype)
    hf = {
        "architectures": [{"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM",
                           "electra": "ElectraForMaskedLM"}[family]],
        "model_type": family,
        **({"embedding_size": cfg.embedding_size} if family == "electra" else {}),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": _OUR_ACTIVATIONS[cfg.activation],
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.dropout,
        "max_position_embeddings": cfg.block_size + cfg.position_offset,
        "type_vocab_size": type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.ln_eps,
        "pad_token_id": cfg.pad_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }
    return _write_checkpoint(path, hf, state, tokenizer)


# ----------------------------------------------------------------------------------------------
# Decoder configs: what config.json holds that our GPT cannot represent is a ConfigError naming the key.


@contextlib.contextmanager
def _config_errors(path) -> Iterator[None]:
    """A missing key or a value our GPTConfig refuses: a ConfigError naming the file."""
    try:
        yield
    except KeyError as e:
        raise _error(path, f"config.json lacks {e.args[0]!r}") from e
    except ConfigError as e:
        if str(e).startswith("model.init_from="):
            raise
        raise _error(path, f"config.json cannot be represented: {e}") from e


def _require(path, checks: list[tuple[str, object, tuple]]) -> None:
    """(key, value, allowed values): a value our GPT cannot run is a ConfigError naming key and file."""
    for key, value, allowed in checks:
        if value not in allowed:
            raise _error(path, f"config.json has {key}={value!r}; lit-llm's GPT supports only "
                               f"{' or '.join(map(repr, allowed))}")


# ----------------------------------------------------------------------------------------------
# GPT-2.

_GPT2_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


def gpt2_config_from_hf(hf: Mapping, path="<config>") -> GPTConfig:
    """GPTConfig for a GPT2Config dict; ConfigError for what our GPT cannot represent."""
    with _config_errors(path):
        n_embd = hf.get("n_embd", 768)
        checks = [
            ("activation_function", hf.get("activation_function", "gelu_new"), _GPT2_TANH_GELUS),
            ("n_inner", hf.get("n_inner"), (None, 4 * n_embd)),
            ("layer_norm_epsilon", hf.get("layer_norm_epsilon", 1e-5), (1e-5,)),
            ("scale_attn_weights", hf.get("scale_attn_weights", True), (True,)),
            ("scale_attn_by_inverse_layer_idx", hf.get("scale_attn_by_inverse_layer_idx", False), (False,)),
            ("add_cross_attention", hf.get("add_cross_attention", False), (False,)),
        ]
        _require(path, checks)
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            block_size=hf.get("n_positions", 1024),
            n_layer=hf.get("n_layer", 12),
            n_head=hf.get("n_head", 12),
            n_embd=n_embd,
            dropout=hf.get("resid_pdrop", 0.1),
            bias=True,
            pos_embedding="learned",
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )


# GPT-2's Conv1D modules: weight is (in, out), the transpose of nn.Linear's.
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_name_table(config: GPTConfig) -> dict[str, tuple[str, ...]]:
    """Our GPT's state-dict names -> HF GPT2LMHeadModel names without the `transformer.` prefix
    (lm_head.weight keeps no prefix). Names ending in one of `_CONV1D` are transposed."""
    table: dict[str, tuple[str, ...]] = {"wte.weight": ("wte.weight",), "wpe.weight": ("wpe.weight",)}
    for i in range(config.n_layer):
        for name in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            for w in ("weight", "bias"):
                table[f"blocks.{i}.{name}.{w}"] = (f"h.{i}.{name}.{w}",)
    table["ln_f.weight"], table["ln_f.bias"] = ("ln_f.weight",), ("ln_f.bias",)
    if not config.tie_embeddings:
        table["lm_head.weight"] = ("lm_head.weight",)
    return table


def _normalise_gpt2_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")) and value.dim() != 1:
            continue  # old checkpoints store the causal mask as a buffer
        out[key.removeprefix("transformer.")] = value
    return out


def _conv1d_to_linear(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.t() if k.endswith(_CONV1D) else v) for k, v in state.items()}


def load_hf_gpt2(path: str | Path) -> tuple[GPT, Tokenizer | None]:
    """A GPT-2 checkpoint directory -> (GPT in eval mode, its tokenizer or None)."""
    path = Path(path)
    hf = read_hf_config(path)
    _check_model_type(path, hf, "gpt2")
    config = gpt2_config_from_hf(hf, path)
    state = _normalise_gpt2_names(read_hf_state_dict(path))
    # Transpose HF's Conv1D weights (named as HF names them; _CONV1D suffixes are shared).
    state = _conv1d_to_linear(state)
    model = GPT(config)
    _load_mapped(model, state, gpt2_name_table(config), set(), path, what="")
    if config.tie_embeddings:
        model.lm_head.weight = model.wte.weight
    return model.eval(), load_hf_tokenizer(path)


def gpt2_state_dict(gpt: GPT) -> dict[str, torch.Tensor]:
    """`gpt`'s weights under GPT2LMHeadModel's names (Conv1D weights transposed; bias=False as zero
    biases, which is exact). Rotary positions have no GPT-2 equivalent (ConfigError)."""
    cfg = gpt.config
    if cfg.pos_embedding != "learned":
        raise ConfigError(f"model.pos_embedding={cfg.pos_embedding!r} cannot be exported as GPT-2, "
                          f"which has learned absolute positions only")
    if cfg.attention_window is not None:
        raise ConfigError(f"model.attention_window={cfg.attention_window} cannot be exported as GPT-2, which attends "
                          "to the whole context; only a Llama-style GPT (rmsnorm, swiglu, rope) with a window exports "
                          "(as Mistral), or set model.attention_window=null")
    ours = gpt.state_dict()
    state = {}
    for name, (hf_name,) in gpt2_name_table(cfg).items():
        if name not in ours:  # bias=False: LayerNorm / Linear without bias == zero bias
            weight = ours[name.rsplit(".", 1)[0] + ".weight"]  # (out, in) or LayerNorm's (C,)
            value = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        else:
            value = ours[name]
        if name.endswith(_CONV1D):
            value = value.t()
        state[hf_name if hf_name == "lm_head.weight" else "transformer." + hf_name] = value
    return state


def gpt2_hf_config(gpt: GPT, special_ids: Mapping[str, int] | None = None) -> dict:
    """config.json of a GPT2LMHeadModel with `gpt`'s architecture (special ids: {"<bos>": id, ...})."""
    cfg, ids = gpt.config, special_ids or {}
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": ids.get("<bos>"),
        "eos_token_id": ids.get("<eos>"),
        "pad_token_id": ids.get("<pad>"),
    }


def export_hf_gpt2(gpt: GPT, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write `gpt` as a GPT2LMHeadModel checkpoint (config.json, model.safetensors, and
    tokenizer.json + tokenizer_config.json when given a tokenizer). Rotary positions have no
    GPT-2 equivalent (ConfigError); bias=False exports zero biases, which is exact."""
    state = gpt2_state_dict(gpt)
    ids = hf_special_ids(tokenizer) if tokenizer is not None else {}
    return _write_checkpoint(path, gpt2_hf_config(gpt, ids), state, tokenizer)


# ----------------------------------------------------------------------------------------------
# The Llama family (Llama, Mistral, Qwen2, SmolLM): our GPT with RMSNorm, SwiGLU, rotary positions, GQA.

LLAMA_TYPES = ("llama", "mistral", "qwen2")


def llama_config_from_hf(hf: Mapping, path="<config>") -> GPTConfig:
    """GPTConfig for a LlamaConfig / MistralConfig / Qwen2Config dict; ConfigError for what our GPT cannot
    represent (another activation, head_dim != hidden_size / heads, a sliding window on some layers only,
    biases on the output projection or the MLP). A sliding window on every layer (Mistral's `sliding_window`)
    is `model.attention_window`, with the same rule: a token sees itself and the window - 1 before it."""
    with _config_errors(path):
        n_embd, n_head, block = hf["hidden_size"], hf["num_attention_heads"], hf.get("max_position_embeddings", 2048)
        window = _hf_sliding_window(hf, path, block)
        checks = [
            ("hidden_act", hf.get("hidden_act", "silu"), ("silu",)),
            ("head_dim", hf.get("head_dim") or n_embd // n_head, (n_embd // n_head,)),
            ("attention_bias", hf.get("attention_bias") or False, (False,)),
            ("mlp_bias", hf.get("mlp_bias") or False, (False,)),
        ]
        _require(path, checks)
        theta, scaling = _hf_rope(hf)
        return GPTConfig(
            vocab_size=hf["vocab_size"], block_size=block, n_layer=hf["num_hidden_layers"], n_head=n_head,
            n_embd=n_embd, dropout=hf.get("attention_dropout", 0.0), bias=False, pos_embedding="rope",
            rope_base=theta, tie_embeddings=hf.get("tie_word_embeddings", False),
            norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu",
            intermediate_size=hf["intermediate_size"], n_kv_head=hf.get("num_key_value_heads") or n_head,
            qkv_bias=hf.get("model_type") == "qwen2", rope_scaling=scaling, attention_window=window)


def _hf_sliding_window(hf: Mapping, path, block: int) -> int | None:
    """The window of a config.json whose every layer slides (None: none does, or the window spans the context);
    a window on some layers only (Qwen2's `max_window_layers`, `layer_types`) is a ConfigError."""
    window = hf.get("sliding_window") if hf.get("use_sliding_window", hf.get("model_type") == "mistral") else None
    if window is None or window >= block:
        return None
    kinds = hf.get("layer_types")
    if kinds is None and hf.get("model_type") == "qwen2":  # Qwen2: layers from max_window_layers on slide
        first = hf.get("max_window_layers", 28)
        kinds = ["full_attention" if i < first else "sliding_attention" for i in range(hf["num_hidden_layers"])]
    sliding = {kind == "sliding_attention" for kind in kinds or ["sliding_attention"]}
    if sliding == {False}:
        return None
    if sliding != {True}:
        raise _error(path, f"config.json has a sliding window ({window}) on some layers only (layer_types={kinds}); "
                           "lit-llm's model.attention_window applies to every layer")
    return window


def _hf_rope(hf: Mapping) -> tuple[float, dict | None]:
    """(rope base, scaling or None) from a config.json: transformers 4 writes `rope_theta` and `rope_scaling`,
    transformers 5 one `rope_parameters` ({"rope_type": "default" | "linear" | "llama3", "rope_theta", ...})."""
    params = dict(hf.get("rope_parameters") or {})
    theta = float(params.pop("rope_theta", None) or hf.get("rope_theta") or 10000.0)
    scaling = dict(hf.get("rope_scaling") or params)
    kind = scaling.pop("rope_type", scaling.pop("type", "default"))
    return theta, ({"type": kind, **scaling} if kind != "default" else None)


def llama_name_table(config: GPTConfig) -> dict[str, tuple[str, ...]]:
    """Our GPT's state-dict names -> LlamaForCausalLM names: q/k/v concatenated into c_attn, gate/up into c_fc."""
    table: dict[str, tuple[str, ...]] = {"wte.weight": ("model.embed_tokens.weight",),
                                         "ln_f.weight": ("model.norm.weight",)}
    for i in range(config.n_layer):
        hf = f"model.layers.{i}"
        table[f"blocks.{i}.ln_1.weight"] = (f"{hf}.input_layernorm.weight",)
        table[f"blocks.{i}.ln_2.weight"] = (f"{hf}.post_attention_layernorm.weight",)
        table[f"blocks.{i}.attn.c_attn.weight"] = tuple(f"{hf}.self_attn.{p}_proj.weight" for p in "qkv")
        if config.qkv_bias:
            table[f"blocks.{i}.attn.c_attn.bias"] = tuple(f"{hf}.self_attn.{p}_proj.bias" for p in "qkv")
        table[f"blocks.{i}.attn.c_proj.weight"] = (f"{hf}.self_attn.o_proj.weight",)
        table[f"blocks.{i}.mlp.c_fc.weight"] = (f"{hf}.mlp.gate_proj.weight", f"{hf}.mlp.up_proj.weight")
        table[f"blocks.{i}.mlp.c_proj.weight"] = (f"{hf}.mlp.down_proj.weight",)
    if not config.tie_embeddings:
        table["lm_head.weight"] = ("lm_head.weight",)
    return table


def load_hf_llama(path: str | Path) -> tuple[GPT, Tokenizer | None]:
    """A Llama / Mistral / Qwen2 checkpoint directory -> (GPT in eval mode, its tokenizer or None)."""
    path = Path(path)
    hf = read_hf_config(path)
    if hf.get("model_type") not in LLAMA_TYPES:
        _check_model_type(path, hf, "llama")
    config = llama_config_from_hf(hf, path)
    model = GPT(config)
    _load_mapped(model, read_hf_state_dict(path), llama_name_table(config), set(), path, what="")
    if config.tie_embeddings:
        model.lm_head.weight = model.wte.weight
    return model.eval(), load_hf_tokenizer(path)


def is_llama(config: GPTConfig) -> bool:
    return config.norm == "rmsnorm" and config.mlp == "swiglu" and config.pos_embedding == "rope"


def llama_state_dict(gpt: GPT) -> dict[str, torch.Tensor]:
    """A Llama-style GPT's weights under LlamaForCausalLM's names (q/k/v and gate/up split back apart)."""
    cfg = gpt.config
    if not is_llama(cfg) or cfg.bias:
        raise ConfigError("only a GPT with model.norm=rmsnorm, model.mlp=swiglu, model.pos_embedding=rope and "
                          "model.bias=false exports as Llama")
    if cfg.attention_window is not None and cfg.qkv_bias:
        raise ConfigError(f"model.attention_window={cfg.attention_window} with model.qkv_bias=true: a windowed GPT "
                          "exports as Mistral, which has no q/k/v biases; use model.attention_window=null to export "
                          "as Qwen2")
    ours, state = gpt.state_dict(), {}
    for name, hf_names in llama_name_table(cfg).items():
        sizes = [ours[name].shape[0] // len(hf_names)] * len(hf_names)
        if name.endswith("attn.c_attn.weight") or name.endswith("attn.c_attn.bias"):
            sizes = list(gpt.blocks[0].attn.qkv_sizes)
        state.update(zip(hf_names, ours[name].split(sizes, dim=0)))
    return state


def llama_hf_config(gpt: GPT, ids: Mapping[str, int] | None = None) -> dict:
    """config.json of a LlamaForCausalLM (Qwen2ForCausalLM when q/k/v have biases) of `gpt`'s architecture."""
    cfg, ids = gpt.config, ids or {}
    qwen2, mistral = bool(cfg.qkv_bias), cfg.attention_window is not None  # Mistral: Llama + a sliding window
    kind = "qwen2" if qwen2 else "mistral" if mistral else "llama"
    window = {"sliding_window": cfg.attention_window} if mistral else {}
    return {
        "architectures": [{"qwen2": "Qwen2", "mistral": "Mistral", "llama": "Llama"}[kind] + "ForCausalLM"],
        "model_type": kind, **window,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd, "intermediate_size": gpt.blocks[0].mlp.c_proj.in_features,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head or cfg.n_head, "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_base, "rope_scaling": cfg.rope_scaling,
        "hidden_act": "silu", "tie_word_embeddings": cfg.tie_embeddings, "attention_dropout": cfg.dropout,
        "bos_token_id": ids.get("<bos>"), "eos_token_id": ids.get("<eos>"), "pad_token_id": ids.get("<pad>"),
    }


def export_hf_llama(gpt: GPT, path: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write a Llama-style GPT as LlamaForCausalLM (Qwen2ForCausalLM when its q/k/v have biases,
    MistralForCausalLM with model.attention_window)."""
    state = llama_state_dict(gpt)
    ids = hf_special_ids(tokenizer) if tokenizer is not None else {}
    return _write_checkpoint(path, llama_hf_config(gpt, ids), state, tokenizer)


# ----------------------------------------------------------------------------------------------
# Where a checkpoint comes from: a directory, or a hub id resolved in the local cache (or downloaded).

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "chat_template.jinja",
             "chat_template.json", "generation_config.json"]  # what lit-llm reads; no pickled weights


def resolve_hf(spec: str, key: str = "model.init_from") -> Path:
    """`hf:<spec>` -> a local checkpoint directory. A directory is itself; `<org>/<name>[@revision]` is looked up
    in the Hugging Face cache (`HF_HUB_CACHE` or `HF_HOME`'s layout, e.g. filled by `huggingface-cli download`) and,
    when the hub is reachable, downloaded into it (safetensors and tokenizer files only). Neither: a ConfigError
    naming the id and the cache, at once (no network retries)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if not HUB_ID.match(spec):
        raise ConfigError(f"{key}=hf:{spec}: no such directory; give a Hugging Face model directory "
                          "(config.json + model.safetensors) or a hub id <org>/<name>[@revision]")
    from huggingface_hub import constants, snapshot_download

    from lit_llm.data.sources import hub_offline_mode, hub_reachable

    repo, _, revision = spec.partition("@")
    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    online = not constants.HF_HUB_OFFLINE and hub_reachable()
    try:
        if online:
            return Path(snapshot_download(repo, revision=revision or None, cache_dir=cache, allow_patterns=HUB_FILES))
        with hub_offline_mode():
            return Path(snapshot_download(repo, revision=revision or None, cache_dir=cache, allow_patterns=HUB_FILES,
                                          local_files_only=True))
    except Exception as e:  # noqa: BLE001 - not cached / no such repo / revision: one line that says which
        where = "downloading it failed" if online else "the hub is unreachable (offline)"
        raise ConfigError(f"{key}=hf:{spec}: {repo}{'@' + revision if revision else ''} is not in the Hugging Face "
                          f"cache {cache} and {where} ({type(e).__name__}); download it where the hub is reachable "
                          "(huggingface-cli download <id>) and copy the cache, or give hf:<local dir>") from None


# ----------------------------------------------------------------------------------------------
# Shared plumbing.

HF_LOADERS = {"bert": load_hf_bert, "roberta": load_hf_bert, "distilbert": load_hf_bert, "gpt2": load_hf_gpt2,
              **{t: load_hf_llama for t in LLAMA_TYPES}, "electra": load_hf_bert,
              "t5": lambda path: _seq2seq().load_hf_t5(path), "bart": lambda path: _seq2seq().load_hf_bart(path)}


def _seq2seq():
    """`hf_seq2seq` (T5, BART), imported when used: it builds on this module's helpers."""
    import importlib

    return importlib.import_module("lit_llm.models.hf_seq2seq")


def load_hf(path: str | Path) -> tuple[Encoder | GPT, Tokenizer | None]:
    """Load a Hugging Face checkpoint directory with the loader of config.json's model_type."""
    model_type = read_hf_config(path).get("model_type")
    if model_type not in HF_LOADERS:
        raise _error(path, f"config.json has model_type={model_type!r}; supported model types: "
                           f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    return HF_LOADERS[model_type](path)


def export_hf(model: Encoder | GPT, path: str | Path, tokenizer: Tokenizer | None = None) -> tuple[str, Path]:
    """Write `model` in the Hugging Face format of its family: (the format's name, the directory)."""
    cfg = model.config
    if cfg.arch == "gpt":
        name = "Qwen2" if cfg.qkv_bias else "Mistral" if cfg.attention_window is not None else "Llama"
        return (name, export_hf_llama(model, path, tokenizer)) if is_llama(cfg) else \
            ("GPT-2", export_hf_gpt2(model, path, tokenizer))
    if cfg.arch == "encoder":
        name = {"bert": "BERT", "roberta": "RoBERTa", "electra": "ELECTRA"}[encoder_hf_format(cfg)]
        return name, export_hf_bert(model, path, tokenizer)
    if cfg.arch == "encoder_decoder":
        s2s = _seq2seq()
        if s2s.is_t5(cfg):
            return "T5", s2s.export_hf_t5(model, path, tokenizer)
        if s2s.is_bart(cfg):
            return "BART", s2s.export_hf_bart(model, path, tokenizer)
        raise ConfigError(f"model.pos_embedding={cfg.pos_embedding!r}, model.position_offset={cfg.position_offset}, "
                          f"model.embedding_norm={cfg.embedding_norm}: this encoder-decoder is neither T5-style "
                          "(pos_embedding=relative) nor BART-style (learned positions from row 2 + embedding_norm), "
                          "the two Hugging Face formats it can export to")
    raise ConfigError(f"a model.arch={cfg.arch} backbone has no Hugging Face export (gpt exports as GPT-2 or Llama, "
                      "encoder as BERT, RoBERTa or ELECTRA, encoder_decoder as T5 or BART)")


def _load_mapped(model: torch.nn.Module, hf_state: dict[str, torch.Tensor],
                 table: Mapping[str, tuple[str, ...]], optional: set[str], path, what: str) -> None:
    """Fill `model` from `hf_state` through `table`; missing required names are a ConfigError,
    missing optional ones keep their fresh init (logged), unused HF names are logged."""
    ours = model.state_dict()
    new, missing, used = {}, [], set()
    for name, hf_names in table.items():
        if not all(n in hf_state for n in hf_names):
            missing.append(name)
            continue
        value = torch.cat([hf_state[n] for n in hf_names], dim=0)
        used.update(hf_names)
        if value.shape != ours[name].shape:
            raise _error(path, f"weight {' + '.join(hf_names)} has shape {tuple(value.shape)}, "
                               f"config.json implies {tuple(ours[name].shape)} (for {name})")
        new[name] = value
    required = [m for m in missing if m not in optional]
    if required:
        hf_missing = [n for m in required for n in table[m] if n not in hf_state]
        raise _error(path, f"the weights lack {len(hf_missing)} tensors the config needs, e.g. "
                           f"{', '.join(hf_missing[:5])}")
    if missing:
        log.warning("%s: no %s in the checkpoint; it is freshly initialised (%s)",
                    path, what, ", ".join(missing))
    unused = sorted(set(hf_state) - used)
    if unused:
        log.info("%s: ignored %d checkpoint tensors: %s", path, len(unused), ", ".join(unused[:10]))
    model.load_state_dict({**ours, **new}, strict=True)


def _write_checkpoint(path: str | Path, hf_config: dict, state: dict[str, torch.Tensor],
                      tokenizer: Tokenizer | None) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf_config = {**hf_config, "dtype": str(next(iter(state.values())).dtype).removeprefix("torch.")}
    # safetensors refuses tensors that share memory (views from chunk / tied weights): copy.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    atomic_write_text(path / "config.json", json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save(str(path / "tokenizer.json"))
        ids = hf_special_ids(tokenizer)
        tok_config = {"tokenizer_class": "PreTrainedTokenizerFast",
                      "model_max_length": hf_config.get("max_position_embeddings", hf_config.get("n_positions"))}
        for ours, (key, _) in _ROLES.items():
            if ours in ids:
                tok_config[key] = tokenizer.id_to_token(ids[ours])
        atomic_write_text(path / "tokenizer_config.json", json.dumps(tok_config, indent=2) + "\n")
    return path
