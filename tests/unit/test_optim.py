"""Fine-tuning optimizer options: layer-wise lr decay on every backbone, warmup as a fraction of the run."""
from __future__ import annotations

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.tasks.base import OptimConfig, build_optimizer, layer_decay_exponents

LR, DECAY = 1e-3, 0.5  # powers of two: the expected learning rates are exact

ENCODER = {"arch": "encoder", "vocab_size": 40, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16,
           "intermediate_size": 32, "dropout": 0.0}
GPT = {"arch": "gpt", "vocab_size": 40, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16, "dropout": 0.0}
ENCODER_DECODER = {"arch": "encoder_decoder", "vocab_size": 40, "block_size": 16, "n_layer": 3, "n_decoder_layer": 2,
                   "n_head": 2, "n_embd": 16, "intermediate_size": 32, "dropout": 0.0, "pos_embedding": "learned",
                   "norm_first": True}


def _task(model: dict):
    if model["arch"] == "encoder_decoder":
        from lit_llm.tasks.seq2seq import Seq2SeqTask

        return Seq2SeqTask(model, {})
    from lit_llm.tasks.classification import ClassificationTask

    return ClassificationTask(model, {}, num_labels=3, pooling="cls" if model["arch"] == "encoder" else "last")


def _lr_of_each_parameter(task, **optim) -> dict[str, float]:
    cfg = build_optimizer(task, OptimConfig(lr=LR, warmup_steps=0, **optim), total_steps=10)
    groups = cfg["optimizer"].param_groups
    for group in groups:  # weight decay grouping as without layer decay: matrices only
        assert {p.dim() >= 2 for p in group["params"]} == {group["weight_decay"] > 0}
    lr_of = {id(p): group["initial_lr"] for group in groups for p in group["params"]}
    named = dict(task.named_parameters())  # tied weights once
    assert len(lr_of) == sum(p.requires_grad for p in named.values())  # every trainable parameter, once
    return {name: lr_of[id(p)] for name, p in named.items() if p.requires_grad}


# the learning rate of each parameter (by name prefix) with layer_decay=0.5, as multiples of lr
EXPECTED = {
    # 2 blocks: block i at 0.5^(2 - i), the embeddings at 0.5^3, the final norm and the task's head at lr
    "gpt": {"backbone.wte.": 1 / 8, "backbone.wpe.": 1 / 8, "backbone.blocks.0.": 1 / 4, "backbone.blocks.1.": 1 / 2,
            "backbone.ln_f.": 1.0, "head.": 1.0},
    # the embeddings' LayerNorm goes with the embeddings (as BERT's embeddings.LayerNorm); the MLM head is frozen
    "encoder": {"backbone.wte.": 1 / 8, "backbone.wpe.": 1 / 8, "backbone.tte.": 1 / 8, "backbone.ln_emb.": 1 / 8,
                "backbone.blocks.0.": 1 / 4, "backbone.blocks.1.": 1 / 2, "head.": 1.0},
    # depth within each stack (3 encoder blocks, 2 decoder blocks); the shared embeddings below the deepest stack
    "encoder_decoder": {"backbone.wte.": 1 / 16, "backbone.wpe.": 1 / 16, "backbone.wpe_dec.": 1 / 16,
                        "backbone.encoder.0.": 1 / 8, "backbone.encoder.1.": 1 / 4, "backbone.encoder.2.": 1 / 2,
                        "backbone.decoder.0.": 1 / 4, "backbone.decoder.1.": 1 / 2,
                        "backbone.ln_enc.": 1.0, "backbone.ln_dec.": 1.0, "backbone.lm_head.": 1.0},
}


@pytest.mark.parametrize("model", [GPT, ENCODER, ENCODER_DECODER], ids=lambda m: m["arch"])
def test_layer_decay_gives_each_parameter_its_depths_lr(model):
    torch.manual_seed(0)
    task = _task(model)
    expected = EXPECTED[model["arch"]]
    lrs = _lr_of_each_parameter(task, layer_decay=DECAY)
    for name, lr in lrs.items():
        prefixes = [p for p in expected if name.startswith(p)]
        assert len(prefixes) == 1, f"{name}: no expectation"
        assert lr == LR * expected[prefixes[0]], name
    assert any(n.startswith("backbone.blocks.1.") or n.startswith("backbone.decoder.1.") for n in lrs)


