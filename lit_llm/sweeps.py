"""Hydra multiruns that keep going: job directory names, failed jobs, the Optuna storage folder.

What Hydra 1.3 does by itself (read in hydra/core/utils.py `run_job`, the basic launcher and
sweeper, and hydra_optuna_sweeper 1.3.0 `_impl.py`):
- `run_job` catches `Exception` from a job (status FAILED) but not `SystemExit`: a job calling
  `sys.exit(2)` ends the whole multirun at once and the later jobs never start.
- The basic sweeper launches a batch (all jobs, unless `hydra.sweeper.max_batch_size` is set),
  then re-raises the first failed job's exception: the other jobs of the batch have run, the
  process exits 1 with that one traceback, and later batches are skipped.
- The Optuna sweeper marks a trial whose job raised as FAIL and goes on only while the failure
  rate of a batch is <= `max_failure_rate` (default 0.0: the first failure ends the study). A job
  that *returns* NaN crashes the sweeper itself (optuna refuses the NaN, then refuses to mark the
  trial failed with a value) and leaves the trial RUNNING in the storage.

So in a multirun, `run_job` below turns every failure (a ConfigError, a crash mid-training, a NaN
optimised metric) into an exception Hydra records as a failed job, after writing
`run.json` status "failed" into the job's directory; the Optuna recipes set max_failure_rate: 1.0;
and `exit_after_sweep` prints which jobs failed once all have run and makes the exit status 1.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+@-]")  # anything else (/, :, spaces, quotes, brackets, non-ASCII) -> _
MAX_DIRNAME = 120  # well under the 255-byte file-name limit, and still readable in `ls`


def safe_dirname(*parts: Any, max_len: int = MAX_DIRNAME) -> str:
    """One safe directory name from `parts` (empty parts dropped, the rest joined by `_`).

    `${safe_dirname:${hydra.job.num},${hydra.job.override_dirname}}` -> `3_seed=1,task.optim.lr=0.0001`.
    Characters outside [A-Za-z0-9._,=+@-] become `_` (`model.init_from=/x/y` -> `model.init_from=_x_y`);
    a name longer than `max_len` is cut and ends with `-` and 8 hex digits of the full name's sha1,
    so two long names that share a prefix stay apart.
    """
    raw = "_".join(str(p) for p in parts if p is not None and str(p) != "")
    name = _UNSAFE.sub("_", raw)
    if name in ("", ".", ".."):
        name = name.replace(".", "_") or "_"
    if len(name) > max_len:
        digest = hashlib.sha1(raw.encode("utf-8")).hexdigest()[:8]
        name = f"{name[:max_len - 9]}-{digest}"
    return name


# ---------------------------------------------------------------------------------------------
# failed jobs


class JobFailed(CompactHydraException):
    """A multirun job failed. Hydra prints a CompactHydraException as its message alone, without a
    traceback (the job's log has it)."""


@dataclass
class JobOutcome:
    num: int
    output_dir: str
    overrides: list[str]
    error: str | None = None


# The jobs this process ran in its multirun (the basic launcher and the Optuna sweeper's default
# launcher run jobs in this process): read by `exit_after_sweep` for the summary.
OUTCOMES: list[JobOutcome] = []


def mark_failed(run_dir: Path, error: str, cfg: Any = None, status: str = "failed") -> None:
    """Record a failure in `run_dir/run.json`: `status` ("failed", "interrupted") and the error line, keeping what the
    run already wrote there (lit_llm.run writes run.json once training starts); a small new run.json
    when the job failed before that (a config check, tokenization, building the model)."""
    import json

    from lit_llm.faults import is_rank_zero  # the one rule for "the process that owns the run directory"
    from lit_llm.utils_io import atomic_write_json

    if not is_rank_zero():
        return
    path = Path(run_dir) / "run.json"
    meta: dict = {}
    if path.is_file():
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            meta = {}
    if not meta and cfg is not None:
        meta = {"task_name": cfg.get("task_name"), "seed": cfg.get("seed"), "output_dir": str(run_dir),
                "command": [sys.executable, *sys.argv]}
    if meta.get("status") == "interrupted" and status == "failed":
        return  # lit_llm.run already said how it ended
    meta.update(status=status, error=error[:2000])
    atomic_write_json(path, meta)


def _hydra_job() -> tuple[bool, int, list[str]]:
    """(is this a multirun job, its number, its overrides); (False, 0, []) outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False, 0, []
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return multirun, int(hc.job.get("num", 0) or 0) if multirun else 0, list(hc.overrides.task)


def run_job(cfg: Any, task: Callable[[Any], float | None]) -> float | None:
    """Run `task(cfg)` (which returns the optimised metric) as a Hydra job.

    Single run: a ConfigError prints `error: ...` and exits 2 (`lit_llm.errors.cli_errors`); other
    errors propagate (traceback).
    Multirun: any failure, and a NaN optimised metric, marks run.json failed, logs the traceback to
    the job's log and raises `JobFailed`, so Hydra records the job as failed (an Optuna trial as
    FAIL) and the sweep goes on with the next job. In both modes run.json says the run failed.
    """
    from lit_llm.errors import ConfigError, cli_errors
    from lit_llm.faults import Interrupted, RunStopped

    multirun, num, overrides = _hydra_job()
    run_dir = Path(cfg.paths.output_dir)
    with cli_errors():  # a single run's ConfigError: one line, exit status 2 (a multirun job's: JobFailed)
        try:
            value = task(cfg)
            if multirun and value is not None and math.isnan(value):
                # optuna cannot take a NaN (see the module docstring): report it as a failed trial
                raise FloatingPointError(f"optimized_metric={cfg.get('optimized_metric')} is nan "
                                         "(the run diverged? try a lower task.optim.lr)")
        except Interrupted as e:  # a signal: the whole process stops, a multirun's later jobs too
            mark_failed(run_dir, f"{type(e).__name__}: {e}", cfg, status=e.status)
            print(f"stopped: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            mark_failed(run_dir, error, cfg)
            if isinstance(e, RunStopped) and not multirun:  # e.g. a non-finite loss: its message says it all
                print(f"error: {e}", file=sys.stderr, flush=True)
                sys.exit(e.exit_code)
            if multirun:
                log.error("job %d failed (%s)", num, error, exc_info=not isinstance(e, ConfigError))
                OUTCOMES.append(JobOutcome(num, str(run_dir), overrides, error))
                raise JobFailed(f"job {num} ({run_dir}) failed: {error}") from e
            raise
    if multirun:
        OUTCOMES.append(JobOutcome(num, str(run_dir), overrides))
    return value


def summary(outcomes: list[JobOutcome]) -> str:
    """The end-of-multirun lines: how many jobs ran, and each failed job's number, directory and error."""
    failed = [o for o in outcomes if o.error]
    if not failed:
        return f"multirun: {len(outcomes)} jobs completed"
    others = "" if len(failed) == len(outcomes) else "the others completed; "
    lines = [f"multirun: {len(failed)} of {len(outcomes)} jobs failed ({others}"
             "each failed job's run.json and log say why):"]
    lines += [f"  job {o.num} {o.output_dir}: {o.error.splitlines()[0][:300]}" for o in failed]
    return "\n".join(lines)


