"""RoBERTa: positions from row pad id + 1, one token type, byte-level BPE with `<s> a </s></s> b </s>` pairs. A tiny
RobertaForMaskedLM and tokenizer saved by `transformers` (padding/truncation on in the file) load into our Encoder
with equal hidden states and MLM logits; our classification encoding of pairs equals AutoTokenizer's; the export
loads back."""
from __future__ import annotations

import pytest
import torch

from lit_llm.data.classification import _encode_examples
from lit_llm.data.qa import QADataModule, encode_features, read_qa_file
from lit_llm.models.hf_io import export_hf, hf_special_ids, load_hf, load_hf_tokenizer
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


def squad_examples(n: int) -> dict[str, list]:
    """The first `n` questions of the SQuAD v1.1 dev subset (XQuAD's English source), as `encode_features` takes them."""
    records = read_qa_file(str(shared_data_dir() / "xquad_en_squad11_dev_subset" / "xquad.en.json"))[:n]
    return {key: [r[key] for r in records] for key in ("id", "context", "question", "answers")}


def hf_qa_features(tokenizer, examples: dict[str, list], max_length: int, stride: int) -> dict[str, list]:
    """transformers' examples/pytorch/question-answering/run_qa.py `prepare_train_features`: windows by
    `truncation="only_second"` with `stride`, answer tokens found from the offsets, else the cls index."""
    questions = [q.lstrip() for q in examples["question"]]
    enc = tokenizer(questions, examples["context"], truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    enc["start_positions"], enc["end_positions"] = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        input_ids, sequence_ids = enc["input_ids"][i], enc.sequence_ids(i)
        cls_index = input_ids.index(tokenizer.cls_token_id)
        answers = examples["answers"][enc["overflow_to_sample_mapping"][i]]
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start_index = sequence_ids.index(1)
        token_end_index = len(input_ids) - 1 - sequence_ids[::-1].index(1)
        if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
            enc["start_positions"].append(cls_index)
            enc["end_positions"].append(cls_index)
            continue
        while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
            token_start_index += 1
        enc["start_positions"].append(token_start_index - 1)
        while offsets[token_end_index][1] >= end_char:
            token_end_index -= 1
        enc["end_positions"].append(token_end_index + 1)
    return enc


@requires_data("xquad_en_squad11_dev_subset/xquad.en.json")
def test_qa_features_with_a_roberta_tokenizer_equal_transformers(roberta_dir, tmp_path):
    """`<s> question </s></s> context window </s>`, one token type: input ids, windows, context offsets and answer
    token positions equal transformers' fast tokenizer and run_qa.py's recipe on real SQuAD questions (among them
    questions with left whitespace, and answers starting with a character byte-level BPE splits, '£30m')."""
    out, _ = roberta_dir
    ours, ref = load_hf_tokenizer(out), transformers.AutoTokenizer.from_pretrained(out)
    special = hf_special_ids(out)
    examples = squad_examples(700)
    max_length, stride, max_query_length = 128, 32, 80
    got = encode_features(examples, ours, special["<cls>"], special["<sep>"], max_length, stride, max_query_length,
                          with_labels=True)
    expected = hf_qa_features(ref, examples, max_length, stride)
    questions = ref([q.lstrip() for q in examples["question"]], add_special_tokens=False)["input_ids"]
    assert max(map(len, questions)) <= max_query_length  # run_qa.py cuts no question: neither may we here
    assert got["input_ids"] == expected["input_ids"]
    assert got["example_index"] == expected["overflow_to_sample_mapping"]
    assert len(got["input_ids"]) > 2 * len(examples["id"])  # many windows
    assert all(set(types) == {0} for types in got["token_type_ids"])  # RoBERTa has one token type
    for i, offsets in enumerate(expected["offset_mapping"]):
        context = [s == 1 for s in expected.sequence_ids(i)]
        assert got["offset_start"][i] == [o[0] if c else -1 for o, c in zip(offsets, context)]
        assert got["offset_end"][i] == [o[1] if c else -1 for o, c in zip(offsets, context)]
    assert got["start_position"] == expected["start_positions"]
    assert got["end_position"] == expected["end_positions"]
    answered = {e for e, s in zip(got["example_index"], got["start_position"]) if s > 0}
    assert len(answered) > 0.95 * len(examples["id"])  # nearly every answer lies whole in some window
    # the data module takes RoBERTa's <s> / </s> as its cls / sep
    dm = QADataModule(train_files=str(shared_data_dir() / "xquad_en_squad11_dev_subset" / "xquad.en.json"),
                      max_length=max_length, doc_stride=stride, cache_dir=str(tmp_path))
    dm.set_tokenizer(ours, "fingerprint", special_ids=special)
    assert (dm.special_ids["cls"], dm.special_ids["sep"], dm.special_ids["pad"]) == (0, 2, 1)
