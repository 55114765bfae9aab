"""lit_llm.compression: int8 linear layers close to float32, smaller files that generate.py reads, magnitude pruning to
the sparsity asked (task heads kept unless asked)."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from lit_llm.checkpointing import export_safetensors, load_backbone, load_pretrained
from lit_llm.compression import (
    Int8Linear,
    describe_pruning,
    is_quantized,
    linear_layers,
    load_int8,
    prune,
    quantize_int8,
    remove_masks,
    save_int8,
    sparsity_report,
)
from lit_llm.errors import ConfigError
from lit_llm.evaluation import eval_trainer_config
from lit_llm.inference import Generator
from lit_llm.models import build_backbone
from lit_llm.models.decoding import generate
from lit_llm.tokenization import token_id, train_char

ROOT = Path(__file__).resolve().parents[2]
GPT = {"arch": "gpt", "vocab_size": 96, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 64}
ENCODER = {"arch": "encoder", "vocab_size": 96, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 64,
           "intermediate_size": 128}
# Both operands are rounded to 1/127 of their row's (or output channel's) absolute maximum, so each product
# carries ~0.4% relative error; measured on these models: 0.7% of the GPT logits' norm, 0.04% of the encoder's output.
# 3% leaves room for other seeds; a wrong scale or a transposed weight gives errors of 100% and more.
REL_TOL = 0.03


def _model(config: dict) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone(config).eval()


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm().detach())


def test_int8_linear_is_close_to_the_float_layer():
    torch.manual_seed(0)
    layer = nn.Linear(64, 48)
    x = torch.randn(3, 5, 64)
    q = Int8Linear.from_linear(layer).requires_grad_(False)
    layer.requires_grad_(False)
    assert q.weight.dtype == torch.int8 and q.weight_scale.shape == (48,)
    assert _rel_err(q(x), layer(x)) < 0.01  # one layer: ~0.5%
    assert q(x[:, :1]).shape == (3, 1, 48) and q(x[:0]).shape == (0, 5, 48)  # one token (decoding), no rows
    x.requires_grad_(True)  # input attributions: the gradient passes straight through the rounding
    q(x).sum().backward()
    assert (x.grad - layer.weight.sum(0)).abs().max() < 0.01  # weights rounded to 1/254 of ~0.12: ~0.003 over 48


@pytest.mark.parametrize("config", [GPT, ENCODER], ids=["gpt", "encoder"])
def test_quantized_model_outputs_are_close_to_float32(config):
    model = _model(config)
    ids = torch.randint(0, 96, (2, 16))
    with torch.no_grad():
        ref = model(ids)
        out = quantize_int8(copy.deepcopy(model))(ids)
    assert _rel_err(out, ref) < REL_TOL
    if config["arch"] == "gpt":  # next-token choice kept for almost all positions
        assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9


def test_tied_output_layer_and_embeddings_stay_float():
    model = quantize_int8(_model(GPT))
    assert model.lm_head.weight is model.wte.weight and model.lm_head.weight.dtype == torch.float32
    assert isinstance(model.blocks[0].attn.c_attn, Int8Linear) and isinstance(model.blocks[0].mlp.c_fc, Int8Linear)
    assert is_quantized(model) and not is_quantized(_model(GPT))


def test_int8_file_is_smaller_and_loads_to_the_same_outputs(tmp_path):
    model = _model(ENCODER)
    export_safetensors(model, tmp_path / "model.safetensors")
    quantized = quantize_int8(copy.deepcopy(model))
    save_int8(quantized, tmp_path / "model-int8.safetensors")
    fp32, int8 = (tmp_path / "model.safetensors").stat().st_size, (tmp_path / "model-int8.safetensors").stat().st_size
    assert int8 < 0.6 * fp32  # linear weights 4x smaller; embeddings, norms and scales stay float32
    loaded = load_int8(tmp_path / "model-int8.safetensors")
    ids = torch.randint(0, 96, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(ids), quantized(ids))
    with pytest.raises(ConfigError, match="not an int8 lit-llm export.*--quantize int8"):
        load_int8(tmp_path / "model.safetensors")


def test_quantize_refuses_a_model_without_linear_layers():
    with pytest.raises(ConfigError, match="ckpt_path=x has no nn.Linear layer to quantize"):
        quantize_int8(nn.Sequential(nn.Embedding(4, 4)), "ckpt_path=x")


@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_global_pruning_reaches_the_sparsity_over_all_layers(sparsity):
    model = _model(GPT)
    report = prune(model, sparsity, "global")
    assert abs(report["sparsity"] - sparsity) < 1e-3
    assert len(set(round(v, 2) for v in report["layers"].values())) > 1  # layers lose different fractions
    assert "lm_head" not in report["layers"]  # tied to the embeddings: kept
    remove_masks(model)
    assert set(model.state_dict()) == set(_model(GPT).state_dict())  # plain keys again, zeros kept
    assert abs(sparsity_report(model)["sparsity"] - sparsity) < 1e-3


def test_layer_pruning_gives_each_layer_the_sparsity_and_drops_the_smallest():
    model = _model(ENCODER)
    before = {name: m.weight.detach().clone() for name, m in linear_layers(model).items()}
    report = prune(model, 0.5, "layer")
    for name, frac in report["layers"].items():
        assert abs(frac - 0.5) < 0.01, name
        w, kept = before[name].abs(), linear_layers(model)[name].weight != 0
        assert w[kept].min() >= w[~kept].max()  # magnitude: every pruned weight is smaller than every kept one


@pytest.mark.parametrize("args, match", [((1.0, "global"), "sparsity=1.0 must be a fraction in \\[0, 1\\)"),
                                         ((0.5, "rows"), "scope=rows is not a pruning scope; use one of global, layer")])
def test_pruning_errors_name_the_setting(args, match):
    with pytest.raises(ConfigError, match=match):
        prune(_model(GPT), *args)


def test_int8_evaluation_refuses_a_gpu():
    cfg = OmegaConf.create({"precision": "int8", "accelerator": "gpu"})
    with pytest.raises(ConfigError, match="precision=int8 runs on the CPU only.*accelerator=cpu"):
        eval_trainer_config(cfg, {})
    cpu = eval_trainer_config(OmegaConf.create({"precision": "int8", "accelerator": "auto"}), {})
    assert cpu["accelerator"] == "cpu" and cpu["precision"] == "32-true"


def _classifier() -> nn.Module:
    """A task's shape for `prune`: a backbone plus a head outside `backbone.` (initialised as
    ClassificationTask's head)."""
    task = nn.Module()
    task.backbone = _model(ENCODER)
    task.head = nn.Linear(64, 2)
    nn.init.normal_(task.head.weight, std=0.02)
    return task


