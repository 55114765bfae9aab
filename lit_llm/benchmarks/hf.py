"""The Hugging Face reference: a `transformers.GPT2LMHeadModel` (or, for a Llama-style GPT, a `LlamaForCausalLM`)
with our GPT's architecture and weights; a `T5ForConditionalGeneration` (`BartForConditionalGeneration`) with a
T5-style (BART-style) EncoderDecoder's.

Same weights (not just the same sizes) so that both models do exactly the same arithmetic: a
speed difference is then the implementation's, never the data's or the init's. transformers is
optional: `available()` says whether the HF rows can run; the sections print a note otherwise.
"""
from __future__ import annotations

import importlib.util

import torch

from lit_llm.errors import ConfigError
from lit_llm.models.encoder_decoder import EncoderDecoder
from lit_llm.models.gpt import GPT
from lit_llm.models.hf_io import gpt2_hf_config, gpt2_state_dict, llama_hf_config, llama_state_dict
from lit_llm.tokenization import BOS, EOS, PAD, SPECIAL_TOKENS

SKIPPED = "skipped: transformers not installed"


def available() -> bool:
    return importlib.util.find_spec("transformers") is not None


def gpt2_config(gpt: GPT):
    """GPT2Config of our GPT's architecture (hf_io's export config), fused sdpa attention, our
    special-token ids (HF's default eos 50256 would not even be in an 8k vocabulary)."""
    from transformers import GPT2Config

    if gpt.config.pos_embedding != "learned" or not gpt.config.bias:
        raise ConfigError("the Hugging Face GPT-2 comparison needs model.pos_embedding=learned and model.bias=true")
    ids = {tok: SPECIAL_TOKENS.index(tok) for tok in (BOS, EOS, PAD)}
    return GPT2Config(**gpt2_hf_config(gpt, ids), attn_implementation="sdpa")


def gpt2_from(gpt: GPT):
    """A GPT2LMHeadModel holding `gpt`'s weights (hf_io's export mapping)."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its one-time padding hint: the benchmark's prompts have no padding
    hf = GPT2LMHeadModel(gpt2_config(gpt))
    missing, unexpected = hf.load_state_dict(gpt2_state_dict(gpt), strict=False)
    # a tied lm_head is the embedding itself: the only name the table may leave out
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"GPT -> GPT2LMHeadModel: missing {missing}, unexpected {unexpected}")
    return hf.to(gpt.wte.weight.device)


def llama_from(gpt: GPT):
    """A LlamaForCausalLM (sdpa attention) holding a Llama-style `gpt`'s weights (hf_io's export mapping)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    ids = {tok: SPECIAL_TOKENS.index(tok) for tok in (BOS, EOS, PAD)}
    config = llama_hf_config(gpt, ids)
    hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), attn_implementation="sdpa")
    missing, unexpected = hf.load_state_dict(llama_state_dict(gpt), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"GPT -> LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    if gpt.config.tie_embeddings:
        hf.tie_weights()
    return hf.to(gpt.wte.weight.device)


def t5_from(model: EncoderDecoder):
    """A T5ForConditionalGeneration (sdpa attention) holding a T5-style `model`'s weights (hf_seq2seq's export
    config and name table)."""
    from transformers import T5Config, T5ForConditionalGeneration

    from lit_llm.models.hf_seq2seq import t5_hf_config, t5_state_dict

    ids = {tok: SPECIAL_TOKENS.index(tok) for tok in (BOS, EOS, PAD)}
    config = T5Config(**t5_hf_config(model, ids), attn_implementation="sdpa")
    # transformers 5 builds T5 with lm_head tied to `shared` (from_pretrained unties it when the files hold their
    # own) and reads tie_word_embeddings as "scale the decoder output": say both as our model has them
    config.scale_decoder_outputs = model.config.scale_output
    hf = T5ForConditionalGeneration(config)
    if not model.config.tie_output:
        hf.lm_head.weight = torch.nn.Parameter(hf.lm_head.weight.detach().clone())
    missing, unexpected = hf.load_state_dict(t5_state_dict(model), strict=False)
    # the embeddings of both stacks (and a tied lm_head) are `shared` itself
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"EncoderDecoder -> T5ForConditionalGeneration: missing {missing}, unexpected {unexpected}")
    return hf.to(model.wte.weight.device)


def bart_from(model: EncoderDecoder):
    """A BartForConditionalGeneration (sdpa attention) holding a BART-style `model`'s weights (hf_seq2seq's export
    config and name table)."""
    from transformers import BartConfig, BartForConditionalGeneration

    from lit_llm.models.hf_seq2seq import bart_hf_config, bart_state_dict

    ids = {tok: SPECIAL_TOKENS.index(tok) for tok in (BOS, EOS, PAD)}
    hf = BartForConditionalGeneration(BartConfig(**bart_hf_config(model, ids), attn_implementation="sdpa"))
    missing, unexpected = hf.load_state_dict(bart_state_dict(model), strict=False)
    tied = {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"EncoderDecoder -> BartForConditionalGeneration: missing {missing}, unexpected {unexpected}")
    return hf.to(model.wte.weight.device)


def logits(hf, input_ids: torch.Tensor) -> torch.Tensor:
    """Training forward: logits only (no key/value cache built and returned)."""
    return hf(input_ids=input_ids, use_cache=False).logits


def causal_lm_loss(hf):
    """batch -> the model's own training loss: `labels=` in its forward (transformers' ForCausalLMLoss: logits in
    fp32, cross-entropy over the vocabulary). Our batches hold labels already shifted (labels[t] follows
    input_ids[t]), so they go in as `shift_labels` too: HF then does not shift them again."""
    return lambda batch: hf(input_ids=batch["input_ids"], labels=batch["labels"], shift_labels=batch["labels"],
                            use_cache=False).loss


def seq2seq_logits(hf, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Teacher-forced training forward of a transformers encoder-decoder: logits only."""
    return hf(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
              use_cache=False).logits
