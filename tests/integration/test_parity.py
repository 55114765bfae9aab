"""One process or two give the same answer.

N optimizer steps with `trainer=ddp_sim` (2 CPU processes x batch B/2) end with the same weights
as one process with batch B, and validation covers the whole split exactly once (no duplicated
examples from the distributed sampler's padding): the metrics of both runs agree. Run through the
command line, as a user does (plain `ddp` inside pytest would re-launch pytest itself).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_llm.data.loading import EvalShardSampler
from lit_llm.errors import ConfigError
from tests.conftest import ROOT, TINY

STEPS = 4


def _train(args: list[str], run_dir: Path, cache: Path) -> dict:
    env = {**os.environ, "LIT_LLM_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "train.py"), *args,
                           f"trainer.max_steps={STEPS}", f"trainer.val_check_interval={STEPS}",
                           "trainer.limit_val_batches=null", "trainer.enable_progress_bar=false",
                           "test=false", "report.enabled=false", f"hydra.run.dir={run_dir}"],
                          cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith(("backbone.", "head."))}


def _assert_same_run(one: Path, two: Path, m1: dict, m2: dict, keys: list[str]) -> None:
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    start = torch.load(one / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert start["global_step"] == STEPS
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert worst < 1e-5, f"weights differ by {worst}"
    for key in keys:
        assert m1[key] == pytest.approx(m2[key], abs=1e-5), key


@pytest.mark.ddp
def test_ddp_sim_equals_one_process_causal_lm(tmp_path, cache_dir):
    common = ["experiment=quickstart", *TINY, "model.dropout=0.0"]
    one, two = tmp_path / "one", tmp_path / "two"
    m1 = _train([*common, "data.batch_size=8"], one, cache_dir)
    m2 = _train([*common, "data.batch_size=4", "trainer=ddp_sim"], two, cache_dir)
    blocks = json.loads((one / "run.json").read_text())["data"]["validation"]["blocks"]
    assert blocks % 2 == 1  # an odd split: a padding sampler would have evaluated one block twice
    _assert_same_run(one, two, m1, m2, ["val/loss", "val/ppl"])
    # rank 1 writes nothing of its own (Lightning's launcher gives its Hydra job a log file only)
    extra = {p.name for p in two.iterdir()} - {p.name for p in one.iterdir()}
    assert all(name.endswith("_process_1.log") for name in extra), extra


@pytest.mark.ddp
def test_ddp_sim_equals_one_process_classification(tmp_path, cache_dir):
    common = ["data=tiny_sentiment", "tokenizer=bpe", "tokenizer.vocab_size=300", "task=classification",
              "model=bert_tiny", "model.dropout=0.0", "task.head_dropout=0.0", "data.val_fraction=0.125",
              "data.eval_batch_size=4"]
    one, two = tmp_path / "one", tmp_path / "two"
    m1 = _train([*common, "data.batch_size=16"], one, cache_dir)
    m2 = _train([*common, "data.batch_size=8", "trainer=ddp_sim"], two, cache_dir)
    examples = json.loads((one / "run.json").read_text())["data"]["validation"]["examples"]
    assert examples == 45  # odd
    _assert_same_run(one, two, m1, m2, ["val/loss", "val/acc", "val/f1_macro"])


@pytest.mark.slow  # ~45 s; the default run keeps the causal-LM and classification parity runs (make test-all runs it)
@pytest.mark.ddp
def test_ddp_sim_equals_one_process_with_lora(tmp_path, cache_dir):
    """task.peft=lora on a (4-step) pretrained encoder: 2 processes x B/2 == 1 x B, adapters and head."""
    common = ["data=tiny_sentiment", "tokenizer=bpe", "tokenizer.vocab_size=300", "task=classification",
              "model=bert_tiny", "model.dropout=0.0", "task.head_dropout=0.0", "data.val_fraction=0.125",
              "data.eval_batch_size=4"]
    base = tmp_path / "base"
    _train([*common, "data.batch_size=16"], base, cache_dir)
    lora = [*common, f"model.init_from={base}", "task/peft=lora", "task.peft.r=4", "task.peft.targets=[all_linear]"]
    one, two = tmp_path / "one", tmp_path / "two"
    m1 = _train([*lora, "data.batch_size=16"], one, cache_dir)
    m2 = _train([*lora, "data.batch_size=8", "trainer=ddp_sim"], two, cache_dir)
    assert any("lora_B" in k for k in _weights(one)) and not any(k.endswith("base.weight") for k in _weights(one))
    _assert_same_run(one, two, m1, m2, ["val/loss", "val/acc", "val/f1_macro"])


@pytest.mark.parametrize("size,world", [(7, 2), (8, 2), (10, 3), (3, 3)])
def test_eval_shards_cover_the_split_once(size, world):
    shards = [list(EvalShardSampler(size, world, rank)) for rank in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(size))
    assert [len(EvalShardSampler(size, world, r)) for r in range(world)] == [len(s) for s in shards]


def test_eval_shards_need_an_item_per_process():
    with pytest.raises(ConfigError, match="validation split has 1 items for 2 processes"):
        EvalShardSampler(1, 2, 0, "validation")
