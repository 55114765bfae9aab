"""Re-run a training run from its own record and say whether the results came back: `pipelines/reproduce.py`.

The steps, each a function below:
1. `read_record`: the run directory (or its report.json): run.json, `.hydra/config.yaml`, metrics.json, report.json;
   only a completed training run of `pipelines/train.py`.
2. `check_git`: the code must be the run's: HEAD is the recorded commit, and the working tree carries exactly the
   run's uncommitted changes (`git.diff`), or none when it had none. `apply_diff` applies a dirty run's git.diff to
   a clean tree first (and leaves it applied). Untracked files are not in `git diff HEAD`: they are not checked.
3. `expectation`: identical metrics.json is expected when the run had a seed, the machine kind and package versions
   are the same (run.json `versions`; `device`: processor, cuda, gpus, torch threads), and it ran on CPU or with
   `trainer.deterministic=true` (GPU kernels are not bitwise repeatable otherwise). Else every `test/*` metric with
   an interval must fall inside the original's 95% interval (report.json): a run with neither is refused up front.
4. `check_data`: the data module of the recorded config loads its data (`load_raw`, no tokenizing) and its
   `data_fingerprint` must equal run.json's, before anything trains.
5. `train_again`: `pipelines/train.py --config-path <run>/.hydra --config-name config` in a subprocess, in the run's
   recorded working directory: the composed config holds every default and override, so conf/ is not read again;
   its interpolations (`paths.*` from LIT_LLM_DATA_DIR, ...) resolve in this environment. Hydra writes a normal run
   directory.
6. `compare` / `judge`: the verdict, written to `<new run>/reproduce.json`: "identical" (metrics.json equal to the
   last bit), "consistent" (not identical, not expected to be, every `test/*` metric inside its interval), "differs"
   (else, or the new run's data, tokenizer or evaluated test batches have other fingerprints) or "failed".

A refusal (`Refused`) is raised before anything trains. The new run goes to `outputs/reproduce/<time>` by default,
not under the original: `pipelines/report.py <sweep dir>` finds every run.json below the sweep and would count a
reproduction as one more job.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

import lit_llm
from lit_llm.errors import ConfigError

VERDICTS = ("identical", "consistent", "differs", "failed")
MACHINE_KEYS = ("processor", "cpu_model", "cuda", "gpus", "torch_threads")  # run.json `device` keys that change float results


class Refused(ConfigError):
    """The run cannot be reproduced as things stand (other code, changed data, no way to judge): nothing trained."""


@dataclass
class Record:
    """What a finished training run left that reproducing it needs."""

    run_dir: Path
    run: dict                   # run.json
    config: dict                # .hydra/config.yaml, unresolved
    metrics: dict               # metrics.json
    report: dict | None         # report.json (intervals), when the run wrote one


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None


# -- 1. the record ------------------------------------------------------------------------------------
def read_record(path: Path) -> Record:
    """The record of the run at `path` (a run directory, or the report.json in one)."""
    path = Path(path).resolve()
    if path.is_file() and path.name == "report.json":
        if _json(path).get("source") == "evaluate":
            raise ConfigError(f"{path} is a report of pipelines/evaluate.py; give the training run's directory")
        path = path.parent
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run directory (give a run directory or its report.json)")
    for name in ("run.json", ".hydra/config.yaml"):
        if not (path / name).is_file():
            raise ConfigError(f"{path} has no {name}: not a run directory of pipelines/train.py")
    run = _json(path / "run.json")
    if run.get("status") != "completed":
        raise Refused(f"{path}: the run's status is {run.get('status')!r}, not 'completed'"
                      + (f" ({run['error'][:200]})" if run.get("error") else "") + "; there is nothing to compare")
    if not (run.get("data") or {}).get("fingerprint"):
        raise ConfigError(f"{path}/run.json has no data fingerprint: not a training run")
    report = _json(path / "report.json") if (path / "report.json").is_file() else None
    config = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=False)
    return Record(path, run, config, _json(path / "metrics.json"), report)


# -- 2. the code ---------------------------------------------------------------------------------------
def check_git(record: Record, root: Path, apply_diff: bool = False) -> str:
    """Refuse unless the project at `root` is at the run's commit with exactly the run's uncommitted changes;
    with `apply_diff`, a dirty run's git.diff is applied to a clean tree first. Returns a note for the verdict."""
    from lit_llm.reporting.metadata import git_state

    recorded = record.run.get("git") or {}
    now = git_state(root)
    if not recorded.get("commit"):
        raise Refused(f"{record.run_dir}: the run recorded no git commit, so its code cannot be checked")
    if not now["commit"]:
        raise Refused(f"{root} is not a git checkout: the run's code (commit {recorded['commit']}) cannot be checked")
    diff_file = record.run_dir / "git.diff"
    if now["commit"] != recorded["commit"]:
        then = f", git apply {diff_file}" if recorded.get("dirty") else ""
        raise Refused(f"the run was made at commit {recorded['commit'][:12]}, the project is at {now['commit'][:12]}: "
                      f"git checkout {recorded['commit']}{then} (in {root}), then reproduce again")
    run_diff = diff_file.read_text() if recorded.get("dirty") and diff_file.is_file() else ""
    if recorded.get("dirty") and not run_diff:
        raise Refused(f"the run was made on a dirty tree but {diff_file} is missing: its code is unknown")
    if now["diff"] == run_diff:
        return "same commit" + (", same uncommitted changes (git.diff)" if run_diff else ", clean tree")
    if now["dirty"]:
        fix = (f"git stash, then git apply {diff_file}" if run_diff else "commit or stash them (git stash)")
        raise Refused(f"the working tree's uncommitted changes (git diff HEAD) are not the run's "
                      f"({'its git.diff' if run_diff else 'it had none'}): {fix}, then reproduce again")
    if not apply_diff:
        raise Refused(f"the run was made with uncommitted changes: git apply {diff_file} (in {root}), or pass "
                      "--apply-diff")
    _git(root, "apply", "--check", str(diff_file))
    _git(root, "apply", str(diff_file))
    return f"same commit, {diff_file} applied to the working tree (undo: git apply -R {diff_file})"


