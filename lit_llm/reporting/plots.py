"""PNG plots for reports: learning curves, a confusion matrix, a reliability diagram, a histogram of generation
lengths.

matplotlib with the Agg backend (no display); files are written atomically and carry no
software/date metadata, so the same inputs give the same bytes.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

_PNG_METADATA = {"Software": None}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata=_PNG_METADATA)
    _pyplot().close(fig)
    os.replace(tmp, path)
    return path


def read_metrics_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning CSVLogger's metrics.csv -> {metric: [(step, value), ...]} (empty cells skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if not step:
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or not value or key.startswith("lr-"):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    series.setdefault(key, []).append((int(float(step)), number))
    return series


def learning_curves(metrics_csv: Path, path: Path) -> Path | None:
    """Train/validation loss against the step (left) and the validation metrics (right)."""
    series = read_metrics_csv(metrics_csv)
    losses = [k for k in ("train/loss", "val/loss") if k in series]
    others = sorted(k for k in series if k.startswith("val/") and k != "val/loss"
                    and not k.endswith(("/questions", "/examples", "/gen_tokens_mean")))
    if any(not k.endswith("ppl") for k in others):  # perplexities (100s) would flatten accuracies (0-1)
        others = [k for k in others if not k.endswith("ppl")]
    if not losses:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(10 if others else 5.5, 3.6), squeeze=False)
    ax = axes[0][0]
    for key in losses:
        steps, values = zip(*series[key])
        ax.plot(steps, values, label=key, marker="o" if key.startswith("val") else None,
                linewidth=1.0 if key.startswith("train") else 1.8, alpha=0.7 if key.startswith("train") else 1.0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if others:
        ax = axes[0][1]
        for key in others:
            steps, values = zip(*series[key])
            ax.plot(steps, values, marker="o", label=key)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation metric")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("learning curves (metrics.csv)")
    return _save(fig, path)


def confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    """Rows: true class, columns: predicted class; counts in the cells."""
    plt = _pyplot()
    n = len(labels)
    size = max(3.5, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    ax.set_title("test confusion matrix")
    return _save(fig, path)


def reliability_diagram(bins: dict[str, list], path: Path, title: str = "reliability diagram") -> Path:
    """Accuracy against mean confidence per confidence bin (`lit_llm.metrics.calibration.reliability_bins`), the
    diagonal of perfect calibration, and the examples per bin below."""
    plt = _pyplot()
    fig, (ax, below) = plt.subplots(2, 1, figsize=(4.8, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = [hi - lo for lo, hi in zip(bins["lower"], bins["upper"])]
    filled = [c > 0 for c in bins["count"]]
    ax.bar(bins["lower"], [a if f else 0 for a, f in zip(bins["accuracy"], filled)], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot([c for c, f in zip(bins["confidence"], filled) if f], [a for a, f in zip(bins["accuracy"], filled) if f],
            "o", color="C3", markersize=4, label="(mean confidence, accuracy)")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{title} (ECE {bins['ece']:.4f})")
    below.bar(bins["lower"], bins["count"], width=width, align="edge", edgecolor="black", color="C7")
    below.set_xlim(0, 1)
    below.set_xlabel("confidence (top-class probability)")
    below.set_ylabel("examples")
    return _save(fig, path)


def length_histogram(lengths: dict[str, list[int]], path: Path) -> Path:
    """Histogram of lengths in tokens, one series per name (e.g. generated vs reference)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    top = max((max(v) for v in lengths.values() if v), default=1)
    bins = min(40, max(5, top))
    for name, values in lengths.items():
        if values:
            ax.hist(values, bins=bins, range=(0, top + 1), alpha=0.6, label=name)
    ax.set_xlabel("tokens")
    ax.set_ylabel("examples")
    ax.legend()
    ax.set_title("length of generations")
    return _save(fig, path)


__all__ = ["read_metrics_csv", "learning_curves", "confusion_matrix", "reliability_diagram", "length_histogram"]
