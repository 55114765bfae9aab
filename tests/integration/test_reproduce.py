"""pipelines/reproduce.py: a run trained again from its own record gives identical metrics; changed data, other
code and runs that cannot be judged are refused before anything trains; the verdict rules on metric dicts.

The runs here record the git state of a throw-away repository (LIT_LLM_ROOT), not of this checkout, whose working
tree may change while the tests run."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import lit_llm
from lit_llm import reproduce as rp
from tests.conftest import ROOT, TINY


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t", *args],
                          capture_output=True, text=True, check=True).stdout


def _fake_repo(path: Path) -> Path:
    """A git repository with one committed file, clean."""
    path.mkdir(parents=True)
    _git(path, "init", "-q")
    (path / "code.py").write_text("x = 1\n")
    _git(path, "add", "code.py")
    _git(path, "commit", "-qm", "init")
    return path


def _run(script: str, args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """A two-job multirun of one setting (seed=7,7; dropout on, so that any shift of the global RNG shows) on a
    copy of the quickstart corpus, recording the throw-away repository's git state."""
    tmp = tmp_path_factory.mktemp("reproduce")
    data = tmp / "stories.txt"
    shutil.copy(lit_llm.package_file("corpora/quickstart.txt"), data)
    env = {**os.environ, "LIT_LLM_CACHE_DIR": str(cache_dir), "LIT_LLM_ROOT": str(_fake_repo(tmp / "repo")),
           "PYTHONUNBUFFERED": "1"}
    proc = _run("train.py", ["-m", "experiment=quickstart", *TINY, "model.dropout=0.1", f"data.files={data}",
                             "seed=7,7", f"hydra.sweep.dir={tmp / 'sweep'}"], env, tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [next((tmp / "sweep").glob(f"{i}_*")) for i in (0, 1)]
    return {"tmp": tmp, "env": env, "jobs": jobs, "data": data}


def test_identical_jobs_and_their_reproduction(sweep):
    """Two identical jobs of one multirun write identical metrics.json (the first job used to draw the matmul
    probe's matrices from the global RNG); the second job trained again as a single run: identical, exit 0."""
    first, second = (json.loads((job / "metrics.json").read_text()) for job in sweep["jobs"])
    assert first == second
    out = sweep["tmp"] / "again"
    proc = _run("reproduce.py", [str(sweep["jobs"][1] / "report.json"), "--out", str(out)], sweep["env"],
                sweep["tmp"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("identical: metrics.json equals the original's (deterministic: seed 7") and str(out) in line
    result = json.loads((out / "reproduce.json").read_text())
    assert result["verdict"] == "identical" and result["git"] == "same commit, clean tree"
    assert json.loads((out / "metrics.json").read_text()) == second
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "quickstart.log").is_file()


def _copy_run(src: Path, dst: Path, data_files: str) -> Path:
    """A copy of the run `src` whose recorded config reads `data_files`."""
    shutil.copytree(src, dst)
    config = OmegaConf.load(dst / ".hydra" / "config.yaml")
    config.data.files = data_files
    OmegaConf.save(config, dst / ".hydra" / "config.yaml")
    return dst


def test_changed_data_is_refused_before_training(sweep):
    tmp = sweep["tmp"]
    moved = tmp / "moved.txt"  # the same content elsewhere: the fingerprint is of the content
    shutil.copy(sweep["data"], moved)
    record = rp.read_record(_copy_run(sweep["jobs"][0], tmp / "moved_run", data_files=str(moved)))
    assert rp.check_data(record) == record.run["data"]["fingerprint"]

    changed = tmp / "changed.txt"
    changed.write_text(sweep["data"].read_text().replace("the", "a", 1))
    run = _copy_run(sweep["jobs"][0], tmp / "changed_run", data_files=str(changed))
    out = tmp / "not_trained"
    proc = _run("reproduce.py", [str(run), "--out", str(out)], sweep["env"], tmp)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("refused: the data changed: data.files=" + str(changed))
    assert record.run["data"]["fingerprint"][:16] in proc.stderr and "nothing was trained" in proc.stderr
    assert not out.exists()  # no run directory, no checkpoint


def _record(sweep, name: str, repo: Path, dirty_diff: str = "") -> rp.Record:
    """A copy of job 0 whose run.json says it was made at `repo`'s HEAD, with `dirty_diff` uncommitted."""
    run = sweep["tmp"] / name
    shutil.copytree(sweep["jobs"][0], run)
    meta = json.loads((run / "run.json").read_text())
    meta["git"] = {"commit": _git(repo, "rev-parse", "HEAD").strip(), "dirty": bool(dirty_diff)}
    (run / "run.json").write_text(json.dumps(meta))
    if dirty_diff:
        (run / "git.diff").write_text(dirty_diff)
    return rp.read_record(run)


def test_git_checks(sweep):
    repo = _fake_repo(sweep["tmp"] / "repo2")
    clean = _record(sweep, "clean_run", repo)
    assert rp.check_git(clean, repo) == "same commit, clean tree"
    (repo / "code.py").write_text("x = 2\n")  # an uncommitted change the run did not have
    with pytest.raises(rp.Refused, match=r"not the run's \(it had none\): commit or stash them"):
        rp.check_git(clean, repo)
    diff = _git(repo, "diff", "HEAD")
    dirty = _record(sweep, "dirty_run", repo, dirty_diff=diff)
    assert rp.check_git(dirty, repo) == "same commit, same uncommitted changes (git.diff)"
    (repo / "code.py").write_text("x = 3\n")  # other uncommitted changes than the run's
    with pytest.raises(rp.Refused, match=r"not the run's \(its git.diff\): git stash, then git apply"):
        rp.check_git(dirty, repo)
    _git(repo, "checkout", "code.py")  # clean: the run's diff can be applied
    with pytest.raises(rp.Refused, match="uncommitted changes: git apply .*git.diff .*or pass --apply-diff"):
        rp.check_git(dirty, repo)
    assert "git.diff applied" in rp.check_git(dirty, repo, apply_diff=True)
    assert (repo / "code.py").read_text() == "x = 2\n"
    _git(repo, "commit", "-qam", "later")  # another commit
    with pytest.raises(rp.Refused, match=f"made at commit {clean.run['git']['commit'][:12]}, the project is at "
                                         f".*: git checkout {clean.run['git']['commit']}"):
        rp.check_git(clean, repo)


def test_refusals_of_the_record(sweep, monkeypatch):
    job = sweep["jobs"][0]
    assert rp.read_record(job / "report.json").run_dir == job.resolve()
    failed = shutil.copytree(job, sweep["tmp"] / "failed_run")
    meta = json.loads((failed / "run.json").read_text())
    (failed / "run.json").write_text(json.dumps({**meta, "status": "failed", "error": "ValueError: boom"}))
    with pytest.raises(rp.Refused, match="status is 'failed', not 'completed' \\(ValueError: boom\\)"):
        rp.read_record(failed)
    # other versions and no report: neither identity nor intervals to judge by
    other = shutil.copytree(job, sweep["tmp"] / "other_versions")
    (other / "run.json").write_text(json.dumps({**meta, "versions": {**meta["versions"], "torch": "0.0"}}))
    (other / "report.json").unlink()
    monkeypatch.setenv("LIT_LLM_ROOT", sweep["env"]["LIT_LLM_ROOT"])
    with pytest.raises(rp.Refused, match="identical metrics are not expected here \\(another machine kind or "
                                         "versions: torch 0.0 vs .*no report.json"):
        rp.reproduce(other, sweep["tmp"] / "never")
    assert not (sweep["tmp"] / "never").exists()


def test_expectation():
    run = {"seed": 1, "versions": {"torch": "2.5"}, "device": {"processor": "x86_64", "cuda": False},
           "perf": {"device": "cpu (2 threads)"}}
    assert rp.expectation(run, {}, run) == (True, "seed 1, same machine kind and versions, CPU")
    assert not rp.expectation({**run, "seed": None}, {}, run)[0]
    assert rp.expectation(run, {}, {**run, "versions": {"torch": "2.6"}}) == (
        False, "another machine kind or versions: torch 2.5 vs 2.6")
    gpu = {**run, "perf": {"device": "NVIDIA H100"}}
    assert rp.expectation(gpu, {"trainer": {"deterministic": False}}, gpu)[1] == (
        "the run used NVIDIA H100 without trainer.deterministic=true")
    assert rp.expectation(gpu, {"trainer": {"deterministic": True}}, gpu)[0]


def test_compare_verdicts():
    original = {"train/loss": 2.0, "test/validation/ppl": 10.0, "test/validation/loss": 2.3}
    intervals = {"test/validation/ppl": {"low": 9.0, "high": 11.0}}
    same = rp.compare(original, dict(original), intervals, expect_identical=True)
    assert same["verdict"] == "identical" and same["unchecked"] == ["test/validation/loss"]
    inside = {**original, "train/loss": 2.1, "test/validation/ppl": 10.5}
    assert rp.compare(original, inside, intervals, expect_identical=False)["verdict"] == "consistent"
    expected = rp.compare(original, inside, intervals, expect_identical=True)  # deterministic, yet not identical
    assert expected["verdict"] == "differs" and expected["differences"][0] == "test/validation/ppl 10.0 -> 10.5"
    outside = rp.compare(original, {**inside, "test/validation/ppl": 12.5}, intervals, expect_identical=False)
    assert outside["verdict"] == "differs" and outside["outside"] == ["test/validation/ppl 12.5 outside [9, 11]"]
    outside.update(reproduction="/new", why="torch 2.5 vs 2.6")
    assert rp.verdict_line(outside) == "differs: test/validation/ppl 12.5 outside [9, 11] -> /new"
    unjudged = rp.compare(original, inside, {}, expect_identical=False)
    assert rp.verdict_line({**unjudged, "why": "torch 2.5 vs 2.6"}).startswith(
        "differs: metrics.json not identical (torch 2.5 vs 2.6) and no test metric has a 95% interval")
    nan = rp.compare(original, {**inside, "test/validation/ppl": math.nan}, intervals, expect_identical=False)
    assert nan["verdict"] == "differs"
    missing = rp.compare(original, {"train/loss": 2.0}, intervals, expect_identical=False)
    assert missing["outside"] == ["test/validation/ppl missing outside [9, 11]"]
    other_data = rp.compare(original, dict(original), intervals, True, problems=["fingerprint a vs the original's b"])
    assert other_data["verdict"] == "differs"
    assert rp.compare({"x": math.nan}, {"x": math.nan}, {}, True)["verdict"] == "identical"
