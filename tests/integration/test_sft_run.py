"""Instruction tuning end to end: a pretrained GPT (our own causal-LM run) tuned on conversations, with the ChatML
tokens added to its tokenizer and embeddings; an encoder-decoder on the same chats; evaluate.py reproduces the
test metrics from the checkpoint alone."""
from __future__ import annotations

import json

import pytest
import torch

from lit_llm.checkpointing import load_pretrained
from lit_llm.evaluation import evaluate
from lit_llm.run import train
from tests.conftest import requires_data

CHATS = ["task=sft", "data=chat_jsonl", "data.files=tests/data/tiny_chats.jsonl", "data.val_fraction=0.1",
         "task.optim.lr=1e-3", "task.optim.warmup_ratio=0", "task.optim.warmup_steps=2",
         "callbacks.generate_samples.prompt='What color is the cat?'"]


@pytest.fixture(scope="module")
def pretrained_gpt(tmp_path_factory, cache_dir):
    """A tiny causal LM pretrained on the quickstart corpus (block_size 128: room for a conversation)."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR, TINY

    out = tmp_path_factory.mktemp("clm")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=TINY + ["experiment=quickstart", "model.block_size=128", "data.block_size=64",
                                                 "test=false", f"paths.output_dir={out}",
                                                 f"paths.cache_dir={cache_dir}"])
    train(cfg)
    return out


def test_sft_from_our_pretrained_gpt_grows_its_vocabulary(pretrained_gpt, compose_train, compose_eval, tmp_path):
    base = load_pretrained(str(pretrained_gpt))
    old_vocab = base.backbone_config["vocab_size"]
    assert base.tokenizer.token_to_id("<|im_end|>") is None

    out = tmp_path / "sft"
    metrics = train(compose_train(CHATS + [f"model.init_from={pretrained_gpt}", "model=gpt_tiny", "model.block_size=128"], out))
    assert {"val/loss", "val/ppl", "test/validation/loss", "test/validation/ppl"} <= set(metrics)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    meta = ckpt["lit_llm"]
    tokenizer = json.loads(meta["tokenizer_json"])
    added = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    assert added["<|im_start|>"] == base.tokenizer.get_vocab_size()  # appended after the pretrained ids
    assert added["<|im_end|>"] == base.tokenizer.get_vocab_size() + 1
    assert meta["backbone_config"]["vocab_size"] >= base.tokenizer.get_vocab_size() + 2
    assert meta["run_config"]["chat_template"].startswith("{% for message in messages %}{{ '<|im_start|>'")
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["vocab_size"] == meta["backbone_config"]["vocab_size"] > 0
    if meta["backbone_config"]["vocab_size"] > old_vocab:  # grown: the old rows were copied
        assert run["model"]["vocab_size"] % 64 == 0
    sample = (out / "samples").glob("step_*.txt")
    assert any("assistant:" in p.read_text() for p in sample)

    metrics_eval = evaluate(compose_eval([f"ckpt_path={out}", "limit_batches=2"], tmp_path / "eval"))
    for key, value in metrics_eval.items():
        assert abs(value - metrics[key]) <= 1e-5 * max(1.0, abs(value)), key


def test_new_token_rows_start_at_the_mean_embedding(pretrained_gpt):
    from lit_llm.checkpointing import grow_vocabulary
    from lit_llm.models import build_backbone

    base = load_pretrained(str(pretrained_gpt))
    old = base.backbone_config["vocab_size"]
    bigger = build_backbone({**base.backbone_config, "vocab_size": old + 64})
    state = grow_vocabulary(base, bigger)
    wte = state["wte.weight"]
    assert wte.shape[0] == old + 64
    torch.testing.assert_close(wte[:old], base.state_dict["wte.weight"])
    torch.testing.assert_close(wte[old:], base.state_dict["wte.weight"].mean(0, keepdim=True).expand(64, -1))
    assert state["wpe.weight"] is base.state_dict["wpe.weight"]  # not vocabulary-sized: untouched


def test_sft_encoder_decoder_on_turn_pairs(compose_train, tmp_path):
    out = tmp_path / "s2s"
    metrics = train(compose_train(CHATS + ["model=transformer_tiny", "tokenizer=bpe", "tokenizer.vocab_size=300",
                                           "model.block_size=128", "data.max_source_length=128",
                                           "data.max_target_length=32", "callbacks.generate_samples=null"], out))
    assert metrics["test/validation/loss"] > 0 and metrics["test/validation/ppl"] > 1
    stats = json.loads((out / "run.json").read_text())["data"]
    assert stats["train"]["turns"] > stats["train"]["conversations"]  # multi-turn chats: one pair per answer
    assert stats["validation"]["turns"] == stats["validation"]["conversations"]  # evaluation: the final answer


def test_sft_refuses_an_encoder(compose_train, tmp_path):
    from lit_llm.errors import ConfigError

    with pytest.raises(ConfigError, match="model.arch must be one of"):
        train(compose_train(CHATS + ["model=bert_tiny", "tokenizer=bpe", "tokenizer.vocab_size=300",
                                     "model.block_size=128", "data.arch=gpt"], tmp_path / "x"))


@requires_data("sst2", "gsm8k")
def test_mixture_answers_are_generated_and_scored_per_task(compose_train, compose_eval, tmp_path):
    """data=instruct_mix with two tasks: every test split's answers generated and scored by its own metric, with
    bootstrap intervals in the report and the answers in predictions.jsonl; evaluate.py scores them again."""
    out = tmp_path / "mix"
    caps = [f"data.mixture.tasks.{t}.{k}={v}" for t in ("sst2", "gsm8k")
            for k, v in (("train_examples", 40), ("validation_examples", 4), ("test_examples", 6))]
    metrics = train(compose_train(["task=sft", "data=instruct_mix", "data.mixture_tasks=[sst2,gsm8k]", *caps, "task.optim.warmup_ratio=0",
                                   "tokenizer=bpe", "tokenizer.vocab_size=400", "model.block_size=256",
                                   "task.generation.max_new_tokens=12", "callbacks.generate_samples=null",
                                   "trainer.limit_test_batches=null"], out))
    assert {"test/sst2/acc", "test/sst2/f1_macro", "test/sst2/no_label", "test/sst2/ppl", "test/gsm8k/acc",
            "test/gsm8k/loss"} <= set(metrics)
    assert metrics["test/sst2/examples"] == 6 and 0 <= metrics["test/sst2/acc"] <= 1
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted({r["task"] for r in rows}) == ["gsm8k", "sst2"] and len(rows) == 12
    assert rows[0]["prompt"][-1]["role"] == "user"
    report = json.loads((out / "report.json").read_text())
    assert {"test/sst2/acc", "test/gsm8k/acc", "test/sst2/ppl"} <= set(report["intervals"])
    again = evaluate(compose_eval([f"ckpt_path={out}"], tmp_path / "eval"))
    assert again["test/sst2/acc"] == metrics["test/sst2/acc"] and again["test/gsm8k/acc"] == metrics["test/gsm8k/acc"]
