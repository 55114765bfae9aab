"""Hugging Face tokenizers as `transformers` saves them, padding and truncation enabled in the file (as
sentence-transformers models ship them): ours give exactly AutoTokenizer's ids on real sentences, and the
file's padding/truncation never reach our pipeline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_llm.data.classification import _encode_examples
from lit_llm.data.seq2seq import encode_pairs
from lit_llm.errors import ConfigError
from lit_llm.models.hf_io import hf_chat_template, hf_special_ids, load_hf_tokenizer
from lit_llm.tokenization import tokenizer_from_str
from tests.conftest import requires_data, shared_data_dir

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

pytestmark = requires_data("sst2/train.tsv", "rte/dev.tsv")
FILE_LENGTH = 128  # the fixed padding and truncation length written into every tokenizer.json below


def sst2(n: int = 1000, skip: int = 0) -> list[str]:
    lines = (shared_data_dir() / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1 + skip:]
    return [line.split("\t")[0] for line in lines[:n]]


def rte_pairs(n: int = 200) -> list[tuple[str, str]]:
    lines = (shared_data_dir() / "rte" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.split("\t")[1:3]) for line in lines[:n]]


def save(tok: Tokenizer, hf_cls, out: Path, **special) -> Path:
    """Enable fixed padding and truncation in the backend (the settings that broke imports), wrap it as
    `transformers` does, and save_pretrained."""
    tok.enable_padding(length=FILE_LENGTH, pad_id=tok.token_to_id(special["pad_token"]), pad_token=special["pad_token"])
    tok.enable_truncation(FILE_LENGTH)
    hf_cls(tokenizer_object=tok, **special).save_pretrained(out)
    saved = json.loads((out / "tokenizer.json").read_text())
    assert saved["padding"]["strategy"] == {"Fixed": FILE_LENGTH} and saved["truncation"]["max_length"] == FILE_LENGTH
    return out


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory) -> Path:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(sst2(4000, skip=2000) + [s for p in rte_pairs(300) for s in p], trainers.WordPieceTrainer(
        vocab_size=3000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return save(tok, transformers.BertTokenizerFast, tmp_path_factory.mktemp("bert"), pad_token="[PAD]",
                unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def test_wordpiece_single_texts_and_pairs_equal_auto_tokenizer(wordpiece):
    ours, ref = load_hf_tokenizer(wordpiece), transformers.AutoTokenizer.from_pretrained(wordpiece)
    assert ours.padding is None and ours.truncation is None  # the file's settings are not ours
    texts = sst2()
    assert [e.ids for e in ours.encode_batch(texts, add_special_tokens=False)] == \
        ref(texts, add_special_tokens=False)["input_ids"]
    ids = hf_special_ids(wordpiece)  # declared in tokenizer_config.json
    assert ids == {"<pad>": 0, "<unk>": 1, "<cls>": 2, "<sep>": 3, "<mask>": 4}
    # the classification data path: [CLS] a [SEP] (b [SEP]) with longest-first truncation, as transformers does it
    for max_length in (512, 24):
        single = _encode_examples({"text": texts, "label": [0] * len(texts)}, ours, 2, 3, max_length)
        assert single["input_ids"] == ref(texts, truncation=True, max_length=max_length)["input_ids"]
        a, b = map(list, zip(*rte_pairs()))
        pairs = _encode_examples({"text": a, "text_pair": b, "label": [0] * len(a)}, ours, 2, 3, max_length)
        expected = ref(a, b, truncation=True, max_length=max_length)
        assert pairs["input_ids"] == expected["input_ids"]
        assert pairs["token_type_ids"] == expected["token_type_ids"]
    assert max(map(len, single["input_ids"])) == 24 < FILE_LENGTH


def test_byte_level_bpe_equals_auto_tokenizer(tmp_path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(sst2(4000, skip=2000), trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out = save(tok, transformers.GPT2TokenizerFast, tmp_path, pad_token="<|endoftext|>", eos_token="<|endoftext|>",
               bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    ours, ref = load_hf_tokenizer(out), transformers.AutoTokenizer.from_pretrained(out)
    texts = sst2() + ["  Spaces, \u00e9t\u00e9 and emoji \U0001f600 \n new line"]
    assert [e.ids for e in ours.encode_batch(texts, add_special_tokens=False)] == \
        ref(texts, add_special_tokens=False)["input_ids"]
    assert ours.decode(ours.encode(texts[-1]).ids) == texts[-1]


def test_unigram_sentencepiece_equals_auto_tokenizer_and_seq2seq_targets(tmp_path):
    from tokenizers.implementations import SentencePieceUnigramTokenizer

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(sst2(4000, skip=2000), vocab_size=1500, special_tokens=["<pad>", "</s>", "<unk>"],
                           unk_token="<unk>")
    tok = sp._tokenizer
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])  # T5's
    out = save(tok, transformers.PreTrainedTokenizerFast, tmp_path, pad_token="<pad>", eos_token="</s>",
               unk_token="<unk>")
    ours, ref = load_hf_tokenizer(out), transformers.AutoTokenizer.from_pretrained(out)
    texts = sst2()
    assert [e.ids for e in ours.encode_batch(texts, add_special_tokens=False)] == \
        ref(texts, add_special_tokens=False)["input_ids"]
    # seq2seq: source and target end with </s>, cut to the data's lengths as transformers' truncation does
    pairs = encode_pairs({"source": texts, "target": texts[::-1]}, ours, eos_id=1, prefix="", max_source_length=16,
                         max_target_length=12)
    assert pairs["source_ids"] == ref(texts, truncation=True, max_length=16)["input_ids"]
    assert pairs["target_ids"] == ref(text_target=texts[::-1], truncation=True, max_length=12)["input_ids"]


def test_checkpoint_tokenizers_drop_the_file_settings_and_pretrained_keeps_the_chat_template(wordpiece, tmp_path):
    padded = Tokenizer.from_file(str(wordpiece / "tokenizer.json"))
    assert len(padded.encode("a film").ids) == FILE_LENGTH  # what the file alone does
    assert tokenizer_from_str(padded.to_str()).encode("a film").ids == padded.encode("a film").ids[:4]

    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    config = json.loads((wordpiece / "tokenizer_config.json").read_text())
    for name, files in {"config": {"tokenizer_config.json": {**config, "chat_template": template}},
                        "named": {"tokenizer_config.json": {**config, "chat_template": [
                            {"name": "tool_use", "template": "x"}, {"name": "default", "template": template}]}},
                        "jinja": {"tokenizer_config.json": config, "chat_template.jinja": template}}.items():
        d = tmp_path / name
        d.mkdir()
        for file, content in files.items():
            (d / file).write_text(content if isinstance(content, str) else json.dumps(content))
        assert hf_chat_template(d) == template, name
    assert hf_chat_template(wordpiece) is None


@pytest.fixture(scope="module")
def byte_level_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(sst2(4000, skip=2000) + [s for p in rte_pairs(300) for s in p], trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


@pytest.mark.parametrize("family, options", [
    ("gpt2", {}), ("gpt2", {"add_prefix_space": True, "add_bos_token": True, "add_eos_token": True}),
    ("roberta", {}), ("roberta", {"add_prefix_space": True, "trim_offsets": False}),
])
def test_vocab_json_and_merges_without_tokenizer_json_equal_auto_tokenizer(byte_level_bpe, tmp_path, family, options):
    """A GPT-2 / RoBERTa directory as the hub's older checkpoints ship it: vocab.json + merges.txt +
    tokenizer_config.json, no tokenizer.json. Ids (single texts and pairs, with their special tokens), offsets and
    special ids equal what AutoTokenizer builds from the same files."""
    byte_level_bpe.model.save(str(tmp_path))  # vocab.json + merges.txt
    files = {"vocab": str(tmp_path / "vocab.json"), "merges": str(tmp_path / "merges.txt")}
    if family == "gpt2":
        special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
        transformers.GPT2Tokenizer(**files, **special).save_pretrained(tmp_path)
    else:
        transformers.RobertaTokenizer(**files).save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()  # transformers 5 writes one; the files alone must do
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())  # options as older checkpoints keep them
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, **options}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
    ours, ref = load_hf_tokenizer(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert all(getattr(ref, k) == v for k, v in options.items())  # the options reached transformers
    texts = sst2() + ["  Spaces, \u00e9t\u00e9 and emoji \U0001f600 \n new line", "a <s> b </s> <mask>"]
    expected = ref(texts, return_offsets_mapping=True)
    got = ours.encode_batch(texts)
    assert [e.ids for e in got] == expected["input_ids"]
    assert [e.offsets for e in got] == [list(o) for o in expected["offset_mapping"]]
    a, b = map(list, zip(*rte_pairs()))
    assert [e.ids for e in ours.encode_batch(list(zip(a, b)))] == ref(a, b)["input_ids"]
    assert [e.ids for e in ours.encode_batch(texts, add_special_tokens=False)] == \
        ref(texts, add_special_tokens=False)["input_ids"]
    assert ours.decode(ours.encode(texts[-2], add_special_tokens=False).ids) == ref.decode(
        ref(texts[-2], add_special_tokens=False)["input_ids"])
    ids = hf_special_ids(tmp_path)
    for ours_name, theirs in {"<bos>": ref.bos_token_id, "<eos>": ref.eos_token_id, "<unk>": ref.unk_token_id,
                              "<cls>": ref.cls_token_id, "<sep>": ref.sep_token_id, "<mask>": ref.mask_token_id,
                              "<pad>": ref.pad_token_id}.items():
        assert ids.get(ours_name) == theirs or theirs is None, ours_name


def test_an_unknown_tokenizer_class_over_vocab_json_is_a_clear_error(byte_level_bpe, tmp_path):
    byte_level_bpe.model.save(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer"}))
    with pytest.raises(ConfigError, match="tokenizer_config.json: tokenizer_class='CLIPTokenizer'.*tokenizer.json"):
        load_hf_tokenizer(tmp_path)
