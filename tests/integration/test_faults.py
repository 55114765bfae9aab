"""Runs that meet a fault half-way (lit_llm.faults): a signal, a requeued SLURM job, a non-finite loss, a second
run on the same directory. Kill -9 at chosen moments is tests/integration/test_kill.py (subprocesses)."""
from __future__ import annotations

import json
import os
import signal

import pytest
import pytorch_lightning as pl
import torch

from lit_llm.errors import ConfigError
from lit_llm.faults import LOCK_FILE, Interrupted, NonFiniteLoss, run_dir_lock, run_status
from lit_llm.run import train
from tests.conftest import assert_same_weights, last_weights

# 10 steps over epochs of 4 batches (stops inside and at the end of epochs), validation (and a checkpoint) every 3
COMMON = ["experiment=quickstart", "model.dropout=0.1", "trainer.limit_train_batches=4",
          "trainer.val_check_interval=3", "task.optim.decay_steps=10", "trainer.max_steps=10", "test=false"]


class SignalAt(pl.Callback):
    """Sends this process `signal` once, at the end of training step `step` (a test adds it as
    `+callbacks.signal_at._target_=...`)."""

    def __init__(self, step: int, signal: str):
        self.step, self.signum, self.sent = step, int(__import__("signal").Signals[signal]), False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def signal_at(step: int, name: str) -> list[str]:
    return [f"+callbacks.signal_at._target_={__name__}.SignalAt", f"+callbacks.signal_at.step={step}",
            f"+callbacks.signal_at.signal={name}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir):
    """The 10-step run every interrupted one must end equal to."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR, TINY, shared_data_dir

    out = tmp_path_factory.mktemp("uninterrupted")
    data = shared_data_dir()
    extra = [f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}"] + ([f"paths.data_dir={data}"] if data else [])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        train(compose("train", overrides=TINY + COMMON + extra))
    return out


@pytest.mark.parametrize("name,step", [("SIGTERM", 5), ("SIGINT", 4)])
def test_a_signal_saves_the_step_and_the_resumed_run_ends_equal(compose_train, tmp_path, uninterrupted, name, step):
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as info:
        train(compose_train(COMMON + signal_at(step, name), out))
    e = info.value
    assert e.exit_code == 128 + signal.Signals[name] and e.step == step
    assert signal.getsignal(signal.Signals[name]) is not None  # the run put the handlers back
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and f"interrupted by {name} at step {step}" in run["error"]
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    assert not list(out.rglob("*.tmp-*"))

    train(compose_train(COMMON + [f"ckpt_path={out}"], out))  # resume in the same directory
    assert_same_weights(out, uninterrupted)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["global_step"] == 10
    [attempt] = run["attempts"]
    assert attempt["status"] == "interrupted" and attempt["global_step"] == step and "by " + name in attempt["error"]


def test_a_requeued_slurm_job_resumes_by_itself(compose_train, tmp_path, uninterrupted, monkeypatch):
    """SIGUSR1 (SLURM's warning before the time limit) in a SLURM job: checkpoint, `scontrol requeue <job>`
    (a stand-in scontrol on PATH records its arguments), status interrupted; the requeued job (SLURM counts the
    restart) started with the same command resumes from its run directory without ckpt_path."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as info:
        train(compose_train(COMMON + signal_at(7, "SIGUSR1"), out))
    assert info.value.requeued and info.value.step == 7
    assert calls.read_text().split() == ["requeue", "4242"]
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    train(compose_train(COMMON, out))  # the same command, as the requeued job runs it
    assert_same_weights(out, uninterrupted)
    assert json.loads((out / "run.json").read_text())["ckpt_path"] == str(out / "checkpoints" / "last.ckpt")


def test_ckpt_path_auto_starts_afresh_without_a_checkpoint(compose_train, tmp_path):
    out = tmp_path / "run"
    train(compose_train(["experiment=quickstart", "trainer.max_steps=2", "test=false", "ckpt_path=auto"], out))
    assert json.loads((out / "run.json").read_text())["ckpt_path"] is None


class NanLossAt(pl.Callback):
    """Makes the training loss NaN at the given steps (as a diverging run would): the final norm's output (what the
    LM head and its loss read, whole or in chunks) is multiplied by NaN in those steps' forward."""

    def __init__(self, steps: list[int]):
        self.steps = set(steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in self.steps:
            self._hook = pl_module.backbone.ln_f.register_forward_hook(lambda m, a, out: out * float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if getattr(self, "_hook", None) is not None:
            self._hook.remove()
            self._hook = None


def nan_at(*steps: int) -> list[str]:
    return [f"+callbacks.nan_at._target_={__name__}.NanLossAt", f"+callbacks.nan_at.steps=[{','.join(map(str, steps))}]"]


def test_a_nan_loss_stops_the_run_naming_step_lr_and_last_checkpoint(compose_train, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLoss) as info:
        train(compose_train(COMMON + nan_at(5), out))
    msg = str(info.value)
    assert "train/loss is nan at step 5 (learning rate " in msg
    assert f"the last good checkpoint is {out}/checkpoints/" in msg and "(step 3)" in msg
    assert "faults.nonfinite_loss=skip" in msg
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and run["global_step"] == 5 and "at step 5" in run["error"]


def test_skipped_nan_batches_are_bounded_and_counted(compose_train, tmp_path):
    out = tmp_path / "run"
    train(compose_train(COMMON + nan_at(2, 6) + ["faults.nonfinite_loss=skip"], out))
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["skipped_batches"] == [{"step": 2, "loss": "nan"}, {"step": 6, "loss": "nan"}]
    assert all(torch.isfinite(w).all() for w in last_weights(out).values())

    with pytest.raises(NonFiniteLoss, match=r"at step 6 .*1 bad batches were skipped already, "
                                            r"faults.max_skipped_batches=1"):
        train(compose_train(COMMON + nan_at(2, 6) + ["faults.nonfinite_loss=skip", "faults.max_skipped_batches=1"],
                            tmp_path / "bounded"))


def test_a_second_run_on_a_directory_in_use_is_refused(compose_train, tmp_path):
    out = tmp_path / "run"
    with run_dir_lock(out):  # another run holds the directory
        with pytest.raises(ConfigError, match=rf"paths.output_dir={out} is in use by another run \(pid {os.getpid()} "
                                              r"on .*\); .*hydra.run.dir"):
            train(compose_train(["experiment=quickstart", "trainer.max_steps=2"], out))
    assert not (out / "run.json").exists() and not (out / "checkpoints").exists()
    assert (out / LOCK_FILE).is_file()
    # a dead holder's lock is gone with it: the directory is free, and a run.json left "running" reads "died"
    (out / "run.json").write_text(json.dumps({"status": "running"}))
    assert run_status(out) == "died"
    with run_dir_lock(out):
        assert run_status(out) == "running"


@pytest.mark.parametrize("bad,match", [
    ("faults.nonfinite_loss=ignore", r"faults.nonfinite_loss='ignore' is not one of \['stop', 'skip'\]"),
    ("faults.max_skipped_batches=-1", r"faults.max_skipped_batches=-1 must be an integer >= 0"),
    ("faults.stop_signals=[SIGTEMR]", r"faults.stop_signals: 'SIGTEMR' is not a signal name"),
    ("+faults.on_nan=skip", r"faults.on_nan is not a faults option"),
])
def test_bad_faults_settings_are_named(compose_train, tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        train(compose_train(["experiment=quickstart", bad], tmp_path / "run"))
