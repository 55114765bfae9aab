"""The command line as a user runs it: one run, a two-job multirun, errors, Hydra's own flags."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY


def _run(args: list[str], tmp_path: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIT_LLM_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "train.py"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_single_run_puts_every_file_in_run_dir(tmp_path, cache_dir):
    run_dir = tmp_path / "myrun"
    proc = _run(["experiment=quickstart", *TINY, f"hydra.run.dir={run_dir}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {p.name for p in run_dir.iterdir()}
    assert {".hydra", "checkpoints", "metrics.json", "metrics.csv", "run.json", "tokenizer.json",
            "samples", "quickstart.log", "model.safetensors"} <= names, names
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert set(os.listdir(tmp_path)) == {"myrun"}  # nothing written to the working directory
    assert "generated sample" in proc.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val/loss", "val/ppl", "train/loss", "baseline/unigram_ppl"} <= set(metrics)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["command"][-1] == f"hydra.run.dir={run_dir}"
    # the performance summary: printed at the end and kept in run.json
    perf = run["perf"]
    assert {"tokens_per_s", "samples_per_s", "model_flops_per_token", "model_flops_per_s", "mfu", "peak_rss_gb",
            "peak_source"} <= set(perf)
    assert 0 < perf["mfu"] < 1.5 and perf["tokens_per_s"] == pytest.approx(perf["samples_per_s"] * 32)
    assert "performance (cpu" in proc.stdout and "MFU" in proc.stdout


def test_multirun_two_jobs(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    proc = _run(["-m", "experiment=quickstart", *TINY, "seed=1,2", "trainer.max_steps=4", "test=false",
                 f"hydra.sweep.dir={sweep}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [next(sweep.glob(f"{i}_*")) for i in (0, 1)]  # <job number>_<overrides>
    results = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    assert results[0]["val/loss"] != results[1]["val/loss"]
    assert (sweep / "multirun.yaml").is_file()


def test_config_error_is_one_clear_line(tmp_path, cache_dir):
    proc = _run(["experiment=quickstart", *TINY, "data.files=/no/such/*.txt",
                 f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, cache_dir)
    assert proc.returncode == 2
    assert "error: data.files" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_option_names_the_key(tmp_path, cache_dir):
    proc = _run(["experiment=quickstart", "trainer.max_stepz=3"], tmp_path, cache_dir)
    assert proc.returncode != 0
    assert "max_stepz" in proc.stderr and "Traceback" not in proc.stderr


def test_hydra_help_and_cfg(tmp_path, cache_dir):
    proc = _run(["--help"], tmp_path, cache_dir)
    assert proc.returncode == 0 and "experiment" in proc.stdout
    proc = _run(["experiment=shakespeare_gpt", "--cfg", "job"], tmp_path, cache_dir)
    assert proc.returncode == 0 and "tinyshakespeare/input.txt" in proc.stdout


@pytest.mark.ddp
def test_ddp_sim_two_cpu_processes(tmp_path, cache_dir):
    """trainer=ddp_sim: Lightning re-launches the script for rank 1 (gloo); rank 0 writes the run."""
    run_dir = tmp_path / "ddp"
    proc = _run(["experiment=quickstart", *TINY, "trainer=ddp_sim", "trainer.max_steps=4",
                 "trainer.val_check_interval=2", f"hydra.run.dir={run_dir}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["global_step"] == 4
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.ddp
def test_ddp_sim_encoder_classifier(tmp_path, cache_dir):
    """An encoder classifier under DDP: its unused MLM head is frozen, so DDP (without
    find_unused_parameters) does not stop at the first backward pass waiting for its gradients."""
    run_dir = tmp_path / "ddp_cls"
    proc = _run(["data=tiny_sentiment", "tokenizer=bpe", "tokenizer.vocab_size=300", "task=classification",
                 "model=bert_tiny", "trainer=ddp_sim", "trainer.max_steps=4", "trainer.val_check_interval=2",
                 "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false",
                 "data.batch_size=8", f"hydra.run.dir={run_dir}"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["global_step"] == 4
    assert "test/test/acc" in json.loads((run_dir / "metrics.json").read_text())
