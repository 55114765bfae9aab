"""Compare runs: one row per run directory, sorted by the optimised metric, in leaderboard.md/.csv/.png.

A run directory is one that `pipelines/train.py` wrote: `run.json` (status, seed, error),
`metrics.json` (flat metrics), `report.json` (the same metrics with 95% intervals; absent in older
runs) and `.hydra/` (`overrides.yaml`: the "key=value" strings of the command line; `config.yaml`:
the resolved config, with `optimized_metric`; `hydra.yaml`: the sweeper, e.g. Optuna's direction).

- Overrides equal in every run go into one header line; the others become columns.
- Runs that differ only by `seed` are grouped: mean ± sample standard deviation over the seeds.
- Failed (or unfinished) runs are listed with their error line but left out of every statistic.
- The plot: the optimised metric against each swept parameter (log x when the values span > 10x).
- Compute (run.json `compute`): training FLOPs, examples, steps and fit time as columns, and the optimised metric
  against training FLOPs with its Pareto front (`leaderboard_pareto.png`, `lit_llm.reporting.compute`).
- `add_comparisons`: paired tests between runs tested on the same examples (`lit_llm.reporting.comparisons`):
  "best" / "≈ best" marks and the resolution line, `--baseline key=value`, `--paired`; also `comparisons.json`.
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
from lit_llm.faults import run_status
from lit_llm.reporting.comparisons import ALPHA, verdict
from lit_llm.reporting.compute import compute_of, fmt_flops, pareto_plot
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
    status: str = "unknown"  # completed | failed | interrupted | running | died (killed) | unknown (no run.json)
    error: str | None = None
    seed: Any = None
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, dict] = field(default_factory=dict)
    optimized_metric: str | None = None
    direction: str | None = None  # from the run's Optuna sweeper config, when it had one
    fingerprints: dict[str, str] = field(default_factory=dict)  # report.json: {test split: sha256 of its batches}
    per_example: dict | None = None  # report.json's index of statistics.npz (per-example features)
    compute: dict | None = None  # run.json's compute accounting (training FLOPs, tokens, steps, wall time)

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def has_statistics(self) -> bool:
        return bool(self.per_example) and (self.path / self.per_example["file"]).is_file()

    def load_statistics(self) -> dict:
        """{metric: lit_llm.metrics.bootstrap.Statistic} saved with the run ({} when none)."""
        from lit_llm.metrics.bootstrap import load_statistics

        if not self.has_statistics:
            return {}
        return load_statistics(self.path / self.per_example["file"], self.per_example["statistics"])

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
        run.status = run_status(path, meta)  # "running" with no live process holding the directory: "died"
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
    run.fingerprints = dict((report.get("data") or {}).get("fingerprints") or {})
    per_example = report.get("per_example")
    run.per_example = per_example if isinstance(per_example, dict) and "file" in per_example else None
    run.compute = compute_of(meta) if meta else None
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
    comparisons: dict = field(default_factory=dict)  # add_comparisons(): paired tests (lit_llm.reporting.comparisons)


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


def paired_metric(board: Leaderboard) -> str | None:
    """The metric paired tests rank by: the test metric (with per-example statistics) of the same name as the
    optimised one (val/acc -> test/<split>/acc), else the first test metric with statistics."""
    saved = sorted({m for r in board.runs if r.completed and r.per_example for m in r.per_example["statistics"]})
    leaf = (board.metric or "").rsplit("/", 1)[-1]
    return next((m for m in saved if m.rsplit("/", 1)[-1] == leaf), saved[0] if saved else None)


def add_comparisons(board: Leaderboard, settings: dict, metric: str | None = None, baseline: str | None = None,
                    paired: bool = False, order: list[Path] | None = None) -> None:
    """Paired tests into `board.comparisons`: every entry against the best on `metric` (default `paired_metric`),
    with `baseline` ("key=value") every entry against its baseline, with `paired` the two entries against each
    other on every metric, in the order of `order` (the paths given); NotPaired when they were not tested on the
    same examples."""
    from lit_llm.reporting import comparisons as cmp

    entries = cmp.make_entries(board.runs, board.varying)
    out: dict[str, Any] = {"settings": settings, "entries": {e.name: [r.name for r in e.runs] for e in entries}}
    if paired:
        if len(entries) != 2:
            raise ConfigError(f"--paired compares two runs (or two seed groups); these paths hold {len(entries)}: "
                              f"{', '.join(e.name for e in entries)}")
        if order:  # A vs B in the order the paths were given
            roots = [p.resolve() for p in order]
            entries.sort(key=lambda e: next((i for i, p in enumerate(roots) if e.runs[0].path.is_relative_to(p)),
                                            len(roots)))
        out["paired"] = cmp.compare(entries[0], entries[1], settings)
    metric = metric or paired_metric(board)
    if metric:
        direction = metric_direction(metric) or board.direction or "max"
        out["best"] = {"metric": metric, "direction": direction,
                       **cmp.versus_best(entries, metric, direction, settings)}
    if baseline:
        key, sep, value = baseline.partition("=")
        if not sep or key not in board.varying:
            raise ConfigError(f"--baseline {baseline!r}: give key=value with a key that differs between the runs "
                              f"({', '.join(board.varying) or 'none differs'})")
        out["baseline"] = {"key": key, "value": value,
                           "rows": cmp.versus_baseline(entries, key, value, settings)}
    board.comparisons = out


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
    compute_keys = sorted({k for r in board.runs for k, v in (r.compute or {}).items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)})
    header += [f"compute/{k}" for k in compute_keys] + ["error", "path"]
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
        row += [(r.compute or {}).get(k, "") for k in compute_keys]
        row += [(r.error or "").splitlines()[0] if r.error else "", str(r.path)]
        w.writerow(row)
    return buf.getvalue()


def _marks(board: Leaderboard) -> dict[str, str]:
    """{entry name: "best" | "≈ best" (not distinguishable: `comparisons.verdict`) | "" | "not paired"}."""
    best = board.comparisons.get("best") or {}
    if not best.get("rows"):
        return {}
    marks = {best["best"]: "best"}
    for name, row in best["rows"].items():
        marks[name] = ("not paired" if "error" in row else
                       "≈ best" if verdict(row, best["direction"]) == "not significant" else "")
    return marks


def _pm(row: dict) -> str:
    return f"{fmt(row['difference'])} [{fmt(row['low'])}, {fmt(row['high'])}]"


def _comparison_table(rows: list[dict], direction_of) -> list[str]:
    lines = ["| run | vs | metric | value | vs value | difference [95%] | p | p (Holm) | McNemar p | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {_cell(r.get('entry', ''))} | | | | | | | | | not paired: {_cell(r['error'])} |")
            continue
        mc = r.get("mcnemar")
        cells = [r["entry"], r["versus"], r["metric"], fmt(r["a"]), fmt(r["b"]), _pm(r), f"{r['p_value']:.4f}",
                 f"{r['p_holm']:.4f}" if "p_holm" in r else "", f"{mc['p_value']:.4f}" if mc else "",
                 verdict(r, direction_of(r["metric"]))]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _comparison_sections(board: Leaderboard) -> list[str]:
    cmp = board.comparisons
    if not cmp:
        return []
    settings = cmp["settings"]
    how = (f"paired bootstrap over the test examples ({settings.get('resamples', 1000)} resamples, seed "
           f"{settings.get('seed', 0)}; seed groups pooled over their seeds), McNemar's exact test for single runs "
           "of a right/wrong metric, Holm's correction over the comparisons of a metric")
    direction_of = lambda m: metric_direction(m) or board.direction  # noqa: E731
    lines: list[str] = []
    if "paired" in cmp:
        rows = cmp["paired"]
        lines += ["", f"## Paired: {rows[0]['entry']} vs {rows[0]['versus']}", "", f"Tests: {how}.", ""]
        lines += _comparison_table(rows, direction_of)
    best = cmp.get("best") or {}
    if best.get("rows"):
        lines += ["", f"## Against the best on {best['metric']} ({best['best']})", "",
                  f"Tests: {how}. \"≈ best\": not distinguishable from the best (Holm-adjusted p >= {ALPHA} or the "
                  "difference's interval holds 0)."]
        if best.get("resolution") is not None:
            lines.append(f"Smallest difference these runs can resolve on {best['metric']}: about "
                         f"±{fmt(best['resolution'])} (median half-width of the paired 95% intervals); smaller "
                         "differences are within the test set's noise.")
        rows = [{"entry": name, **r} if "error" in r else r for name, r in best["rows"].items()]
        lines += [""] + _comparison_table(rows, direction_of)
    base = cmp.get("baseline")
    if base:
        lines += ["", f"## Against {base['key']}={base['value']}", "",
                  f"Each run (or seed group) against the one equal to it but for `{base['key']}={base['value']}`. "
                  f"Tests: {how}.", ""]
        lines += _comparison_table(base["rows"], direction_of)
    return lines


def _line(r: dict, direction: str | None) -> str:
    if "error" in r:
        return f"  {r.get('entry', '')}: not paired: {r['error']}"
    p = f"p={r['p_value']:.4f}" + (f" (Holm {r['p_holm']:.4f})" if "p_holm" in r else "")
    mc = f", McNemar p={r['mcnemar']['p_value']:.4f}" if r.get("mcnemar") else ""
    return (f"  {r['metric']}: {r['entry']} {fmt(r['a'])} vs {r['versus']} {fmt(r['b'])}: {_pm(r)}, {p}{mc}: "
            f"{verdict(r, direction)}")


def comparison_lines(board: Leaderboard) -> list[str]:
    """The paired tests in a few console lines (the markdown has them all)."""
    cmp, out = board.comparisons, []
    direction_of = lambda m: metric_direction(m) or board.direction  # noqa: E731
    for r in cmp.get("paired") or []:
        out.append(_line(r, direction_of(r["metric"])))
    best = cmp.get("best") or {}
    if best.get("rows"):
        marks = _marks(board)
        same = [n for n, m in marks.items() if m == "≈ best"]
        out.append(f"paired tests on {best['metric']}: best {best['best']}; not distinguishable from it: "
                   f"{', '.join(same) or 'none'}" + (f"; resolution about ±{fmt(best['resolution'])}"
                                                     if best.get("resolution") is not None else ""))
    base = cmp.get("baseline")
    if base:
        metric = best.get("metric")
        out.append(f"against {base['key']}={base['value']}:")
        out += [_line(r, direction_of(r.get("metric", ""))) for r in base["rows"]
                if "error" in r or r["metric"] == metric or metric is None]
    return out


def _compute_cells(run: Run) -> list[str]:
    c = run.compute or {}
    return [fmt_flops(c.get("train_flops")), f"{c['examples']:,}" if "examples" in c else "",
            str(c.get("optimizer_steps", "")), f"{c['fit_wall_s']:,.0f}" if "fit_wall_s" in c else ""]


COMPUTE_COLUMNS = ["train FLOPs", "examples seen", "steps", "fit s"]


def to_markdown(board: Leaderboard, plot_name: str | None, pareto_name: str | None = None) -> str:
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

    marks = _marks(board)
    run_marks = any(r.name in marks for r in board.runs)
    computed = any(r.compute for r in board.runs)
    header = ["#", "run", "status", *board.varying, "seed", *board.metric_columns,
              *(["vs best"] if run_marks else []), *(COMPUTE_COLUMNS if computed else [])]
    lines += ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    rank = 0
    for r in board.runs:
        rank += r.completed
        row = [rank if r.completed else "", r.name, r.status, *(r.overrides.get(k, "") for k in board.varying),
               r.seed if r.seed is not None else "", *(_with_interval(r, m) for m in board.metric_columns),
               *([marks.get(r.name, "")] if run_marks else []), *(_compute_cells(r) if computed else [])]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")

    if board.groups:
        lines += ["", "## Across seeds (runs that differ only by `seed`): mean ± std", ""]
        group_marks = any(_group_label(g, board.varying) in marks for g in board.groups)
        header = ["overrides", "seeds", *board.metric_columns, *(["vs best"] if group_marks else [])]
        lines += ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
        for g in board.groups:
            cells = []
            for m in board.metric_columns:
                values = [v for r in g if (v := r.value(m)) is not None]
                mean, std = mean_std(values) if values else (None, None)
                cells.append(f"{fmt(mean)} ± {fmt(std)} (n={len(values)})" if values else "")
            seeds = ", ".join(str(s) for s in sorted((r.seed for r in g), key=_natural_key))
            label = _group_label(g, board.varying)
            cells += [marks.get(label, "")] if group_marks else []
            lines.append("| " + " | ".join(_cell(c) for c in [label, seeds, *cells]) + " |")
    lines += _comparison_sections(board)

    failed = [r for r in board.runs if not r.completed]
    if failed:
        lines += ["", "## Not completed (left out of the statistics)", ""]
        lines += [f"- `{r.name}` ({r.status}): {_cell((r.error or 'no error recorded').splitlines()[0])}"
                  for r in failed]
    if plot_name:
        lines += ["", f"![{board.metric} against the swept parameters]({plot_name})"]
    if pareto_name:
        lines += ["", f"![{board.metric} against training FLOPs, Pareto front]({pareto_name})"]
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
    pareto = _pareto_png(board)
    if pareto is not None:
        files["pareto"] = atomic_write_bytes(out_dir / "leaderboard_pareto.png", pareto)
    if board.comparisons:
        files["comparisons"] = atomic_write_text(out_dir / "comparisons.json",
                                                 json.dumps(board.comparisons, indent=2, default=str) + "\n")
    files["md"] = atomic_write_text(out_dir / "leaderboard.md", to_markdown(
        board, "leaderboard.png" if png else None, "leaderboard_pareto.png" if pareto is not None else None))
    return files


def _pareto_png(board: Leaderboard) -> bytes | None:
    """The optimised metric against training FLOPs (completed runs with both); None when fewer than 2."""
    runs = [r for r in board.runs if r.value(board.metric) is not None and (r.compute or {}).get("train_flops")]
    if len(runs) < 2 or not board.direction:
        return None
    return pareto_plot([r.name for r in runs], [r.compute["train_flops"] for r in runs],
                       [r.value(board.metric) for r in runs], board.metric, board.direction)
