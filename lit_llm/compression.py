"""Compression for CPU inference: int8 linear layers and magnitude pruning.

- `quantize_int8(model)`: every `nn.Linear` becomes an `Int8Linear`: int8 weights with one scale per output row
  (symmetric), activations quantized per row (per token) on the fly, the product an int8 x int8 -> int32 matrix
  multiplication (`torch._int_mm`: VNNI / AMX kernels on x86), rescaled to float. This is the scheme of torchao's
  `Int8DynamicActivationInt8WeightConfig`, written here in plain tensors because `torch.ao.quantization.
  quantize_dynamic` and its quantized tensor dtypes are deprecated in torch >= 2.10 and torchao is not a
  dependency; plain int8 tensors also save to safetensors (`save_int8` / `load_int8`), which quantized tensors do not.
- `prune(model, sparsity, scope)`: zeroes the smallest-magnitude weights of the linear layers, over all of them at
  once (`global`) or the same fraction in each (`layer`), with `torch.nn.utils.prune`'s masks, which keep the
  zeros during a fine-tune; `remove_masks` makes them permanent. In a task (a model with a `backbone`) only the
  backbone's layers are pruned unless `include_heads`: a task head (a classification head of 2 x 256) is small and
  every weight of it counts. `sparsity_report` says what is zero, and which layers were kept.

Embeddings (and an output layer tied to them) are neither quantized nor pruned: they are lookups, not matmuls,
and their rows are tokens that any text may need.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from lit_llm.errors import ConfigError

SCOPES = ("global", "layer")
INT8_FORMAT = "int8-dynamic-per-row"  # the safetensors metadata value naming this file's scheme
INT8_FILE = "model-int8.safetensors"  # the file pipelines/export.py --quantize int8 writes (+ tokenizer.json)


class Int8Linear(nn.Module):
    """y = (x_q @ W_q^T) * s_x * s_w + b with W_q int8 (out, in) and s_w (out,) fixed, x_q int8 and s_x per row
    computed from each input row's absolute maximum. For inference: the weights are buffers (not trained); the
    input's gradient passes straight through (`_Int8MatMul`)."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        q = cls(linear.in_features, linear.out_features, linear.bias is not None)
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        q.weight.copy_(torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        q.weight_scale.copy_(scale)
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = _Int8MatMul.apply(x.reshape(-1, self.in_features).float(), self.weight, self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _Int8MatMul(torch.autograd.Function):
    """rows (M, in) float -> (M, out) float through int8 x int8 -> int32. Backward: the gradient for the input
    through the dequantized weight, straight through the rounding (so input attributions of an int8 model work)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, weight_scale)
        if rows.shape[0] == 0:
            return rows.new_zeros(0, weight.shape[0])
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(127)
        x_q = (rows / scale).round_().clamp_(-127, 127).to(torch.int8)  # in place: few passes over the rows
        return torch._int_mm(x_q, weight.t()).float().mul_(scale).mul_(weight_scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, weight_scale = ctx.saved_tensors
        return grad @ (weight.float() * weight_scale[:, None]), None, None


def _tied_to_embedding(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """{qualified name: layer} of the `nn.Linear` layers compression acts on (not those tied to an embedding)."""
    tied = _tied_to_embedding(model)
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and id(m.weight) not in tied}


def quantize_int8(model: nn.Module, what: str = "the model") -> nn.Module:
    """`model` (in place, in eval mode) with its linear layers as `Int8Linear`; LoRA adapters are merged first.
    A ConfigError (naming `what`) when it has no linear layer to quantize or is not on the CPU."""
    from lit_llm.peft import lora_modules, merge_lora

    device = next(model.parameters(), torch.empty(0)).device
    if device.type != "cpu":
        raise ConfigError(f"int8 quantization runs on the CPU only ({what} is on {device}); "
                          "load it on the CPU (accelerator=cpu)")
    if lora_modules(model):
        merge_lora(model)
    layers = linear_layers(model)
    if not layers:
        raise ConfigError(f"{what} has no nn.Linear layer to quantize to int8 ({type(model).__name__}); "
                          "int8 applies to lit-llm's GPT, encoder and encoder-decoder models")
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear.from_linear(layer))
    return model.eval()


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())


def save_int8(backbone: nn.Module, path: str | Path, source: str | None = None) -> Path:
    """An int8 backbone (`quantize_int8`) as safetensors: int8 weights, float scales, the backbone config (and the
    float32 checkpoint it came from, `source`) in the metadata. Load it again with `load_int8`."""
    from safetensors.torch import save_model

    if not is_quantized(backbone):
        raise ValueError("save_int8 takes a model quantize_int8 has quantized")
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    meta = {"lit_llm_backbone_config": json.dumps(backbone.config.to_dict()), "lit_llm_quantization": INT8_FORMAT}
    if source:
        meta["lit_llm_source"] = os.path.abspath(source)
    save_model(backbone, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def int8_metadata(path: str | Path) -> dict | None:
    """The metadata of the int8 export at `path` (its directory or its model-int8.safetensors; keys
    `lit_llm_backbone_config`, `lit_llm_quantization`, `lit_llm_source` when known, `file`), None for any other
    path. The one test of "is this an int8 export" (`checkpointing.load_backbone`, `load_pretrained`)."""
    from safetensors import safe_open

    p = Path(path)
    p = p / INT8_FILE if p.is_dir() else p
    if p.suffix != ".safetensors" or not p.is_file():
        return None
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # not a safetensors file: for the loader that reads it to say
        return None
    if meta.get("lit_llm_quantization") != INT8_FORMAT or "lit_llm_backbone_config" not in meta:
        return None
    return {**meta, "file": str(p)}


def load_int8(path: str | Path) -> nn.Module:
    """The int8 backbone `save_int8` (pipelines/export.py --quantize int8) wrote, in eval mode on the CPU; `path`: the
    file or its export directory."""
    from safetensors.torch import load_model

    from lit_llm.models import build_backbone

    meta = int8_metadata(path)
    if meta is None:
        raise ConfigError(f"{path} is not an int8 lit-llm export (no lit_llm_quantization={INT8_FORMAT} metadata); "
                          "write one with pipelines/export.py <checkpoint> <out dir> --quantize int8")
    model = quantize_int8(build_backbone(json.loads(meta["lit_llm_backbone_config"])), str(path))
    load_model(model, meta["file"])
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Magnitude pruning


def prunable_layers(model: nn.Module, include_heads: bool = False) -> dict[str, nn.Linear]:
    """The linear layers `prune` acts on: in a task (a model with a `backbone` module) those under `backbone.`
    alone, unless `include_heads` (then also the task's heads: the layers outside `backbone.`); in a bare backbone,
    all of them."""
    layers = linear_layers(model)
    if include_heads or not isinstance(getattr(model, "backbone", None), nn.Module):
        return layers
    return {name: m for name, m in layers.items() if name.startswith("backbone.")}


def prune(model: nn.Module, sparsity: float, scope: str = "global", what: str = "the model",
          include_heads: bool = False) -> dict:
    """Zeroes the `sparsity` fraction of linear-layer weights with the smallest magnitude (biases kept), over all
    layers together (`global`: layers whose weights matter less lose more) or in each layer alike (`layer`). The
    layers are `prunable_layers`: a task's heads are kept unless `include_heads`. The zeros are masks
    (`torch.nn.utils.prune`) that hold through a fine-tune; `remove_masks` makes them plain weights. Returns
    `sparsity_report`."""
    if scope not in SCOPES:
        raise ConfigError(f"scope={scope} is not a pruning scope; use one of {', '.join(SCOPES)}")
    if not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ConfigError(f"sparsity={sparsity} must be a fraction in [0, 1), e.g. sparsity=0.5")
    layers = prunable_layers(model, include_heads)
    if not layers:
        raise ConfigError(f"{what} has no nn.Linear layer to prune ({type(model).__name__})")
    if scope == "global":
        torch_prune.global_unstructured([(m, "weight") for m in layers.values()],
                                        pruning_method=torch_prune.L1Unstructured, amount=float(sparsity))
    else:
        for m in layers.values():
            torch_prune.l1_unstructured(m, "weight", amount=float(sparsity))
    return sparsity_report(model, include_heads)


def remove_masks(model: nn.Module) -> nn.Module:
    """Folds pruning masks into the weights (weight_orig * mask -> weight), so the state dict has the model's
    usual keys again."""
    for m in model.modules():
        if torch_prune.is_pruned(m) and hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")
    return model


def sparsity_report(model: nn.Module, include_heads: bool = False) -> dict:
    """{"sparsity": zero fraction of the pruned (`prunable_layers`) linear weights, "zeros", "weights",
    "layers": {name: zero fraction}, "include_heads", "kept": {name: zero fraction} of the linear layers not
    pruned (a task's heads)}."""
    def zero_fraction(m: nn.Linear) -> float:
        return float((m.weight.detach() == 0).float().mean())

    pruned = prunable_layers(model, include_heads)
    zeros = {name: int((m.weight.detach() == 0).sum()) for name, m in pruned.items()}
    total = sum(m.weight.numel() for m in pruned.values())
    kept = {name: zero_fraction(m) for name, m in linear_layers(model).items() if name not in pruned}
    return {"sparsity": sum(zeros.values()) / max(total, 1), "zeros": sum(zeros.values()), "weights": total,
            "layers": {name: zeros[name] / m.weight.numel() for name, m in pruned.items()},
            "include_heads": include_heads, "kept": kept}


def describe_pruning(report: dict) -> str:
    """What `prune` acted on, in words, for logs: "the backbone's linear layers (task heads kept: head; ...)"."""
    if not report["kept"]:
        return "all the linear layers" + (" (backbone and task heads)" if report["include_heads"] else "")
    return (f"the backbone's linear layers (task heads kept: {', '.join(report['kept'])}; "
            "include_heads=true prunes them)")


def prune_checkpoint(ckpt_path: str, sparsity: float, scope: str, out_path: Path, finetune_steps: int = 0,
                     data_dir_cfg=None, include_heads: bool = False) -> dict:
    """`pipelines/prune.py`: the task checkpoint `ckpt_path` with its linear weights pruned (`prune`; the task's
    heads too when `include_heads`), fine-tuned
    `finetune_steps` steps on its training data with the zeros held (0: none), written to `out_path` as a task
    checkpoint that pipelines/evaluate.py loads (no optimizer state: it is not for resuming). Returns the report."""
    from lit_llm.checkpointing import AtomicCheckpointIO
    from lit_llm.evaluation import open_checkpoint

    ckpt = open_checkpoint(ckpt_path)
    task = ckpt.spec.task_class().load_from_checkpoint(ckpt.path, map_location="cpu", weights_only=True)
    report = prune(task, sparsity, scope, f"ckpt_path={ckpt.path}", include_heads)
    if finetune_steps:
        if data_dir_cfg is None:
            raise ConfigError("finetune_steps needs the data paths (paths.*) to load the training data")
        finetune(task, ckpt, int(finetune_steps), data_dir_cfg, Path(out_path).parent)
    remove_masks(task)
    report = {**sparsity_report(task, include_heads), "requested": float(sparsity), "scope": scope,
              "finetune_steps": int(finetune_steps), "source": ckpt.path}
    content = {k: v for k, v in ckpt.content.items() if k not in ("optimizer_states", "lr_schedulers")}
    content["state_dict"] = {k: v.detach().clone() for k, v in task.state_dict().items()}
    content["lit_llm"] = {**ckpt.meta, "pruning": {k: v for k, v in report.items() if k != "layers"}}
    AtomicCheckpointIO().save_checkpoint(content, out_path)
    return report


def finetune(task, ckpt, steps: int, paths_cfg, out_dir: Path) -> None:
    """`steps` optimizer steps of the task's own training (its optimizer settings) on its training data, on the
    CPU; the pruning masks keep the pruned weights at zero."""
    from omegaconf import OmegaConf

    from lit_llm.builders import attach_tokenizer, build_datamodule, build_trainer
    from lit_llm.evaluation import eval_data_config
    from lit_llm.tokenization import tokenizer_fingerprint, tokenizer_from_str

    cfg = OmegaConf.create({"paths": paths_cfg})
    seed = ckpt.stored.get("seed") or 0
    data_cfg = eval_data_config(cfg, ckpt.stored, ckpt.meta["backbone_config"], seed)
    dm = build_datamodule(data_cfg, paths_cfg.cache_dir)
    dm.load_raw()
    tokenizer = tokenizer_from_str(ckpt.meta["tokenizer_json"])
    attach_tokenizer(dm, tokenizer, tokenizer_fingerprint(tokenizer), ckpt.stored.get("special_ids"),
                     ckpt.stored.get("chat_template"))
    trainer = build_trainer({"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1,
                             "max_steps": steps, "limit_val_batches": 0, "enable_checkpointing": False,
                             "enable_model_summary": False, "enable_progress_bar": False,
                             "num_sanity_val_steps": 0}, out_dir)
    trainer.fit(task, datamodule=dm)


__all__ = ["Int8Linear", "quantize_int8", "is_quantized", "save_int8", "load_int8", "int8_metadata", "linear_layers",
           "prunable_layers", "prune", "remove_masks", "sparsity_report", "describe_pruning", "prune_checkpoint",
           "finetune", "SCOPES", "INT8_FORMAT", "INT8_FILE"]
