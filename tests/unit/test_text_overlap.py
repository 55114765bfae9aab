"""Generation metrics equal the reference scorers (sacrebleu, rouge-score) on the same inputs."""
from __future__ import annotations

import numpy as np
import pytest

from lit_llm.metrics.text_overlap import split_sentences, summarization_scores, translation_scores

sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

PREDS = ["the cat is running in the garden .", "Amanda baked cookies and will bring them tomorrow!",
         "A man is playing guitar on the street."]
REFS = [["a cat runs in the garden .", "the cat is running in a garden ."],
        ["Amanda baked cookies and will bring Jerry some tomorrow."],
        ["A man is playing a guitar in the street.", "Someone plays music outside."]]


def test_bleu_and_chrf_equal_sacrebleu_with_multiple_references():
    got = translation_scores(PREDS, REFS)
    streams = [[r[k] if k < len(r) else r[0] for r in REFS] for k in range(2)]  # 2 reference streams
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, streams, smooth_method="none").score, abs=1e-3)
    assert got["bleu"] > 0
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, streams).score, abs=1e-9)
    # an empty output costs recall (torchmetrics' CHRFScore would ignore it)
    empty = translation_scores([""] + PREDS[1:], [list(r) for r in REFS])["chrf"]
    assert empty == pytest.approx(sacrebleu.corpus_chrf([""] + PREDS[1:], streams).score, abs=1e-9)
    assert empty < got["chrf"]
    assert got["bleu_signature"].startswith("nrefs:2|case:mixed|eff:no|tok:13a|smooth:none|version:")


def test_rouge_equals_rouge_score_with_stemming_and_best_reference():
    got = summarization_scores(PREDS, REFS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = np.mean([max(scorer.score(t, p)[key].fmeasure for t in refs) for p, refs in zip(PREDS, REFS)])
        assert got[key] == pytest.approx(100 * expected, abs=1e-4), key
    lsum = np.mean([scorer.score_multi(["\n".join(split_sentences(t)) for t in refs],
                                       "\n".join(split_sentences(p)))["rougeLsum"].fmeasure
                    for p, refs in zip(PREDS, REFS)])
    assert got["rougeLsum"] == pytest.approx(100 * lsum, abs=1e-4)
    # sentence splitting matters for Lsum: two sentences in swapped order
    swapped = summarization_scores(["she left. he stayed home."], [["he stayed home. she left."]])
    assert swapped["rougeLsum"] == pytest.approx(100.0) and swapped["rougeL"] < 100.0


def test_sentence_split_and_bad_input():
    assert split_sentences("Hi there. How are you?\nFine!  Bye") == ["Hi there.", "How are you?", "Fine!", "Bye"]
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        translation_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="example 0 has no reference"):
        summarization_scores(["a"], [[]])
