"""What a run does when something goes wrong half-way: a signal (preemption, Ctrl-C, a SLURM time
limit), a non-finite loss, a second run started on the same run directory, a process killed outright.

- `SignalStop` (a Lightning callback, also installed around the whole run by `lit_llm.run.train`):
  SIGTERM, SIGINT and the requeue signal (`faults.requeue_signal`, SIGUSR1: SLURM sends it before a
  time limit) end the run at the next step boundary. During fit the signal sets Lightning's own stop
  flag, so the step in flight finishes (and a validation due at that step runs); Lightning then raises
  at the end of the step, the callback saves `checkpoints/last.ckpt` at that step, and the run ends
  with `status: interrupted` in run.json and exit status 128 + the signal number (143 SIGTERM, 130
  SIGINT). With the requeue signal inside a SLURM job it also requeues the job (the previous handler
  of that signal, e.g. submitit's, when there is one; else `scontrol requeue`), and the requeued job
  resumes by itself from its run directory (`resume_checkpoint`). Outside fit (tokenizing, testing)
  the run stops at once: every file a later run trusts is written atomically, so nothing is left
  half-written. A second Ctrl-C while the step finishes stops at once (KeyboardInterrupt).
- `NonFiniteGuard` (a callback): a NaN/Inf training loss stops the run (`faults.nonfinite_loss=stop`)
  with a message naming the step, the learning rate and the last good checkpoint, or
  (`faults.nonfinite_loss=skip`) drops that optimizer step's gradients, so the weights and the
  optimizer state stay as they were, at most `faults.max_skipped_batches` times; the skipped steps are
  in run.json (`skipped_batches`) and in checkpoints.
- `run_dir_lock`: one run per run directory. A second run started on a directory in use is refused
  (a ConfigError naming the other process); the lock is a file lock the OS drops when its holder dies,
  so a killed run's directory can be resumed at once. Holding it, a run can clear its directory's
  stale temporary files (`clear_stale_temp_files`): a checkpoint half-written by a killed process.
- A process killed with SIGKILL runs no code: its run.json keeps `status: running` (no live process
  holds the directory's lock: `run_status` says "died"), its checkpoints are the complete ones written
  before (atomic writes), and `ckpt_path=<run dir>` resumes from the last of them. The resumed run
  records the attempts before it in run.json's `attempts`.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from pytorch_lightning.callbacks import Callback

from lit_llm.errors import ConfigError
from lit_llm.utils_io import is_temp_path

log = logging.getLogger("lit_llm")

LOCK_FILE = ".lit_llm.lock"
NONFINITE_ACTIONS = ("stop", "skip")


# ----------------------------------------------------------------------------- outcomes

class RunStopped(Exception):
    """A run that ended early on purpose: `status` goes into run.json, `exit_code` is the process's."""

    status = "failed"
    exit_code = 1


class Interrupted(RunStopped):
    """A signal stopped the run; `checkpoint` holds its state at `step` (None: stopped before training)."""

    status = "interrupted"

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None, requeued: bool = False):
        self.signum, self.step, self.checkpoint, self.requeued = int(signum), step, checkpoint, requeued
        self.exit_code = 128 + self.signum
        where = f" at step {step}" if step is not None else ""
        saved = f"; checkpoint {checkpoint} (resume: ckpt_path={checkpoint})" if checkpoint else ""
        then = "; the job is requeued and resumes by itself" if requeued else ""
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}{where}{saved}{then}")


class NonFiniteLoss(RunStopped):
    """The training loss was NaN or infinite (and skipping was off, or used up)."""


# ----------------------------------------------------------------------------- settings

