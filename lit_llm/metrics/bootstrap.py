"""Confidence intervals (95% by default) for evaluation metrics, by resampling examples.

Every metric is written as `fn(features.sum(axis=0))`: a function of per-example sufficient statistics summed
over the examples (hits and totals, n-gram matches and lengths, per-class tp/fp/fn, NLL and token counts).
Resampling rows and re-applying `fn` to the column sums therefore bootstraps the metric as it is really
defined: corpus BLEU/chrF and macro-F1 are recomputed from pooled counts on each resample, never averaged
per sentence (sacrebleu's own `significance.py` bootstraps BLEU this way). The interval is the percentile
bootstrap (the (1-c)/2 and 1-(1-c)/2 quantiles of the resampled values), drawn from numpy's
`default_rng(seed)`, so a report is reproducible. Values are on the scale the project logs them
(accuracy and macro-F1 0-1; SQuAD, BLEU, chrF, ROUGE 0-100; perplexity as is).
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

METHOD = "percentile bootstrap over examples"
_CHUNK = 100  # resamples drawn at once: a chunk x n count matrix (40 MB at n = 50k) bounds memory


@dataclass
class Statistic:
    """value = fn(features.sum(axis=0)); features: [n examples, k] float64.

    `kind` names fn ("mean", "ratio", "macro_f1", "perplexity", "bleu", "chrf": see `KINDS`), so that the
    features can be saved with a run (`save_statistics`) and a metric recomputed from them later, e.g. for a
    paired test between two runs (`lit_llm.metrics.paired`)."""

    features: np.ndarray
    fn: Callable[[np.ndarray], float]
    definition: str  # one human sentence saying exactly what the metric is
    kind: str | None = None  # None: looked up from fn (the module's functions), else set by the factory

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float64)
        if self.features.ndim != 2:
            raise ValueError(f"features must be [n examples, k statistics], got shape {self.features.shape}")
        if self.kind is None:
            self.kind = next((k for k, f in _KIND_FUNCTIONS.items() if f is self.fn), None)

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    def value(self) -> float:
        """The point estimate: fn of the full-sample sums."""
        _require_examples(self)
        return float(self.fn(self.features.sum(axis=0)))


def _require_examples(stat: Statistic) -> None:
    if stat.n == 0:
        raise ValueError(f"no examples: cannot compute or bootstrap '{stat.definition}' over 0 examples")


def _resample_sums(features: np.ndarray, resamples: int, rng: np.random.Generator):
    """Yield [chunk, k] column sums of resamples of the rows of `features` (drawn with replacement)."""
    n = features.shape[0]
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        # how often each example is drawn in each resample; counts @ features = the resample sums,
        # without materialising a [size, n, k] array
        flat = (idx + n * np.arange(size)[:, None]).ravel()
        counts = np.bincount(flat, minlength=size * n).reshape(size, n).astype(np.float64)
        yield counts @ features


def bootstrap_interval(stat: Statistic, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """{"estimate", "low", "high", "n", "resamples", "confidence", "seed", "method"} for `stat`.

    Resample the n examples with replacement `resamples` times; low/high are the (1-confidence)/2 and
    1-(1-confidence)/2 percentiles of fn over the resamples' column sums.
    """
    _require_examples(stat)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(resamples) != resamples or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples}")
    rng = np.random.default_rng(seed)
    values = np.array([stat.fn(row) for sums in _resample_sums(stat.features, int(resamples), rng) for row in sums],
                      dtype=np.float64)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return {"estimate": stat.value(), "low": float(low), "high": float(high), "n": stat.n,
            "resamples": int(resamples), "confidence": float(confidence), "seed": int(seed), "method": METHOD}


# --- means of per-example values -------------------------------------------------------------------------------

def _ratio(sums: np.ndarray) -> float:
    return float(sums[0] / sums[1])


def mean_statistic(values: Sequence[float], definition: str) -> Statistic:
    """The mean of per-example `values` (accuracy, exact match, per-example F1 ...): features [value, 1]."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return Statistic(np.stack([values, np.ones_like(values)], axis=1), _ratio, definition)


def _safe_ratio(sums: np.ndarray) -> float:
    return float(sums[0] / sums[1]) if sums[1] else float("nan")


