"""Metrics: text-overlap scores (`text_overlap`), bootstrap intervals over examples (`bootstrap`), reference
baselines (`baselines`), and the definitions reports print for each metric (`DEFINITIONS`)."""

# what a metric means, by the last part of its logged name (test/<split>/acc -> acc)
DEFINITIONS = {
    "acc": "accuracy: share of examples whose highest-scoring class is the label (torchmetrics MulticlassAccuracy, "
           "micro), 0-1",
    "f1_macro": "macro-F1: unweighted mean over classes of the per-class F1 (torchmetrics MulticlassF1Score, "
                "average=macro), 0-1",
    "em": "SQuAD v1.1 exact match, 0-100: the answer equals a reference after normalisation (lower case; "
          "punctuation and the articles a/an/the removed; whitespace collapsed), best over references "
          "(torchmetrics SQuAD)",
    "f1": "SQuAD v1.1 token F1, 0-100: overlap of normalised answer and reference tokens, best over references "
          "(torchmetrics SQuAD)",
    "chrf": "chrF2 (character order 6, word order 0, beta 2), corpus level, 0-100 (sacrebleu.corpus_chrf)",
    "ppl": "perplexity: exp(summed negative log-likelihood / predicted tokens) over the split's packed blocks "
           "(torchmetrics Perplexity)",
    "ece": "expected calibration error of the top-class probability: sum over 15 equal-width confidence bins of "
           "|accuracy - mean confidence| times the bin's share of examples (torchmetrics MulticlassCalibrationError, "
           "l1), 0-1, lower is better",
    "masked_acc": "masked-token accuracy: share of masked positions whose argmax is the original token, 0-1",
}