@dataclass
class FaultSettings:
    """The `faults` config (conf/train.yaml)."""

    nonfinite_loss: str = "stop"
    max_skipped_batches: int = 10
    stop_signals: tuple[str, ...] = ("SIGTERM", "SIGINT")
    requeue_signal: str | None = "SIGUSR1"

    @classmethod
    def from_config(cls, cfg: Any) -> FaultSettings:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"faults.{unknown[0]} is not a faults option; known: {', '.join(cls.__dataclass_fields__)}")
        s = cls(**{**cfg, "stop_signals": tuple(cfg.get("stop_signals", cls.stop_signals) or ())})
        if s.nonfinite_loss not in NONFINITE_ACTIONS:
            raise ConfigError(f"faults.nonfinite_loss={s.nonfinite_loss!r} is not one of {list(NONFINITE_ACTIONS)}")
        if isinstance(s.max_skipped_batches, bool) or not isinstance(s.max_skipped_batches, int) \
                or s.max_skipped_batches < 0:
            raise ConfigError(f"faults.max_skipped_batches={s.max_skipped_batches!r} must be an integer >= 0")
        for key, name in [("stop_signals", n) for n in s.stop_signals] + [("requeue_signal", s.requeue_signal)]:
            if name is not None and name not in signal.Signals.__members__:
                raise ConfigError(f"faults.{key}: {name!r} is not a signal name (e.g. SIGTERM, SIGINT, SIGUSR1)")
        return s

    def signals(self) -> list[int]:
        names = list(self.stop_signals) + ([self.requeue_signal] if self.requeue_signal else [])
        return [int(signal.Signals[n]) for n in dict.fromkeys(names)]


# ----------------------------------------------------------------------------- signals

def in_slurm_job() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def requeued_slurm_job() -> bool:
    """This process is a SLURM job that was requeued (SLURM counts the restarts)."""
    return in_slurm_job() and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


class SignalStop(Callback):
    """See the module docstring. `installed()` holds the handlers for the whole run; the callback part
    saves the checkpoint when a signal ended fit."""

    def __init__(self, settings: FaultSettings, checkpoint_dir: Path):
        self.settings = settings
        self.checkpoint_dir = Path(checkpoint_dir)
        self.received: int | None = None
        self.interrupted: Interrupted | None = None
        self._trainer = None  # set while fit runs
        self._previous: dict[int, Any] = {}

    @contextmanager
    def installed(self) -> Iterator[SignalStop]:
        import threading

        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        for signum in self.settings.signals():
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now, without waiting for the step
                raise KeyboardInterrupt
            return
        self.received = signum
        if self._trainer is None:  # not training: nothing to save, stop here
            raise Interrupted(signum)
        log.warning("%s received: stopping after this step and saving a checkpoint", signal.Signals(signum).name)
        # Lightning's own stop flag (its SIGTERM handler sets it): the fit loop raises at the end of the step
        self._trainer._signal_connector.received_sigterm = True

    # -- the callback part
    def on_fit_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        if self.received is not None:  # a signal came while setting up
            trainer._signal_connector.received_sigterm = True

    def on_fit_end(self, trainer, pl_module) -> None:
        self._trainer = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        fitting, self._trainer = self._trainer is not None, None
        if not fitting or self.received is None or isinstance(exception, KeyboardInterrupt):
            return  # outside fit (testing) there is no training state to save
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not isinstance(exception, (SIGTERMException, Interrupted)):
            return
        cb = trainer.checkpoint_callback
        path = str(Path(cb.dirpath if cb is not None and cb.dirpath else self.checkpoint_dir) / "last.ckpt")
        trainer.save_checkpoint(path)  # the state after the step that just finished (every rank calls it)
        requeued = self.settings.requeue_signal is not None and self.received == signal.Signals[
            self.settings.requeue_signal] and in_slurm_job() and trainer.is_global_zero and self._requeue()
        self.interrupted = Interrupted(self.received, trainer.global_step, path, requeued=bool(requeued))
        log.warning("%s", self.interrupted)

    def _requeue(self) -> bool:
        """Requeue this SLURM job: through the handler that was there before ours (submitit's keeps its count
        of requeues), else `scontrol requeue <job>`."""
        previous = self._previous.get(int(signal.Signals[self.settings.requeue_signal]))
        if callable(previous):
            previous(int(signal.Signals[self.settings.requeue_signal]), None)
            return True
        array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        job = f"{array_job}_{task}" if array_job and task else os.environ["SLURM_JOB_ID"]
        try:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.error("could not requeue SLURM job %s: %s", job, e)
            return False
        if result.returncode != 0:
            log.error("scontrol requeue %s failed (%d): %s", job, result.returncode, result.stderr.strip())
            return False
        log.warning("requeued SLURM job %s", job)
        return True


