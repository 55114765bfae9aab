"""Hugging Face families end to end: for a tiny random checkpoint of each family that `hf_io` reads, the time to
import it, fine-tune it for `steps` steps and export it again.

    import     `checkpointing.load_pretrained("hf:<dir>")` (config, weights, tokenizer) + building our backbone and
               loading the weights into it: what `model.init_from=hf:<dir>` does before training starts;
    fine-tune  `steps` AdamW steps of the backbone in the plain loop (`training.plain_train`, fp32) on random
               batches of the family's kind: encoders (BERT, RoBERTa, DistilBERT, ELECTRA) a linear head on the
               first position's hidden state (sequence classification), decoders (GPT-2, Llama, Qwen2) next-token
               cross-entropy, encoder-decoders (T5, BART) teacher-forced cross-entropy; the wall time of all of
               them, the first included (optimizer state, allocator warm-up: what a user waits for);
    export     `hf_io.export_hf` (config.json, model.safetensors, tokenizer files).

The checkpoints are made by `transformers` (`XConfig(...)`, `AutoModelFor...from_config`, `save_pretrained`, with
a word-level `PreTrainedTokenizerFast`) in a temporary directory, untimed. Without transformers the section is
one note row.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from lit_llm.benchmarks import hf
from lit_llm.benchmarks.common import random_loader, resolve_device
from lit_llm.benchmarks.hf_training import SEQ2SEQ_INPUTS, seq2seq_batches
from lit_llm.benchmarks.training import plain_train

KINDS = ("encoder", "decoder", "seq2seq")
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]  # ids 0..4 of the word-level vocabulary


def hf_spec(family: str, size: dict) -> tuple[str, str, dict]:
    """(model_type, transformers auto class, config kwargs) of a tiny `family` model of `size`
    ({vocab, hidden, layers, heads, intermediate, positions})."""
    V, C, L, H, F, P = (int(size[k]) for k in ("vocab", "hidden", "layers", "heads", "intermediate", "positions"))
    bert = dict(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H, intermediate_size=F,
                max_position_embeddings=P)
    llama = dict(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=H // 2,
                 intermediate_size=F, max_position_embeddings=P, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    specs = {
        "bert": ("bert", "AutoModelForMaskedLM", {**bert, "pad_token_id": 0}),
        # RoBERTa numbers positions from pad_token_id + 1: two more rows for the same length
        "roberta": ("roberta", "AutoModelForMaskedLM", {**bert, "max_position_embeddings": P + 2, "pad_token_id": 1,
                                                        "type_vocab_size": 1}),
        "distilbert": ("distilbert", "AutoModelForMaskedLM", dict(vocab_size=V, dim=C, n_layers=L, n_heads=H,
                                                                  hidden_dim=F, max_position_embeddings=P)),
        # the discriminator (ElectraForPreTraining), embeddings half as wide as the hidden states
        "electra": ("electra", "AutoModelForPreTraining", {**bert, "embedding_size": C // 2}),
        # (lit-llm's GPT-2 has GPT-2's 4 x n_embd MLP)
        "gpt2": ("gpt2", "AutoModelForCausalLM", dict(vocab_size=V, n_embd=C, n_layer=L, n_head=H, n_positions=P,
                                                      bos_token_id=2, eos_token_id=3)),
        "llama": ("llama", "AutoModelForCausalLM", llama),
        "qwen2": ("qwen2", "AutoModelForCausalLM", {**llama, "tie_word_embeddings": True}),
        # T5 v1.1 / flan style: gated-GELU MLP, heads of d_model / heads channels
        "t5": ("t5", "AutoModelForSeq2SeqLM", dict(vocab_size=V, d_model=C, d_kv=C // H, d_ff=F, num_layers=L,
                                                   num_heads=H, feed_forward_proj="gated-gelu", n_positions=P,
                                                   pad_token_id=0, eos_token_id=3, decoder_start_token_id=0)),
        "bart": ("bart", "AutoModelForSeq2SeqLM", dict(vocab_size=V, d_model=C, encoder_layers=L, decoder_layers=L,
                                                       encoder_attention_heads=H, decoder_attention_heads=H,
                                                       encoder_ffn_dim=F, decoder_ffn_dim=F, max_position_embeddings=P,
                                                       pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                                       decoder_start_token_id=3, forced_eos_token_id=None)),
    }
    if family not in specs:
        raise ValueError(f"families.names: {family!r} is not one of {list(specs)}")
    return specs[family]


def save_tiny(family: str, size: dict, out: Path, seed: int) -> str:
    """A random `family` checkpoint of `size` with a word-level tokenizer, written by transformers into `out`;
    returns the transformers class name."""
    import transformers
    from tokenizers import Tokenizer, models

    model_type, auto, kwargs = hf_spec(family, size)
    torch.manual_seed(seed)
    model = getattr(transformers, auto).from_config(transformers.AutoConfig.for_model(model_type, **kwargs))
    model.save_pretrained(out)
    vocab = {tok: i for i, tok in enumerate(SPECIALS)} | {f"w{i}": i for i in range(len(SPECIALS), int(size["vocab"]))}
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")), pad_token="<pad>", unk_token="<unk>",
        bos_token="<s>", eos_token="</s>", mask_token="<mask>", cls_token="<s>", sep_token="</s>").save_pretrained(out)
    return type(model).__name__


def import_backbone(directory: Path) -> tuple[nn.Module, object]:
    """`model.init_from=hf:<directory>`'s work: (our backbone holding the checkpoint's weights, its tokenizer)."""
    from lit_llm.checkpointing import load_pretrained
    from lit_llm.models import build_backbone

    pretrained = load_pretrained(f"hf:{directory}")
    backbone = build_backbone(pretrained.backbone_config)
    backbone.load_state_dict(pretrained.state_dict)
    return backbone, pretrained.tokenizer


class FirstTokenClassifier(nn.Module):
    """An encoder + a linear head on the first position's hidden state: sequence classification logits."""

    def __init__(self, encoder: nn.Module, num_labels: int = 2):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.n_embd, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids, attention_mask)[:, 0])