def _git(root: Path, *args: str) -> None:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise Refused(f"git {' '.join(args)} failed: {proc.stderr.strip()[:500]}")


# -- 3. what to expect ----------------------------------------------------------------------------------
def machine_differences(original: dict, current: dict) -> list[str]:
    """What differs between two run.json records in what decides bitwise results: package versions, and
    the device's processor, GPUs and torch threads."""
    out = []
    for section, keys in (("versions", None), ("device", MACHINE_KEYS)):
        a, b = original.get(section) or {}, current.get(section) or {}
        for key in keys or sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{key} {a.get(key)} vs {b.get(key)}")
    return out


def expectation(run: dict, config: dict, current: dict) -> tuple[bool, str]:
    """(whether identical metrics.json is expected, why): `current` is a run.json (or the versions and device of
    this process)."""
    if run.get("seed") is None:
        return False, "the run recorded no seed"
    differences = machine_differences(run, current)
    if differences:
        return False, "another machine kind or versions: " + "; ".join(differences[:4])
    device = str((run.get("perf") or {}).get("device") or "cpu")
    if not device.startswith("cpu") and not (config.get("trainer") or {}).get("deterministic"):
        return False, f"the run used {device} without trainer.deterministic=true"
    return True, f"seed {run['seed']}, same machine kind and versions, " + (
        "CPU" if device.startswith("cpu") else "trainer.deterministic=true")


def current_machine() -> dict:
    """This process's versions and device, as run.json records them (the training subprocess inherits both)."""
    from lit_llm.reporting.metadata import device_info, package_versions

    return {"versions": package_versions(), "device": device_info()}


def intervals_of(record: Record) -> dict:
    return (record.report or {}).get("intervals") or {}


# -- 4. the data ---------------------------------------------------------------------------------------------
def data_files(data_cfg: dict) -> str:
    """The data config's sources (`*files`, `hub_name`), for messages."""
    found = [f"data.{k}={v}" for k, v in data_cfg.items() if v and (k.endswith("files") or k == "hub_name")]
    return ", ".join(found) or "data." + str(data_cfg.get("_target_", "?"))