def resume_checkpoint(ckpt_path: str | None, out_dir: Path) -> str | None:
    """`ckpt_path` as given, or this run directory's checkpoints/last.ckpt when the run resumes by itself:
    `ckpt_path=auto` (resume when there is one, else start afresh), or a requeued SLURM job."""
    last = Path(out_dir) / "checkpoints" / "last.ckpt"
    if ckpt_path == "auto" or (ckpt_path is None and requeued_slurm_job()):
        if last.is_file():
            log.info("resuming from %s (%s)", last, "ckpt_path=auto" if ckpt_path == "auto" else
                     f"requeued SLURM job, restart {os.environ.get('SLURM_RESTART_COUNT')}")
            return str(last)
        return None
    return ckpt_path


def start_next_epoch_afresh(checkpoint: dict) -> bool:
    """Lightning (2.6) resumes a checkpoint saved once an epoch has ended (after fit, or when a signal stopped
    the run at an epoch's end) with that epoch's batch counters still full: the next epoch then ends after one
    batch and its data loader is re-iterated mid-epoch, so the resumed run trains on other batches than an
    uninterrupted one. When the checkpoint's epoch is complete (every epoch counter equal) and its last batch
    done, the per-epoch ("current") counters of the training epoch loop are zeroed in `checkpoint`, as Lightning
    does itself at an epoch's start. Returns whether it changed anything; the task's `on_load_checkpoint` calls
    it, before Lightning restores its loops."""
    fit = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs, batches = fit.get("epoch_progress", {}).get("total", {}), fit.get("epoch_loop.batch_progress")
    if not batches or not batches.get("is_last_batch") or len(set(epochs.values())) != 1:
        return False
    for key, progress in fit.items():
        if key.startswith("epoch_loop.") and "val_loop" not in key:
            _zero_current(progress)
    batches["is_last_batch"] = False
    return True


def _zero_current(progress: Any) -> None:
    if isinstance(progress, dict):
        for key, value in progress.items():
            if key == "current" and isinstance(value, dict):
                progress[key] = {k: 0 for k in value}
            else:
                _zero_current(value)


# ----------------------------------------------------------------------------- non-finite loss

class NonFiniteGuard(Callback):
    """See the module docstring. The check reads one boolean per optimizer step from the device."""

    def __init__(self, settings: FaultSettings):
        self.settings = settings
        self.skipped: list[dict[str, Any]] = []  # {"step", "loss"}: in checkpoints and run.json
        self._finite: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": list(self.skipped)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = list(state_dict.get("skipped", []))

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        finite, self._finite = self._finite, None
        if finite is None or bool(finite):
            return
        step, loss = trainer.global_step, float(self._loss.float().mean())
        lr = optimizer.param_groups[0]["lr"]
        if self.settings.nonfinite_loss == "skip" and len(self.skipped) < self.settings.max_skipped_batches:
            optimizer.zero_grad(set_to_none=True)  # no gradient: the optimizer leaves every parameter as it is
            self.skipped.append({"step": step, "loss": str(loss)})
            log.warning("train/loss is %s at step %d (learning rate %.3g): skipped this batch (%d of at most %d, "
                        "faults.max_skipped_batches)", loss, step, lr, len(self.skipped),
                        self.settings.max_skipped_batches)
            return
        last = last_checkpoint(trainer)
        used = (f"; {len(self.skipped)} bad batches were skipped already, faults.max_skipped_batches="
                f"{self.settings.max_skipped_batches}" if self.settings.nonfinite_loss == "skip" else "")
        resume = (f"the last good checkpoint is {last[0]} (step {last[1]}): resume from it with ckpt_path={last[0]}"
                  if last else "no checkpoint was saved before it")
        raise NonFiniteLoss(
            f"train/loss is {loss} at step {step} (learning rate {lr:.3g}){used}; {resume} after lowering "
            "task.optim.lr or setting trainer.gradient_clip_val=1.0, or skip such batches with "
            "faults.nonfinite_loss=skip (at most faults.max_skipped_batches of them)")


