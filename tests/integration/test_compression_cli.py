"""Compression end to end: a pruned checkpoint evaluates, precision=int8 evaluates close to float32 and reports its
speed, export.py --quantize int8 writes a smaller file that loads again, bad settings are one-line errors."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from lit_llm.compression import load_int8, prune_checkpoint
from lit_llm.errors import ConfigError
from lit_llm.evaluation import evaluate
from lit_llm.run import train
from tests.conftest import ROOT
from tests.integration.test_evaluate import CLASSIFY


def _export_main():
    spec = importlib.util.spec_from_file_location("export_cli", ROOT / "pipelines" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


NO_REPORT = ["report.enabled=false"]  # reports are tests/integration/test_evaluate.py's; here: speed


def test_pruned_and_int8_checkpoints_evaluate_and_export(compose_train, compose_eval, tmp_path, capsys):
    classifier = tmp_path / "run"
    train(compose_train(CLASSIFY + ["trainer.max_steps=10", "trainer.val_check_interval=5", *NO_REPORT], classifier))
    fp32 = evaluate(compose_eval([f"ckpt_path={classifier}", "precision=32-true", *NO_REPORT], tmp_path / "fp32"))
    int8 = evaluate(compose_eval([f"ckpt_path={classifier}", "precision=int8", *NO_REPORT], tmp_path / "int8"))
    assert set(int8) == set(fp32)
    assert abs(int8["test/test/loss"] - fp32["test/test/loss"]) < 0.02 * max(1.0, fp32["test/test/loss"])
    inference = json.loads((tmp_path / "int8" / "run.json").read_text())["inference"]
    assert inference["precision"] == "int8" and inference["examples"] == 54 and inference["examples_per_s"] > 0

    pruned = tmp_path / "pruned"
    report = prune_checkpoint(str(classifier), 0.5, "layer", pruned / "checkpoints" / "last.ckpt")
    assert abs(report["sparsity"] - 0.5) < 0.01 and report["scope"] == "layer"
    state = torch.load(pruned / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any(k.endswith(("weight_orig", "weight_mask")) for k in state)  # the model's own keys
    metrics = evaluate(compose_eval([f"ckpt_path={pruned}", *NO_REPORT], tmp_path / "eval_pruned"))
    assert set(metrics) == set(fp32) and metrics != fp32
    with pytest.raises(ConfigError, match="scope=rows is not a pruning scope"):
        prune_checkpoint(str(classifier), 0.5, "rows", tmp_path / "x.ckpt")

    main = _export_main()  # export.py --quantize int8: a smaller file that loads again
    assert main([str(classifier), str(tmp_path / "int8"), "--quantize", "int8"]) == 0
    assert "int8:" in capsys.readouterr().out
    model = load_int8(tmp_path / "int8" / "model-int8.safetensors")
    assert (tmp_path / "int8" / "tokenizer.json").is_file()
    fp32 = (classifier / "model.safetensors").stat().st_size
    assert (tmp_path / "int8" / "model-int8.safetensors").stat().st_size < 0.6 * fp32
    assert model(torch.randint(0, 100, (1, 8))).shape[-1] == model.config.n_embd