def check_data(record: Record) -> str:
    """Load the recorded config's data (no tokenizing) and refuse when its fingerprint is not run.json's."""
    import datasets

    from lit_llm.builders import build_datamodule, container

    cfg = OmegaConf.create(record.config)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a refusal stays the last line
    try:
        with _cwd(run_cwd(record)):  # relative data paths resolve where the run ran
            dm = build_datamodule(cfg.data, str(cfg.paths.cache_dir))
            dm.load_raw()
            files = data_files(container(cfg.data))
    finally:
        if bars:
            datasets.enable_progress_bars()
    recorded = record.run["data"]["fingerprint"]
    if dm.data_fingerprint != recorded:
        raise Refused(f"the data changed: {files} now has fingerprint {dm.data_fingerprint[:16]}, the run's was "
                      f"{recorded[:16]} (run.json data.fingerprint); nothing was trained")
    return dm.data_fingerprint


@contextmanager
def _cwd(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_cwd(record: Record) -> Path:
    """The run's recorded working directory (relative paths in its config), else the project root."""
    cwd = Path(record.run.get("cwd") or "")
    return cwd if cwd.is_absolute() and cwd.is_dir() else lit_llm.project_root()


# -- 5. train again ---------------------------------------------------------------------------------------------
def default_out_dir() -> Path:
    base = lit_llm.project_root() / "outputs" / "reproduce" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out, n = base, 1
    while out.exists():
        out, n = base.with_name(f"{base.name}_{n}"), n + 1
    return out


def train_command(record: Record, out_dir: Path) -> list[str]:
    """`pipelines/train.py` on the run's resolved config, writing to `out_dir` (log file named as a normal run's)."""
    script = lit_llm.PACKAGE_DIR.parent / "pipelines" / "train.py"
    log_file = out_dir / f"{record.config.get('task_name') or 'train'}.log"
    return [sys.executable, str(script), "--config-path", str(record.run_dir / ".hydra"), "--config-name", "config",
            f"hydra.run.dir='{out_dir}'", f"paths.output_dir='{out_dir}'",
            f"hydra.job_logging.handlers.file.filename='{log_file}'"]


def train_again(record: Record, out_dir: Path) -> int:
    """Run the training in a subprocess (its output goes to this process's); returns its exit status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(train_command(record, out_dir), cwd=run_cwd(record), env=env).returncode


# -- 6. the verdict -------------------------------------------------------------------------------------------------
def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def metric_differences(original: dict, new: dict) -> list[str]:
    """Every key whose value is not exactly the same in both metrics.json ("missing" on the side that lacks it)."""
    return [f"{k} {original.get(k, 'missing')} -> {new.get(k, 'missing')}" for k in sorted(set(original) | set(new))
            if k not in original or k not in new or not _same(original[k], new[k])]


def outside_intervals(new: dict, intervals: dict) -> tuple[list[str], int, list[str]]:
    """(the `test/*` metrics of `new` outside the original's intervals or missing, how many were checked, the
    `test/*` metrics without an interval)."""
    outside, checked, unchecked = [], 0, []
    for key in sorted(k for k in set(new) | set(intervals) if k.startswith("test/")):
        interval = intervals.get(key) or {}
        low, high = interval.get("low"), interval.get("high")
        if low is None or high is None:
            unchecked.append(key)
            continue
        checked += 1
        value = new.get(key)
        if value is None or not low <= value <= high:  # NaN is outside
            outside.append(f"{key} {'missing' if value is None else f'{value:.6g}'} outside [{low:.6g}, {high:.6g}]")
    return outside, checked, unchecked


def compare(original: dict, new: dict, intervals: dict, expect_identical: bool, problems: list[str] = ()) -> dict:
    """The verdict on a reproduction's metrics: "identical" (metrics.json exactly equal), else "differs" when that
    was expected, else "consistent" when every `test/*` metric with an interval is inside it; any of `problems`
    (other data or tokenizer) makes it "differs"."""
    differences = metric_differences(original, new)
    outside, checked, unchecked = outside_intervals(new, intervals)
    if problems:
        verdict = "differs"
    elif not differences:
        verdict = "identical"
    elif expect_identical:
        verdict = "differs"
    else:
        verdict = "consistent" if checked and not outside else "differs"
    return {"verdict": verdict, "expected_identical": expect_identical, "problems": list(problems),
            "differences": differences, "outside": outside, "checked": checked, "unchecked": unchecked}


def verdict_line(result: dict) -> str:
    """One line: the verdict, what it rests on, where the new run is."""
    verdict, where = result["verdict"], f" -> {result.get('reproduction', '')}"
    inside = f"{result['checked']} test metrics inside the original's 95% intervals"
    if verdict == "failed":
        return f"failed: the training exited with status {result['returncode']} (its log is in the new run){where}"
    if verdict == "identical":
        basis = "deterministic: " if result["expected_identical"] else "not even expected: "
        return f"identical: metrics.json equals the original's ({basis}{result.get('why', '')}){where}"
    if verdict == "consistent":
        skipped = f"; {len(result['unchecked'])} without an interval" if result["unchecked"] else ""
        return (f"consistent: {inside}{skipped} (not identical, as expected: {result.get('why', '')}){where}")
    reasons = result["problems"] + result["outside"]
    if result["expected_identical"] and result["differences"]:
        n = len(result["differences"])
        reasons = reasons + [f"metrics.json not identical although expected ({result.get('why', '')}): {n} "
                             f"metrics differ, e.g. {result['differences'][0]}"
                             + ("" if result["outside"] or not result["checked"] else f"; {inside}")]
    elif not reasons:  # not identical, and no test metric with an interval to judge by
        reasons = [f"metrics.json not identical ({result.get('why', '')}) and no test metric has a 95% interval"]
    return f"differs: {'; '.join(reasons)}{where}"


def reproduction_problems(record: Record, out_dir: Path) -> list[str]:
    """Fingerprints of the new run that are not the original's: data, tokenizer, evaluated test batches."""
    new_run = _json(out_dir / "run.json")
    problems = [f"{key} {new_run['data'].get(key)} vs the original's {record.run['data'].get(key)}"
                for key in ("fingerprint", "tokenizer_fingerprint")
                if new_run["data"].get(key) != record.run["data"].get(key)]
    if record.report and (out_dir / "report.json").is_file():
        before = (record.report.get("data") or {}).get("fingerprints") or {}
        after = (_json(out_dir / "report.json").get("data") or {}).get("fingerprints") or {}
        problems += [f"test batches of {split} differ (report.json data.fingerprints)"
                     for split in sorted(set(before) | set(after)) if before.get(split) != after.get(split)]
    return problems


def judge(record: Record, out_dir: Path, returncode: int, notes: dict) -> dict:
    """The reproduction's verdict (see `compare`), written to `<out_dir>/reproduce.json` with its line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"verdict": "failed", "returncode": returncode, "original": str(record.run_dir),
              "reproduction": str(out_dir), **notes}
    if returncode == 0 and (out_dir / "metrics.json").is_file():
        new_run = _json(out_dir / "run.json")
        expect, why = expectation(record.run, record.config, new_run)  # the new run's own versions and device
        result.update(compare(record.metrics, _json(out_dir / "metrics.json"), intervals_of(record), expect,
                              reproduction_problems(record, out_dir)), why=why)
    result["line"] = verdict_line(result)
    from lit_llm.utils_io import atomic_write_json

    atomic_write_json(out_dir / "reproduce.json", result)
    return result


def reproduce(path: Path, out_dir: Path | None = None, apply_diff: bool = False) -> dict:
    """Check the run's code, expectations and data, train it again into `out_dir`, and judge the result."""
    record = read_record(path)
    git_note = check_git(record, lit_llm.project_root(), apply_diff)
    expect, why = expectation(record.run, record.config, current_machine())
    if not expect and not intervals_of(record):
        reason = "it has none" if record.report else "it wrote no report.json (report.enabled=false)"
        raise Refused(f"cannot judge a reproduction: identical metrics are not expected here ({why}) and the run "
                      f"has no 95% intervals to compare with ({reason})")
    fingerprint = check_data(record)
    out_dir = Path(out_dir or default_out_dir()).resolve()
    if (out_dir / "run.json").exists():
        raise ConfigError(f"{out_dir} already holds a run; give another --out")
    returncode = train_again(record, out_dir)
    notes = {"git": git_note, "data_fingerprint": fingerprint, "command": train_command(record, out_dir)}
    return judge(record, out_dir, returncode, notes)


__all__ = ["Record", "Refused", "read_record", "check_git", "expectation", "machine_differences", "check_data",
           "train_command", "train_again", "compare", "verdict_line", "judge", "reproduce", "VERDICTS"]
