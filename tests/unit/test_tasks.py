"""Optimizer groups and the learning-rate schedule."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.metrics.baselines import unigram_perplexity
from lit_llm.models.gpt import GPT, GPTConfig
from lit_llm.tasks.base import OptimConfig, build_optimizer, param_groups, warmup_cosine


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    decay, no_decay = param_groups(model, 0.1)
    assert len(param_groups(model, 0.1, backbone_lr_scale=0.5)) == 2  # no "backbone." names here
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # tied weights counted once
    assert any(p is model.wte.weight for p in decay["params"])
    n_ln = sum(1 for n, _ in model.named_parameters() if "ln" in n)
    assert len(no_decay["params"]) >= n_ln


def test_warmup_then_cosine():
    f = lambda s: warmup_cosine(s, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_scheduler_drives_optimizer_lr():
    model = torch.nn.Linear(4, 4)
    cfg = build_optimizer(model, OptimConfig(lr=1.0, warmup_steps=2, min_lr_ratio=0.0), total_steps=4)
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])
    assert cfg["lr_scheduler"]["interval"] == "step"


def test_bad_optim_values_name_the_key():
    with pytest.raises(ConfigError, match="task.optim.lr"):
        OptimConfig(lr=0)


def test_unigram_perplexity_hand_computed():
    train = torch.tensor([0, 0, 1, 1, 1, 1]).numpy()
    # add-one: counts [3, 5, 1] over vocab 3 -> p = [3/9, 5/9, 1/9]
    ppl = unigram_perplexity(train, torch.tensor([0, 1]).numpy(), vocab_size=3)
    assert ppl == pytest.approx(math.exp(-(math.log(3 / 9) + math.log(5 / 9)) / 2))


def test_backbone_lr_scale_gives_the_body_a_lower_lr():
    module = torch.nn.Module()
    module.backbone = torch.nn.Linear(4, 4)
    module.head = torch.nn.Linear(4, 2)
    cfg = build_optimizer(module, OptimConfig(lr=1e-3, warmup_steps=0, backbone_lr_scale=0.1), total_steps=10)
    lrs = sorted((g["lr"], sum(p.numel() for p in g["params"])) for g in cfg["optimizer"].param_groups)
    assert lrs == [(pytest.approx(1e-4), 4), (pytest.approx(1e-4), 16), (1e-3, 2), (1e-3, 8)]


def test_mlm_loss_on_masked_positions_only_equals_the_full_ignore_index_loss():
    from lit_llm.tasks.mlm import IGNORE_INDEX, MaskedLMTask

    torch.manual_seed(0)
    model = {"arch": "encoder", "vocab_size": 40, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16,
             "intermediate_size": 32, "dropout": 0.0}
    task = MaskedLMTask(model, {"lr": 1e-3}).eval()
    ids = torch.randint(7, 40, (3, 12))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, [1, 5]] = ids[0, [1, 5]]
    labels[2, 11] = 3
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    logits, targets, loss = task._step(batch)
    full = task(batch)  # (B, T, V) at every position
    assert logits.shape == (3, 40) and targets.tolist() == [ids[0, 1].item(), ids[0, 5].item(), 3]
    ref = torch.nn.functional.cross_entropy(full.view(-1, 40), labels.view(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, full[labels != IGNORE_INDEX], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["encoder", "gpt"])
def test_classification_step_gives_every_trainable_parameter_a_gradient(arch):
    """What DDP without find_unused_parameters needs: the encoder's unused MLM head is frozen
    (but its decoder weight, the embedding matrix, still trains)."""
    from lit_llm.tasks.classification import ClassificationTask

    model = {"arch": arch, "vocab_size": 40, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16,
             "dropout": 0.0}
    if arch == "encoder":
        model["intermediate_size"] = 32
    task = ClassificationTask(model, {"lr": 1e-3}, num_labels=3, pooling="cls" if arch == "encoder" else "last")
    ids = torch.randint(7, 40, (4, 10))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 1])}
    torch.nn.functional.cross_entropy(task(batch), batch["labels"]).backward()
    trainable = {n: p for n, p in task.named_parameters() if p.requires_grad}
    assert [n for n, p in trainable.items() if p.grad is None] == []
    frozen = sorted(n for n, p in task.named_parameters() if not p.requires_grad)
    if arch == "encoder":
        assert frozen == ["backbone.mlm.decoder.bias", "backbone.mlm.dense.bias", "backbone.mlm.dense.weight",
                          "backbone.mlm.ln.bias", "backbone.mlm.ln.weight"]
        assert task.backbone.wte.weight.requires_grad
    else:
        assert frozen == []
    # the optimizer holds exactly the trainable parameters
    groups = param_groups(task, weight_decay=0.01)
    assert sum(len(g["params"]) for g in groups) == len(trainable)


@pytest.mark.parametrize("arch,pooling", [("encoder", "cls"), ("encoder", "mean"), ("gpt", "last"), ("gpt", "mean")])
def test_classification_logits_do_not_depend_on_padding(arch, pooling):
    """The same sentence gives the same logits alone and right-padded in a batch with a longer one."""
    from lit_llm.data.collate import pad_collate
    from lit_llm.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    model = {"arch": arch, "vocab_size": 40, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16,
             "dropout": 0.1}
    task = ClassificationTask(model, {"lr": 1e-3}, num_labels=3, pooling=pooling).eval()
    short, long = [5, 11, 12, 13, 6], [5, 20, 21, 22, 23, 24, 25, 26, 6]
    collate = pad_collate(pad_id=0)
    both = collate([{"input_ids": long, "labels": 1}, {"input_ids": short, "labels": 0}])
    alone = collate([{"input_ids": short, "labels": 0}])
    assert both["attention_mask"][1].tolist() == [1] * 5 + [0] * 4
    with torch.no_grad():
        torch.testing.assert_close(task(both)[1], task(alone)[0], atol=1e-5, rtol=0)
        if pooling != "cls":  # without the mask the padding would change the answer
            unmasked = {"input_ids": both["input_ids"][1:], "attention_mask": torch.ones(1, 9, dtype=torch.long)}
            assert (task(unmasked)[0] - task(alone)[0]).abs().max() > 1e-4


def test_task_registry_names_every_task_config_and_class():
    from omegaconf import OmegaConf

    from lit_llm.tasks import TASKS, task_spec
    from tests.conftest import CONF_DIR

    for kind, spec in TASKS.items():
        assert spec.task_class().task_kind == kind
    targets = {OmegaConf.load(p)._target_ for p in Path(CONF_DIR, "task").glob("*.yaml")}
    assert targets == {spec.task for spec in TASKS.values()}  # every task config is registered, and only those
    with pytest.raises(ConfigError, match="task kind 'nope' is not one of"):
        task_spec("nope", "ckpt_path=x.ckpt")


def test_task_spec_checks_the_data_it_reads():
    from lit_llm.tasks import TASKS

    corpus = "lit_llm.data.corpus.CorpusDataModule"
    TASKS["clm"].check_data({"_target_": corpus}, "x")
    TASKS["seq2seq"].check_data({"_target_": corpus, "objective": "denoise"}, "x")
    with pytest.raises(ConfigError, match="x is a mlm checkpoint but the data config is 'CorpusDataModule with "
                                          "data.objective=clm'.*e.g. data=gutenberg"):
        TASKS["mlm"].check_data({"_target_": corpus}, "x")
