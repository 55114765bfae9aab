"""What a tested run writes and prints, for training and checkpoint evaluation alike: metrics.json and the
task's own outputs, the report (`report.json`/`report.md`, built from the task's report hooks) and the
console summary."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lit_llm.errors import ConfigError
from lit_llm.utils_io import atomic_write_json

log = logging.getLogger("lit_llm")
STATISTICS_FILE = "statistics.npz"  # per-example features of the report's metrics (lit_llm.metrics.bootstrap)


def flat_metrics(callback_metrics: dict) -> dict[str, float]:
    """The logged metrics as floats, for metrics.json: timings (perf/*) go to run.json and the learning
    rate (lr-*) to metrics.csv, so metrics.json is identical for identical deterministic runs."""
    return {k: float(v) for k, v in callback_metrics.items()
            if "/" in k and not k.startswith(("perf/", "lr-"))}


def write_results(out_dir: Path, task, metrics: dict, meta: dict) -> None:
    """metrics.json and the task's outputs (predictions, confusion matrix); the metric definitions into `meta`."""
    atomic_write_json(out_dir / "metrics.json", metrics)
    task.write_outputs(out_dir)
    if task.metric_info:
        meta["metric_info"] = task.metric_info  # e.g. the sacreBLEU signature


def report_settings(settings: Any) -> dict:
    """The `report:` config (conf/report/default.yaml), checked."""
    from lit_llm.builders import container

    settings = container(settings or {})
    if not isinstance(settings.get("resamples"), int) or settings["resamples"] < 1:
        raise ConfigError(f"report.resamples={settings.get('resamples')!r} must be a positive integer")
    if not 0.0 < float(settings.get("confidence", 0)) < 1.0:
        raise ConfigError(f"report.confidence={settings.get('confidence')!r} must be in (0, 1), e.g. 0.95")
    from lit_llm.reporting.interpret import interpret_settings

    settings["interpret"] = interpret_settings(settings.get("interpret"))
    return settings


def write_run_report(task, metrics: dict, meta: dict, *, settings: dict, config: dict, source: str,
                     checkpoint: str | None, out_dir: Path, started: float, metrics_csv: Path | None,
                     world_size: int = 1) -> dict:
    """report.json + report.md (+ plots) of a tested task (see lit_llm.reporting.report)."""
    from lit_llm.metrics.bootstrap import save_statistics
    from lit_llm.reporting.report import build_report, write_report

    notes, statistics, scored = [], task.report_statistics(), task.report_examples()
    if world_size > 1:  # each process saw a part of the test set: no per-example statistics
        statistics, scored = {}, {}
        notes.append(f"tested on {world_size} processes: no per-example intervals; run pipelines/evaluate.py "
                     "on the checkpoint for them")
    calibration: dict[str, dict] = {}  # {split: reliability bins}, filled by calibration_plots
    counts = {} if world_size > 1 else {split: len(next(iter(rec.values()), [])) for split, rec in task.records.items()}
    provenance = {k: meta.get(k) for k in ("command", "cwd", "git", "versions", "device")}
    interpretation = None
    if world_size == 1:  # attention maps, projection, attributions (classification, QA; lit_llm.reporting.interpret)
        from lit_llm.reporting.interpret import write_interpretation

        interpretation = write_interpretation(task, out_dir, settings.get("interpret"))
    report = build_report(
        source=source, kind=task.task_kind, task_name=config.get("task_name"), metrics=metrics,
        statistics=statistics, scored_examples=scored, example_counts=counts, fingerprints=task.test_fingerprints,
        config=config, provenance=provenance, checkpoint=checkpoint, out_dir=out_dir, settings=settings,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), wall_s=time.time() - started,
        metric_info=task.metric_info or meta.get("metric_info"),
        task_plots={**task.report_plots(out_dir),
                    **calibration_plots(task.records if world_size == 1 else {}, out_dir, calibration)},
        metrics_csv=metrics_csv, optimized_metric=config.get("optimized_metric"), notes=notes,
        interpretation=interpretation)
    if calibration:  # {split: reliability-diagram bins}
        report["calibration"] = calibration
    if statistics:  # the per-example features behind the intervals: what paired tests between runs read
        report["per_example"] = {"file": STATISTICS_FILE,
                                 "statistics": save_statistics(out_dir / STATISTICS_FILE, statistics)}
    write_report(out_dir, report)
    log.info("report: %s", out_dir / "report.md")
    return report


def calibration_plots(records: dict[str, dict], out_dir: Path, bins_out: dict) -> dict[str, str]:
    """A reliability diagram (`plots/reliability_<split>.png`) for every test split whose records hold the
    top-class probability (`confidence`, with `pred` and `label`: a classifier's); its bins go into `bins_out`."""
    from lit_llm.metrics.calibration import reliability_bins
    from lit_llm.reporting import plots

    out = {}
    for split, rec in records.items():
        if not rec.get("confidence") or "pred" not in rec or "label" not in rec:
            continue
        bins_out[split] = reliability_bins(rec["confidence"], [p == y for p, y in zip(rec["pred"], rec["label"])])
        name = f"plots/reliability_{split}.png"
        plots.reliability_diagram(bins_out[split], Path(out_dir) / name, title=f"reliability diagram ({split})")
        out[f"reliability diagram ({split})"] = name
    return out


def print_summary(out_dir: Path, metrics: dict, meta: dict, sample: str | None) -> None:
    """The run's metrics table, its performance line, the unigram baseline and a generated sample."""
    from rich.console import Console
    from rich.table import Table

    from lit_llm.callbacks import format_perf

    console = Console()
    table = Table(title=f"lit-llm run: {out_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    console.print(table)
    perf = meta.get("perf") or {}
    if "tokens_per_s" in perf:
        console.print(format_perf(perf), markup=False, highlight=False)
    if "val/ppl" in metrics and "baseline/unigram_ppl" in metrics:
        ratio = metrics["baseline/unigram_ppl"] / metrics["val/ppl"]
        console.print(f"validation perplexity {metrics['val/ppl']:.2f} vs {metrics['baseline/unigram_ppl']:.2f} "
                      f"for a unigram model of the same tokens ({ratio:.1f}x lower)")
    if sample:
        console.print("[bold]generated sample[/bold] (final weights):")
        console.print(sample, markup=False, highlight=False)


__all__ = ["flat_metrics", "write_results", "report_settings", "write_run_report", "calibration_plots", "print_summary"]