@pytest.mark.parametrize("model", [GPT, ENCODER, ENCODER_DECODER], ids=lambda m: m["arch"])
def test_layer_decay_off_is_one_lr_and_composes_with_backbone_lr_scale(model):
    task = _task(model)
    assert set(_lr_of_each_parameter(task).values()) == {LR}
    assert len(build_optimizer(task, OptimConfig(lr=LR), 10)["optimizer"].param_groups) == 2  # as before
    scaled = _lr_of_each_parameter(task, layer_decay=DECAY, backbone_lr_scale=0.25)
    plain = _lr_of_each_parameter(task, layer_decay=DECAY)
    for name, lr in scaled.items():
        assert lr == (plain[name] * 0.25 if name.startswith("backbone.") else plain[name]), name


def test_layer_decay_exponents_from_names_alone():
    """Blocks are found by their index in a module list; what comes before the first block is the embeddings,
    what comes after a stack (between the two stacks too) is a final norm or head."""
    names = ["wte.weight", "rel_enc.weight", "layers.0.w", "layers.1.w", "ln.weight", "dec.0.w", "ln_dec.bias",
             "head.weight"]
    assert layer_decay_exponents(names) == {"wte.weight": 3, "rel_enc.weight": 3, "layers.0.w": 2, "layers.1.w": 1,
                                            "ln.weight": 0, "dec.0.w": 1, "ln_dec.bias": 0, "head.weight": 0}
    assert layer_decay_exponents(["weight", "bias"]) == {"weight": 0, "bias": 0}  # no blocks: nothing decays


def _lrs(optim: OptimConfig, total_steps: int, steps: int) -> list[float]:
    cfg = build_optimizer(torch.nn.Linear(2, 2), optim, total_steps)
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_ratio_is_a_fraction_of_the_schedule():
    lrs = _lrs(OptimConfig(lr=1.0, warmup_steps=0, warmup_ratio=0.1), total_steps=50, steps=51)
    assert lrs[:6] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])  # 5 warmup steps of 50
    assert lrs[5 + 45 // 2] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(22 / 45 * torch.pi)).item()))
    assert lrs[50] == pytest.approx(0.0)
    # the same ratio of a longer run, and of decay_steps when set (a run planned to be extended)
    assert _lrs(OptimConfig(lr=1.0, warmup_steps=0, warmup_ratio=0.1), 200, 21)[19:] == pytest.approx([1.0, 1.0])
    assert _lrs(OptimConfig(lr=1.0, warmup_steps=0, warmup_ratio=0.1), 200, 1) == pytest.approx([0.05])
    assert _lrs(OptimConfig(lr=1.0, warmup_steps=0, warmup_ratio=0.1, decay_steps=100), 50, 1) == [0.1]
    assert OptimConfig(warmup_steps=0, warmup_ratio=0.06).warmup_for(1500) == 90
    assert OptimConfig(warmup_steps=7).warmup_for(1500) == 7  # no ratio: the fixed number


@pytest.mark.parametrize("kwargs,match", [
    ({"warmup_ratio": 0.1}, r"task.optim.warmup_steps=100 and task.optim.warmup_ratio=0.1 are both set.*"
                            r"task.optim.warmup_steps=0"),
    ({"warmup_steps": 0, "warmup_ratio": 1.0}, r"task.optim.warmup_ratio=1.0 must be in \[0, 1\)"),
    ({"layer_decay": 0.0}, r"task.optim.layer_decay=0.0 must be in \(0, 1\]"),
    ({"layer_decay": 1.2}, r"task.optim.layer_decay=1.2 must be in \(0, 1\]"),
])
def test_bad_fine_tuning_options_name_the_key_and_the_fix(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        OptimConfig(**kwargs)
