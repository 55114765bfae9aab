"""pipelines/report.py over hand-written run directories: rows, order, seed statistics, csv, png, errors.

The sweep below: task.optim.lr x seed, val/acc (maximised). Sorted: 2 (0.84), 0 (0.80), 4 (0.74), 1 (0.70),
10 (0.60), then the failed 3. Across seeds: lr=0.001 -> 0.82 ± 0.0283 (0.80, 0.84), lr=0.01 -> 0.72 ± 0.0283
(0.70, 0.74; the failed seed 2 left out); sample std of two values a, b = |a - b| / sqrt(2).
"""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from lit_llm.reporting import leaderboard
from tests.conftest import ROOT

RUNS = {  # name: (seed, lr, status, val/acc, test/test/acc)
    "0_seed=1,task.optim.lr=0.001": (1, "0.001", "completed", 0.80, 0.78),
    "1_seed=1,task.optim.lr=0.01": (1, "0.01", "completed", 0.70, 0.69),
    "2_seed=2,task.optim.lr=0.001": (2, "0.001", "completed", 0.84, 0.80),
    "3_seed=2,task.optim.lr=0.01": (2, "0.01", "failed", None, None),
    "4_seed=3,task.optim.lr=0.01": (3, "0.01", "completed", 0.74, 0.71),
    "10_seed=3,task.optim.lr=0.1": (3, "0.1", "completed", 0.60, 0.58),
}