def exit_after_sweep(main: Callable[[], Any]) -> int:
    """Call a `@hydra.main` function; after a multirun, print `summary` to stderr.

    Returns the process exit status: 1 when a multirun job failed, else 0 (Hydra's own exits, e.g.
    2 for a ConfigError in a single run or 1 when the basic sweeper re-raises, pass through)."""
    OUTCOMES.clear()
    try:
        main()
    finally:
        if OUTCOMES:
            print(summary(OUTCOMES), file=sys.stderr, flush=True)
    return 1 if any(o.error for o in OUTCOMES) else 0


# ---------------------------------------------------------------------------------------------
# Optuna


class OptunaStudyStorage(Callback):
    """Hydra callback (`hydra.callbacks`) for an Optuna sweep whose study lives in SQLite, so that the
    same command resumes it (the sweeper calls create_study(load_if_exists=True)):

    - creates the database's folder (`sqlite:///<dir>/<study>.db`; SQLite does not create it);
    - offsets the sampler's seed by the trials already in the study. The sampler draws its random
      start-up trials from the seed, so a resumed study would otherwise repeat the first
      invocation's parameters (measured: trials 2 and 3 equal to trials 0 and 1). A new study keeps
      the configured seed, so it is reproducible.

    It runs before Hydra instantiates the sweeper, and changes that config in place."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import open_dict, read_write

        sweeper = config.hydra.sweeper
        storage = sweeper.get("storage")
        if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
            return
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        seed = (sweeper.get("sampler") or {}).get("seed")
        done = count_trials(storage, sweeper.get("study_name"))
        if done and seed is not None:
            with read_write(config.hydra), open_dict(config.hydra):
                sweeper.sampler.seed = seed + done
            log.info("study %s has %d trials: resuming it, sampler seed %d + %d", sweeper.study_name, done, seed, done)


def count_trials(storage: str, study_name: str | None) -> int:
    """Trials (any state) of `study_name` in `storage`; 0 when there is no such study."""
    if not study_name:
        return 0
    import optuna

    try:
        summaries = optuna.get_all_study_summaries(storage=storage)
    except Exception:  # an unreadable storage: let the sweeper report it
        return 0
    return next((s.n_trials for s in summaries if s.study_name == study_name), 0)
