"""Multiruns from the command line: job directories named from the overrides, a failing job that does not
take the others down, an Optuna study that resumes from its SQLite storage, report.py over a real sweep."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import ROOT, TINY


def _run(script: str, args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIT_LLM_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / script), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def tiny_conf(tmp_path) -> Path:
    """A config dir (--config-dir) holding experiment=tiny: the quickstart recipe with the TINY settings and
    2 steps, so that the command line carries only the swept keys and the job names stay short."""
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    values = OmegaConf.from_dotlist([o for o in TINY if not o.startswith("model=")]
                                    + ["trainer.max_steps=2", "trainer.val_check_interval=2", "test=false"])
    (conf / "tiny.yaml").write_text("# @package _global_\ndefaults:\n  - quickstart\n  - _self_\n"
                                    + OmegaConf.to_yaml(values))
    return tmp_path / "conf"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow  # a 3-job multirun in a subprocess (~16 s)
def test_multirun_job_dirs_are_named_from_their_overrides(tmp_path, cache_dir, tiny_conf):
    sweep = tmp_path / "sweep"
    proc = _run("train.py", ["-m", "--config-dir", str(tiny_conf), "experiment=tiny", "seed=1,2",
                             "task.optim.lr=1e-4,3e-4", f"hydra.sweep.dir={sweep}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_seed=1,task.optim.lr=0.0001", "1_seed=1,task.optim.lr=0.0003",
                    "2_seed=2,task.optim.lr=0.0001", "3_seed=2,task.optim.lr=0.0003"]
    for name in jobs:
        assert _json(sweep / name / "run.json")["status"] == "completed"
        assert "val/loss" in _json(sweep / name / "metrics.json")
    assert "multirun: 4 jobs completed" in proc.stderr

    # the comparison of that sweep: every run, best val/loss first, two learning rates x two seeds
    proc = _run("report.py", [str(sweep)], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "leaderboard.csv").open()))
    assert sorted(r["run"] for r in rows) == jobs and [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    losses = [float(r["val/loss"]) for r in rows]
    assert losses == sorted(losses)
    md = (sweep / "leaderboard.md").read_text()
    assert "Common overrides: `experiment=tiny`" in md
    assert md.count("(n=2)") >= 2 and "![val/loss" in md and (sweep / "leaderboard.png").is_file()


def test_a_failing_job_leaves_the_others_results(tmp_path, cache_dir, tiny_conf):
    """Job 0 fails its config check (data longer than the model's context); job 1 still runs."""
    sweep = tmp_path / "sweep"
    proc = _run("train.py", ["-m", "--config-dir", str(tiny_conf), "experiment=tiny", "data.block_size=64,16",
                             f"hydra.sweep.dir={sweep}"], tmp_path, cache_dir)
    assert proc.returncode == 1, proc.stderr[-3000:]
    failed, ok = sweep / "0_data.block_size=64", sweep / "1_data.block_size=16"
    run = _json(failed / "run.json")
    assert run["status"] == "failed" and run["error"].startswith("ConfigError: data.block_size=64")
    assert _json(ok / "run.json")["status"] == "completed" and "val/loss" in _json(ok / "metrics.json")
    assert "multirun: 1 of 2 jobs failed" in proc.stderr and f"job 0 {failed}: ConfigError" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = _run("report.py", [str(sweep)], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["run"]: r for r in csv.DictReader((sweep / "leaderboard.csv").open())}
    assert rows[ok.name]["status"] == "completed" and rows[ok.name]["rank"] == "1"
    assert rows[failed.name]["status"] == "failed" and rows[failed.name]["rank"] == ""
    assert "ConfigError: data.block_size=64" in (sweep / "leaderboard.md").read_text()


@pytest.mark.slow  # two Optuna studies in subprocesses (~18 s)
def test_optuna_study_resumes_from_its_sqlite_storage(tmp_path, cache_dir):
    """2 trials; the same command again adds 2 trials to the same study (here they fail, recorded as FAIL,
    and the second still runs after the first failed)."""
    import optuna

    common = ["-m", "hparams_search=quickstart_optuna", *TINY, "trainer.max_steps=2", "test=false",
              "hydra.sweeper.n_trials=2", f"paths.log_dir={tmp_path / 'logs'}"]
    proc = _run("train.py", [*common, f"hydra.sweep.dir={tmp_path / 's1'}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    db = tmp_path / "logs" / "optuna" / "quickstart.db"
    assert db.is_file()
    best = yaml.safe_load((tmp_path / "s1" / "optimization_results.yaml").read_text())

    proc = _run("train.py", [*common, "data.block_size=64", f"hydra.sweep.dir={tmp_path / 's2'}"],
                tmp_path, cache_dir)
    assert proc.returncode == 1 and "multirun: 2 of 2 jobs failed" in proc.stderr, proc.stderr[-3000:]
    assert "resuming it, sampler seed 1234 + 2" in proc.stdout

    trials = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{db}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    assert trials[2].params != trials[0].params  # the resumed sampler does not replay the first draws
    again = yaml.safe_load((tmp_path / "s2" / "optimization_results.yaml").read_text())
    assert again["best_value"] == best["best_value"] == min(t.value for t in trials[:2])
    for job in (tmp_path / "s2").iterdir():
        if job.is_dir():
            assert _json(job / "run.json")["status"] == "failed"
