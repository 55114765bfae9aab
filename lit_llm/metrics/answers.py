"""Scoring generated answers of the instruction-tuning tasks (`lit_llm.data.instruct_mix`), one rule per task kind.

- "label" (sst2, ag_news, rte): the answer names one of the task's label words (`LABELS`, also the words the
  mixture's answers use); `match_label` finds it. Reported: "acc", "f1_macro" and "no_label".
- "span" (tydiqa): SQuAD v1.1 exact match / token F1 against every reference answer ("em", "f1").
- "summary" (samsum, dialogsum): ROUGE-1/2/L/Lsum F-measures, best reference per example.
- "translation" (multi30k): corpus BLEU and chrF (sacreBLEU).
- "number" (gsm8k): the final number of the answer (`final_number`) equals the reference number ("acc").

Every metric is a bootstrap `Statistic` (`lit_llm.metrics.bootstrap`), so reports give intervals for them.
"""
from __future__ import annotations

import re
import string
from decimal import Decimal, InvalidOperation
from typing import Sequence

import numpy as np

from lit_llm.metrics.bootstrap import (
    Statistic,
    _macro_f1,
    bleu_statistic,
    chrf_statistic,
    mean_statistic,
    rouge_statistics,
    squad_statistics,
)

TASK_KINDS: dict[str, str] = {
    "sst2": "label", "ag_news": "label", "rte": "label",
    "tydiqa": "span",
    "samsum": "summary", "dialogsum": "summary",
    "multi30k": "translation",
    "gsm8k": "number",
}
# The answer words of the classification tasks; index = class id (SST-2: 0 negative; AG News: file class - 1;
# RTE: 0 entailment = "yes", 1 not_entailment = "no", as Hugging Face glue/rte numbers them).
LABELS: dict[str, list[str]] = {
    "sst2": ["negative", "positive"],
    "ag_news": ["World", "Sports", "Business", "Sci/Tech"],
    "rte": ["yes", "no"],
}

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower case, every ASCII punctuation character replaced by a space, whitespace collapsed to single spaces
    ("Sci/Tech." -> "sci tech")."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def match_label(answer: str, labels: Sequence[str]) -> int:
    """The index of the label `answer` names, -1 when it names none.

    Rule: answer and labels are normalised alike (`normalize_answer`); a label is named where its normalised words
    occur in the answer as whole words; the label named EARLIEST wins ("Positive, not negative" -> positive), and
    at the same position the longer label ("not entailment" over "not"). No synonyms: "good" names no SST-2 label.
    """
    text = f" {normalize_answer(answer)} "
    best, best_key = -1, None
    for i, label in enumerate(labels):
        words = normalize_answer(label)
        if not words:
            continue
        at = text.find(f" {words} ")
        if at < 0:
            continue
        key = (at, -len(words))
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


# A number: digits with proper thousands groups ("1,080") or plain digits, an optional decimal part, an optional
# minus; never the tail of a word or of another number ("x2", "5-3" gives 5 and 3).
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_MARKERS = (re.compile(r"####"), re.compile(r"the answer is", re.IGNORECASE))


def normalize_number(text: str) -> str | None:
    """A number's canonical spelling: commas dropped, trailing decimal zeros dropped ("1,080.50" -> "1080.5",
    "5.0" -> "5", "-0" -> "0"); None when `text` is not a number."""
    try:
        value = Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def final_number(text: str) -> str | None:
    """The answer's final number (GSM8K scoring), normalised by `normalize_number`: the first number after the
    last "####", else after the last "The answer is" (any case), else the last number in the text; None if none."""
    for marker in _MARKERS:
        hits = list(marker.finditer(text))
        if hits:
            number = _NUMBER.search(text, hits[-1].end())
            if number is not None:
                return normalize_number(number.group())
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def _label_statistics(predictions: Sequence[str], labels: Sequence[int], names: list[str]) -> dict[str, Statistic]:
    k = len(names)
    preds = np.asarray([match_label(p, names) for p in predictions], dtype=np.int64)
    gold = np.asarray(labels, dtype=np.int64).reshape(-1)
    if gold.size != preds.size:
        raise ValueError(f"{preds.size} predictions but {gold.size} labels")
    if gold.size and (gold.min() < 0 or gold.max() >= k):
        raise ValueError(f"labels outside [0, {k}): {gold.min()}..{gold.max()}")
    rows, hit, named = np.arange(preds.size), preds == gold, preds >= 0
    # per-class tp | fp | fn counts of each answer, as bootstrap.macro_f1_statistic lays them out; an answer that
    # names no label is a false negative of its true class and nobody's false positive
    features = np.zeros((preds.size, 3, k), dtype=np.float64)
    features[rows[hit], 0, gold[hit]] = 1.0
    features[rows[~hit & named], 1, preds[~hit & named]] = 1.0
    features[rows[~hit], 2, gold[~hit]] = 1.0
    rule = "the label an answer names by lit_llm.metrics.answers.match_label (earliest whole-word label)"
    return {
        "acc": mean_statistic(hit.astype(np.float64), f"accuracy (0-1): share of answers naming the reference label; "
                                                      f"{rule}; an answer naming no label is wrong"),
        "f1_macro": Statistic(features.reshape(preds.size, 3 * k), _macro_f1,
                              f"macro F1 (0-1) over the {k} classes ({', '.join(names)}): mean of per-class "
                              f"2tp/(2tp+fp+fn) as torchmetrics MulticlassF1Score(average='macro'); {rule}; an "
                              "answer naming no label is a false negative of its class and no class's false positive"),
        "no_label": mean_statistic((~named).astype(np.float64),
                                   f"share of answers (0-1) naming none of the labels ({', '.join(names)})"),
    }


def _number_statistics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Statistic]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    hits = []
    for pred, refs in zip(predictions, references):
        got = final_number(pred)
        hits.append(float(got is not None and any(got == normalize_number(r) for r in refs)))
    return {"acc": mean_statistic(hits, "accuracy (0-1): share of answers whose final number (after '####' or 'The "
                                        "answer is', else the last number; commas and trailing zeros dropped) "
                                        "equals the reference number")}


def task_statistics(task: str, predictions: Sequence[str], references: Sequence[Sequence[str]],
                    labels: Sequence[int] | None = None) -> dict[str, Statistic]:
    """{metric name: bootstrap Statistic} of a task's generated answers (see the module docstring); `labels`
    (class ids) are needed by the label tasks only."""
    kind = TASK_KINDS.get(task)
    if kind is None:
        raise ValueError(f"unknown task {task!r}: known tasks are {', '.join(TASK_KINDS)}")
    if kind == "label":
        if labels is None:
            raise ValueError(f"task {task!r} is scored against class labels: pass labels=[...]")
        return _label_statistics(predictions, labels, LABELS[task])
    if kind == "span":
        return squad_statistics(predictions, references)
    if kind == "summary":
        return rouge_statistics(predictions, references)
    if kind == "translation":
        return {"bleu": bleu_statistic(predictions, references), "chrf": chrf_statistic(predictions, references)}
    return _number_statistics(predictions, references)


__all__ = ["TASK_KINDS", "LABELS", "normalize_answer", "match_label", "normalize_number", "final_number",
           "task_statistics"]
