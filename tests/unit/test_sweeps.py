"""lit_llm.sweeps without a sweep: job directory names, what a failing job leaves behind, the summary."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from lit_llm import sweeps
from lit_llm.errors import ConfigError


def test_safe_dirname_keeps_overrides_readable():
    assert sweeps.safe_dirname(0, "seed=1,task.optim.lr=0.0001") == "0_seed=1,task.optim.lr=0.0001"
    assert sweeps.safe_dirname(3, "") == "3"
    assert sweeps.safe_dirname(1, "model.init_from=/x/y,data.files='a b'") == "1_model.init_from=_x_y,data.files=_a_b_"
    assert sweeps.safe_dirname(2, "model.init_from=hf:/m") == "2_model.init_from=hf__m"


def test_safe_dirname_caps_long_names_with_a_hash():
    a = sweeps.safe_dirname(0, "x=" + "a" * 300)
    b = sweeps.safe_dirname(0, "x=" + "a" * 299 + "b")
    assert len(a) == len(b) == sweeps.MAX_DIRNAME and a != b
    assert a.startswith("0_x=aaa") and a[-9] == "-"
    assert sweeps.safe_dirname(0, "x=" + "a" * 300) == a  # deterministic


def test_resolver_is_registered():
    cfg = OmegaConf.create({"num": 4, "o": "lr=0.1,path=/a", "d": "${safe_dirname:${num},${o}}"})
    assert cfg.d == "4_lr=0.1,path=_a"


def _cfg(tmp_path):
    return OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "task_name": "t", "seed": 7,
                             "optimized_metric": "val/loss"})


@pytest.fixture
def multirun(monkeypatch):
    sweeps.OUTCOMES.clear()
    monkeypatch.setattr(sweeps, "_hydra_job", lambda: (True, 3, ["seed=7"]))
    yield
    sweeps.OUTCOMES.clear()


def test_multirun_failure_mid_training_keeps_run_json_and_raises(tmp_path, multirun):
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "seed": 7, "git": {"commit": "abc"}}))

    def task(cfg):
        raise RuntimeError("loss exploded")

    with pytest.raises(sweeps.JobFailed, match="job 3 .* failed: RuntimeError: loss exploded"):
        sweeps.run_job(_cfg(tmp_path), task)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run == {"status": "failed", "seed": 7, "git": {"commit": "abc"}, "error": "RuntimeError: loss exploded"}
    assert [o.error for o in sweeps.OUTCOMES] == ["RuntimeError: loss exploded"]


def test_multirun_config_error_before_training_writes_run_json(tmp_path, multirun):
    def task(cfg):
        raise ConfigError("model.n_head=3 must divide model.n_embd=64")

    with pytest.raises(sweeps.JobFailed):
        sweeps.run_job(_cfg(tmp_path), task)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "failed" and run["task_name"] == "t" and run["seed"] == 7
    assert run["error"] == "ConfigError: model.n_head=3 must divide model.n_embd=64"


def test_multirun_nan_metric_is_a_failed_job(tmp_path, multirun):
    """optuna cannot take a NaN objective (the sweeper crashes): it becomes a failed trial instead."""
    with pytest.raises(sweeps.JobFailed, match="optimized_metric=val/loss is nan"):
        sweeps.run_job(_cfg(tmp_path), lambda cfg: float("nan"))


def test_single_run_config_error_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweeps, "_hydra_job", lambda: (False, 0, []))

    def task(cfg):
        raise ConfigError("data.files=/nope: no such file")

    with pytest.raises(SystemExit) as e:
        sweeps.run_job(_cfg(tmp_path), task)
    assert e.value.code == 2 and capsys.readouterr().err == "error: data.files=/nope: no such file\n"
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


def test_summary_lists_failed_jobs_and_exit_status(capsys):
    def main():
        sweeps.OUTCOMES.append(sweeps.JobOutcome(0, "/s/0_a=1", ["a=1"]))
        sweeps.OUTCOMES.append(sweeps.JobOutcome(1, "/s/1_a=2", ["a=2"], "ValueError: bad\nmore"))

    assert sweeps.exit_after_sweep(main) == 1
    err = capsys.readouterr().err
    assert err == "multirun: 1 of 2 jobs failed (the others completed; each failed job's run.json and log say why):\n" \
                  "  job 1 /s/1_a=2: ValueError: bad\n"
    assert sweeps.exit_after_sweep(lambda: None) == 0 and capsys.readouterr().err == ""


@pytest.mark.parametrize("recipe, study, direction, metric", [("sst2_bert_optuna", "sst2_bert", "maximize", "val/acc"),
                                                               ("quickstart_optuna", "quickstart", "minimize", "val/loss")])
def test_optuna_recipes_compose(recipe, study, direction, metric, tmp_path):
    """Every searched key exists in the experiment's config (a typo would fail each trial), the study is fixed
    and stored in SQLite under paths.log_dir, failed trials do not end the study."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={recipe}", f"paths.log_dir={tmp_path}"],
                      return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert "optuna" in sweeper._target_ and cfg.hydra.mode.name == "MULTIRUN"
    assert sweeper.storage == f"sqlite:///{tmp_path}/optuna/{study}.db" and sweeper.study_name == study
    assert sweeper.direction == direction and cfg.optimized_metric == metric and cfg.task_name == study
    assert sweeper.max_failure_rate == 1.0 and sweeper.n_jobs == 1 and sweeper.sampler.seed is not None
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key
    assert cfg.hydra.callbacks.optuna_storage._target_ == "lit_llm.sweeps.OptunaStudyStorage"


def test_optuna_storage_callback_makes_the_folder_and_offsets_the_seed(tmp_path):
    import optuna

    db = tmp_path / "optuna" / "s.db"
    cfg = OmegaConf.create({"hydra": {"sweeper": {"storage": f"sqlite:///{db}", "study_name": "s",
                                                  "sampler": {"seed": 10}}}})
    sweeps.OptunaStudyStorage().on_multirun_start(cfg)
    assert db.parent.is_dir() and cfg.hydra.sweeper.sampler.seed == 10  # a new study: the seed as configured
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{db}")
    for _ in range(3):
        study.tell(study.ask(), 1.0)
    sweeps.OptunaStudyStorage().on_multirun_start(cfg)
    assert cfg.hydra.sweeper.sampler.seed == 13
