"""T5 (v1.0: ReLU, tied and scaled output; v1.1: gated-GELU, untied output) and BART: tiny random models made
and saved by `transformers` load into our EncoderDecoder with equal logits on padded batches, greedy generation
with our KV cache equals `transformers`' token for token, and our export loads back with equal logits."""
from __future__ import annotations

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.models.decoding import generate_seq2seq
from lit_llm.models.encoder_decoder import EncoderDecoder
from lit_llm.models.hf_io import export_hf, load_hf

transformers = pytest.importorskip("transformers")

V = 99
T5_TINY = dict(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=6,
               relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
               pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
BART_TINY = dict(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
                 dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1, bos_token_id=0,
                 eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)
FAMILIES = {
    # T5 v1.0: ReLU MLP, output tied to the embedding and fed d_model^-0.5 x the decoder output
    "t5_v1_0": (transformers.T5Config, {**T5_TINY, "feed_forward_proj": "relu"}, "decoder_start_token_id"),
    # T5 v1.1 / flan: gated-GELU MLP, its own lm_head, d_kv * heads != d_model
    "t5_v1_1": (transformers.T5Config, {**T5_TINY, "feed_forward_proj": "gated-gelu",
                                        "tie_word_embeddings": False}, "decoder_start_token_id"),
    "bart": (transformers.BartConfig, BART_TINY, "decoder_start_token_id"),
    "bart_scaled_relu": (transformers.BartConfig, {**BART_TINY, "scale_embedding": True,
                                                   "activation_function": "relu"}, "decoder_start_token_id"),
}


def make(family: str, out):
    cls, cfg, _ = FAMILIES[family]
    torch.manual_seed(0)
    hf = transformers.AutoModelForSeq2SeqLM.from_config(cls(**cfg)).eval()
    with torch.no_grad():  # random norms, biases and lm_head, so a mapping mistake cannot hide behind ones and zeros
        for name, p in hf.named_parameters():
            if name.endswith(("norm.weight", "layer_norm.weight", "layernorm_embedding.weight")):
                p.copy_(torch.randn_like(p) * 0.3 + 1)
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.3)
        if family == "t5_v1_1":
            hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.lm_head.weight))
        if hasattr(hf, "final_logits_bias"):
            hf.final_logits_bias.copy_(torch.randn_like(hf.final_logits_bias))
    hf.save_pretrained(out)
    return transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()  # what a user of the files gets


def batch():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, V, (3, 17), generator=g)
    mask = torch.ones_like(src)
    mask[1, 11:], mask[2, 5:] = 0, 0  # right padding of different lengths
    tgt = torch.randint(3, V, (3, 9), generator=g)
    return src.masked_fill(mask == 0, 1), mask, tgt


@pytest.mark.parametrize("family", FAMILIES)
def test_hugging_face_t5_and_bart_load_generate_and_export_equal(family, tmp_path):
    hf = make(family, tmp_path / "hf")
    ours, _ = load_hf(tmp_path / "hf")
    assert isinstance(ours, EncoderDecoder)
    src, mask, tgt = batch()
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        torch.testing.assert_close(ours(src, tgt, mask), expected, atol=1e-4, rtol=0)
        start = hf.config.decoder_start_token_id
        theirs = hf.generate(input_ids=src, attention_mask=mask, max_new_tokens=20, do_sample=False, num_beams=1,
                             eos_token_id=None, forced_bos_token_id=None, forced_eos_token_id=None,
                             decoder_start_token_id=start, min_length=0, no_repeat_ngram_size=0,
                             pad_token_id=hf.config.pad_token_id,
                             use_cache=False)  # transformers 5.24's T5 cache breaks when the stacks' depths differ
        mine = generate_seq2seq(ours, src, mask, start_id=start, eos_id=-1, pad_id=hf.config.pad_token_id,
                                max_new_tokens=20)
        assert torch.equal(mine, theirs[:, 1:]), (mine, theirs)
    fmt, out = export_hf(ours, tmp_path / "export")
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits,
                                   expected, atol=1e-4, rtol=0)
    assert fmt == ("T5" if family.startswith("t5") else "BART")