def write_run(d: Path, seed, lr, status, val_acc, test_acc, *, intervals: bool = False, hydra: dict | None = None):
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["experiment=sst2_bert", f"task.optim.lr={lr}", f"seed={seed}"]))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "optimized_metric": "val/acc"}))
    (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra or {"sweeper": {
        "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}}}))
    run = {"status": status, "task_name": "sst2_bert", "seed": seed}
    if status == "failed":
        run["error"] = "RuntimeError: boom\nsecond line"
    (d / "run.json").write_text(json.dumps(run))
    if status == "completed":
        metrics = {"val/acc": val_acc, "test/test/acc": test_acc, "val/loss": 1 - val_acc, "test/test/f1/positive": 0.5}
        (d / "metrics.json").write_text(json.dumps(metrics))
        if intervals:
            (d / "report.json").write_text(json.dumps({
                "metrics": metrics, "optimized_metric": "val/acc",
                "intervals": {"test/test/acc": {"estimate": test_acc, "low": test_acc - 0.03, "high": test_acc + 0.03,
                                           "n": 872, "confidence": 0.95}}}))


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for name, values in RUNS.items():
        write_run(root / name, *values, intervals=name.startswith("0_"))
    return root


def _report_main():
    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "pipelines" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_leaderboard_rows_order_and_seed_statistics(sweep, capsys):
    assert _report_main()([str(sweep)]) == 0
    assert "best val/acc: 0.8400 (2_seed=2,task.optim.lr=0.001)" in capsys.readouterr().out

    rows = list(csv.DictReader((sweep / "leaderboard.csv").open()))
    assert [r["run"] for r in rows] == ["2_seed=2,task.optim.lr=0.001", "0_seed=1,task.optim.lr=0.001",
                                       "4_seed=3,task.optim.lr=0.01", "1_seed=1,task.optim.lr=0.01",
                                       "10_seed=3,task.optim.lr=0.1", "3_seed=2,task.optim.lr=0.01"]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5", ""]
    assert [r["status"] for r in rows][-1] == "failed" and rows[-1]["error"] == "RuntimeError: boom"
    assert [r["task.optim.lr"] for r in rows[:2]] == ["0.001", "0.001"] and rows[0]["seed"] == "2"
    assert "experiment" not in rows[0]  # equal in every run: a header line, not a column
    assert float(rows[1]["test/test/acc_low"]) == pytest.approx(0.75) and rows[0]["test/test/acc_low"] == ""
    assert rows[0]["test/test/f1/positive"] == "0.5"  # the csv has every metric

    md = (sweep / "leaderboard.md").read_text()
    assert "6 runs: 5 completed, 1 failed." in md
    assert "Sorted by **val/acc** (higher is better" in md and "Common overrides: `experiment=sst2_bert`" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| # | run | status | task.optim.lr | seed | val/acc | test/test/acc | val/loss |"
    assert table[1] == "| 1 | 2_seed=2,task.optim.lr=0.001 | completed | 0.001 | 2 | 0.8400 | 0.8000 | 0.1600 |"
    assert table[2] == "| 2 | 0_seed=1,task.optim.lr=0.001 | completed | 0.001 | 1 | 0.8000 | 0.7800 [0.7500, 0.8100] | 0.2000 |"
    assert table[6] == "|  | 3_seed=2,task.optim.lr=0.01 | failed | 0.01 | 2 |  |  |  |"
    # across seeds: two groups (lr=0.1 has one completed run), best mean first
    assert table[8] == ("| task.optim.lr=0.001 | 1, 2 | 0.8200 ± 0.0283 (n=2) | 0.7900 ± 0.0141 (n=2) "
                        "| 0.1800 ± 0.0283 (n=2) |")
    assert table[9] == ("| task.optim.lr=0.01 | 1, 3 | 0.7200 ± 0.0283 (n=2) | 0.7000 ± 0.0141 (n=2) "
                        "| 0.2800 ± 0.0283 (n=2) |")
    assert "- `3_seed=2,task.optim.lr=0.01` (failed): RuntimeError: boom" in md
    assert "![val/acc against the swept parameters](leaderboard.png)" in md
    assert (sweep / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mean_std_is_the_sample_std():
    mean, std = leaderboard.mean_std([0.70, 0.74])
    assert mean == pytest.approx(0.72) and std == pytest.approx(0.04 / 2 ** 0.5)
    assert leaderboard.mean_std([1.0]) == (1.0, 0.0)


@pytest.mark.parametrize("metric, direction", [("val/acc", "max"), ("test/validation/ppl", "min"), ("val/loss", "min"),
                                               ("test/tydi/em", "max"), ("test/test/rougeLsum", "max"),
                                               ("val/masked_acc", "max"), ("test/test/f1_macro", "max"),
                                               ("val/bleu", "max"), ("val/score", None)])
def test_metric_direction_from_its_name(metric, direction):
    assert leaderboard.metric_direction(metric) == direction


def test_optuna_results_and_direction(tmp_path):
    """An Optuna sweep: the sweeper's direction wins over the name; the best params are quoted."""
    root = tmp_path / "optuna"
    optuna_hydra = {"sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
                                "direction": "minimize"}}
    write_run(root / "0_task.optim.lr=0.001", 1, "0.001", "completed", 0.8, 0.8, hydra=optuna_hydra)
    write_run(root / "1_task.optim.lr=0.0001", 1, "0.0001", "completed", 0.6, 0.6, hydra=optuna_hydra)
    (root / "optimization_results.yaml").write_text(yaml.safe_dump(
        {"name": "optuna", "best_params": {"task.optim.lr": 0.0001}, "best_value": 0.6}))
    board = leaderboard.build([root])
    assert board.direction == "min" and [r.name for r in board.runs][0] == "1_task.optim.lr=0.0001"
    files = leaderboard.write(board, tmp_path / "out")
    md = files["md"].read_text()
    assert "Optuna's best trial (whole study, earlier invocations included): 0.6000 with `task.optim.lr=0.0001`" in md
    assert not (root / "leaderboard.md").exists()  # --out elsewhere leaves the sweep alone


def test_several_run_dirs_and_out(sweep, tmp_path):
    out = tmp_path / "cmp"
    main = _report_main()
    assert main([str(sweep / "0_seed=1,task.optim.lr=0.001"), str(sweep / "1_seed=1,task.optim.lr=0.01"),
                 "--out", str(out), "--metrics", "test/*"]) == 0
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["run"] for r in rows] == ["0_seed=1,task.optim.lr=0.001", "1_seed=1,task.optim.lr=0.01"]
    header = next(line for line in (out / "leaderboard.md").read_text().splitlines() if line.startswith("| #"))
    assert header == "| # | run | status | task.optim.lr | seed | val/acc | test/test/acc | test/test/f1/positive |"


def _exit_status(main):
    """main(argv) -> its return value, or the status it exits with (user errors: lit_llm.errors.cli_errors)."""
    def run(argv):
        try:
            return main(argv)
        except SystemExit as e:
            return e.code
    return run


def test_no_finished_runs_exits_2(tmp_path, capsys):
    main = _exit_status(_report_main())
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {empty}: no finished runs (no run.json with status completed under it); found no run directories")

    failed = tmp_path / "failed"
    write_run(failed / "0_seed=1", 1, "0.1", "failed", None, None)
    assert main([str(failed)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {failed}: no finished runs (no run.json with status completed under it)")
    assert "found 1 failed" in err and not (failed / "leaderboard.md").exists()

    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such directory\n"


def test_a_run_killed_while_it_ran_reads_died(tmp_path):
    """run.json still says "running" after a kill -9; no live process holds the directory's lock, so it is "died"."""
    from lit_llm.faults import run_dir_lock
    from lit_llm.reporting.leaderboard import read_run

    run = tmp_path / "0_seed=1"
    write_run(run, 1, "0.1", "running", None, None)
    assert read_run(run).status == "died"
    with run_dir_lock(run):  # a live run holds it
        assert read_run(run).status == "running"
