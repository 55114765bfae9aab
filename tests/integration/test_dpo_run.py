"""task=dpo end to end on a tiny GPT (a 4-step CLM run stands in for the SFT model): the DPO metrics, the frozen
reference saved in checkpoints and left out of the export, evaluate equal to the run's test, resume equal to an
uninterrupted run, a 0-step run (the SFT model's own preference accuracy), LoRA, and the errors."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lit_llm.errors import ConfigError
from lit_llm.evaluation import evaluate
from lit_llm.run import train

ANIMALS = {"cow": "moo", "dog": "woof", "cat": "meow", "duck": "quack", "sheep": "baa", "owl": "hoot",
           "pig": "oink", "horse": "neigh", "frog": "ribbit", "lion": "roar", "mouse": "squeak", "goat": "bleat"}


def write_pairs(path, animals) -> str:
    rows = []
    for animal in animals:
        for ask in ("What does the {} say?", "Which sound does a {} make?"):
            rows.append({"prompt": ask.format(animal), "chosen": f"The {animal} says {ANIMALS[animal]}.",
                         "rejected": "I do not know."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """A tiny GPT pretrained for 4 steps on the shipped corpus (char tokenizer): the model DPO starts from."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR, TINY, shared_data_dir

    out, cache = tmp_path_factory.mktemp("clm"), tmp_path_factory.mktemp("cache")
    data = shared_data_dir()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        train(compose("train", overrides=TINY + [
            "experiment=quickstart", "model.block_size=96", "callbacks.generate_samples=null", "trainer.max_steps=4",
            "test=false", f"paths.output_dir={out}", f"paths.cache_dir={cache}"]
            + ([f"paths.data_dir={data}"] if data is not None else [])))
    return out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    names = sorted(ANIMALS)
    return write_pairs(folder / "train.jsonl", names[:10]), write_pairs(folder / "test.jsonl", names[10:])


def dpo(sft, pairs, *extra):
    train_file, test_file = pairs
    return ["task=dpo", "data=preference_jsonl", f"data.train_files={train_file}", f"data.test_files={test_file}",
            "data.val_fraction=0.2", "data.batch_size=4", f"model.init_from={sft}", "model.block_size=96",
            "callbacks.generate_samples=null", "task.optim.lr=3e-3", "task.optim.warmup_ratio=0",
            "trainer.max_steps=8", "trainer.val_check_interval=4", "trainer.limit_val_batches=null",
            "trainer.limit_test_batches=null", *extra]


METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "preference_acc", "logps/chosen",
           "logps/rejected", "logp_preference_acc", "logp_preference_acc_norm")


def test_dpo_run_reference_checkpoint_export_and_evaluate(compose_train, compose_eval, sft, pairs, tmp_path):
    out = tmp_path / "dpo"
    metrics = train(compose_train(dpo(sft, pairs), out))
    assert {f"val/{m}" for m in METRICS} | {f"test/test/{m}" for m in METRICS} <= set(metrics)
    assert "baseline/test/shorter_preference_acc" in metrics
    assert metrics["test/test/rewards/margin"] > 0 and metrics["test/test/preference_acc"] > 0.5  # it learned
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["train"]["pairs"] == 16 and run["data"]["validation"]["pairs"] == 4
    report = json.loads((out / "report.json").read_text())
    assert "test/test/preference_acc" in json.dumps(report) and "test/test/logp_preference_acc" in json.dumps(report)

    # the reference: the SFT weights, frozen, in the checkpoint; not in the export
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    start = torch.load(sft / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    reference = {k[len("reference."):]: v for k, v in state.items() if k.startswith("reference.")}
    policy = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    assert reference.keys() == policy.keys()
    for key, value in reference.items():
        pretrained = start["backbone." + key]
        torch.testing.assert_close(value[: len(pretrained)], pretrained, atol=0, rtol=0, msg=key)
    assert any(not torch.equal(policy[k], reference[k]) for k in policy)  # the policy moved
    exported = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("reference") for k in exported) and exported.keys() <= policy.keys()

    evaluated = evaluate(compose_eval([f"ckpt_path={out}"], tmp_path / "eval"))
    for key in (f"test/test/{m}" for m in METRICS):
        assert abs(evaluated[key] - metrics[key]) <= 1e-5, key


def test_zero_steps_measure_the_sft_model(compose_train, sft, pairs, tmp_path):
    """Before any step the policy is its reference: margins 0, DPO accuracy 0, loss log 2; logp_preference_acc is
    the SFT model's own."""
    metrics = train(compose_train(dpo(sft, pairs, "trainer.max_steps=0"), tmp_path / "zero"))
    assert metrics["test/test/rewards/margin"] == 0 and metrics["test/test/preference_acc"] == 0
    assert abs(metrics["test/test/loss"] - 0.693147) < 1e-5
    assert 0 <= metrics["test/test/logp_preference_acc"] <= 1


def test_resume_equals_uninterrupted(compose_train, sft, pairs, tmp_path):
    """Interrupted mid-epoch (16 pairs: 4 batches an epoch), with dropout: the same reference, weights and data."""
    common = dpo(sft, pairs, "test=false", "model.dropout=0.1", "task.optim.decay_steps=10")
    full, first, resumed = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train(compose_train(common + ["trainer.max_steps=10"], full))
    train(compose_train(common + ["trainer.max_steps=6"], first))
    train(compose_train(common + ["trainer.max_steps=10", f"ckpt_path={first}/checkpoints/last.ckpt"], resumed))
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and any(k.startswith("reference.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def test_lora_dpo_run(compose_train, sft, pairs, tmp_path):
    out = tmp_path / "lora"
    metrics = train(compose_train(dpo(sft, pairs, "task/peft=lora", "task.peft.r=4", "task.optim.lr=3e-2",
                                      "trainer.max_steps=4"), out))
    assert {f"test/test/{m}" for m in METRICS} <= set(metrics)
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("reference.") for k in state) and any("lora_B" in k for k in state)


def test_dpo_needs_an_sft_model(compose_train, pairs, tmp_path):
    train_file, _ = pairs
    with pytest.raises(ConfigError, match=r"model\.init_from=<sft run>"):
        train(compose_train(["task=dpo", "data=preference_jsonl", f"data.train_files={train_file}",
                             "model.block_size=96", "task.optim.warmup_ratio=0", "trainer.max_steps=1"],
                            tmp_path / "x"))
    with pytest.raises(ConfigError, match="model.init_from is required"):
        train(compose_train(["experiment=dpo_hh_gpt"], tmp_path / "y"))
