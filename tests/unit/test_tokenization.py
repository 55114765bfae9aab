"""Tokenizers: special ids, exact round trips, the training cache, loading tokenizer.json files."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from lit_llm.errors import ConfigError
from lit_llm.tokenization import (
    SPECIAL_TOKENS,
    get_tokenizer,
    load_tokenizer,
    special_ids,
    token_id,
    tokenizer_fingerprint,
    train_bpe,
    train_char,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "  indented line\twith a tab\nand a newline  ",
    "How vexingly quick daft zebras jump; the fox, the dog and the zebras.",
] * 5


def shared_data_dir() -> Path | None:
    env = os.environ.get("LIT_LLM_DATA_DIR")
    candidate = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


class CountingTexts:
    """A `texts` callable for get_tokenizer that counts how often training asked for the corpus."""

    def __init__(self, texts):
        self.texts, self.calls = list(texts), 0

    def __call__(self):
        self.calls += 1
        return iter(self.texts)


@pytest.mark.parametrize("make", [lambda: train_bpe(TEXTS, vocab_size=300, min_frequency=1), lambda: train_char(TEXTS)])
def test_special_tokens_are_ids_0_to_6(make):
    tok = make()
    assert special_ids(tok) == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert token_id(tok, "<eos>") == 3
    with pytest.raises(KeyError):
        token_id(tok, "<nope>")


def test_char_vocab_is_specials_then_sorted_characters():
    tok = train_char(["ba\n", "c a"])
    vocab = tok.get_vocab()
    chars = sorted(set("ba\nc a"))
    assert [vocab[c] for c in chars] == list(range(len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + len(chars)))
    assert tok.get_vocab_size() == len(SPECIAL_TOKENS) + len(chars)


def test_char_round_trip_is_exact_and_unknown_chars_map_to_unk():
    text = "  Hello,\n\tworld!  \r\n\nLast line   "
    tok = train_char([text])
    ids = tok.encode(text).ids
    assert len(ids) == len(text)  # one token per character, nothing added
    assert tok.decode(ids) == text
    assert tok.encode("H€!").ids == [token_id(tok, "H"), token_id(tok, "<unk>"), token_id(tok, "!")]


def test_char_round_trip_on_shakespeare():
    data = shared_data_dir()
    path = data / "tinyshakespeare" / "input.txt" if data else None
    if path is None or not path.is_file():
        pytest.skip("tinyshakespeare not found (set LIT_LLM_DATA_DIR or provide ../shared/data)")
    text = path.read_text(encoding="utf-8")
    tok = train_char([text])
    assert tok.get_vocab_size() == len(SPECIAL_TOKENS) + 65  # nanoGPT's shakespeare_char has 65 characters
    ids = tok.encode(text).ids
    assert len(ids) == len(text) and tok.decode(ids) == text


def test_bpe_round_trip_including_unseen_characters():
    tok = train_bpe(TEXTS, vocab_size=320, min_frequency=2)
    for s in TEXTS[:4] + ["unseen: ünïcödé € 😀 and\n\n  spaces  "]:
        enc = tok.encode(s)
        assert token_id(tok, "<unk>") not in enc.ids  # byte-level: nothing is unknown
        assert tok.decode(enc.ids) == s
    # no template: special tokens are never added implicitly
    assert tok.encode("fox", add_special_tokens=True).ids == tok.encode("fox", add_special_tokens=False).ids


def test_bpe_learns_merges_and_accepts_batched_texts():
    tok = train_bpe(iter([TEXTS[:3], TEXTS[3:]]), vocab_size=300, min_frequency=2)  # lists of str are fine too
    assert len(tok.encode("the quick brown fox").ids) < len("the quick brown fox")


def test_bpe_vocab_too_small_names_the_key():
    with pytest.raises(ConfigError, match="tokenizer.vocab_size"):
        train_bpe(TEXTS, vocab_size=100)


def test_get_tokenizer_caches_and_does_not_retrain(tmp_path, caplog):
    texts = CountingTexts(TEXTS)
    with caplog.at_level(logging.INFO, logger="lit_llm"):
        tok1, fp1 = get_tokenizer("bpe", texts, "corpus-fp", str(tmp_path), vocab_size=300, min_frequency=1)
    assert texts.calls == 1 and "trained" in caplog.text
    files = list((tmp_path / "tokenizers").iterdir())
    assert len(files) == 1 and files[0].name.startswith("bpe-") and (files[0] / "tokenizer.json").is_file()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lit_llm"):
        tok2, fp2 = get_tokenizer("bpe", texts, "corpus-fp", str(tmp_path), vocab_size=300, min_frequency=1)
    assert texts.calls == 1, "a cache hit must not read the corpus again"
    assert "loaded from cache" in caplog.text
    assert fp1 == fp2 == tokenizer_fingerprint(tok2) == tokenizer_fingerprint(tok1)
    assert tok1.encode(TEXTS[0]).ids == tok2.encode(TEXTS[0]).ids


def test_get_tokenizer_cache_key_covers_settings_and_corpus(tmp_path):
    texts = CountingTexts(TEXTS)
    get_tokenizer("bpe", texts, "fp-a", tmp_path, vocab_size=300, min_frequency=1)
    get_tokenizer("bpe", texts, "fp-a", tmp_path, vocab_size=310, min_frequency=1)  # vocab size
    get_tokenizer("bpe", texts, "fp-b", tmp_path, vocab_size=300, min_frequency=1)  # corpus
    get_tokenizer("bpe", texts, "fp-a", tmp_path, vocab_size=300, min_frequency=2)  # min frequency
    assert texts.calls == 4
    assert len(list((tmp_path / "tokenizers").glob("bpe-*/tokenizer.json"))) == 4
    # a character vocabulary does not depend on vocab_size: no retraining
    get_tokenizer("char", texts, "fp-a", tmp_path, vocab_size=300)
    get_tokenizer("char", texts, "fp-a", tmp_path, vocab_size=999)
    assert texts.calls == 5
    # nothing temporary is left behind
    assert not [p for p in (tmp_path / "tokenizers").iterdir() if ".tmp-" in p.name]


def test_pretrained_loads_a_saved_tokenizer_json(tmp_path):
    tok = train_char(TEXTS)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    loaded, fp = get_tokenizer("pretrained", None, "", tmp_path / "cache", path=str(path))
    assert fp == tokenizer_fingerprint(tok)
    assert loaded.encode(TEXTS[0]).ids == tok.encode(TEXTS[0]).ids
    assert not (tmp_path / "cache").exists()  # nothing trained, nothing cached


def test_load_tokenizer_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"tokenizer\.path=.*no such file"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="tokenizer.path is not set"):
        get_tokenizer("pretrained", None, "", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="tokenizer.path=.*not a valid tokenizer.json"):
        load_tokenizer(bad)
    # a tokenizer without our special tokens is refused with an explanation
    plain = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    plain.save(str(tmp_path / "plain.json"))
    with pytest.raises(ConfigError, match=r"lacks the special tokens .*<pad>"):
        load_tokenizer(tmp_path / "plain.json")


def test_unknown_kind_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.kind='wordpiece'"):
        get_tokenizer("wordpiece", lambda: TEXTS, "fp", tmp_path)


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_lowercase_gives_an_uncased_vocabulary_with_its_own_cache_key(tmp_path, kind):
    cased, _ = get_tokenizer(kind, CountingTexts(TEXTS), "corpus-fp", tmp_path, vocab_size=300, min_frequency=1)
    uncased, _ = get_tokenizer(kind, CountingTexts(TEXTS), "corpus-fp", tmp_path, vocab_size=300, min_frequency=1,
                               lowercase=True)
    assert cased.encode("The Fox").ids != cased.encode("the fox").ids
    assert uncased.encode("The Fox").ids == uncased.encode("the fox").ids
    assert uncased.decode(uncased.encode("The Fox").ids) == "the fox"
    if kind == "char":  # (byte-level BPE keeps all 256 bytes in its alphabet either way)
        assert "T" not in uncased.get_vocab() and "T" in cased.get_vocab()
    assert len(list((tmp_path / "tokenizers").glob("*/tokenizer.json"))) == 2  # two cache entries, not one overwritten
    saved = tmp_path / "uncased.json"
    uncased.save(str(saved))
    assert load_tokenizer(saved).encode("ABC").ids == uncased.encode("abc").ids  # the normalizer travels
    with pytest.raises(ConfigError, match=r"tokenizer\.lowercase=true does not apply to tokenizer\.kind=pretrained"):
        get_tokenizer("pretrained", None, "", tmp_path, path=str(saved), lowercase=True)
