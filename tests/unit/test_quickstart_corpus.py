"""The shipped quickstart corpus is exactly what the generator produces, and looks like a corpus."""
from __future__ import annotations

from pathlib import Path

import pytest

from lit_llm.corpora import make_quickstart as gen

CORPUS = Path(gen.__file__).resolve().parent / "quickstart.txt"
TARGET = gen.DEFAULT_SIZE_KB * gen.BYTES_PER_KB


@pytest.fixture(scope="module")
def shipped() -> str:
    return CORPUS.read_bytes().decode("utf-8")


def test_shipped_file_is_reproducible(shipped: str) -> None:
    assert gen.generate_corpus(gen.DEFAULT_SEED, TARGET) == shipped


def test_generation_is_deterministic() -> None:
    assert gen.generate_corpus(3, 20_000) == gen.generate_corpus(3, 20_000)


def test_different_seeds_differ() -> None:
    a, b = gen.generate_corpus(0, 20_000), gen.generate_corpus(1, 20_000)
    assert a != b
    assert a.splitlines()[:5] != b.splitlines()[:5]


def test_one_document_per_line(shipped: str) -> None:
    assert 250_000 <= len(shipped.encode("utf-8")) <= 350_000
    assert shipped.endswith("\n") and not shipped.endswith("\n\n")
    lines = shipped[:-1].split("\n")
    assert len(lines) > 500
    for line in lines:
        assert line and line == line.strip()
        assert line[0].isupper() or line[0] == '"'
        assert line[-1] in '.!?"'
        assert "{" not in line and "}" not in line
        assert 2 <= sum(line.count(p) for p in ".!?") <= 30


def test_vocabulary_and_stats(shipped: str) -> None:
    stats = gen.corpus_stats(shipped)
    assert 300 <= stats["distinct_words"] <= 2000
    assert stats["documents"] == shipped.count("\n")
    assert 3.5 < stats["char_unigram_entropy_bits"] < 5.5
    assert abs(stats["char_unigram_perplexity"] - 2 ** stats["char_unigram_entropy_bits"]) < 0.05


def test_target_size_is_respected() -> None:
    text = gen.generate_corpus(5, 10_000)
    longest = max(len(line) for line in text.splitlines())
    assert 10_000 <= len(text) <= 10_000 + longest + 1
