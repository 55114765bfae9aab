"""Paired comparisons between the runs of a leaderboard (the statistics are `lit_llm.metrics.paired`).

An *entry* is what the leaderboard ranks: one run, or a group of runs that differ only by seed (their per-example
features pooled over the seeds, `paired.pool_seeds`). Two entries can be compared only when their runs were tested
on the same examples: equal test fingerprints in `report.json` (sha256 of the evaluated token ids and labels, so
the same test set, tokenizer and truncation) and per-example statistics saved with the run (`statistics.npz`).
When each seed has its own test set (held out with the seed) but both entries' runs of one seed share it, the
seeds' examples are stacked instead (`check_paired`). Three questions:
- `versus_best`: which entries are distinguishable from the best one on a metric (Holm-corrected paired tests of
  the best against each other entry) and the smallest difference these runs can resolve (the median half-width
  of the paired 95% intervals);
- `versus_baseline`: each entry against the entry with the same overrides but `key=value` (e.g. pretrained vs
  from scratch at every training-set size), Holm-corrected per metric;
- `compare`: two entries on every metric they share (the `--paired` mode of pipelines/report.py).
"""
from __future__ import annotations

import statistics as pystats
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lit_llm.metrics import bootstrap as bs
from lit_llm.metrics.paired import NotPaired, binary_outcomes, holm, mcnemar_exact, paired_bootstrap, pool_seeds

ALPHA = 0.05


@dataclass
class Entry:
    name: str
    runs: list  # leaderboard.Run
    overrides: dict[str, str] = field(default_factory=dict)  # without the seed
    _stats: dict[str, Any] | None = None

    @property
    def fingerprints(self) -> dict:
        return self.runs[0].fingerprints

    def statistics(self) -> dict[str, bs.Statistic]:
        """{metric: Statistic} of the metrics every run of the entry saved, pooled over its seeds."""
        if self._stats is None:
            per_run = [r.load_statistics() for r in self.runs]
            common = set.intersection(*(set(s) for s in per_run)) if per_run else set()
            self._stats = {m: (per_run[0][m] if len(per_run) == 1 else pool_seeds([s[m] for s in per_run]))
                           for m in sorted(common)}
        return self._stats


def make_entries(runs: list, varying: list[str], seed_key: str = "seed") -> list[Entry]:
    """Completed runs as entries: grouped by every differing override but the seed."""
    groups: dict[tuple, list] = {}
    for r in runs:
        if r.completed:
            groups.setdefault(tuple(r.overrides.get(k) for k in varying if k != seed_key), []).append(r)
    entries = []
    for key, members in groups.items():
        overrides = {k: v for k, v in zip([k for k in varying if k != seed_key], key) if v is not None}
        name = members[0].name if len(members) == 1 else (", ".join(f"{k}={v}" for k, v in overrides.items())
                                                           or "(same overrides)")
        entries.append(Entry(name, members, overrides))
    return entries


def _fingerprint_difference(r1, r2) -> str | None:
    if r1.fingerprints == r2.fingerprints:
        return None
    splits = sorted(set(r1.fingerprints) | set(r2.fingerprints))
    diff = "; ".join(f"{s}: {str(r1.fingerprints.get(s))[:12]} vs {str(r2.fingerprints.get(s))[:12]}"
                     for s in splits if r1.fingerprints.get(s) != r2.fingerprints.get(s))
    return (f"{r1.name} and {r2.name} were not tested on the same examples (test fingerprints differ: {diff}); a "
            "paired test needs the same test set, tokenizer and max_length")


def check_paired(a: Entry, b: Entry) -> str:
    """How a and b pair: "pooled" (every run of both tested on the same examples: seeds pooled per example) or
    "by seed" (each seed's test set differs, e.g. held out with the seed, but a's and b's runs of one seed share
    it: the seeds' examples are stacked); NotPaired naming the runs and what differs otherwise."""
    runs = a.runs + b.runs
    missing = [r.name for r in runs if not r.fingerprints]
    if missing:
        raise NotPaired(f"no test fingerprint in report.json of {', '.join(missing)} (written before reports "
                        "existed, or report.enabled=false): these runs cannot be paired")
    no_records = [r.name for r in runs if not r.has_statistics]
    if no_records:
        raise NotPaired(f"no per-example statistics (statistics.npz) in {', '.join(no_records)}: rerun "
                        "pipelines/evaluate.py on their checkpoints to write them")
    differences = [d for r in runs[1:] if (d := _fingerprint_difference(runs[0], r))]
    if not differences:
        return "pooled"
    seeds_a, seeds_b = _by_seed(a), _by_seed(b)
    if len(a.runs) > 1 and seeds_a is not None and seeds_a.keys() == (seeds_b or {}).keys():
        per_seed = [_fingerprint_difference(seeds_a[s], seeds_b[s]) for s in seeds_a]
        if not any(per_seed):
            return "by seed"
        differences = [d for d in per_seed if d]
    raise NotPaired(differences[0])


def _by_seed(e: Entry) -> dict | None:
    seeds = {str(r.seed): r for r in e.runs}
    return seeds if len(seeds) == len(e.runs) else None


