"""Bootstrap intervals: each Statistic's value equals the reference implementation, and the intervals behave."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lit_llm.metrics import bootstrap as bs
from lit_llm.metrics.text_overlap import summarization_scores, translation_scores

sacrebleu = pytest.importorskip("sacrebleu")
pytest.importorskip("rouge_score")
tm_classification = pytest.importorskip("torchmetrics.classification")
tm_text = pytest.importorskip("torchmetrics.text")

# Translation-like pairs with 1-3 references of different lengths (padding and closest-length rules matter).
PREDS = ["the cat is running in the garden .", "Amanda baked cookies and will bring them tomorrow!",
         "A man is playing guitar on the street.", "It rained in the morning, then the sun came out.",
         "The committee approved the new budget on Tuesday."]
REFS = [["a cat runs in the garden .", "the cat is running in a garden ."],
        ["Amanda baked cookies and will bring Jerry some tomorrow."],
        ["A man is playing a guitar in the street.", "Someone plays music outside.", "A guy plays guitar outside."],
        ["It rained this morning. Then the sun came out!"],
        ["On Tuesday the committee approved the new budget.", "The new budget was approved by the committee."]]

# Summaries: several sentences, stemming-sensitive words, multiple references.
SUMMARIES = ["Amanda baked cookies. She will bring Jerry some tomorrow.",
             "The meeting was moved to Friday. Tom is organising the rooms and the catering.",
             "Kate lost her keys! She is waiting for her flatmate\nwho comes home at six."]
SUMMARY_REFS = [["Amanda baked cookies and will bring Jerry some tomorrow."],
                ["Tom moved the meeting to Friday. He organises rooms.", "The meeting is on Friday now."],
                ["Kate has lost her keys. Her flatmate will be home at 6 and let her in.", "Kate lost the keys."]]


def _random_translations(n: int, seed: int):
    """Sentences over a small vocabulary, each reference a perturbed copy so that 4-grams match."""
    rng = np.random.default_rng(seed)
    vocab = "the a cat dog sat on mat . , ran quickly home big small red".split()
    preds = [" ".join(rng.choice(vocab, size=rng.integers(3, 15))) for _ in range(n)]

    def perturb(pred: str) -> str:
        words = pred.split()
        words[rng.integers(0, len(words))] = str(rng.choice(vocab))
        return " ".join(words[:rng.integers(2, len(words) + 1)] + list(rng.choice(vocab, size=rng.integers(0, 3))))

    return preds, [[perturb(p) for _ in range(rng.integers(1, 4))] for p in preds]


# --- values equal the reference implementations ------------------------------------------------------------------

def test_accuracy_equals_torchmetrics_micro_accuracy():
    rng = np.random.default_rng(0)
    preds, labels = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    expected = tm_classification.MulticlassAccuracy(num_classes=4, average="micro")(
        torch.tensor(preds), torch.tensor(labels)).item()
    stat = bs.accuracy_statistic(preds, labels)
    assert stat.value() == pytest.approx(expected, abs=1e-6)
    assert 0.1 < stat.value() < 0.5  # 0-1 scale
    assert bs.mean_statistic([1.0, 0.0, 0.5, 0.5], "toy").value() == pytest.approx(0.5)


def _macro_f1_cases():
    rng = np.random.default_rng(7)
    for n, c in [(50, 5), (200, 7), (13, 3), (400, 12)]:
        yield f"random_n{n}_c{c}", rng.integers(0, c, n), rng.integers(0, c, n), c
    # class 3 absent from predictions and labels; class 2 labelled but never predicted
    yield "absent_and_never_predicted", [0, 1, 1, 0, 1, 0], [0, 1, 2, 2, 1, 0], 4
    # class 2 predicted but never labelled (fp only), class 4 absent
    yield "predicted_never_labelled", [2, 2, 0, 1, 3], [0, 1, 0, 1, 3], 5
    yield "all_correct_with_absent_classes", [1, 1, 3], [1, 1, 3], 6
    yield "all_wrong", [1, 0, 0], [0, 1, 2], 3
    yield "single_example", [2], [2], 3


@pytest.mark.parametrize("preds,labels,num_classes",
                         [case[1:] for case in _macro_f1_cases()], ids=[case[0] for case in _macro_f1_cases()])
def test_macro_f1_equals_torchmetrics_including_absent_classes(preds, labels, num_classes):
    expected = tm_classification.MulticlassF1Score(num_classes=num_classes, average="macro")(
        torch.tensor(preds), torch.tensor(labels)).item()
    assert bs.macro_f1_statistic(preds, labels, num_classes).value() == pytest.approx(expected, abs=1e-6)


def test_macro_f1_leaves_out_classes_absent_from_both_sides():
    # class 0 perfect, class 1 one false positive, class 2 never predicted (F1 0), class 3 absent everywhere
    stat = bs.macro_f1_statistic([0, 1, 1], [0, 1, 2], num_classes=4)
    tp, fp, fn = stat.features.sum(axis=0).reshape(3, 4)
    assert tp.tolist() == [1, 1, 0, 0] and fp.tolist() == [0, 1, 0, 0] and fn.tolist() == [0, 0, 1, 0]
    assert stat.value() == pytest.approx((1.0 + 2 * 1 / (2 * 1 + 1) + 0.0) / 3)  # class 3 not in the mean


def test_squad_equals_torchmetrics_squad():
    preds = ["Denver Broncos", "the Broncos", "1976.", "", "Santa Clara, California", "in the year of 2010",
             "gold", "An Apple a day", "Paris"]
    refs = [["Denver Broncos", "Broncos"], ["Denver Broncos"], ["1976"], ["the"], ["Levi's Stadium", "Santa Clara"],
            ["2010"], ["golden"], ["the apple, a day!"], ["Paris, France", "paris"]]
    expected = tm_text.SQuAD()(
        [{"prediction_text": p, "id": str(i)} for i, p in enumerate(preds)],
        [{"answers": {"answer_start": [0] * len(r), "text": r}, "id": str(i)} for i, r in enumerate(refs)])
    got = bs.squad_statistics(preds, refs)
    assert got["em"].value() == pytest.approx(expected["exact_match"].item(), abs=1e-4)
    assert got["f1"].value() == pytest.approx(expected["f1"].item(), abs=1e-4)
    assert 0 < got["em"].value() < got["f1"].value() < 100  # partial overlaps count in F1 only
    em, f1 = got["em"].features[:, 0], got["f1"].features[:, 0]
    assert em[7] == 100 and em[3] == 100 and f1[2] == 100  # articles, case, punctuation; empty vs "the"
    assert f1[4] == pytest.approx(100 * 2 * (2 / 3) * 1 / (2 / 3 + 1))  # best of the two references


def test_bleu_equals_sacrebleu_and_translation_scores():
    preds, refs = _random_translations(40, seed=1)
    for p, r in [(PREDS, REFS), (preds, refs)]:
        stat = bs.bleu_statistic(p, r)
        streams = [[x[k] if k < len(x) else x[0] for x in r] for k in range(max(map(len, r)))]
        assert stat.value() == pytest.approx(sacrebleu.corpus_bleu(p, streams, smooth_method="none").score, abs=1e-9)
        # translation_scores goes through torchmetrics in float32: equal to its precision
        assert stat.value() == pytest.approx(translation_scores(p, r)["bleu"], rel=1e-6)
        assert stat.value() > 10
    assert translation_scores(PREDS, REFS)["bleu_signature"] in bs.bleu_statistic(PREDS, REFS).definition


def test_chrf_equals_sacrebleu_corpus_chrf():
    preds, refs = _random_translations(30, seed=2)
    preds[3] = ""  # an empty hypothesis must still count its reference's n-grams (recall)
    for p, r in [(PREDS, REFS), (preds, refs)]:
        streams = [[x[k] if k < len(x) else x[0] for x in r] for k in range(max(map(len, r)))]
        assert bs.chrf_statistic(p, r).value() == pytest.approx(sacrebleu.corpus_chrf(p, streams).score, abs=1e-9)
    assert "nc:6|nw:0" in bs.chrf_statistic(PREDS, REFS).definition


def test_chrf_close_to_logged_torchmetrics_chrf_on_ordinary_sentences():
    # torchmetrics CHRFScore (translation_scores) averages per-order F instead of precision/recall: close, not equal
    assert bs.chrf_statistic(PREDS, REFS).value() == pytest.approx(translation_scores(PREDS, REFS)["chrf"], abs=1e-3)


def test_rouge_equals_summarization_scores():
    expected = summarization_scores(SUMMARIES, SUMMARY_REFS)
    got = bs.rouge_statistics(SUMMARIES, SUMMARY_REFS)
    assert set(got) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    for key, value in expected.items():
        # rouge1/2/L of summarization_scores are float32 (torchmetrics); Lsum is float64
        assert got[key].value() == pytest.approx(value, rel=1e-6, abs=1e-5), key
    assert got["rougeLsum"].value() == pytest.approx(expected["rougeLsum"], abs=1e-9)
    assert got["rougeLsum"].value() != pytest.approx(got["rougeL"].value(), abs=1e-3)  # sentence split matters


def test_perplexity_equals_torchmetrics_perplexity():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 17, 11, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 11, (6, 17), generator=gen)
    expected = tm_text.Perplexity()(logits, target).item()
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), target.reshape(-1), reduction="none")
    blocks = nll.reshape(6, 17)
    # blocks of unequal length: split each row in two
    sums = torch.cat([blocks[:, :5].sum(1), blocks[:, 5:].sum(1)]).numpy()
    counts = [5] * 6 + [12] * 6
    assert bs.perplexity_statistic(sums, counts).value() == pytest.approx(expected, rel=1e-6)


def test_sentence_scores():
    bleu = bs.sentence_scores("bleu", PREDS, REFS)
    assert bleu == pytest.approx([sacrebleu.sentence_bleu(p, r).score for p, r in zip(PREDS, REFS)])
    chrf = bs.sentence_scores("chrf", PREDS, REFS)
    assert chrf == pytest.approx([sacrebleu.sentence_chrf(p, r).score for p, r in zip(PREDS, REFS)])
    rouge = bs.sentence_scores("rouge", SUMMARIES, SUMMARY_REFS)
    assert rouge == pytest.approx(bs.rouge_statistics(SUMMARIES, SUMMARY_REFS)["rougeL"].features[:, 0].tolist())
    f1 = bs.sentence_scores("squad_f1", ["the Broncos", "1976"], [["Denver Broncos"], ["1976"]])
    assert f1 == pytest.approx([100 * 2 / 3, 100.0])
    with pytest.raises(ValueError, match="unknown kind"):
        bs.sentence_scores("meteor", PREDS, REFS)


# --- interval behaviour ------------------------------------------------------------------------------------------

def _bernoulli(n: int, p: float, seed: int) -> bs.Statistic:
    return bs.mean_statistic(np.random.default_rng(seed).random(n) < p, "Bernoulli mean")


def _width(result: dict) -> float:
    return result["high"] - result["low"]


def test_interval_contains_estimate_and_is_deterministic_per_seed():
    stat = bs.bleu_statistic(*_random_translations(60, seed=3))
    first, again, other = (bs.bootstrap_interval(stat, resamples=300, seed=s) for s in (0, 0, 1))
    assert first == again
    assert (first["low"], first["high"]) != (other["low"], other["high"])
    assert first["low"] < first["estimate"] < first["high"]
    assert first["estimate"] == stat.value()
    assert json.loads(json.dumps(first)) == first  # plain floats, json-serialisable
    assert first["method"] == "percentile bootstrap over examples"
    assert (first["n"], first["resamples"], first["confidence"], first["seed"]) == (60, 300, 0.95, 0)
    assert all(type(first[k]) is float for k in ("estimate", "low", "high", "confidence"))


def test_interval_equals_naive_resampling_of_sums():
    # same draws as the chunked implementation, summed the slow obvious way: corpus statistic per resample
    stat = bs.macro_f1_statistic(*np.random.default_rng(4).integers(0, 5, (2, 80)), num_classes=5)
    rng = np.random.default_rng(11)
    values = []
    for start in range(0, 250, bs._CHUNK):
        for idx in rng.integers(0, stat.n, size=(min(bs._CHUNK, 250 - start), stat.n)):
            values.append(stat.fn(stat.features[idx].sum(axis=0)))
    got = bs.bootstrap_interval(stat, resamples=250, confidence=0.9, seed=11)
    assert [got["low"], got["high"]] == pytest.approx(np.percentile(values, [5, 95]).tolist(), abs=1e-12)


def test_interval_shrinks_with_more_examples():
    small = bs.bootstrap_interval(_bernoulli(100, 0.7, seed=0))
    large = bs.bootstrap_interval(_bernoulli(10_000, 0.7, seed=0))
    assert _width(large) < _width(small) / 5
    assert large["low"] < 0.7 < large["high"]


def test_interval_width_matches_normal_approximation():
    values = np.random.default_rng(5).permutation(np.repeat([0.0, 1.0], 500))  # mean exactly 0.5
    result = bs.bootstrap_interval(bs.mean_statistic(values, "coin"), resamples=1000, seed=0)
    assert _width(result) == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 1000), rel=0.15)
    assert result["low"] < 0.5 < result["high"]


def test_single_example_gives_a_point_interval():
    for stat in (bs.mean_statistic([0.3], "one"), bs.bleu_statistic(PREDS[:1], REFS[:1])):
        result = bs.bootstrap_interval(stat, resamples=50)
        assert result["low"] == result["high"] == result["estimate"] == stat.value()


def test_large_inputs_stay_cheap():
    features = np.random.default_rng(6).random((50_000, 30))
    stat = bs.Statistic(features, lambda s: float(s[0] / s[1]), "ratio of two columns")
    result = bs.bootstrap_interval(stat, resamples=200)
    assert result["low"] < result["estimate"] < result["high"]


def test_invalid_arguments_raise():
    empty = bs.mean_statistic([], "nothing")
    with pytest.raises(ValueError, match="0 examples"):
        bs.bootstrap_interval(empty)
    with pytest.raises(ValueError, match="0 examples"):
        empty.value()
    stat = _bernoulli(20, 0.5, seed=0)
    for confidence in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="confidence"):
            bs.bootstrap_interval(stat, confidence=confidence)
    for resamples in (0, -3):
        with pytest.raises(ValueError, match="resamples"):
            bs.bootstrap_interval(stat, resamples=resamples)
    with pytest.raises(ValueError, match="features"):
        bs.Statistic(np.zeros(3), float, "not 2-d")
    with pytest.raises(ValueError, match="predictions"):
        bs.bleu_statistic(PREDS, REFS[:2])
    with pytest.raises(ValueError, match="outside"):
        bs.macro_f1_statistic([0, 3], [0, 1], num_classes=3)