def test_what_t5_and_bart_exports_cannot_hold():
    plain = EncoderDecoder(dict(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))  # ours: sinusoidal
    with pytest.raises(ConfigError, match="sinusoidal"):
        export_hf(plain, "/nonexistent")
    t5ish = EncoderDecoder(dict(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16,
                                pos_embedding="relative", bias=True, norm="rmsnorm"))
    with pytest.raises(ConfigError, match=r"no T5 equivalent: model\.scale_embeddings=True .*model\.bias=True"):
        export_hf(t5ish, "/nonexistent")


def test_t5_and_bart_presets_have_the_published_sizes():
    from omegaconf import OmegaConf

    from tests.conftest import CONF_DIR

    def params(name: str) -> int:
        cfg = OmegaConf.load(f"{CONF_DIR}/model/{name}.yaml")
        if "defaults" in cfg:  # flan_t5_small: t5_small + its own values
            cfg = OmegaConf.merge(OmegaConf.load(f"{CONF_DIR}/model/{cfg.defaults[0]}.yaml"), cfg)
        cfg = OmegaConf.to_container(cfg)
        cfg.pop("init_from"), cfg.pop("init_encoder_from", None), cfg.pop("defaults", None)
        return EncoderDecoder(cfg).num_params()

    assert params("t5_small") == 60_506_624          # google-t5/t5-small
    assert params("flan_t5_small") == 76_961_152     # google/flan-t5-small
    assert params("bart_base") == 139_420_416        # facebook/bart-base (BartModel)


# -- a T5 / BART directory as a user has it (model + tokenizer files), through our seq2seq data and training

def texts(n: int = 300) -> list[str]:
    from lit_llm import package_file

    lines = open(package_file("corpora/tiny_sentiment.tsv"), encoding="utf-8").read().splitlines()[1:]
    return [line.split("\t")[0] for line in lines][:n]


def t5_dir(out):
    """A tiny T5 v1.1 with a SentencePiece-Unigram tokenizer (`text </s>`), saved by transformers."""
    from tokenizers import processors
    from tokenizers.implementations import SentencePieceUnigramTokenizer

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(texts(), vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok = sp._tokenizer
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    transformers.T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                 extra_ids=0).save_pretrained(out)
    cfg = {**T5_TINY, "vocab_size": tok.get_vocab_size(), "feed_forward_proj": "gated-gelu",
           "tie_word_embeddings": False}
    transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg)).save_pretrained(out)
    return out


