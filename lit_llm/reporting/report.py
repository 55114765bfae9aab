"""The evaluation report of a run: `report.json` + `report.md` (+ PNG plots in `plots/`).

Written by `run.train` (after the test) and `run.evaluate`. What it holds:
- the metrics, and a 95% percentile-bootstrap interval for every metric computed from
  per-example records (`lit_llm.metrics.bootstrap`: examples resampled, seeded), with the example
  counts and the exact definition of each metric (sacreBLEU signature, ROUGE settings, SQuAD rules);
- a data fingerprint per evaluated split (sha256 of the token ids and labels of every test batch);
- the checkpoint's sha256, the resolved config, the command line, git commit and dirty flag,
  package versions, device, wall time;
- plots (learning curves from metrics.csv, confusion matrix, length histogram of generations)
  and the worst and best examples by a per-example score.

Everything but `created` and `wall_s` is a function of the inputs: the same checkpoint, data and
settings give the same report.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from lit_llm.metrics import bootstrap as bs
from lit_llm.reporting import plots
from lit_llm.utils_io import atomic_write_json, atomic_write_text

VOLATILE_KEYS = ("created", "wall_s")  # the only fields that differ between two identical reports

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
    "masked_acc": "masked-token accuracy: share of masked positions whose argmax is the original token, 0-1",
}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _ratio(sums) -> float:
    return float(sums[0] / sums[1]) if sums[1] else float("nan")


# -- statistics: the metrics as functions of per-example records -----------------------------
def statistics(kind: str, records: dict[str, dict[str, list]], num_labels: int | None = None,
               metric: str | None = None) -> dict[str, bs.Statistic]:
    """{logged metric name: Statistic} for a task's test records (see the tasks' `record` calls)."""
    out: dict[str, bs.Statistic] = {}
    for split, rec in records.items():
        if kind == "clm" and rec.get("tokens"):
            out[f"test/{split}/ppl"] = bs.perplexity_statistic(rec["nll"], rec["tokens"])
        elif kind == "mlm" and rec.get("tokens"):
            out["test/ppl"] = bs.perplexity_statistic(rec["nll"], rec["tokens"])
            out["test/masked_acc"] = bs.Statistic(np.stack([np.asarray(rec["correct"], np.float64),
                                                            np.asarray(rec["tokens"], np.float64)], axis=1),
                                                  _ratio, DEFINITIONS["masked_acc"])
        elif kind == "classification" and rec.get("pred"):
            out["test/acc"] = bs.accuracy_statistic(rec["pred"], rec["label"])
            out["test/f1_macro"] = bs.macro_f1_statistic(rec["pred"], rec["label"], num_labels)
        elif kind == "qa" and rec.get("prediction"):
            for name, stat in bs.squad_statistics(rec["prediction"], rec["references"]).items():
                out[f"test/{split}/{name}"] = stat
        elif kind == "seq2seq" and rec.get("prediction"):
            if metric == "bleu":
                out["test/bleu"] = bs.bleu_statistic(rec["prediction"], rec["references"])
                out["test/chrf"] = bs.chrf_statistic(rec["prediction"], rec["references"])
            elif metric == "rouge":
                for name, stat in bs.rouge_statistics(rec["prediction"], rec["references"]).items():
                    out[f"test/{name}"] = stat
    return out


def intervals(stats: dict[str, bs.Statistic], resamples: int, confidence: float, seed: int) -> dict[str, dict]:
    return {name: bs.bootstrap_interval(stat, resamples=resamples, confidence=confidence, seed=seed)
            for name, stat in sorted(stats.items())}


# -- worst and best examples ------------------------------------------------------------------
def _clip(text: Any, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def extremes(kind: str, records: dict[str, dict[str, list]], k: int, label_names: list[str] | None = None,
             metric: str | None = None) -> dict[str, dict[str, list[dict]]]:
    """{split: {"score": what ranks them, "worst": [...], "best": [...]}}, k each, ties by position."""
    out = {}
    for split, rec in records.items():
        if kind == "classification" and rec.get("text"):
            score_name = "probability of the true class"
            scores = rec["p_true"]
            names = label_names or [str(i) for i in range(1 + max(rec["label"] + rec["pred"]))]
            rows = [{"text": _clip(t if "text_pair" not in rec else f"{t} ||| {rec['text_pair'][i]}"),
                     "label": names[y], "predicted": names[p]}
                    for i, (t, y, p) in enumerate(zip(rec["text"], rec["label"], rec["pred"]))]
        elif kind == "qa" and rec.get("prediction"):
            score_name = "SQuAD F1 of the question"
            scores = bs.sentence_scores("squad_f1", rec["prediction"], rec["references"])
            rows = [{"id": i, "question": _clip(q), "predicted": _clip(p), "references": [_clip(r) for r in refs]}
                    for i, q, p, refs in zip(rec["id"], rec["question"], rec["prediction"], rec["references"])]
        elif kind == "seq2seq" and rec.get("prediction"):
            kind_score = "bleu" if metric == "bleu" else "rouge"
            score_name = "sentence BLEU (sacreBLEU, exp smoothing)" if kind_score == "bleu" else "ROUGE-L F of the example"
            scores = bs.sentence_scores(kind_score, rec["prediction"], rec["references"])
            rows = [{"source": _clip(s), "predicted": _clip(p), "reference": _clip(refs[0])}
                    for s, p, refs in zip(rec["source"], rec["prediction"], rec["references"])]
        else:
            continue
        order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
        pick = lambda idx: [{"score": round(float(scores[i]), 6), **rows[i]} for i in idx]  # noqa: E731
        out[split] = {"score": score_name, "worst": pick(order[:k]), "best": pick(order[::-1][:k])}
    return out


# -- the report -----------------------------------------------------------------------------
def build_report(*, source: str, kind: str, task_name: str | None, metrics: dict[str, float],
                 records: dict[str, dict[str, list]], fingerprints: dict[str, str], config: dict,
                 provenance: dict, checkpoint: str | None, out_dir: Path, settings: dict,
                 created: str, wall_s: float, metric_info: dict | None = None, num_labels: int | None = None,
                 label_names: list[str] | None = None, confusion: list[list[int]] | None = None,
                 metrics_csv: Path | None = None, seq2seq_metric: str | None = None,
                 optimized_metric: str | None = None, notes: list[str] | None = None) -> dict:
    """Compute intervals and plots; return the report dict (write it with `write_report`)."""
    out_dir = Path(out_dir)
    stats = statistics(kind, records, num_labels=num_labels, metric=seq2seq_metric)
    cis = intervals(stats, settings["resamples"], settings["confidence"], settings["seed"])
    notes = list(notes or [])
    for name, ci in cis.items():
        logged = metrics.get(name)
        if logged is not None and abs(ci["estimate"] - logged) > 1e-4 * max(1.0, abs(logged)):
            notes.append(f"{name}: the per-example records give {ci['estimate']:.6g}, the logged metric "
                         f"{logged:.6g} (the interval is around the former)")
    definitions = {name: stat.definition for name, stat in sorted(stats.items())}
    for name in metrics:
        leaf = name.rsplit("/", 1)[-1]
        if name not in definitions and leaf in DEFINITIONS:
            definitions[name] = DEFINITIONS[leaf]
    if metric_info and "bleu_signature" in metric_info:
        definitions["sacrebleu_signature"] = metric_info["bleu_signature"]

    plot_files = {}
    if metrics_csv is not None and Path(metrics_csv).is_file():
        if plots.learning_curves(metrics_csv, out_dir / "plots" / "learning_curves.png"):
            plot_files["learning curves"] = "plots/learning_curves.png"
    if confusion is not None and label_names:
        plots.confusion_matrix(confusion, label_names, out_dir / "plots" / "confusion_matrix.png")
        plot_files["confusion matrix"] = "plots/confusion_matrix.png"
    lengths = {split: rec for split, rec in records.items() if rec.get("gen_tokens")}
    if lengths:
        split, rec = next(iter(lengths.items()))
        plots.length_histogram({"generated": rec["gen_tokens"], "reference": rec.get("reference_tokens", [])},
                               out_dir / "plots" / "generation_lengths.png")
        plot_files["generation lengths"] = "plots/generation_lengths.png"

    examples = {split: len(next(iter(rec.values()), [])) for split, rec in records.items()}
    return {
        "source": source,
        "task": kind,
        "task_name": task_name,
        "created": created,
        "wall_s": round(float(wall_s), 1),
        "metrics": dict(sorted(metrics.items())),
        "optimized_metric": optimized_metric,
        "intervals": cis,
        "examples": examples,
        "definitions": definitions,
        "data": {"fingerprints": dict(sorted(fingerprints.items()))},
        "checkpoint": {"path": checkpoint, "sha256": sha256_file(checkpoint) if checkpoint else None},
        "extremes": extremes(kind, records, settings.get("examples", 3), label_names, seq2seq_metric),
        "plots": plot_files,
        "bootstrap": {"resamples": settings["resamples"], "confidence": settings["confidence"],
                      "seed": settings["seed"], "method": "percentile bootstrap over examples"},
        "notes": notes,
        **provenance,
        "config": config,
    }


def write_report(out_dir: Path, report: dict) -> None:
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(report))


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def render_markdown(report: dict) -> str:
    import yaml

    lines = [f"# Report: {report.get('task_name') or report['task']} ({report['task']}, from {report['source']})", ""]
    lines += [f"created {report['created']} · wall time {report['wall_s']} s", ""]
    cis = report["intervals"]
    conf = int(round(report["bootstrap"]["confidence"] * 100))
    lines += ["## Metrics", "", f"| metric | value | {conf}% interval | examples |", "|---|---:|---:|---:|"]
    for name, value in report["metrics"].items():
        ci = cis.get(name)
        interval = f"[{_fmt(ci['low'])}, {_fmt(ci['high'])}]" if ci else ""
        lines.append(f"| {name} | {_fmt(value)} | {interval} | {ci['n'] if ci else ''} |")
    boot = report["bootstrap"]
    lines += ["", f"Intervals: {boot['method']}, {boot['resamples']} resamples, seed {boot['seed']}.", ""]
    for note in report.get("notes") or []:
        lines.append(f"- note: {note}")
    lines += ["## Metric definitions", ""]
    lines += [f"- **{name}**: {text}" for name, text in report["definitions"].items()]
    lines += ["", "## Data", "", "| split | examples | fingerprint (sha256 of the evaluated token ids and labels) |",
              "|---|---:|---|"]
    for split, fp in report["data"]["fingerprints"].items():
        lines.append(f"| {split} | {report['examples'].get(split, '')} | `{fp}` |")
    if report["plots"]:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path})" for name, path in report["plots"].items()]
    for split, ex in report["extremes"].items():
        for which in ("worst", "best"):
            lines += ["", f"## {which.capitalize()} examples ({split}; by {ex['score']})", ""]
            for row in ex[which]:
                fields = "; ".join(f"{k}: {v}" for k, v in row.items() if k != "score")
                lines.append(f"- **{row['score']:.3f}** {fields}")
    ckpt = report["checkpoint"]
    git = report.get("git") or {}
    lines += ["", "## Provenance", "",
              f"- checkpoint: `{ckpt['path']}` (sha256 `{ckpt['sha256']}`)",
              f"- command: `{' '.join(report.get('command') or [])}`",
              f"- git commit: `{git.get('commit')}`" + (" (uncommitted changes: see git.diff)" if git.get("dirty") else ""),
              f"- device: {json.dumps(report.get('device'), sort_keys=True)}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in (report.get('versions') or {}).items())}",
              "", "<details><summary>Resolved config</summary>", "", "```yaml",
              yaml.safe_dump(report["config"], sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


__all__ = ["statistics", "intervals", "extremes", "build_report", "write_report", "render_markdown",
           "sha256_file", "VOLATILE_KEYS"]