def ratio_statistic(numerators: Sequence[float], denominators: Sequence[float], definition: str) -> Statistic:
    """sum(numerators) / sum(denominators) over examples (e.g. correct / masked tokens per block); NaN on 0."""
    num = np.asarray(numerators, dtype=np.float64).reshape(-1)
    den = np.asarray(denominators, dtype=np.float64).reshape(-1)
    return Statistic(np.stack([num, den], axis=1), _safe_ratio, definition)


def accuracy_statistic(preds: Sequence[int], labels: Sequence[int]) -> Statistic:
    """Accuracy 0-1: fraction of predictions equal to the label (torchmetrics MulticlassAccuracy, micro)."""
    preds, labels = _class_arrays(preds, labels)
    return mean_statistic((preds == labels).astype(np.float64),
                          "accuracy (0-1): fraction of examples whose predicted class equals the label "
                          "(torchmetrics MulticlassAccuracy, average='micro')")


# --- macro F1 ---------------------------------------------------------------------------------------------------

def _class_arrays(preds, labels) -> tuple[np.ndarray, np.ndarray]:
    preds = np.asarray(preds, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.size} predictions but {labels.size} labels")
    return preds, labels


def _macro_f1(sums: np.ndarray) -> float:
    tp, fp, fn = sums.reshape(3, -1)
    support = tp + fp + fn
    # torchmetrics (f_beta._fbeta_reduce + utilities.compute._adjust_weights_safe_divide): per-class F1 with
    # 0/0 -> 0 (so a class never predicted but present scores 0), and a class absent from both predictions and
    # labels (tp + fp + fn == 0) gets weight 0, i.e. is left out of the average; no class at all -> 0.
    present = support > 0
    if not present.any():
        return 0.0
    return float(np.mean(2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])))


def macro_f1_statistic(preds: Sequence[int], labels: Sequence[int], num_classes: int) -> Statistic:
    """Macro F1 0-1 as torchmetrics MulticlassF1Score(num_classes, average="macro").

    features: one-hot per-class tp | fp | fn counts of each example ([n, 3 * num_classes]).
    """
    preds, labels = _class_arrays(preds, labels)
    for name, arr in (("prediction", preds), ("label", labels)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} outside [0, {num_classes}): {arr.min()}..{arr.max()}")
    rows = np.arange(preds.size)
    hit = preds == labels
    features = np.zeros((preds.size, 3, num_classes), dtype=np.float64)
    features[rows[hit], 0, labels[hit]] = 1.0  # true positive of the label's class
    features[rows[~hit], 1, preds[~hit]] = 1.0  # false positive of the predicted class
    features[rows[~hit], 2, labels[~hit]] = 1.0  # false negative of the label's class
    definition = (f"macro F1 (0-1) over {num_classes} classes as torchmetrics MulticlassF1Score(average='macro'): "
                  "mean of per-class 2tp/(2tp+fp+fn), classes absent from both predictions and labels left out")
    return Statistic(features.reshape(preds.size, 3 * num_classes), _macro_f1, definition)


