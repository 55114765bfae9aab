"""Paired tests between two systems on the same examples: against sacrebleu's paired bootstrap and hand counts."""
from __future__ import annotations

import numpy as np
import pytest

from lit_llm.metrics import bootstrap as bs
from lit_llm.metrics.paired import (
    NotPaired,
    binary_outcomes,
    holm,
    mcnemar_exact,
    paired_bootstrap,
    pool_seeds,
)

WORDS = "the cat sat on a mat dog ran far away house big small red blue".split()


def _corpus(n=60):
    rng = np.random.default_rng(0)
    refs = [" ".join(rng.choice(WORDS, 8)) for _ in range(n)]

    def noisy(p):
        return [" ".join(w if rng.random() > p else rng.choice(WORDS) for w in r.split()) for r in refs]

    return refs, noisy(0.30), noisy(0.33)


def test_bleu_paired_bootstrap_equals_sacrebleus_own():
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import _paired_bs_test

    refs, sys_a, sys_b = _corpus()
    metric = BLEU(tokenize="13a", smooth_method="none")
    base_stats = metric._extract_corpus_statistics(sys_b, [refs])
    base = metric._aggregate_and_compute(base_stats)
    _, theirs = _paired_bs_test({"BLEU": (base_stats, base)}, "a", sys_a, [refs],
                                {"BLEU": BLEU(tokenize="13a", smooth_method="none")}, n_samples=1000, seed=12345)
    ours = paired_bootstrap(bs.bleu_statistic(sys_a, [[r] for r in refs]), bs.bleu_statistic(sys_b, [[r] for r in refs]),
                            resamples=1000, seed=12345)
    assert ours["a"] == pytest.approx(theirs["BLEU"].score, abs=1e-9)
    assert ours["difference"] == pytest.approx(theirs["BLEU"].score - base.score, abs=1e-9)
    assert 0.05 < ours["p_value"] < 0.9  # a close pair: the p-value is not at a bound, so equality means something
    assert ours["p_value"] == theirs["BLEU"].p_value
    assert ours["low"] < ours["difference"] < ours["high"]


def test_accuracy_difference_interval_and_mcnemar_by_hand():
    # 10 examples: A right on 9, B on 3; A alone right on 6 (examples 3-8), never B alone
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    b = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    sa, sb = bs.accuracy_statistic(a, np.ones(10)), bs.accuracy_statistic(b, np.ones(10))
    res = paired_bootstrap(sa, sb, resamples=2000, seed=0)
    assert res["difference"] == pytest.approx(0.6) and (res["a"], res["b"]) == (pytest.approx(0.9), pytest.approx(0.3))
    # every resample's difference is (A-only examples drawn) / 10 >= 0
    assert 0.0 <= res["low"] < 0.6 < res["high"] <= 1.0
    test = mcnemar_exact(binary_outcomes(sa), binary_outcomes(sb))
    assert (test["only_a"], test["only_b"]) == (6, 0)
    assert test["p_value"] == pytest.approx(2 / 2**6)  # 2 x P(X <= 0), X ~ Binomial(6, 1/2) = 0.03125
    assert mcnemar_exact([1, 0, 1, 1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 0, 0, 0, 0, 0])["p_value"] == pytest.approx(
        2 * (1 + 9) / 2**9)  # b = 8, c = 1: 0.0390625
    assert mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0


def test_a_system_against_itself_is_no_difference():
    stat = bs.accuracy_statistic([0, 1, 1, 0, 1], [0, 1, 0, 0, 1])
    res = paired_bootstrap(stat, stat, resamples=200, seed=3)
    assert (res["difference"], res["low"], res["high"], res["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_macro_f1_difference_is_recomputed_from_pooled_counts():
    labels = [0, 0, 1, 1, 2, 2, 2, 1]
    pa, pb = [0, 0, 1, 1, 2, 2, 1, 1], [0, 1, 1, 2, 2, 0, 1, 1]
    sa, sb = bs.macro_f1_statistic(pa, labels, 3), bs.macro_f1_statistic(pb, labels, 3)
    res = paired_bootstrap(sa, sb, resamples=300, seed=1)
    # by hand: A per-class F1 = 1, 6/7, 4/5; B = 1/2, 4/7, 2/5
    assert res["a"] == pytest.approx((1 + 6 / 7 + 4 / 5) / 3) and res["b"] == pytest.approx((1 / 2 + 4 / 7 + 2 / 5) / 3)
    assert binary_outcomes(sa) is None  # not a right/wrong metric: no McNemar


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_seed_groups_pool_examples_and_refuse_other_examples():
    labels = np.array([0, 1, 1, 0, 1, 0])
    seeds = [np.array([0, 1, 1, 1, 1, 0]), np.array([0, 1, 0, 0, 1, 0])]
    pooled = pool_seeds([bs.accuracy_statistic(p, labels) for p in seeds])
    assert pooled.value() == pytest.approx(np.mean([(p == labels).mean() for p in seeds]))
    f1 = pool_seeds([bs.macro_f1_statistic(p, labels, 2) for p in seeds])
    assert f1.value() == pytest.approx(bs.macro_f1_statistic(np.concatenate(seeds), np.tile(labels, 2), 2).value())
    with pytest.raises(NotPaired, match="6 vs 5 examples"):
        paired_bootstrap(bs.accuracy_statistic(seeds[0], labels), bs.accuracy_statistic(seeds[0][:5], labels[:5]))


def test_statistics_survive_a_save_and_load(tmp_path):
    refs, sys_a, _ = _corpus(12)
    stats = {"test/bleu": bs.bleu_statistic(sys_a, [[r] for r in refs]),
             "test/chrf": bs.chrf_statistic(sys_a, [[r] for r in refs]),
             "test/acc": bs.accuracy_statistic([1, 0, 1], [1, 1, 1]),
             "test/f1_macro": bs.macro_f1_statistic([1, 0, 1], [1, 1, 0], 2),
             "test/ppl": bs.perplexity_statistic([3.0, 4.5], [2, 3]),
             "test/masked_acc": bs.ratio_statistic([1, 2], [2, 4], "masked accuracy")}
    index = bs.save_statistics(tmp_path / "s.npz", stats)
    assert {k: v["kind"] for k, v in index.items()} == {"test/bleu": "bleu", "test/chrf": "chrf", "test/acc": "mean",
                                                        "test/f1_macro": "macro_f1", "test/ppl": "perplexity",
                                                        "test/masked_acc": "ratio"}
    loaded = bs.load_statistics(tmp_path / "s.npz", index)
    assert {k: s.value() for k, s in loaded.items()} == pytest.approx({k: s.value() for k, s in stats.items()})