def bart_dir(out):
    """A tiny BART with a byte-level BPE tokenizer (`<s> text </s>`), saved by transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(texts(), trainers.BpeTrainer(vocab_size=400, special_tokens=[
        "<s>", "<pad>", "</s>", "<unk>", "<mask>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    transformers.BartTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                   mask_token="<mask>").save_pretrained(out)
    cfg = {**BART_TINY, "vocab_size": tok.get_vocab_size()}
    transformers.BartForConditionalGeneration(transformers.BartConfig(**cfg)).save_pretrained(out)
    return out


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_seq2seq_batches_from_a_hugging_face_directory_equal_transformers(family, tmp_path):
    """input_ids, labels and decoder_input_ids of our data module are those transformers builds:
    tokenizer(source, text_target=target, truncation=True) and the model's shift right from decoder_start."""
    from lit_llm.checkpointing import load_pretrained
    from lit_llm.data.collate import IGNORE_INDEX
    from lit_llm.data.seq2seq import Seq2SeqDataModule

    hf_dir = (t5_dir if family == "t5" else bart_dir)(tmp_path / family)
    pretrained = load_pretrained(f"hf:{hf_dir}")
    src, tgt = texts()[:40], texts()[40:80]
    (tmp_path / "train.de").write_text("".join(s + "\n" for s in src))
    (tmp_path / "train.en").write_text("".join(t + "\n" for t in tgt))
    dm = Seq2SeqDataModule(train_files=str(tmp_path / "train"), validation_files=str(tmp_path / "train"),
                           source_lang="de", target_lang="en", batch_size=40, max_source_length=30, max_target_length=24, cache_dir=str(tmp_path / "c"))
    dm.load_raw()
    dm.set_tokenizer(pretrained.tokenizer, special_ids=pretrained.special_ids)
    dm.prepare_data()
    dm.setup()
    rows = [dm.features["train"][i] for i in range(40)]
    ours = dm.collator()(rows)
    order = [src.index(dm.raw["train"][r["example_index"]]["source"]) for r in rows]
    ref_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ref = ref_tok([src[i] for i in order], text_target=[tgt[i] for i in order], truncation=True, max_length=30,
                  padding=True, return_tensors="pt")
    labels = ref_tok(text_target=[tgt[i] for i in order], truncation=True, max_length=24, padding=True,
                     return_tensors="pt")["input_ids"]
    labels = labels.masked_fill(labels == ref_tok.pad_token_id, IGNORE_INDEX)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(hf_dir)
    assert torch.equal(ours["input_ids"], ref["input_ids"]) and torch.equal(ours["attention_mask"], ref["attention_mask"])
    assert torch.equal(ours["labels"], labels)
    start = model.config.decoder_start_token_id
    shifted = torch.cat([torch.full((40, 1), start), labels[:, :-1]], 1).masked_fill_(
        torch.cat([torch.zeros(40, 1, dtype=torch.bool), labels[:, :-1] == IGNORE_INDEX], 1), ref_tok.pad_token_id)
    # transformers' shift_tokens_right / T5._shift_right, wherever a label is scored (after a row's end they feed
    # the row's last label, we pad: positions whose outputs no loss reads, the decoder being causal)
    scored = labels != IGNORE_INDEX
    assert torch.equal(ours["decoder_input_ids"][scored], shifted[scored])
    with torch.no_grad():  # and the loss our task computes is transformers' loss on the same batch
        theirs = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], labels=labels).loss
    ours_model, _ = load_hf(hf_dir)
    logits = ours_model(ours["input_ids"], ours["decoder_input_ids"], ours["attention_mask"])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ours["labels"].flatten(), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_init_encoder_from_a_hugging_face_encoder_keeps_its_outputs(family, tmp_path):
    """model.init_encoder_from: the encoder-decoder's encoder is the pretrained BERT / RoBERTa (hidden states equal
    transformers' on a padded batch), the decoder and cross-attention are fresh, and a BERT vocabulary's [CLS] /
    [SEP] start and end the decoder."""
    from lit_llm.checkpointing import load_backbone_weights, load_pretrained_encoder
    from lit_llm.models import build_backbone

    cls, cfg_cls = {"bert": (transformers.BertModel, transformers.BertConfig),
                    "roberta": (transformers.RobertaModel, transformers.RobertaConfig)}[family]
    torch.manual_seed(0)
    hf = cls(cfg_cls(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                     max_position_embeddings=40, pad_token_id=1, type_vocab_size=2 if family == "bert" else 1))
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    hf.eval().save_pretrained(tmp_path / family)
    from tokenizers import Tokenizer, models

    vocab = {f"w{i}": i for i in range(V)} | ({"[PAD]": 1, "[CLS]": 2, "[SEP]": 3} if family == "bert" else {})
    vocab = {tok: i for tok, i in vocab.items() if not (tok.startswith("w") and int(tok[1:]) in (1, 2, 3))}
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="w0")), unk_token="w0",
        **({"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]"} if family == "bert" else
           {"pad_token": "w4", "bos_token": "w5", "eos_token": "w6"})).save_pretrained(tmp_path / family)

    settings = {"arch": "encoder_decoder", "n_decoder_layer": 3, "dropout": 0.0}
    pretrained = load_pretrained_encoder(f"hf:{tmp_path / family}", settings)
    model = build_backbone(pretrained.backbone_config).eval()
    line = load_backbone_weights(model, pretrained)
    assert "cross" in line and "encoder.0" not in line  # the decoder is fresh, the encoder loaded
    assert model.config.n_decoder_layer == 3 and model.config.position_offset == (2 if family == "roberta" else 0)
    src, mask, tgt = batch()
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=mask).last_hidden_state
        real = mask.bool()  # (RoBERTa numbers padding positions its own way: their states are nobody's input)
        torch.testing.assert_close(model.encode(src, mask)[real], expected[real], atol=1e-4, rtol=0)
        assert model(src, tgt, mask).shape == (3, 9, V)
    if family == "bert":
        assert pretrained.special_ids["<bos>"] == 2 and pretrained.special_ids["<eos>"] == 3


def test_init_encoder_from_refuses_what_it_cannot_use(tmp_path):
    from lit_llm.checkpointing import load_pretrained_encoder

    with pytest.raises(ConfigError, match=r"init_encoder_from=.*needs model\.arch=encoder_decoder"):
        load_pretrained_encoder("hf:/nowhere", {"arch": "gpt"})