def last_checkpoint(trainer) -> tuple[str, int] | None:
    """(path, global step) of the newest complete checkpoint the run saved, or None."""
    from lit_llm.checkpointing import read_checkpoint

    cb = trainer.checkpoint_callback
    directory = Path(cb.dirpath) if cb is not None and cb.dirpath else None
    if directory is None or not directory.is_dir():
        return None
    files = sorted((p for p in directory.glob("*.ckpt") if ".tmp-" not in p.name), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    try:
        return str(files[-1]), int(read_checkpoint(files[-1]).get("global_step", -1))
    except ConfigError:
        return None


# ----------------------------------------------------------------------------- the run directory

def is_rank_zero() -> bool:
    """The process that owns the run directory: global rank 0 (DDP ranks and SLURM tasks say theirs in the
    environment before Lightning starts)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"))


@contextmanager
def run_dir_lock(out_dir: Path, key: str = "paths.output_dir") -> Iterator[None]:
    """Hold `<out_dir>/.lit_llm.lock` (an exclusive, non-blocking file lock) while the run lives; a second run
    on the same directory gets a ConfigError naming the holder. Only rank 0 locks (the other ranks of a
    distributed run share the directory by design)."""
    if not is_rank_zero():
        yield
        return
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(path)
            raise ConfigError(
                f"{key}={out_dir} is in use by another run ({holder}); two runs would interleave their checkpoints "
                f"and files: wait for it to end, or give this run another directory (hydra.run.dir=...)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        yield
    finally:
        os.close(fd)  # closing drops the lock; the file stays (it says who held it last)


def _lock_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "another process"


def run_status(out_dir: Path, meta: dict | None = None) -> str:
    """run.json's status (`meta`: run.json already read), with "running" checked against the run directory's lock:
    "died" when no process holds it (a run killed outright, or one of a lit-llm before the lock). Reads only: the
    lock file is never created here."""
    if meta is None:
        try:
            meta = json.loads((Path(out_dir) / "run.json").read_text())
        except (OSError, ValueError):
            return "unknown"
    status = str(meta.get("status") or "unknown")
    if status != "running":
        return status
    try:
        fd = os.open(Path(out_dir) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return "died"
    except OSError:
        return status
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return "died"
    except BlockingIOError:
        return "running"
    finally:
        os.close(fd)  # drops the shared lock taken above, if any


def clear_stale_temp_files(out_dir: Path) -> list[str]:
    """Delete the temporary files and directories (`*.tmp-*`) a killed process left in the run directory and
    its checkpoints/; call it only while holding `run_dir_lock` (then no live process is writing them)."""
    removed = []
    for directory in (Path(out_dir), Path(out_dir) / "checkpoints"):
        if not directory.is_dir():
            continue
        for p in directory.iterdir():
            if is_temp_path(p):
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(str(p))
    if removed:
        log.warning("run directory: removed %d temporary file(s) a killed run left: %s", len(removed),
                    ", ".join(Path(r).name for r in removed))
    return removed


def earlier_attempt(out_dir: Path) -> dict[str, Any] | None:
    """What the run.json already in `out_dir` says about the attempt before this one (None when there is none):
    its status ("died" for a run killed while it ran), step, seconds and error."""
    path = Path(out_dir) / "run.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    status = meta.get("status")
    attempt = {"status": "died" if status == "running" else status,
               "global_step": meta.get("global_step"), "seconds": meta.get("seconds"),
               "started": meta.get("started"), "error": meta.get("error")}
    return {"earlier": meta.get("attempts", []), "this": {k: v for k, v in attempt.items() if v is not None}}


__all__ = ["RunStopped", "Interrupted", "NonFiniteLoss", "FaultSettings", "SignalStop", "NonFiniteGuard",
           "run_dir_lock", "run_status", "clear_stale_temp_files", "earlier_attempt", "resume_checkpoint",
           "start_next_epoch_afresh",
           "last_checkpoint", "is_rank_zero", "requeued_slurm_job", "LOCK_FILE"]