def test_pruning_keeps_task_heads_unless_asked():
    task = _classifier()
    head = task.head.weight.detach().clone()
    report = prune(task, 0.9, "global")
    assert torch.equal(task.head.weight, head) and report["kept"] == {"head": 0.0} and not report["include_heads"]
    backbone = [m.weight for m in linear_layers(task.backbone).values()]
    assert report["weights"] == sum(w.numel() for w in backbone) and set(report["layers"]) == {
        f"backbone.{name}" for name in linear_layers(task.backbone)}
    assert sum(int((w == 0).sum()) for w in backbone) == report["zeros"] == round(0.9 * report["weights"])
    assert describe_pruning(report).startswith("the backbone's linear layers (task heads kept: head;")

    task = _classifier()  # include_heads=true: the head is one more layer of the global ranking
    report = prune(task, 0.9, "global", include_heads=True)
    assert report["kept"] == {} and report["layers"]["head"] > 0 and (task.head.weight == 0).any()
    assert report["zeros"] == round(0.9 * report["weights"])
    assert describe_pruning(report) == "all the linear layers (backbone and task heads)"


def _export_main():
    spec = importlib.util.spec_from_file_location("export_cli", ROOT / "pipelines" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_generation_from_an_int8_export_equals_the_quantized_model(tmp_path):
    tokenizer = train_char(["the quick brown fox jumps over the lazy dog"])
    model = _model({**GPT, "vocab_size": tokenizer.get_vocab_size()})
    export_safetensors(model, tmp_path / "model.safetensors")
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    assert _export_main()([str(tmp_path / "model.safetensors"), str(tmp_path / "int8"), "--quantize", "int8"]) == 0

    gen = Generator(str(tmp_path / "int8"), {"max_new_tokens": 12, "temperature": 0.0})  # pipelines/generate.py's
    assert is_quantized(gen.model)
    prompt = torch.tensor([tokenizer.encode("the fox", add_special_tokens=False).ids])
    eos = token_id(tokenizer, "<eos>")
    out = generate(quantize_int8(copy.deepcopy(model)), prompt, max_new_tokens=12, temperature=0.0, eos_id=eos)
    new = out[0, prompt.shape[1]:].tolist()
    new = new[: new.index(eos)] if eos in new else new
    assert new and gen(["the fox"]) == [tokenizer.decode(new, skip_special_tokens=True)]

    with pytest.raises(ConfigError, match="runs on the CPU only.*device=cpu"):
        load_backbone(str(tmp_path / "int8"), device="meta")
    with pytest.raises(ConfigError, match=(r"model.init_from=.*int8 is an int8 export .*training from int8 weights is "
                                           r"not supported.*the float32 checkpoint it was exported from \(.*model"
                                           r"\.safetensors\)")):
        load_pretrained(str(tmp_path / "int8"))
