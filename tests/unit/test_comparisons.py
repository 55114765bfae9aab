"""Paired tests in pipelines/report.py over hand-written run directories with per-example statistics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lit_llm.metrics import bootstrap as bs
from lit_llm.metrics.paired import mcnemar_exact, paired_bootstrap, pool_seeds
from lit_llm.reporting import leaderboard
from tests.unit.test_leaderboard import _exit_status, _report_main

N = 200  # test examples
LABELS = np.arange(N) % 2


def predictions(accuracy: float, seed: int) -> np.ndarray:
    """Predictions right on a seeded random `accuracy` share of the examples."""
    right = np.random.default_rng(seed).random(N) < accuracy
    return np.where(right, LABELS, 1 - LABELS)


def write_run(d: Path, overrides: dict, seed: int, preds: np.ndarray, fingerprint: str = "fp-dev",
              compute: dict | None = None) -> Path:
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()] + [f"seed={seed}"]))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "optimized_metric": "val/acc"}))
    (d / "run.json").write_text(json.dumps({"status": "completed", "seed": seed, "compute": compute}))
    stats = {"test/test/acc": bs.accuracy_statistic(preds, LABELS),
             "test/test/f1_macro": bs.macro_f1_statistic(preds, LABELS, 2)}
    metrics = {"val/acc": stats["test/test/acc"].value(), **{k: s.value() for k, s in stats.items()}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    index = bs.save_statistics(d / "statistics.npz", stats)
    (d / "report.json").write_text(json.dumps({
        "metrics": metrics, "optimized_metric": "val/acc", "data": {"fingerprints": {"test": fingerprint}},
        "per_example": {"file": "statistics.npz", "statistics": index}}))
    return d


def test_two_runs_paired_on_every_metric_in_the_order_given(tmp_path, capsys):
    pa, pb = predictions(0.80, 1), predictions(0.70, 2)
    a = write_run(tmp_path / "a", {"lr": "1e-3"}, 1, pa)
    b = write_run(tmp_path / "b", {"lr": "1e-4"}, 1, pb)
    main = _exit_status(_report_main())
    assert main([str(b), str(a), "--paired", "--out", str(tmp_path / "cmp")]) == 0
    rows = json.loads((tmp_path / "cmp" / "comparisons.json").read_text())["paired"]
    assert [r["metric"] for r in rows] == ["test/test/acc", "test/test/f1_macro"]
    acc = rows[0]
    assert (acc["entry"], acc["versus"]) == ("b", "a")  # B first, as given
    expected = paired_bootstrap(bs.accuracy_statistic(pb, LABELS), bs.accuracy_statistic(pa, LABELS))
    assert acc["difference"] == pytest.approx((pb == LABELS).mean() - (pa == LABELS).mean())
    assert (acc["low"], acc["high"], acc["p_value"]) == pytest.approx(
        (expected["low"], expected["high"], expected["p_value"]))
    assert acc["mcnemar"] == mcnemar_exact(pb == LABELS, pa == LABELS)
    assert "mcnemar" not in rows[1]  # macro-F1 is not right/wrong per example
    out = capsys.readouterr().out
    assert "test/test/acc: b " in out and "worse" in out
    assert "## Paired: b vs a" in (tmp_path / "cmp" / "leaderboard.md").read_text()


def test_runs_tested_on_other_examples_are_refused(tmp_path, capsys):
    a = write_run(tmp_path / "a", {"lr": "1e-3"}, 1, predictions(0.8, 1), fingerprint="fp-one")
    b = write_run(tmp_path / "b", {"lr": "1e-4"}, 1, predictions(0.7, 2), fingerprint="fp-two")
    main = _exit_status(_report_main())
    assert main([str(a), str(b), "--paired", "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a and b were not tested on the same examples (test fingerprints differ: "
                          "test: fp-one vs fp-two)")
    assert not (tmp_path / "cmp" / "comparisons.json").exists()
    assert main([str(tmp_path)]) == 0  # without --paired the leaderboard builds, the pair marked unpaired
    best = json.loads((tmp_path / "comparisons.json").read_text())["best"]
    assert "not tested on the same examples" in best["rows"]["b"]["error"]


def _sweep(tmp_path, accuracies: dict, seeds=(1, 2, 3), fingerprint=lambda seed: "fp-dev") -> Path:
    root = tmp_path / "sweep"
    job = 0
    for lr, acc in accuracies.items():
        for seed in seeds:
            write_run(root / f"{job}_lr={lr},seed={seed}", {"lr": lr}, seed, predictions(acc, 100 * seed + job),
                      fingerprint(seed), compute={"train_flops": 1e12 * (job + 1), "examples": 640, "optimizer_steps": 20,
                                                  "fit_wall_s": 12.5})
            job += 1
    return root


def test_seed_groups_best_marks_and_resolution(tmp_path, capsys):
    root = _sweep(tmp_path, {"0.1": 0.86, "0.01": 0.85, "0.001": 0.65})
    board = leaderboard.build([root])
    leaderboard.add_comparisons(board, {"resamples": 500, "seed": 0})
    best = board.comparisons["best"]
    assert best["metric"] == "test/test/acc" and best["best"] == "lr=0.01"  # these draws: 0.857 vs 0.845
    near, far = best["rows"]["lr=0.1"], best["rows"]["lr=0.001"]
    assert leaderboard._marks(board) == {"lr=0.01": "best", "lr=0.1": "≈ best", "lr=0.001": ""}
    # the seeds are pooled example by example: the same as pool_seeds on the runs' own statistics
    group = [r for r in board.runs if r.overrides["lr"] == "0.01"]
    pooled = pool_seeds([r.load_statistics()["test/test/acc"] for r in group])
    assert near["a"] == pytest.approx(pooled.value())
    assert far["p_holm"] >= far["p_value"] and far["pairing"] == "pooled"
    assert best["resolution"] == pytest.approx(np.median([(r["high"] - r["low"]) / 2 for r in (near, far)]))
    leaderboard.write(board, root)
    md = (root / "leaderboard.md").read_text()
    assert "Smallest difference these runs can resolve on test/test/acc: about ±" in md
    assert "| train FLOPs | examples seen | steps | fit s |" in md and "| 1.0e12 | 640 | 20 | 12 |" in md
    assert (root / "leaderboard_pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baseline_pairs_each_group_with_its_counterpart(tmp_path):
    root = _sweep(tmp_path, {"0.1": 0.86, "0.01": 0.80, "0.001": 0.65})
    board = leaderboard.build([root])
    leaderboard.add_comparisons(board, {"resamples": 300, "seed": 0}, baseline="lr=0.001")
    rows = board.comparisons["baseline"]["rows"]
    assert [(r["entry"], r["versus"], r["metric"]) for r in rows] == [
        ("lr=0.1", "lr=0.001", "test/test/acc"), ("lr=0.1", "lr=0.001", "test/test/f1_macro"),
        ("lr=0.01", "lr=0.001", "test/test/acc"), ("lr=0.01", "lr=0.001", "test/test/f1_macro")]
    assert all(r["difference"] > 0 and r["p_holm"] >= r["p_value"] for r in rows)
    with pytest.raises(leaderboard.ConfigError, match="--baseline 'size=1'"):
        leaderboard.add_comparisons(board, {}, baseline="size=1")


def test_seeds_with_their_own_test_sets_pair_seed_by_seed(tmp_path):
    root = _sweep(tmp_path, {"0.1": 0.86, "0.001": 0.6}, seeds=(1, 2), fingerprint=lambda seed: f"fp-{seed}")
    board = leaderboard.build([root])
    leaderboard.add_comparisons(board, {"resamples": 300, "seed": 0})
    row = board.comparisons["best"]["rows"]["lr=0.001"]
    assert row["pairing"] == "by seed"
    runs = {(r.overrides["lr"], r.seed): r.load_statistics()["test/test/acc"] for r in board.runs}
    stacked = [np.concatenate([runs[(lr, s)].features[:, 0] for s in (1, 2)]) for lr in ("0.1", "0.001")]
    assert row["difference"] == pytest.approx(stacked[0].mean() - stacked[1].mean())


def test_baseline_ignores_keys_only_the_other_entries_set(tmp_path):
    """start=tapt runs also name study.tapt_run, which the start=scratch runs lack: they still find their twin."""
    root = tmp_path / "sweep"
    for job, (start, extra) in enumerate([("scratch", {}), ("tapt", {"study.tapt_run": "/runs/tapt"})]):
        for size in (500, 2000):
            write_run(root / f"{job}_{start}_{size}", {"data.train_limit": size, "start": start, **extra}, 1,
                      predictions(0.7 + 0.1 * (start == "tapt"), size + job))
    board = leaderboard.build([root])
    leaderboard.add_comparisons(board, {"resamples": 100, "seed": 0}, baseline="start=scratch")
    rows = [r for r in board.comparisons["baseline"]["rows"] if r["metric"] == "test/test/acc"]
    assert sorted((r["entry"], r["versus"]) for r in rows) == [("1_tapt_2000", "0_scratch_2000"),
                                                              ("1_tapt_500", "0_scratch_500")]
