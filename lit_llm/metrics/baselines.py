"""Reference points a trained LM must beat."""
from __future__ import annotations

import math

import numpy as np


def unigram_perplexity(train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int) -> float:
    """Perplexity on `eval_tokens` of a unigram model fitted on `train_tokens` (add-one smoothing).

    This is the best a model can do that ignores context entirely; a language model that does not
    beat it by far has learned nothing about sequences.
    """
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64).ravel(), minlength=vocab_size)
    counts = counts[:vocab_size].astype(np.float64) + 1.0
    log_probs = np.log(counts / counts.sum())
    nll = -log_probs[np.asarray(eval_tokens, dtype=np.int64).ravel()].mean()
    return float(math.exp(nll))
