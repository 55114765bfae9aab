"""The real-data recipes on the shared datasets (skipped, with the reason, when they are absent)."""
from __future__ import annotations

import json

import pytest

from lit_llm.run import train
from tests.conftest import requires_data


@requires_data("tinyshakespeare/input.txt")
@pytest.mark.parametrize("experiment", ["shakespeare_gpt", "shakespeare_gpt_bpe"])
def test_shakespeare_char_and_bpe(compose_train, tmp_path, experiment):
    out = tmp_path / experiment
    metrics = train(compose_train([f"experiment={experiment}", "trainer.max_steps=4"], out))
    run = json.loads((out / "run.json").read_text())
    if experiment == "shakespeare_gpt":
        # nanoGPT's split: first 90% of the characters train, last 10% validation (+1 <eos> each)
        assert run["data"]["train"]["tokens"] == 1_003_854 + 1
        assert run["data"]["validation"]["tokens"] == 111_540 + 1
        assert run["data"]["vocab_size"] == 7 + 65  # special tokens + Tiny Shakespeare's 65 characters
    else:
        assert run["data"]["vocab_size"] == 2048
    assert metrics["test/validation/ppl"] > 1.0


@pytest.mark.slow
@requires_data("gutenberg_classics14", "wikitext2_raw/wiki.test.raw")
def test_gutenberg_reports_heldout_and_wikitext2(compose_train, tmp_path):
    out = tmp_path / "gutenberg"
    metrics = train(compose_train(["experiment=gutenberg_gpt", "trainer.max_steps=4",
                                   "trainer.limit_test_batches=4"], out))
    assert {"test/validation/ppl", "test/wikitext2_test/ppl"} <= set(metrics)
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["vocab_size"] == 8192
