"""RoBERTa: positions from row pad id + 1, one token type, byte-level BPE with `<s> a </s></s> b </s>` pairs. A tiny
RobertaForMaskedLM and tokenizer saved by `transformers` (padding/truncation on in the file) load into our Encoder
with equal hidden states and MLM logits; our classification encoding of pairs equals AutoTokenizer's; the export
loads back."""
from __future__ import annotations

import pytest
import torch

from lit_llm.data.classification import _encode_examples
from lit_llm.models.hf_io import export_hf, hf_special_ids, load_hf
from tests.conftest import requires_data, shared_data_dir

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

pytestmark = requires_data("rte/train.tsv")


def rte(n: int, skip: int = 0) -> list[tuple[str, str]]:
    lines = (shared_data_dir() / "rte" / "train.tsv").read_text(encoding="utf-8").splitlines()[1 + skip:]
    return [tuple(line.split("\t")[1:3]) for line in lines[:n]]


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("roberta")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator([s for p in rte(1500, skip=300) for s in p], trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    tok.enable_padding(length=128, pad_id=1, pad_token="<pad>")
    tok.enable_truncation(128)
    transformers.RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                      cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                      mask_token="<mask>").save_pretrained(out)
    torch.manual_seed(0)
    model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=66, pad_token_id=1, type_vocab_size=1)).eval()
    model.save_pretrained(out)
    return out, model


def test_roberta_loads_with_equal_hidden_states_mlm_logits_and_exports(roberta_dir, tmp_path):
    out, hf = roberta_dir
    ours, tokenizer = load_hf(out)
    assert ours.config.position_offset == 2 and ours.config.block_size == 64 and ours.config.type_vocab_size == 1
    ids = torch.randint(3, 1000, (2, 20))
    mask = torch.ones_like(ids)
    ids[1, 15:], mask[1, 15:] = 1, 0  # right padding
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, output_hidden_states=True)
        hidden = ours(ids, attention_mask=mask)
        real = mask.bool()
        torch.testing.assert_close(hidden[real], theirs.hidden_states[-1][real], atol=1e-4, rtol=0)
        torch.testing.assert_close(ours.mlm_logits(hidden)[real], theirs.logits[real], atol=1e-4, rtol=0)
    name, path = export_hf(ours, tmp_path / "export", tokenizer)
    back = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
    assert name == "RoBERTa" and back.config.model_type == "roberta"
    with torch.no_grad():
        torch.testing.assert_close(back(ids, attention_mask=mask).logits[real], theirs.logits[real], atol=1e-4, rtol=0)


def test_roberta_pairs_encode_as_auto_tokenizer(roberta_dir):
    out, _ = roberta_dir
    ours, ref = load_hf(out)[1], transformers.AutoTokenizer.from_pretrained(out)
    special = hf_special_ids(out)
    assert special["<cls>"] == 0 and special["<sep>"] == 2 and special["<pad>"] == 1 and special["<mask>"] == 4
    a, b = map(list, zip(*rte(300)))
    for max_length in (256, 40):
        got = _encode_examples({"text": a, "text_pair": b, "label": [0] * len(a)}, ours, 0, 2, max_length)
        assert got["input_ids"] == ref(a, b, truncation=True, max_length=max_length)["input_ids"]
        assert all(set(types) == {0} for types in got["token_type_ids"])  # RoBERTa has one token type
        single = _encode_examples({"text": a, "label": [0] * len(a)}, ours, 0, 2, max_length)
        assert single["input_ids"] == ref(a, truncation=True, max_length=max_length)["input_ids"]


def test_distilbert_loads_with_equal_outputs_and_exports_as_bert(tmp_path):
    """DistilBERT: BERT without token types, other names; our export writes it in BERT's format (same outputs)."""
    torch.manual_seed(0)
    hf = transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=40)).eval()
    with torch.no_grad():  # random LayerNorms and biases: a mapping mistake cannot hide behind ones and zeros
        for name, p in hf.named_parameters():
            if "layer_norm" in name.lower() or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.3 + (1 if name.endswith("weight") else 0))
    hf.save_pretrained(tmp_path / "hf")
    ours, _ = load_hf(tmp_path / "hf")
    assert ours.config.type_vocab_size == 0 and ours.tte is None
    ids = torch.randint(1, 100, (2, 24))
    mask = torch.ones_like(ids)
    mask[0, 18:] = 0
    real = mask.bool()
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, output_hidden_states=True)
        hidden = ours(ids, attention_mask=mask)
        torch.testing.assert_close(hidden[real], theirs.hidden_states[-1][real], atol=1e-4, rtol=0)
        torch.testing.assert_close(ours.mlm_logits(hidden)[real], theirs.logits[real], atol=1e-4, rtol=0)
    name, path = export_hf(ours, tmp_path / "export")
    back = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
    assert name == "BERT"
    with torch.no_grad():
        torch.testing.assert_close(back(ids, attention_mask=mask).logits[real], theirs.logits[real], atol=1e-4, rtol=0)
