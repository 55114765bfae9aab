"""Compare runs: one row per run directory, sorted by the optimised metric, in leaderboard.md/.csv/.png.

A run directory is one that `pipelines/train.py` wrote: `run.json` (status, seed, error),
`metrics.json` (flat metrics), `report.json` (the same metrics with 95% intervals; absent in older
runs) and `.hydra/` (`overrides.yaml`: the "key=value" strings of the command line; `config.yaml`:
the resolved config, with `optimized_metric`; `hydra.yaml`: the sweeper, e.g. Optuna's direction).

- Overrides equal in every run go into one header line; the others become columns.
- Runs that differ only by `seed` are grouped: mean ± sample standard deviation over the seeds.
- Failed (or unfinished) runs are listed with their error line but left out of every statistic.
- The plot: the optimised metric against each swept parameter (log x when the values span > 10x).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

from lit_llm.errors import ConfigError
from lit_llm.utils_io import atomic_write_bytes, atomic_write_text

# direction of a metric from the last part of its name (val/acc -> acc, test/validation/ppl -> ppl)
MAXIMIZE = ("acc", "accuracy", "masked_acc", "f1", "f1_*", "em", "exact_match", "bleu", "chrf", "rouge*",
            "precision", "recall", "auc")
MINIMIZE = ("loss", "ppl", "perplexity", "error", "wer", "cer")
DEFAULT_METRICS = ("val/*", "test/*")  # markdown columns unless --metrics; per-class */f1/<label> left out
SEED_KEY = "seed"


class NoRuns(ConfigError):
    """Nothing to compare (no directory, or no completed run)."""


@dataclass
class Run:
    path: Path
    name: str = ""
    status: str = "unknown"  # completed | failed | running (or killed) | unknown (no run.json)
    error: str | None = None
    seed: Any = None
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, dict] = field(default_factory=dict)
    optimized_metric: str | None = None
    direction: str | None = None  # from the run's Optuna sweeper config, when it had one

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def value(self, metric: str | None) -> float | None:
        v = self.metrics.get(metric) if metric else None
        return None if v is None or math.isnan(v) else v


# ---------------------------------------------------------------------------------------------
# reading run directories


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def parse_overrides(lines: list[str] | None) -> dict[str, str]:
    """["seed=1", "+trainer.foo=2", "~callbacks.x"] -> {"seed": "1", "trainer.foo": "2", "~callbacks.x": ""}."""
    out: dict[str, str] = {}
    for line in lines or []:
        key, _, value = str(line).partition("=")
        out[key.lstrip("+")] = value
    return out


def read_run(path: Path) -> Run:
    """One run directory -> Run (missing files leave fields empty: a run killed early still lists)."""
    run = Run(path=path)
    meta = _read_json(path / "run.json")
    if meta:
        run.status = str(meta.get("status") or "unknown")
        run.error = meta.get("error")
        run.seed = meta.get("seed")
    run.overrides = parse_overrides(_read_yaml(path / ".hydra" / "overrides.yaml"))
    config = _read_yaml(path / ".hydra" / "config.yaml") or {}
    if isinstance(config, dict):
        run.optimized_metric = config.get("optimized_metric")
        if run.seed is None:
            run.seed = config.get("seed")
    hydra_cfg = (_read_yaml(path / ".hydra" / "hydra.yaml") or {}).get("hydra") or {}
    sweeper = hydra_cfg.get("sweeper") or {}
    if "optuna" in str(sweeper.get("_target_", "")) and isinstance(sweeper.get("direction"), str):
        run.direction = "max" if sweeper["direction"].startswith("max") else "min"
    report = _read_json(path / "report.json")
    metrics = {**_read_json(path / "metrics.json"), **(report.get("metrics") or {})}
    run.metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    run.intervals = {k: v for k, v in (report.get("intervals") or {}).items()
                     if isinstance(v, dict) and "low" in v and "high" in v}
    run.optimized_metric = report.get("optimized_metric") or run.optimized_metric
    return run


def _is_run_dir(d: Path) -> bool:
    return (d / "run.json").is_file() or (d / ".hydra" / "overrides.yaml").is_file()


def _job_order(name: str) -> tuple:
    """Natural order: "2_seed=1" before "10_seed=1" (job numbers lead Hydra's sweep sub-directory names)."""
    head, _, rest = name.partition("_")
    return (0, int(head), rest) if head.isdigit() else (1, 0, name)


def find_runs(paths: list[Path]) -> tuple[list[Run], Path]:
    """Every run directory at or under `paths`, named relative to their common root (returned too)."""
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise NoRuns(f"{', '.join(missing)}: no such directory")
    dirs: list[Path] = []
    for p in paths:
        p = p.resolve()
        found = [p] if _is_run_dir(p) else sorted(
            {f.parent for f in p.rglob("run.json")} | {f.parent.parent for f in p.rglob(".hydra/overrides.yaml")})
        dirs += [d for d in found if d not in dirs]
    if not dirs:
        root = paths[0].resolve() if len(paths) == 1 else Path(os.path.commonpath([p.resolve() for p in paths]))
        return [], root
    root = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
    if len(paths) == 1 and not _is_run_dir(paths[0].resolve()):
        root = paths[0].resolve()
    runs = []
    for d in dirs:
        run = read_run(d)
        run.name = str(d.relative_to(root)) if d != root else d.name
        runs.append(run)
    runs.sort(key=lambda r: tuple(_job_order(part) for part in Path(r.name).parts))
    return runs, root


# ---------------------------------------------------------------------------------------------
# what to compare


def metric_direction(metric: str | None) -> str | None:
    """"max" or "min" for a metric name (acc/f1/em/bleu/rouge* up, loss/ppl down); None when unknown."""
    if not metric:
        return None
    last = metric.rsplit("/", 1)[-1].lower()
    if any(fnmatch(last, p) for p in MAXIMIZE):
        return "max"
    if any(fnmatch(last, p) for p in MINIMIZE):
        return "min"
    return None


def _most_common(values: list) -> Any:
    values = [v for v in values if v]
    return Counter(values).most_common(1)[0][0] if values else None


def split_overrides(runs: list[Run]) -> tuple[dict[str, str], list[str]]:
    """(overrides equal in every run, the keys that differ); `seed` always counts as differing."""
    keys = sorted({k for r in runs for k in r.overrides})
    common, varying = {}, []
    for k in keys:
        values = {r.overrides.get(k) for r in runs}
        if len(values) == 1 and k != SEED_KEY and None not in values:
            common[k] = values.pop()
        elif k != SEED_KEY:
            varying.append(k)
    return common, varying


def seed_groups(runs: list[Run], varying: list[str]) -> list[list[Run]]:
    """Completed runs grouped by every differing override but the seed; groups of 2 runs or more."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.completed:
            groups.setdefault(tuple(r.overrides.get(k) for k in varying), []).append(r)
    return [g for g in groups.values() if len(g) > 1]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _numeric(value: str | None) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# the leaderboard


@dataclass
class Leaderboard:
    runs: list[Run]          # sorted: best first, then completed runs without the metric, then the rest
    root: Path
    metric: str | None
    direction: str | None
    common: dict[str, str]
    varying: list[str]
    metric_columns: list[str]
    groups: list[list[Run]]
    optuna: dict | None = None


def build(paths: list[Path], metrics: list[str] | None = None, direction: str | None = None) -> Leaderboard:
    runs, root = find_runs(paths)
    done = [r for r in runs if r.completed]
    if not done:
        where = ", ".join(str(p) for p in paths)
        counts = Counter(r.status for r in runs)
        found = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no run directories"
        raise NoRuns(f"{where}: no finished runs (no run.json with status completed under it); "
                     f"found {found}")
    metric = _most_common([r.optimized_metric for r in done])
    direction = direction or _most_common([r.direction for r in runs]) or metric_direction(metric)
    common, varying = split_overrides(runs)

    def key(r: Run) -> tuple:
        v = r.value(metric)
        if not r.completed:
            return (2, 0.0)
        if v is None or direction is None:
            return (1, 0.0)
        return (0, -v if direction == "max" else v)

    runs = sorted(runs, key=key)  # stable: job order among equals
    names = sorted({m for r in done for m in r.metrics})
    if metrics:
        columns = [m for m in names if any(fnmatch(m, p) for p in metrics)]
    else:
        columns = [m for m in names if any(fnmatch(m, p) for p in DEFAULT_METRICS) and "/f1/" not in m]
    if metric in names:
        columns = [metric] + [m for m in columns if m != metric]
    groups = seed_groups(runs, varying)
    groups.sort(key=lambda g: key(_mean_run(g, metric)))
    optuna = None
    for p in paths:
        results = _read_yaml(p / "optimization_results.yaml")
        if isinstance(results, dict):
            optuna = {**results, "file": str(p / "optimization_results.yaml")}
    return Leaderboard(runs, root, metric, direction, common, varying, columns, groups, optuna)


def _mean_run(group: list[Run], metric: str | None) -> Run:
    """A stand-in run holding a group's mean metric, for sorting groups like runs."""
    values = [v for r in group if (v := r.value(metric)) is not None]
    return Run(path=group[0].path, status="completed",
               metrics={metric: statistics.fmean(values)} if metric and values else {})


# ---------------------------------------------------------------------------------------------
# writing


def fmt(v: float | None) -> str:
    if v is None:
        return ""
    if math.isnan(v):
        return "nan"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:,.2f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _with_interval(run: Run, m: str) -> str:
    v = run.metrics.get(m)
    if v is None:
        return ""
    ci = run.intervals.get(m)
    return f"{fmt(v)} [{fmt(ci['low'])}, {fmt(ci['high'])}]" if ci else fmt(v)


def _natural_key(value: Any) -> tuple:
    """Numbers in numeric order (2 before 10), then anything else as text."""
    x = _numeric(str(value))
    return (0, x, "") if x is not None else (1, 0.0, str(value))


def _group_label(group: list[Run], varying: list[str]) -> str:
    r = group[0]
    return ", ".join(f"{k}={r.overrides[k]}" for k in varying if k in r.overrides) or "(same overrides)"


def to_csv(board: Leaderboard) -> str:
    """Every run, every metric (full precision), with _low/_high columns where a run has intervals."""
    metric_names = sorted({m for r in board.runs for m in r.metrics})
    if board.metric in metric_names:
        metric_names = [board.metric] + [m for m in metric_names if m != board.metric]
    with_ci = {m for r in board.runs for m in r.intervals}
    header = ["rank", "run", "status", *board.varying, "seed"]
    for m in metric_names:
        header += [m] + ([f"{m}_low", f"{m}_high"] if m in with_ci else [])
    header += ["error", "path"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    rank = 0
    for r in board.runs:
        rank += r.completed
        row = [rank if r.completed else "", r.name, r.status, *(r.overrides.get(k, "") for k in board.varying),
               r.seed if r.seed is not None else ""]
        for m in metric_names:
            row.append(r.metrics.get(m, ""))
            if m in with_ci:
                ci = r.intervals.get(m) or {}
                row += [ci.get("low", ""), ci.get("high", "")]
        row += [(r.error or "").splitlines()[0] if r.error else "", str(r.path)]
        w.writerow(row)
    return buf.getvalue()


def to_markdown(board: Leaderboard, plot_name: str | None) -> str:
    done = [r for r in board.runs if r.completed]
    arrow = {"max": "higher is better", "min": "lower is better"}.get(board.direction or "", "direction unknown")
    lines = [f"# Leaderboard: {board.root}", ""]
    lines.append(f"{len(board.runs)} runs: {len(done)} completed"
                 + "".join(f", {n} {s}" for s, n in sorted(Counter(r.status for r in board.runs
                                                                    if not r.completed).items())) + ".")
    if board.metric:
        lines.append(f"Sorted by **{board.metric}** ({arrow}; the runs' `optimized_metric`).")
    if board.common:
        lines.append("Common overrides: " + ", ".join(f"`{k}={v}`" for k, v in board.common.items()))
    if any(r.intervals for r in done):
        lines.append("Metrics with [low, high]: 95% bootstrap intervals over the test examples (report.json).")
    if board.optuna:
        best = board.optuna.get("best_params") or {}
        params = ", ".join(f"`{k}={v}`" for k, v in best.items())
        lines.append(f"Optuna's best trial (whole study, earlier invocations included): "
                     f"{fmt(board.optuna.get('best_value'))} with {params or '(no parameters)'}.")
    lines.append("")

    header = ["#", "run", "status", *board.varying, "seed", *board.metric_columns]
    lines += ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    rank = 0
    for r in board.runs:
        rank += r.completed
        row = [rank if r.completed else "", r.name, r.status, *(r.overrides.get(k, "") for k in board.varying),
               r.seed if r.seed is not None else "", *(_with_interval(r, m) for m in board.metric_columns)]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")

    if board.groups:
        lines += ["", "## Across seeds (runs that differ only by `seed`): mean ± std", ""]
        header = ["overrides", "seeds", *board.metric_columns]
        lines += ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
        for g in board.groups:
            cells = []
            for m in board.metric_columns:
                values = [v for r in g if (v := r.value(m)) is not None]
                mean, std = mean_std(values) if values else (None, None)
                cells.append(f"{fmt(mean)} ± {fmt(std)} (n={len(values)})" if values else "")
            seeds = ", ".join(str(s) for s in sorted((r.seed for r in g), key=_natural_key))
            lines.append("| " + " | ".join(_cell(c) for c in [_group_label(g, board.varying), seeds, *cells]) + " |")

    failed = [r for r in board.runs if not r.completed]
    if failed:
        lines += ["", "## Not completed (left out of the statistics)", ""]
        lines += [f"- `{r.name}` ({r.status}): {_cell((r.error or 'no error recorded').splitlines()[0])}"
                  for r in failed]
    if plot_name:
        lines += ["", f"![{board.metric} against the swept parameters]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot(board: Leaderboard) -> bytes | None:
    """PNG: the optimised metric against each swept parameter (completed runs); None when nothing to plot."""
    metric = board.metric
    done = [r for r in board.runs if r.value(metric) is not None]
    params = [k for k in board.varying if len({r.overrides.get(k) for r in done}) > 1]
    if not metric or not done or not params:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.4), squeeze=False)
    best = done[0] if board.direction else None
    for ax, k in zip(axes[0], params):
        xs_raw = [r.overrides.get(k) for r in done]
        ys = [r.value(metric) for r in done]
        nums = [_numeric(x) for x in xs_raw]
        if all(x is not None for x in nums):
            xs = nums
            if min(xs) > 0 and max(xs) / min(xs) > 10:
                ax.set_xscale("log")
        else:  # categorical values, in first-seen order
            labels = list(dict.fromkeys("" if x is None else x for x in xs_raw))
            xs = [labels.index("" if x is None else x) for x in xs_raw]
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.scatter(xs, ys, s=28, alpha=0.8)
        if best is not None:
            i = done.index(best)
            ax.scatter([xs[i]], [ys[i]], s=90, facecolors="none", edgecolors="red", label="best")
            ax.legend(fontsize=7)
        ax.set_xlabel(k, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write(board: Leaderboard, out_dir: Path) -> dict[str, Path]:
    """leaderboard.md, leaderboard.csv and (when there is something to plot) leaderboard.png in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"csv": atomic_write_text(out_dir / "leaderboard.csv", to_csv(board))}
    png = plot(board)
    if png is not None:
        files["png"] = atomic_write_bytes(out_dir / "leaderboard.png", png)
    files["md"] = atomic_write_text(out_dir / "leaderboard.md", to_markdown(board, "leaderboard.png" if png else None))
    return files