def _stacked(e: Entry, metric: str) -> bs.Statistic:
    """The entry's runs in seed order as one system whose examples are every seed's test examples."""
    stats = [r.load_statistics()[metric] for _, r in sorted(_by_seed(e).items())]
    return bs.Statistic(np.concatenate([st.features for st in stats]), stats[0].fn,
                        f"{stats[0].definition}; stacked over {len(stats)} seeds' test sets", kind=stats[0].kind)


def compare_metric(a: Entry, b: Entry, metric: str, settings: dict) -> dict:
    """Paired bootstrap of a - b on `metric` (+ McNemar's exact test for single runs of a right/wrong metric)."""
    mode = check_paired(a, b)
    sa, sb = ((a.statistics()[metric], b.statistics()[metric]) if mode == "pooled"
              else (_stacked(a, metric), _stacked(b, metric)))
    out = paired_bootstrap(sa, sb, resamples=settings.get("resamples", 1000),
                           confidence=settings.get("confidence", 0.95), seed=settings.get("seed", 0))
    out.update(metric=metric, entry=a.name, versus=b.name, seeds=(len(a.runs), len(b.runs)), pairing=mode)
    right_a, right_b = binary_outcomes(sa), binary_outcomes(sb)
    if len(a.runs) == len(b.runs) == 1 and right_a is not None and right_b is not None:
        out["mcnemar"] = mcnemar_exact(right_a, right_b)
    return out


def compare(a: Entry, b: Entry, settings: dict, metrics: list[str] | None = None) -> list[dict]:
    """a vs b on every metric both saved (or `metrics`); NotPaired when they were tested on different examples."""
    check_paired(a, b)
    shared = [m for m in a.statistics() if m in b.statistics() and (metrics is None or m in metrics)]
    if not shared:
        raise NotPaired(f"{a.name} and {b.name} share no metric with per-example statistics")
    return [compare_metric(a, b, m, settings) for m in shared]


def _better(x: float, y: float, direction: str) -> bool:
    return x > y if direction == "max" else x < y


def versus_best(entries: list[Entry], metric: str, direction: str, settings: dict) -> dict:
    """{"best": name, "rows": {name: comparison of the best with it (p_holm added) | {"error": why}},
    "resolution": median half-width of the paired intervals | None}."""
    valued = [(e, e.statistics()[metric].value()) for e in entries if metric in e.statistics()]
    if len(valued) < 2:
        return {"best": valued[0][0].name if valued else None, "rows": {}, "resolution": None}
    best = valued[0][0]
    for e, v in valued[1:]:
        if _better(v, best.statistics()[metric].value(), direction):
            best = e
    rows: dict[str, dict] = {}
    for e, _ in valued:
        if e is best:
            continue
        try:
            check_paired(best, e)
            rows[e.name] = compare_metric(best, e, metric, settings)
        except NotPaired as why:
            rows[e.name] = {"error": str(why)}
    _add_holm([r for r in rows.values() if "p_value" in r])
    widths = [(r["high"] - r["low"]) / 2 for r in rows.values() if "p_value" in r]
    return {"best": best.name, "rows": rows, "resolution": pystats.median(widths) if widths else None}


def versus_baseline(entries: list[Entry], key: str, value: str, settings: dict,
                    metrics: list[str] | None = None) -> list[dict]:
    """Each entry with `key` != value against the entry equal to it but for key=value, on every shared metric
    (or `metrics`); Holm over the comparisons of each metric. Rows: comparisons, or {"entry", "error"}."""
    # matched on the keys the baselines set: a key only the other entries have (e.g. the path of a start that only
    # they use, study.tapt_run with start=tapt) does not keep them from their baseline
    shared = sorted({k for e in entries if e.overrides.get(key) == value for k in e.overrides} - {key})

    def rest(e: Entry) -> tuple:
        return tuple(e.overrides.get(k) for k in shared)

    baselines = {rest(e): e for e in entries if e.overrides.get(key) == value}
    rows: list[dict] = []
    for e in entries:
        if e.overrides.get(key) == value:
            continue
        base = baselines.get(rest(e))
        if base is None:
            rows.append({"entry": e.name, "error": f"no run with {key}={value} and the same other overrides"})
            continue
        try:
            rows += compare(e, base, settings, metrics)
        except NotPaired as why:
            rows.append({"entry": e.name, "error": str(why)})
    for metric in {r["metric"] for r in rows if "metric" in r}:
        _add_holm([r for r in rows if r.get("metric") == metric])
    return rows


def _add_holm(rows: list[dict]) -> None:
    for row, p in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = p


def verdict(row: dict, direction: str | None) -> str:
    """"better" / "worse" (the first system than the second) / "not significant": a difference counts when its
    p-value (Holm-adjusted when available) is below ALPHA and its 95% interval excludes 0."""
    p = row.get("p_holm", row["p_value"])
    if p >= ALPHA or row["low"] <= 0 <= row["high"]:
        return "not significant"
    up = row["difference"] > 0
    return "better" if (up if direction != "min" else not up) else "worse"


__all__ = ["Entry", "make_entries", "check_paired", "compare", "compare_metric", "versus_best", "versus_baseline",
           "verdict", "ALPHA"]