# --- SQuAD ------------------------------------------------------------------------------------------------------

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _squad_normalize(text: str) -> str:
    """Official SQuAD v1.1: lower case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _squad_f1(prediction: str, reference: str) -> float:
    pred, ref = _squad_normalize(prediction).split(), _squad_normalize(reference).split()
    if not pred or not ref:  # no-answer on either side: 1 if both are empty
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _squad_per_question(predictions: Sequence[str], references: Sequence[Sequence[str]]):
    _check_text(predictions, references)
    em = [max(float(_squad_normalize(p) == _squad_normalize(r)) for r in refs)
          for p, refs in zip(predictions, references)]
    f1 = [max(_squad_f1(p, r) for r in refs) for p, refs in zip(predictions, references)]
    return em, f1


def squad_statistics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Statistic]:
    """{"em", "f1"} (0-100): per-question exact match / token F1, best over the references (torchmetrics SQuAD)."""
    em, f1 = _squad_per_question(predictions, references)
    norm = "SQuAD v1.1 normalisation (lower case, no punctuation, no articles a/an/the, single spaces)"
    return {"em": mean_statistic(100.0 * np.asarray(em), f"SQuAD exact match (0-100), best of the references, {norm}"),
            "f1": mean_statistic(100.0 * np.asarray(f1), f"SQuAD token F1 (0-100), best of the references, {norm}")}


# --- BLEU / chrF ------------------------------------------------------------------------------------------------

def _check_text(preds: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    from lit_llm.metrics.text_overlap import _check  # the same rules (and messages) as the logged metrics

    _check(preds, references)


def _reference_streams(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """sacrebleu's layout: one stream per reference slot; short lists padded with their first reference
    (as `text_overlap.translation_scores` does, so the corpus scores agree)."""
    n_refs = max((len(r) for r in references), default=1)
    return [[refs[k] if k < len(refs) else refs[0] for refs in references] for k in range(n_refs)]


def _sacrebleu_score(metric) -> Callable[[np.ndarray], float]:
    def score(sums: np.ndarray) -> float:  # sacrebleu's own corpus formula, applied to summed sentence stats
        return float(metric._compute_score_from_stats(sums).score)

    return score


def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="13a", smooth_method="none")


def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


def _sacrebleu_statistic(metric, preds, references, name: str) -> Statistic:
    _check_text(preds, references)
    if not preds:
        raise ValueError(f"{name} needs at least one example")
    stats = metric._extract_corpus_statistics(list(preds), _reference_streams(references))  # also sets nrefs
    definition = f"corpus {name} (0-100) from summed per-sentence statistics, sacreBLEU {metric.get_signature()}"
    return Statistic(np.array(stats, dtype=np.float64), _sacrebleu_score(metric), definition, kind=name.lower())


def bleu_statistic(preds: Sequence[str], references: Sequence[Sequence[str]]) -> Statistic:
    """Corpus BLEU 0-100: sacrebleu BLEU(tokenize="13a", smooth_method="none"); features per sentence:
    [hyp length, closest ref length, matches 1..4, totals 1..4]."""
    return _sacrebleu_statistic(_bleu(), preds, references, "BLEU")


def chrf_statistic(preds: Sequence[str], references: Sequence[Sequence[str]]) -> Statistic:
    """Corpus chrF 0-100: sacrebleu CHRF() (char order 6, word order 0, beta 2, sacreBLEU 2's effective-order
    averaging); features per sentence: [hyp, ref, match] n-gram counts per order, of the best-matching reference.

    Equal to `sacrebleu.corpus_chrf`. Not always equal to torchmetrics CHRFScore (what
    `text_overlap.translation_scores` logs today): that one averages per-order F-scores instead of precisions and
    recalls, and drops the reference n-grams of any sentence whose chrF is 0 (e.g. an empty hypothesis)."""
    return _sacrebleu_statistic(_chrf(), preds, references, "chrF")


# --- ROUGE ------------------------------------------------------------------------------------------------------

_ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def _rouge_per_example(preds: Sequence[str], references: Sequence[Sequence[str]],
                       keys: Sequence[str] = (*_ROUGE_KEYS, "rougeLsum")) -> dict[str, list[float]]:
    """Per-example F-measures 0-100, best reference per key (rouge-score's `score_multi`, Porter stemming:
    the per-example values torchmetrics ROUGEScore(use_stemmer=True, accumulate="best") averages). rougeLsum
    is scored on sentences split and newline-joined exactly as `text_overlap.summarization_scores` does."""
    from rouge_score import rouge_scorer

    from lit_llm.metrics.text_overlap import split_sentences

    _check_text(preds, references)
    plain = [key for key in keys if key != "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(plain, use_stemmer=True) if plain else None
    lsum = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True) if "rougeLsum" in keys else None
    out: dict[str, list[float]] = {key: [] for key in keys}
    for pred, refs in zip(preds, references):
        if scorer is not None:
            scores = scorer.score_multi(list(refs), pred)
            for key in plain:
                out[key].append(100.0 * scores[key].fmeasure)
        if lsum is not None:
            joined = lsum.score_multi(["\n".join(split_sentences(r)) for r in refs], "\n".join(split_sentences(pred)))
            out["rougeLsum"].append(100.0 * joined["rougeLsum"].fmeasure)
    return out


def rouge_statistics(preds: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Statistic]:
    """{"rouge1", "rouge2", "rougeL", "rougeLsum"}: means of per-example F-measures (0-100), as
    `text_overlap.summarization_scores` reports them."""
    from lit_llm.metrics.text_overlap import ROUGE_SETTINGS

    per_example = _rouge_per_example(preds, references)
    return {key: mean_statistic(values, f"{key} (0-100), mean over examples of the {ROUGE_SETTINGS}")
            for key, values in per_example.items()}


# --- perplexity -------------------------------------------------------------------------------------------------

def _perplexity(sums: np.ndarray) -> float:
    return math.exp(sums[0] / sums[1])


def perplexity_statistic(nll_sums: Sequence[float], token_counts: Sequence[float]) -> Statistic:
    """Perplexity exp(total NLL / total tokens); one row per example or block: [summed NLL (nats), tokens]."""
    nll = np.asarray(nll_sums, dtype=np.float64).reshape(-1)
    tokens = np.asarray(token_counts, dtype=np.float64).reshape(-1)
    if nll.shape != tokens.shape:
        raise ValueError(f"{nll.size} NLL sums but {tokens.size} token counts")
    return Statistic(np.stack([nll, tokens], axis=1), _perplexity,
                     "perplexity: exp(total token NLL in nats / total tokens) over all scored tokens "
                     "(torchmetrics Perplexity)")


# --- saving the per-example features with a run, for comparisons between runs ----------------------------------

_KIND_FUNCTIONS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": _ratio, "ratio": _safe_ratio, "macro_f1": _macro_f1, "perplexity": _perplexity}
KINDS = (*_KIND_FUNCTIONS, "bleu", "chrf")


def function_of(kind: str) -> Callable[[np.ndarray], float]:
    """The metric function of a statistic kind (what `Statistic.kind` names)."""
    if kind in _KIND_FUNCTIONS:
        return _KIND_FUNCTIONS[kind]
    if kind in ("bleu", "chrf"):
        return _sacrebleu_score(_bleu() if kind == "bleu" else _chrf())
    raise ValueError(f"unknown statistic kind {kind!r}: expected one of {', '.join(KINDS)}")


def save_statistics(path, stats: dict[str, Statistic]) -> dict[str, dict]:
    """Write the per-example features of `stats` to `path` (.npz, atomically); return {name: {"kind", "n",
    "definition"}} for report.json. Statistics of unknown kind (an fn of no kind) are left out."""
    import io

    from lit_llm.utils_io import atomic_write_bytes

    kept = {name: st for name, st in sorted(stats.items()) if st.kind is not None}
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"arr_{i}": st.features for i, st in enumerate(kept.values())})
    atomic_write_bytes(path, buf.getvalue())
    return {name: {"kind": st.kind, "n": st.n, "array": f"arr_{i}", "definition": st.definition}
            for i, (name, st) in enumerate(kept.items())}


def load_statistics(path, index: dict[str, dict]) -> dict[str, Statistic]:
    """The statistics `save_statistics` wrote: {name: Statistic} from the .npz at `path` and its index."""
    with np.load(path) as arrays:
        return {name: Statistic(arrays[meta["array"]], function_of(meta["kind"]), meta.get("definition", name),
                                kind=meta["kind"])
                for name, meta in index.items()}


# --- per-example scores, for ranking examples in reports ---------------------------------------------------------

def sentence_scores(kind: str, preds: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """Per-example scores, only to rank worst/best examples: "bleu" (sacrebleu sentence_bleu, exp smoothing),
    "chrf" (sentence chrF), "rouge" (rougeL F), "squad_f1" (per-question F1); all 0-100."""
    _check_text(preds, references)
    if kind == "bleu":
        import sacrebleu

        return [float(sacrebleu.sentence_bleu(p, list(refs)).score) for p, refs in zip(preds, references)]
    if kind == "chrf":
        import sacrebleu

        return [float(sacrebleu.sentence_chrf(p, list(refs)).score) for p, refs in zip(preds, references)]
    if kind == "rouge":
        return _rouge_per_example(preds, references, keys=("rougeL",))["rougeL"]
    if kind == "squad_f1":
        return [100.0 * f for f in _squad_per_question(preds, references)[1]]
    raise ValueError(f"unknown kind {kind!r}: expected 'bleu', 'chrf', 'rouge' or 'squad_f1'")


__all__ = ["Statistic", "bootstrap_interval", "mean_statistic", "ratio_statistic", "accuracy_statistic", "macro_f1_statistic",
           "squad_statistics", "bleu_statistic", "chrf_statistic", "rouge_statistics", "perplexity_statistic",
           "sentence_scores", "METHOD", "KINDS", "function_of", "save_statistics", "load_statistics"]
