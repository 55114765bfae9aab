"""pipelines/evaluate.py: a checkpoint alone reproduces its training run's test metrics; reports; bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.evaluation import evaluate
from lit_llm.reporting.report import VOLATILE_KEYS
from lit_llm.run import train
from tests.conftest import ROOT
from tests.integration.test_qa_run import QA
from tests.integration.test_seq2seq_run import overrides as seq2seq_overrides

CLASSIFY = ["data=tiny_sentiment", "tokenizer=bpe", "tokenizer.vocab_size=512", "task=classification",
            "model=bert_tiny", "trainer.max_steps=30", "trainer.val_check_interval=15",
            "trainer.limit_val_batches=null", "trainer.limit_test_batches=null", "task.optim.lr=2e-3"]


def _evaluate_cli(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIT_LLM_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "evaluate.py"), *args, "progress_bar=false"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _stable(report: dict) -> dict:
    """What must not change between two evaluations into different directories."""
    out = {k: v for k, v in report.items() if k not in (*VOLATILE_KEYS, "command")}
    out["config"] = {**report["config"], "paths": {**report["config"]["paths"], "output_dir": None}}
    return out


def test_evaluate_cli_reproduces_the_training_runs_test_metrics(compose_train, tmp_path, cache_dir):
    run = tmp_path / "run"
    trained = train(compose_train(CLASSIFY, run, tiny=False))
    first, second = tmp_path / "eval1", tmp_path / "eval2"
    for out in (first, second):
        proc = _evaluate_cli([f"ckpt_path={run}", f"hydra.run.dir={out}"], tmp_path, cache_dir)
        assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = _json(first / "metrics.json")
    assert set(evaluated) == {k for k in trained if k.startswith("test/")}
    for key, value in evaluated.items():
        assert abs(value - trained[key]) <= 1e-6, (key, value, trained[key])
    # same checkpoint, same data: byte-identical metrics, and the same report but for time and command
    assert (first / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()
    assert _stable(_json(first / "report.json")) == _stable(_json(second / "report.json"))

    report, train_report = _json(first / "report.json"), _json(run / "report.json")
    assert report["checkpoint"] == train_report["checkpoint"]  # the run dir resolves to the tested checkpoint
    assert report["intervals"] == train_report["intervals"]  # the same per-example records
    assert report["data"] == train_report["data"]
    acc = report["intervals"]["test/test/acc"]
    assert acc["n"] == 54 and acc["low"] <= trained["test/test/acc"] <= acc["high"]
    assert abs(acc["estimate"] - trained["test/test/acc"]) < 1e-6
    assert report["source"] == "evaluate" and train_report["source"] == "train"
    assert {"learning curves", "confusion matrix"} <= set(report["plots"])
    assert all((first / p).is_file() for p in report["plots"].values())
    worst = report["extremes"]["test"]["worst"]
    assert len(worst) == 3 and worst[0]["score"] <= worst[-1]["score"] <= report["extremes"]["test"]["best"][-1]["score"]
    md = (first / "report.md").read_text()
    assert "| test/test/acc |" in md and "![confusion matrix](plots/confusion_matrix.png)" in md
    assert report["git"]["commit"] and report["versions"]["torch"] and report["config"]["ckpt_path"] == str(run)


@pytest.mark.parametrize("kind", ["clm", "mlm", "qa", "seq2seq"])
def test_evaluate_each_task_matches_training(kind, compose_train, compose_eval, tmp_path):
    recipes = {
        "clm": ["experiment=quickstart"],
        "mlm": ["experiment=quickstart", "model=bert_tiny", "model.block_size=32", "data.block_size=32",
                "task=mlm", "data.objective=mlm"],
        "qa": QA,
        "seq2seq": seq2seq_overrides(tmp_path) + ["trainer.max_steps=4"],
    }
    run = tmp_path / "run"
    trained = train(compose_train(recipes[kind], run))
    limit = ["limit_batches=2"] if kind in ("clm", "mlm") else []  # as TINY's trainer.limit_test_batches=2
    metrics = evaluate(compose_eval([f"ckpt_path={run}", *limit], tmp_path / "eval"))
    tested = {k: v for k, v in trained.items() if k.startswith("test/")}
    assert set(metrics) == set(tested)
    for key, value in metrics.items():
        assert abs(value - tested[key]) <= 1e-6 * max(1.0, abs(value)), (key, value, tested[key])
    report = _json(tmp_path / "eval" / "report.json")
    expected = {"clm": {"test/validation/ppl"}, "mlm": {"test/validation/ppl", "test/validation/masked_acc"},
                "qa": {"test/tiny/em", "test/tiny/f1", "test/again/em", "test/again/f1"},
                "seq2seq": {"test/test/bleu", "test/test/chrf"}}[kind]
    assert set(report["intervals"]) == expected
    for name, ci in report["intervals"].items():  # the bootstrap estimate is the logged metric
        assert abs(ci["estimate"] - metrics[name]) <= 1e-4 * max(1.0, abs(metrics[name])), name
        assert ci["low"] <= ci["estimate"] <= ci["high"]
    assert report["notes"] == []
    if kind == "clm":  # split=: the held-out split under its own name, and the training split
        again = evaluate(compose_eval([f"ckpt_path={run}", "limit_batches=2", "split=validation"], tmp_path / "v"))
        assert again["test/validation/ppl"] == metrics["test/validation/ppl"]
        on_train = evaluate(compose_eval([f"ckpt_path={run}", "limit_batches=2", "split=train"], tmp_path / "t"))
        assert set(on_train) == {"test/train/loss", "test/train/ppl"}
        assert _json(tmp_path / "t" / "report.json")["data"]["fingerprints"]["train"] != \
            report["data"]["fingerprints"]["validation"]
    if kind == "seq2seq":
        assert "generation lengths" in report["plots"]
        assert report["definitions"]["test/test/bleu"].count("tok:13a")


def test_evaluate_generation_options_and_split(compose_train, compose_eval, tmp_path):
    run = tmp_path / "run"
    train(compose_train(seq2seq_overrides(tmp_path) + ["trainer.max_steps=2", "test=false"], run))
    metrics = evaluate(compose_eval([f"ckpt_path={run}/checkpoints/last.ckpt", "split=validation",
                                     "+generation.num_beams=2", "+generation.max_new_tokens=5"], tmp_path / "e"))
    assert metrics["test/validation/examples"] == 20 and metrics["test/validation/gen_tokens_mean"] <= 5
    with pytest.raises(ConfigError, match="split='dev' is not a split of this data.*test, train, validation"):
        evaluate(compose_eval([f"ckpt_path={run}", "split=dev"], tmp_path / "e2"))


def test_bad_checkpoints_and_task_data_mismatch(compose_train, compose_eval, tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path=.*nope.ckpt: no such checkpoint file"):
        evaluate(compose_eval([f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path / "e"))
    with pytest.raises(ConfigError, match="ckpt_path is required"):
        evaluate(compose_eval([], tmp_path / "e"))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.ckpt is not a readable checkpoint"):
        evaluate(compose_eval([f"ckpt_path={junk}"], tmp_path / "e"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError, match="foreign.ckpt is not a lit-llm task checkpoint"):
        evaluate(compose_eval([f"ckpt_path={foreign}"], tmp_path / "e"))

    run = tmp_path / "cls"
    train(compose_train(CLASSIFY + ["trainer.max_steps=2", "test=false"], run, tiny=False))
    ckpt = run / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="is a classification checkpoint but the data config is 'QADataModule'.*"
                                          "choose classification data, e.g. data=sst2"):
        evaluate(compose_eval([f"ckpt_path={ckpt}", "data=squad"], tmp_path / "e"))
    # a QA checkpoint on a classification dataset (the checkpoint's task relabelled: the check reads only that)
    state = torch.load(ckpt, weights_only=False)
    state["lit_llm"]["task"] = "qa"
    torch.save(state, tmp_path / "qa.ckpt")
    with pytest.raises(ConfigError, match="is a qa checkpoint but the data config is 'ClassificationDataModule'"):
        evaluate(compose_eval([f"ckpt_path={tmp_path / 'qa.ckpt'}"], tmp_path / "e"))
    with pytest.raises(ConfigError, match="data.text_colum is not a setting of the checkpoint's data config"):
        evaluate(compose_eval([f"ckpt_path={ckpt}", "+data.text_colum=x"], tmp_path / "e"))


def test_cli_error_is_one_line(tmp_path, cache_dir):
    proc = _evaluate_cli([f"ckpt_path={tmp_path / 'missing'}", f"hydra.run.dir={tmp_path / 'e'}"], tmp_path, cache_dir)
    assert proc.returncode == 2
    assert "error: ckpt_path=" in proc.stderr and "Traceback" not in proc.stderr




class _RunsACommand:
    """Unpickling this calls os.system: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(compose_train, compose_eval, tmp_path):
    from lit_llm.checkpointing import AtomicCheckpointIO, load_pretrained

    run = tmp_path / "cls"
    train(compose_train(CLASSIFY + ["trainer.max_steps=2", "test=false"], run, tiny=False))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # ours need no code
    marker = tmp_path / "ran"
    state["lit_llm"]["run_config"]["payload"] = _RunsACommand(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(state, evil)
    refused = r"evil.ckpt is refused: it holds Python objects other than tensors and plain types.*posix.system"
    with pytest.raises(ConfigError, match=refused):  # pipelines/evaluate.py
        evaluate(compose_eval([f"ckpt_path={evil}"], tmp_path / "e"))
    with pytest.raises(ConfigError, match=refused):  # model.init_from=
        load_pretrained(str(evil))
    with pytest.raises(ConfigError, match=refused):  # resume: ckpt_path= (checked before fit)
        train(compose_train(CLASSIFY + ["trainer.max_steps=4", f"ckpt_path={evil}"], tmp_path / "r", tiny=False))
    with pytest.raises(ConfigError, match=refused):  # Lightning's own loads (resume, testing the best checkpoint)
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()  # nothing ran
    torch.load(evil, weights_only=False)  # the payload is real: unpickled without the guard, it runs
    assert marker.exists()
