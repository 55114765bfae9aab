"""Is A really better than B? Paired tests between two systems scored on the same examples.

Two runs evaluated on the same test set are compared example by example, not through their separate intervals
(which overlap even when one system wins on nearly every example):

- `paired_bootstrap`: the same resamples of the examples for both systems (`bootstrap._resample_sums` on their
  side-by-side features), the metric recomputed on each as it is defined (corpus BLEU/chrF and macro-F1 from
  pooled counts); the difference A - B with its percentile interval, and the p-value of sacrebleu's paired
  bootstrap test (`sacrebleu.significance._paired_bs_test`, after Koehn 2004 / multeval): the resampled absolute
  differences, centred on their mean, reach the observed absolute difference in c of R resamples,
  p = (c + 1) / (R + 1) (p = 1 for a system compared with itself). With the same seed it draws the very resamples sacrebleu draws, so its p-values agree
  (tested).
- `mcnemar_exact`: for a right/wrong metric (accuracy, exact match): the exact two-sided binomial test on the
  discordant examples (b: only A right, c: only B right; p = P(X <= min(b, c)) x 2 under Binomial(b + c, 1/2)).
- `pool_seeds`: a group of runs that differ only by seed, as one system: each example's features summed over the
  seeds, so a resample draws an example with all its seeds (resampling over examples pooled across the seeds;
  the seeds themselves are not resampled, so training randomness beyond these seeds is not in the interval).
- `holm`: Holm's step-down correction when one run is compared with many.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from lit_llm.errors import ConfigError
from lit_llm.metrics.bootstrap import Statistic, _resample_sums

METHOD = ("paired bootstrap over examples (same resamples for both systems; p-value as sacrebleu's paired "
          "bootstrap test)")


class NotPaired(ConfigError):
    """Two systems that were not scored on the same examples (or with different metric definitions)."""


def _check_pair(a: Statistic, b: Statistic, name: str = "metric") -> None:
    if a.n != b.n:
        raise NotPaired(f"{name}: {a.n} vs {b.n} examples; a paired test needs the same examples in the same order")
    if a.kind != b.kind or a.features.shape[1] != b.features.shape[1]:
        raise NotPaired(f"{name}: the two systems' statistics differ ({a.kind}, {a.features.shape[1]} columns vs "
                        f"{b.kind}, {b.features.shape[1]} columns)")


def paired_bootstrap(a: Statistic, b: Statistic, resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """{"a", "b", "difference" (a - b), "low", "high", "p_value", "n", "resamples", "confidence", "seed",
    "method"}: the difference of the metric between systems a and b, resampling the examples jointly."""
    _check_pair(a, b)
    if a.n == 0:
        raise ValueError("no examples: nothing to compare")
    k = a.features.shape[1]
    rng = np.random.default_rng(seed)
    both = np.concatenate([a.features, b.features], axis=1)
    deltas = np.array([a.fn(row[:k]) - b.fn(row[k:]) for sums in _resample_sums(both, int(resamples), rng)
                       for row in sums], dtype=np.float64)
    va, vb = a.value(), b.value()
    observed = va - vb
    centred = np.abs(deltas) - np.abs(deltas).mean()
    # ties count as at least as extreme: sacrebleu counts only strictly greater ones, which gives a system
    # compared with itself p = 1 / (R + 1); with continuous scores the two agree (tested)
    p_value = (int(np.sum(centred >= abs(observed))) + 1) / (len(deltas) + 1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(deltas, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return {"a": va, "b": vb, "difference": observed, "low": float(low), "high": float(high),
            "p_value": float(p_value), "n": a.n, "resamples": int(resamples), "confidence": float(confidence),
            "seed": int(seed), "method": METHOD}


def binary_outcomes(stat: Statistic) -> np.ndarray | None:
    """Per-example right (True) / wrong (False) of a mean-of-0/1 (or 0/100) statistic, else None."""
    if stat.kind != "mean" or stat.features.shape[1] != 2 or not np.all(stat.features[:, 1] == 1):
        return None
    values = stat.features[:, 0]
    top = values.max(initial=0.0)
    if not np.all((values == 0) | (values == top)):
        return None
    return values > 0


def mcnemar_exact(a_right: Sequence[bool], b_right: Sequence[bool]) -> dict:
    """McNemar's exact test: {"only_a", "only_b", "p_value"}; p = 1 when the systems never disagree."""
    a_right, b_right = np.asarray(a_right, dtype=bool), np.asarray(b_right, dtype=bool)
    if a_right.shape != b_right.shape:
        raise NotPaired(f"{a_right.size} vs {b_right.size} examples")
    only_a, only_b = int(np.sum(a_right & ~b_right)), int(np.sum(~a_right & b_right))
    n, k = only_a + only_b, min(only_a, only_b)
    # exact binomial tail in integers: sum_{i <= k} C(n, i) / 2^n, doubled (the distribution is symmetric)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    p_value = min(1.0, 2.0 * tail / 2**n) if n else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": p_value}


def pool_seeds(stats: Sequence[Statistic]) -> Statistic:
    """Runs of one configuration over several seeds, as one system: per-example features summed over the seeds
    (mean metrics become the mean over seeds and examples; corpus metrics pool their counts)."""
    first = stats[0]
    for other in stats[1:]:
        _check_pair(first, other, "pooling seeds")
    return Statistic(np.sum([s.features for s in stats], axis=0), first.fn,
                     f"{first.definition}; pooled over {len(stats)} seeds", kind=first.kind)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the i-th smallest p times (m - i + 1), made
    monotone, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


__all__ = ["paired_bootstrap", "mcnemar_exact", "binary_outcomes", "pool_seeds", "holm", "NotPaired", "METHOD"]
