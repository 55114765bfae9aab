"""Hugging Face import/export: our Encoder / GPT equal transformers' BERT / GPT-2 on the same
weights, both ways. Tiny random models built in the test: nothing is downloaded."""
import json
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lit_llm.errors import ConfigError  # noqa: E402
from lit_llm.models import (  # noqa: E402
    GPT,
    Encoder,
    EncoderConfig,
    GPTConfig,
    export_hf_bert,
    export_hf_gpt2,
    hf_special_ids,
    load_hf,
    load_hf_bert,
    load_hf_gpt2,
)
from lit_llm.tokenization import special_ids, train_char  # noqa: E402

ATOL = 1e-4
BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=37, max_position_embeddings=40)
GPT2 = dict(vocab_size=100, n_positions=24, n_embd=32, n_layer=2, n_head=2,
            bos_token_id=None, eos_token_id=None)


@pytest.fixture(autouse=True)
def _quiet_transformers():
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def batch(T=12):
    """Three rows: full, right-padded, mostly padding; two segments in the first row."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (3, T), generator=g)
    mask = torch.ones(3, T, dtype=torch.long)
    mask[1, 7:], mask[2, 3:] = 0, 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[0, 6:] = 1
    return ids, mask, types


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def bert_mlm(**overrides):
    torch.manual_seed(0)
    return transformers.BertForMaskedLM(transformers.BertConfig(**{**BERT, **overrides})).eval()


def gpt2(**overrides):
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**GPT2, **overrides})).eval()


# ----------------------------------------------------------------------------------------------
# Hugging Face -> ours


@torch.no_grad()
def test_bert_for_masked_lm_loads_with_equal_outputs(tmp_path):
    hf = bert_mlm()
    hf.save_pretrained(tmp_path)
    encoder, tokenizer = load_hf_bert(tmp_path)
    assert tokenizer is None and not encoder.training
    assert encoder.mlm.decoder.weight is encoder.wte.weight
    assert encoder.config.intermediate_size == 37 and encoder.config.block_size == 40
    ids, mask, types = batch()
    out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    hidden = encoder(ids, attention_mask=mask, token_type_ids=types)
    assert max_diff(hidden, out.hidden_states[-1]) < ATOL
    assert max_diff(encoder.mlm_logits(hidden), out.logits) < ATOL


@torch.no_grad()
def test_bert_model_from_pytorch_bin_with_tf_names(tmp_path, caplog):
    """A BertModel (no MLM head, a pooler) saved as pytorch_model.bin with TF-era gamma/beta."""
    torch.manual_seed(1)
    hf = transformers.BertModel(transformers.BertConfig(**BERT)).eval()
    hf.config.save_pretrained(tmp_path)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in hf.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    with caplog.at_level(logging.INFO, logger="lit_llm"):
        encoder, _ = load_hf_bert(tmp_path)
    assert "no MLM head" in caplog.text and "pooler.dense.weight" in caplog.text
    ids, mask, types = batch()
    expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    assert max_diff(encoder(ids, mask, types), expected) < ATOL


@torch.no_grad()
def test_gpt2_loads_with_equal_logits(tmp_path):
    hf = gpt2()
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    assert isinstance(model, GPT) and model.lm_head.weight is model.wte.weight
    ids, _, _ = batch()
    assert max_diff(model(ids), hf(input_ids=ids).logits) < ATOL


@torch.no_grad()
def test_untied_gpt2_from_bin(tmp_path):
    hf = gpt2(tie_word_embeddings=False)
    hf.config.save_pretrained(tmp_path)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    model, _ = load_hf_gpt2(tmp_path)
    assert model.lm_head.weight is not model.wte.weight
    ids, _, _ = batch()
    assert max_diff(model(ids), hf(input_ids=ids).logits) < ATOL


def test_vocab_txt_tokenizer_matches_transformers(tmp_path):
    words = ["the", "cat", "sat", "on", "mat", "##s", "##ting", "play", "hello", ",", ".", "!", "un", "##believ", "##able"]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    bert_mlm(vocab_size=len(vocab)).save_pretrained(tmp_path)

    encoder, tokenizer = load_hf_bert(tmp_path)
    assert encoder.config.vocab_size == len(vocab)
    reference = transformers.BertTokenizer.from_pretrained(tmp_path)
    for text in ["The cats sat on the MAT!", "Hello, unbelievable playing. [MASK] zebra", "Héllo  cat"]:
        enc = tokenizer.encode(text)
        assert enc.ids == reference(text)["input_ids"], text
    assert tokenizer.encode("the cat", add_special_tokens=False).ids == [8, 9]
    assert tokenizer.decode(tokenizer.encode("unbelievable cats").ids) == "unbelievable cats"
    ids = {"<pad>": 0, "<unk>": 4, "<mask>": 7, "<cls>": 5, "<sep>": 6}
    assert hf_special_ids(tokenizer) == ids
    assert hf_special_ids(tmp_path) == ids


# ----------------------------------------------------------------------------------------------
# ours -> Hugging Face


@torch.no_grad()
@pytest.mark.parametrize("type_vocab_size", [2, 0])
def test_encoder_exports_to_transformers(tmp_path, type_vocab_size):
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(vocab_size=100, block_size=40, n_layer=2, n_head=2, n_embd=32,
                                    intermediate_size=37, type_vocab_size=type_vocab_size)).eval()
    for p in encoder.parameters():  # move biases and LayerNorms off their 0/1 init
        p.add_(0.05 * torch.randn_like(p))
    export_hf_bert(encoder, tmp_path)
    ids, mask, types = batch()
    if type_vocab_size == 0:
        types = None
    hidden = encoder(ids, mask, types)
    mlm = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    out = mlm(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    assert max_diff(out.hidden_states[-1], hidden) < ATOL
    assert max_diff(out.logits, encoder.mlm_logits(hidden)) < ATOL
    base = transformers.BertModel.from_pretrained(tmp_path).eval()
    assert max_diff(base(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state, hidden) < ATOL
    # ... and back: our loader reads what we wrote.
    again, _ = load_hf_bert(tmp_path)
    assert max_diff(again(ids, mask, types), hidden) < 1e-6


@torch.no_grad()
@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False, "bias": False}])
def test_gpt_exports_to_transformers(tmp_path, overrides):
    torch.manual_seed(0)
    tokenizer = train_char(["a small corpus for a tiny tokenizer"])
    gpt = GPT(GPTConfig(vocab_size=100, block_size=24, n_layer=2, n_head=2, n_embd=32, **overrides)).eval()
    for p in gpt.parameters():
        p.add_(0.05 * torch.randn_like(p))
    export_hf_gpt2(gpt, tmp_path, tokenizer=tokenizer)
    ids, _, _ = batch()
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert max_diff(hf(input_ids=ids).logits, gpt(ids)) < ATOL
    assert hf.config.eos_token_id == special_ids(tokenizer)["<eos>"]
    # Our tokenizer travels along; transformers loads it with our special tokens.
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tok("a tiny corpus")["input_ids"] == tokenizer.encode("a tiny corpus").ids
    assert hf_tok.pad_token_id == 0 and hf_tok.eos_token == "<eos>"
    assert hf_special_ids(tmp_path) == special_ids(tokenizer)
    again, tok = load_hf_gpt2(tmp_path)
    assert tok.to_str() == tokenizer.to_str()
    assert max_diff(again(ids), gpt(ids)) < 1e-6


# ----------------------------------------------------------------------------------------------
# Clear errors


def test_errors_name_the_key_and_file(tmp_path):
    with pytest.raises(ConfigError, match="model.init_from=.*no such directory"):
        load_hf_bert(tmp_path / "nope")
    with pytest.raises(ConfigError, match="config.json is missing"):
        load_hf_bert(tmp_path)
    hf = bert_mlm()
    hf.config.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="no weights in .*model.safetensors"):
        load_hf_bert(tmp_path)
    with pytest.raises(ConfigError, match="model_type='bert', expected 'gpt2'"):
        load_hf_gpt2(tmp_path)

    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    with pytest.raises(ConfigError, match="config.json has position_embedding_type='relative_key'"):
        load_hf_bert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "xlnet"}))
    with pytest.raises(ConfigError, match="model_type='xlnet'.*supported model types: bert, roberta, distilbert, gpt2, "
                                          "llama, mistral, qwen2"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(ConfigError, match="hidden_act='relu'"):
        load_hf_bert(tmp_path)

    (tmp_path / "config.json").write_text(json.dumps(config))
    state = hf.state_dict()
    del state["bert.encoder.layer.1.output.dense.weight"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="lack 1 tensors.*encoder.layer.1.output.dense.weight"):
        load_hf_bert(tmp_path)

    rope = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_embedding="rope"))
    with pytest.raises(ConfigError, match="model.pos_embedding='rope'"):
        export_hf_gpt2(rope, tmp_path / "out")
    pre_ln = Encoder(EncoderConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, norm_first=True))
    with pytest.raises(ConfigError, match="model.norm_first=true .*no Hugging Face BERT equivalent"):
        export_hf_bert(pre_ln, tmp_path / "out_bert")
    assert not (tmp_path / "out_bert").exists()
    rotary = Encoder(EncoderConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_embedding="rope"))
    with pytest.raises(ConfigError, match="model.pos_embedding='rope' has no Hugging Face BERT equivalent"):
        export_hf_bert(rotary, tmp_path / "out_bert")
