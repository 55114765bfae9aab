"""The evaluation report of a run: `report.json` + `report.md` (+ PNG plots in `plots/`).

Written by `lit_llm.run.train` (after the test) and `lit_llm.evaluation.evaluate` through
`lit_llm.reporting.run_report`; what is particular to a task comes from its hooks
(`report_statistics`, `report_examples`, `report_plots`). What it holds:
- the metrics, and a 95% percentile-bootstrap interval for every metric computed from
  per-example records (`lit_llm.metrics.bootstrap`: examples resampled, seeded), with the example
  counts and the exact definition of each metric (sacreBLEU signature, ROUGE settings, SQuAD rules);
- a data fingerprint per evaluated split (sha256 of the token ids and labels of every test batch);
- the checkpoint's sha256, the resolved config, the command line, git commit and dirty flag,
  package versions, device, wall time;
- plots (learning curves from metrics.csv, confusion matrix, length histogram of generations)
  and the worst and best examples by a per-example score;
- for classification and QA, an interpretation of those examples (`lit_llm.reporting.interpret`:
  attention maps, a 2-D projection of the pooled test representations, token attributions).

Everything but `created`, `wall_s` and `interpretation_timing` is a function of the inputs: the same checkpoint, data and
settings give the same report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit_llm.metrics import DEFINITIONS
from lit_llm.metrics import bootstrap as bs
from lit_llm.reporting import plots
from lit_llm.utils_io import atomic_write_json, atomic_write_text, sha256_file

VOLATILE_KEYS = ("created", "wall_s", "interpretation_timing")  # the only fields that differ between two identical reports


# -- worst and best examples ------------------------------------------------------------------
def _clip(value: Any, n: int = 300) -> Any:
    if isinstance(value, list):
        return [_clip(v, n) for v in value]
    if not isinstance(value, str):
        return value
    text = " ".join(value.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def extremes(scored: dict[str, dict[str, Any]], k: int) -> dict[str, dict[str, list[dict]]]:
    """{split: {"score": what ranks them, "worst": [...], "best": [...]}}, k each, ties by position, from a
    task's `report_examples()` ({split: {"score": name, "scores": [per example], "rows": [dict per example]}});
    texts are clipped to 300 characters."""
    out = {}
    for split, ex in scored.items():
        scores, rows = ex["scores"], ex["rows"]
        order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
        pick = lambda idx: [{"score": round(float(scores[i]), 6), **{key: _clip(v) for key, v in rows[i].items()}}  # noqa: E731
                            for i in idx]
        out[split] = {"score": ex["score"], "worst": pick(order[:k]), "best": pick(order[::-1][:k])}
    return out


def intervals(stats: dict[str, bs.Statistic], resamples: int, confidence: float, seed: int) -> dict[str, dict]:
    return {name: bs.bootstrap_interval(stat, resamples=resamples, confidence=confidence, seed=seed)
            for name, stat in sorted(stats.items())}


def _notes(metrics: dict[str, float], cis: dict[str, dict]) -> list[str]:
    """A logged metric that its per-example records do not reproduce is flagged."""
    notes = []
    for name, ci in cis.items():
        logged = metrics.get(name)
        if logged is not None and abs(ci["estimate"] - logged) > 1e-4 * max(1.0, abs(logged)):
            notes.append(f"{name}: the per-example records give {ci['estimate']:.6g}, the logged metric "
                         f"{logged:.6g} (the interval is around the former)")
    return notes


def _definitions(stats: dict[str, bs.Statistic], metrics: dict[str, float], metric_info: dict | None) -> dict:
    definitions = {name: stat.definition for name, stat in sorted(stats.items())}
    for name in metrics:
        leaf = name.rsplit("/", 1)[-1]
        if name not in definitions and leaf in DEFINITIONS:
            definitions[name] = DEFINITIONS[leaf]
    if metric_info and "bleu_signature" in metric_info:
        definitions["sacrebleu_signature"] = metric_info["bleu_signature"]
    return definitions


# -- the report -----------------------------------------------------------------------------
def build_report(*, source: str, kind: str, task_name: str | None, metrics: dict[str, float],
                 statistics: dict[str, bs.Statistic], scored_examples: dict[str, dict], example_counts: dict[str, int],
                 fingerprints: dict[str, str], config: dict, provenance: dict, checkpoint: str | None, out_dir: Path,
                 settings: dict, created: str, wall_s: float, metric_info: dict | None = None,
                 task_plots: dict[str, str] | None = None, metrics_csv: Path | None = None,
                 optimized_metric: str | None = None, notes: list[str] | None = None,
                 interpretation: dict | None = None) -> dict:
    """Intervals from a task's `statistics` (its `report_statistics()`), worst/best examples from its
    `scored_examples` (`report_examples()`), learning curves; returns the report dict (`write_report` writes it)."""
    out_dir = Path(out_dir)
    cis = intervals(statistics, settings["resamples"], settings["confidence"], settings["seed"])
    plot_files = {}
    if metrics_csv is not None and Path(metrics_csv).is_file():
        if plots.learning_curves(metrics_csv, out_dir / "plots" / "learning_curves.png"):
            plot_files["learning curves"] = "plots/learning_curves.png"
    plot_files.update(task_plots or {})
    interpretation = dict(interpretation) if interpretation else None
    timing = {"wall_s": interpretation.pop("wall_s", None), **interpretation.pop("timing", {})} if interpretation else None
    return {
        "source": source,
        "task": kind,
        "task_name": task_name,
        "created": created,
        "wall_s": round(float(wall_s), 1),
        "metrics": dict(sorted(metrics.items())),
        "optimized_metric": optimized_metric,
        "intervals": cis,
        "examples": dict(example_counts),
        "definitions": _definitions(statistics, metrics, metric_info),
        "data": {"fingerprints": dict(sorted(fingerprints.items()))},
        "checkpoint": {"path": checkpoint, "sha256": sha256_file(checkpoint) if checkpoint else None},
        "extremes": extremes(scored_examples, settings.get("examples", 3)),
        "plots": plot_files,
        "interpretation": interpretation,
        "interpretation_timing": timing,
        "bootstrap": {"resamples": settings["resamples"], "confidence": settings["confidence"],
                      "seed": settings["seed"], "method": "percentile bootstrap over examples"},
        "notes": list(notes or []) + _notes(metrics, cis),
        **provenance,
        "config": config,
    }


def write_report(out_dir: Path, report: dict) -> None:
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(report))


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _interpretation_markdown(interp: dict | None, timing: dict | None) -> list[str]:
    """Links to the attention maps and projections, the attribution table (top tokens by |attribution|)."""
    if not interp:
        return []
    s, attr, proj = interp["settings"], interp["attributions"], interp["projection"]
    took = f"; {timing['wall_s']} s" if timing and timing.get("wall_s") is not None else ""
    lines = ["", f"## Interpretation ({interp['split']}{took})", "",
             f"Attention {interp['attention']}; projection: {', '.join(proj['methods'])} of {proj['examples']} "
             f"examples coloured by {proj['colour']}; attributions: {attr['method']}"
             + (f" ({attr['ig_steps']} steps, zero-embedding baseline)" if attr.get("ig_steps") else "")
             + f" of the {attr['target']}, up to {s['max_tokens']} tokens shown.", ""]
    lines += [f"- note: {note}" for note in interp.get("notes") or []]
    lines += [f"- [{name}]({path})" for name, path in interp["plots"].items()]
    lines += [""] + [f"![{name}]({path})" for name, path in interp["plots"].items()
                     if name.startswith(("projection", "token attributions"))]
    lines += ["", "| example | score | top tokens (attribution) |", "|---|---:|---|"]
    for row in attr["examples"]:
        top = ", ".join(f"`{t}` {a:+.3g}" for t, a in row["top"]).replace("|", "\\|")
        lines.append(f"| {row['which']} #{row['rank']} | {row['score']:.3f} | {top} |")
    return lines


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
    lines += _interpretation_markdown(report.get("interpretation"), report.get("interpretation_timing"))
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


__all__ = ["intervals", "extremes", "build_report", "write_report", "render_markdown", "VOLATILE_KEYS"]
