"""Kill -9 and real signals from outside, in subprocesses: a training run killed at a chosen moment (mid-step, half-way
through a checkpoint write, while its data cache is built; tests/integration/fault_driver.py) leaves no partial
checkpoint or cache entry, its run.json says it did not complete, and the run resumed from its directory ends with the
weights of an uninterrupted run (to 1e-6). The uninterrupted run goes through the same driver (same process set-up,
same threads), so the equality is exact."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_llm.faults import run_status
from tests.conftest import assert_same_weights

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "integration" / "fault_driver.py"
# 10 steps over epochs of 4 batches, validation (and a checkpoint: last.ckpt) every 3 steps
COMMON = ["experiment=quickstart", "model.dropout=0.1", "trainer.limit_train_batches=4", "trainer.val_check_interval=3",
          "task.optim.decay_steps=10", "trainer.max_steps=10", "test=false",
          "callbacks.generate_samples.max_new_tokens=4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def drive(out: Path, cache: Path, fault: str = "none", *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), str(out), str(cache), fault, *COMMON, *extra], env=ENV,
                          capture_output=True, text=True, timeout=600)


def checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = drive(out, tmp_path_factory.mktemp("cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def assert_killed(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-3000:])


def resume_and_compare(out: Path, cache: Path, uninterrupted: Path, from_step: int) -> dict:
    done = drive(out, cache, "none", f"ckpt_path={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(out, uninterrupted)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["global_step"] == 10
    assert run["attempts"][-1]["status"] == "died" and run["ckpt_path"] == str(out / "checkpoints" / "last.ckpt")
    assert f"Restoring states from the checkpoint path at {out}/checkpoints/last.ckpt" in done.stderr + done.stdout
    assert not list(out.rglob("*.tmp-*"))
    return run


def test_killed_mid_step_resumes_from_its_last_checkpoint(tmp_path, uninterrupted):
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert_killed(drive(out, cache, "mid-step:5"))
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "running" and run_status(out) == "died"  # no process holds the directory any more
    assert checkpoint_step(out / "checkpoints" / "last.ckpt") == 3  # the validation checkpoint before the kill
    resume_and_compare(out, cache, uninterrupted, from_step=3)


@pytest.mark.slow
def test_killed_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, uninterrupted):
    out, cache = tmp_path / "run", tmp_path / "cache"
    # checkpoint files written: step 3 (best, last), step 6 (best, last): die half-way through the 4th
    assert_killed(drive(out, cache, "checkpoint-write:4"))
    partial = [p for p in (out / "checkpoints").iterdir() if ".tmp-" in p.name]
    assert len(partial) == 1 and partial[0].name.startswith("last.ckpt.tmp-")  # half a file, under a temporary name
    with pytest.raises(Exception):
        torch.load(partial[0], weights_only=True)
    assert checkpoint_step(out / "checkpoints" / "last.ckpt") == 3  # the complete one before it
    assert run_status(out) == "died"
    resume_and_compare(out, cache, uninterrupted, from_step=3)


@pytest.mark.slow
def test_killed_while_building_the_data_cache_leaves_no_entry(tmp_path, uninterrupted):
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert_killed(drive(out, cache, "tokenize"))
    entries = list((cache / "tokenized").glob("*/*"))
    assert entries and all(".tmp-" in p.name for p in entries)  # only the killed build's temporary directory
    assert json.loads((out / "run.json").read_text())["status"] == "running" and run_status(out) == "died"
    assert not (out / "checkpoints").exists()

    done = drive(out, cache)  # the same command again: nothing to resume, the cache entry is built anew
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(out, uninterrupted)
    assert not [p for p in (cache / "tokenized").glob("*/*") if ".tmp-" in p.name]  # the orphan was removed


def cli(out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    common = [o for o in COMMON if not o.startswith(("trainer.max_steps=", "task.optim.decay_steps="))]
    return subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "train.py"), *common,
                             "model=gpt_tiny", "model.block_size=32", "model.n_layer=2", "model.n_head=2",
                             "model.n_embd=64", "data.batch_size=8", "trainer.limit_val_batches=2",
                             "trainer.precision=32-true", "trainer.accelerator=cpu", "trainer.max_steps=400",
                             "task.optim.decay_steps=400", "task.optim.warmup_steps=2",
                             "trainer.enable_progress_bar=false",
                             f"hydra.run.dir={out}", f"paths.cache_dir={cache}", *extra],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_from_outside_stops_the_command_line_run_resumably(tmp_path, name):
    """The real command line, signalled at whatever step it has reached: exit 128 + n with one line, status
    interrupted, a checkpoint of that step; resumed, it ends equal to the same command run without a signal."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    proc = cli(out, cache)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "last.ckpt").is_file():  # trained a while (the first checkpoint is at step 3)
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.Signals[name])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.Signals[name], err[-3000:]
    assert f"stopped: interrupted by {name} at step" in err and "Traceback" not in err
    run = json.loads((out / "run.json").read_text())
    step = checkpoint_step(out / "checkpoints" / "last.ckpt")
    assert run["status"] == "interrupted" and run["global_step"] == step and 3 <= step < 400

    resumed = cli(out, cache, f"ckpt_path={out}")
    reference = cli(tmp_path / "reference", cache)
    for p in (resumed, reference):
        assert p.wait(timeout=600) == 0, p.communicate()[1][-3000:]
    assert_same_weights(out, tmp_path / "reference")
    assert json.loads((out / "run.json").read_text())["attempts"][-1]["status"] == "interrupted"
