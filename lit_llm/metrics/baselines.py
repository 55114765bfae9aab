"""Reference points a trained LM must beat."""
from __future__ import annotations

import math

import numpy as np


def unigram_perplexity(train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int) -> float:
    """Perplexity on `eval_tokens` of a unigram model fitted on `train_tokens` (add-one smoothing).

    This is the best a model can do that ignores context entirely; a language model that does not
    beat it by far has learned nothing about sequences.
    """
    counts = np.ones(vocab_size, dtype=np.float64)
    train = np.asarray(train_tokens)  # counted in chunks: a memory-mapped split is never copied whole
    step = max(1, (1 << 22) // max(1, train[:1].size))  # ~4M tokens (rows of a 2-D array)
    for start in range(0, len(train), step):
        chunk = np.asarray(train[start : start + step], dtype=np.int64).ravel()
        counts += np.bincount(chunk, minlength=vocab_size)[:vocab_size]
    log_probs = np.log(counts / counts.sum())
    nll = -log_probs[np.asarray(eval_tokens, dtype=np.int64).ravel()].mean()
    return float(math.exp(nll))