def kind_of(backbone: nn.Module) -> str:
    return {"encoder": "encoder", "gpt": "decoder", "encoder_decoder": "seq2seq"}[backbone.config.arch]


def finetune(backbone: nn.Module, cfg: dict, device: torch.device) -> float:
    """Wall seconds of `cfg.steps` fp32 training steps of `backbone` on random batches of its kind."""
    B, T, steps, seed = int(cfg["batch_size"]), int(cfg["seq_len"]), int(cfg["steps"]), int(cfg.get("seed", 0))
    V = backbone.config.vocab_size
    kind = kind_of(backbone)
    if kind == "encoder":
        g = torch.Generator().manual_seed(seed)
        loader = [{"input_ids": torch.randint(len(SPECIALS), V, (B, T), generator=g),
                   "attention_mask": torch.ones(B, T, dtype=torch.long),
                   "labels": torch.randint(0, 2, (B,), generator=g)} for _ in range(steps)]
        model, inputs = FirstTokenClassifier(backbone), ("input_ids", "attention_mask")
    elif kind == "decoder":
        model, inputs, loader = backbone, ("input_ids",), random_loader(steps, B, T, V, seed)
    else:
        model, inputs, loader = backbone, SEQ2SEQ_INPUTS, seq2seq_batches(steps, B, T, T // 2, V, seed)
    started = time.perf_counter()
    # warmup 1 + steps - 1: plain_train's clock marks are not used, the wall time covers every step
    plain_train(model, loader, device, "32-true", 1, steps - 1, cfg["optim"], inputs=inputs)
    return time.perf_counter() - started


def measure(family: str, cfg: dict, device: torch.device, work: Path) -> dict:
    from lit_llm.models.hf_io import export_hf

    hf_class = save_tiny(family, cfg["size"], work / family, int(cfg.get("seed", 0)))
    started = time.perf_counter()
    backbone, tokenizer = import_backbone(work / family)
    import_s = time.perf_counter() - started
    params = sum(p.numel() for p in backbone.parameters())
    finetune_s = finetune(backbone, cfg, device)
    started = time.perf_counter()
    exported_as, _ = export_hf(backbone.cpu().eval(), work / f"{family}_export", tokenizer)
    export_s = time.perf_counter() - started
    return {"family": family, "hf_model": hf_class, "params": params, "import_s": round(import_s, 3),
            f"finetune_{int(cfg['steps'])}_s": round(finetune_s, 4), "export_s": round(export_s, 3),
            "exported_as": exported_as}


def run(cfg: dict) -> list[dict]:
    if not hf.available():
        return [{"family": "(all)", "note": hf.SKIPPED}]
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # tied-weights and generation-config notices of freshly made models
    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards"
    if int(cfg["steps"]) < 1:
        raise ValueError("families.steps must be >= 1")
    device = resolve_device(cfg.get("device"))
    with tempfile.TemporaryDirectory(prefix="lit_llm_families_") as tmp:
        return [measure(str(family), cfg, device, Path(tmp)) for family in cfg["names"]]
