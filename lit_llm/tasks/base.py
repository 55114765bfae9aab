"""What every task shares: AdamW with decay on matrices only, warmup + cosine schedule, per-example
test records, self-contained checkpoints, and the hooks through which a run writes and reports a task's
results (`BackboneTask`: `report_statistics`, `report_examples`, `report_plots`, `write_outputs`,
`baselines`, `generate_sample`, and the `metric_info` dict; the defaults do nothing)."""
from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from torch import nn

from lit_llm.distill import Distiller, distill_config
from lit_llm.errors import ConfigError
from lit_llm.models import build_backbone
from lit_llm.peft import apply_lora, lora_names, peft_config, restore_peft_base


@dataclass
class OptimConfig:
    """`task.optim`; the defaults are conf/task/optim/adamw.yaml's (tests/unit/test_configs.py checks they agree)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    # 0 = use the trainer's total number of optimizer steps (max_steps, or epochs x batches).
    decay_steps: int = 0
    # fine-tuning: learning rate of the backbone relative to the head (1.0 = same)
    backbone_lr_scale: float = 1.0
    # warmup as a fraction of the schedule's steps (decay_steps, else the run's); 0 = warmup_steps instead
    warmup_ratio: float = 0.0
    # layer-wise lr decay (ELECTRA, BEiT): each block down from the top learns `layer_decay` times slower
    layer_decay: float = 1.0

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # OmegaConf ListConfig -> tuple
        for f in fields(self):  # a number given as a word (task.optim.lr=abc) is named, not a TypeError later
            values = getattr(self, f.name) if f.name == "betas" else [getattr(self, f.name)]
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
                kind = "an integer" if f.type == "int" else "two numbers, e.g. [0.9, 0.98]" if f.name == "betas" \
                    else "a number"
                raise ConfigError(f"task.optim.{f.name}={getattr(self, f.name)!r} must be {kind}")
            if f.type == "int" and not isinstance(values[0], int):
                raise ConfigError(f"task.optim.{f.name}={values[0]!r} must be an integer")
        if self.lr <= 0:
            raise ConfigError(f"task.optim.lr={self.lr} must be > 0")
        if self.warmup_steps < 0:
            raise ConfigError(f"task.optim.warmup_steps={self.warmup_steps} must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"task.optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"task.optim.warmup_ratio={self.warmup_ratio} must be in [0, 1) (a fraction of the "
                              "run's steps)")
        if self.warmup_ratio > 0 and self.warmup_steps > 0:
            raise ConfigError(
                f"task.optim.warmup_steps={self.warmup_steps} and task.optim.warmup_ratio={self.warmup_ratio} are "
                "both set; give one: task.optim.warmup_steps=0 to warm up for the ratio, or "
                "task.optim.warmup_ratio=0 for a fixed number of steps")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"task.optim.layer_decay={self.layer_decay} must be in (0, 1] (1.0: no layer-wise "
                              "decay; 0.8-0.95 usual for fine-tuning)")

    def warmup_for(self, total_steps: int) -> int:
        """The warmup steps of a schedule `total_steps` long: `warmup_ratio` of it, else `warmup_steps`."""
        return round(self.warmup_ratio * total_steps) if self.warmup_ratio > 0 else self.warmup_steps


BACKBONE = "backbone."  # the prefix of a task's backbone parameters (BackboneTask.backbone)
_BLOCK = re.compile(r"^(?P<stack>[\w.]+?)\.(?P<index>\d+)\.")  # blocks.3.attn.c_attn.weight -> (blocks, 3)


def block_of(name: str) -> tuple[str, int] | None:
    """(stack, index) of a backbone parameter inside a stack of blocks (an nn.ModuleList: GPT and Encoder
    `blocks`, EncoderDecoder `encoder` and `decoder`), None outside one."""
    m = _BLOCK.match(name)
    return (m["stack"], int(m["index"])) if m else None


def layer_decay_exponents(names: list[str]) -> dict[str, int]:
    """{backbone parameter name: k}, the parameter learning at lr * layer_decay**k (BEiT's rule, per stack):
    block i of a stack of n gets k = n - i (the top block: 1); the parameters registered before the first block
    (token, position and type embeddings and their norm) k = (deepest stack's n) + 1; those after a stack's last
    block (final norms, LM heads) k = 0, as the task's heads. `names` in registration order (`named_parameters`)."""
    blocks = {name: block_of(name) for name in names}
    depth: dict[str, int] = {}
    for found in filter(None, blocks.values()):
        depth[found[0]] = max(depth.get(found[0], 0), found[1] + 1)
    if not depth:  # no stack of blocks: nothing to decay
        return {name: 0 for name in names}
    embedding_k, seen_block, out = max(depth.values()) + 1, False, {}
    for name in names:
        found = blocks[name]
        seen_block = seen_block or found is not None
        out[name] = depth[found[0]] - found[1] if found else (0 if seen_block else embedding_k)
    return out


def param_groups(model: nn.Module, weight_decay: float, backbone_lr_scale: float = 1.0,
                 lr: float | None = None, layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups: weight decay on matrices (linear weights, embeddings), none on biases and
    LayerNorm gains, as in GPT-2/nanoGPT. Tied parameters appear once. Fine-tuning: parameters under
    `backbone.` learn at `lr * backbone_lr_scale` (a pretrained body learns slower than a fresh head), times
    `layer_decay**k` with `layer_decay_exponents`' k (lower layers slower still); one group per weight decay
    and learning rate, each with its `lr` when that differs from `lr`."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]  # tied weights once
    body = [name[len(BACKBONE):] for name, _ in named if name.startswith(BACKBONE)]
    exponents = layer_decay_exponents(body) if layer_decay != 1.0 else {}
    groups: dict[tuple[bool, float], list] = {}
    for name, p in named:
        scale = 1.0
        if name.startswith(BACKBONE):
            scale = backbone_lr_scale * layer_decay ** exponents.get(name[len(BACKBONE):], 0)
        groups.setdefault((p.dim() >= 2, scale), []).append(p)
    out = []
    # decay first; within each, the full lr, then the others from fastest to slowest (one order across runs:
    # a resumed optimizer's groups line up)
    for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1] != 1.0, -kv[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if scale != 1.0 and lr is not None:
            group["lr"] = lr * scale
        out.append(group)
    return out


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup from 1/warmup to 1, then cosine down to min_lr_ratio at total_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, optim: OptimConfig, total_steps: int, fused: bool = True) -> dict:
    """Lightning's `configure_optimizers` return value: AdamW + per-step LambdaLR. AdamW runs its `fused` kernel
    (one pass over all parameters: on CPU ~1/3 of the per-parameter loop's time, torch's CPU default; the same update
    within float rounding), else `foreach`; torch's default where the parameters' device has neither kernel.
    Lightning refuses a fused optimizer with a `*-mixed` precision and gradient clipping: those pass fused=False."""
    groups = param_groups(model, optim.weight_decay, optim.backbone_lr_scale, optim.lr, optim.layer_decay)
    kwargs = {"lr": optim.lr, "betas": optim.betas, "eps": optim.eps}
    try:
        opt = torch.optim.AdamW(groups, **kwargs, **({"fused": True} if fused else {"foreach": True}))
    except RuntimeError:  # fused/foreach need floating-point tensors on a device with those kernels
        opt = torch.optim.AdamW(groups, **kwargs)
    total = optim.decay_steps or total_steps
    warmup = optim.warmup_for(total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, total, optim.min_lr_ratio))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}


def check_compile_toolchain() -> None:
    """task.compile=true fails at once, not at the first training step, without the C++ compiler that
    torch.compile's inductor backend builds its kernels with (`$CXX`, else g++ / c++ / clang++ on PATH)."""
    names = [os.environ.get("CXX") or "g++", "c++", "clang++"]
    if not any(shutil.which(name) for name in names):
        raise ConfigError(f"task.compile=true: torch.compile (inductor) needs a C++ compiler and none of "
                          f"{', '.join(names)} is on PATH; install one (e.g. apt-get install g++) or set "
                          "task.compile=false")


class BackboneTask(pl.LightningModule):
    """What every task shares: a backbone built from `model` (a config dict), AdamW + warmup/cosine,
    self-contained checkpoints (backbone config + tokenizer) and an exactly resumable RNG stream."""

    task_kind = "base"
    supports_distill = False  # True: its training step calls `distilled` and it defines `distill_logits`

    def __init__(self, model: dict, optim: dict, compile: bool = False, tokenizer_json: str | None = None,
                 peft: dict | None = None, distill: dict | None = None):
        super().__init__()
        # The tokenizer goes into the checkpoint (on_save_checkpoint), not into hparams.yaml.
        self.save_hyperparameters(ignore=["tokenizer_json"])
        self.backbone = build_backbone(dict(model))
        self.config = self.backbone.config
        # task.peft=lora: adapters on a frozen backbone (lit_llm.peft); `peft_base` (set by the run) names the
        # pretrained weights the checkpoints then leave out: {"init_from", "sha256", "keys"}
        self.peft = peft_config(peft)
        self.peft_summary = apply_lora(self.backbone, self.peft) if self.peft is not None else None
        self.peft_base: dict[str, Any] | None = None
        self.optim = OptimConfig(**dict(optim))
        self.tokenizer_json = tokenizer_json
        # task.distill (lit_llm.distill): a teacher checkpoint's logits as soft targets; loaded when fitting starts
        distill_cfg = distill_config(distill)
        if distill_cfg is not None and not self.supports_distill:
            raise ConfigError(f"task.distill: {self.task_kind} does not support distillation (classification and "
                              "clm do); use task/distill=none")
        self.distiller = Distiller(distill_cfg) if distill_cfg is not None else None
        if compile:
            check_compile_toolchain()
        self.compiles = bool(compile)
        # backbone method name -> its torch.compile'd version, built on first use (`compiled`); kept out of
        # nn.Module registration so compiled wrappers add no state_dict keys
        self.__dict__["_compiled_methods"] = {}
        self.last_val_step: int | None = None
        # The run's data/task settings (lit_llm.run sets them), saved in checkpoints for pipelines/evaluate.py.
        self.run_config: dict[str, Any] | None = None
        # Exact definitions of logged metrics that only the run knows (e.g. the sacreBLEU signature): run.json, reports.
        self.metric_info: dict[str, Any] = {}
        # Per-example test records ({split: {column: [values]}}) and a sha256 of every test batch
        # (token ids and labels, in order): what `lit_llm.reporting.report` bootstraps and fingerprints.
        self.records: dict[str, dict[str, list]] = {}
        self._test_hashes: dict[str, hashlib._Hash] = {}
        # Epoch means of evaluation losses (`log_mean`); metric states are not saved in checkpoints.
        self.eval_means = nn.ModuleDict()

    def compiled(self, method: str = "forward") -> Callable[..., Any]:
        """The backbone's `method` ("forward", "hidden_states", ...) as a task's forward pass calls it: through
        torch.compile when task.compile=true, else the plain method. Each method is compiled once, lazily (the
        first call traces and builds kernels: the first training step's extra time, run.json's perf.compile_s).
        dynamic=None: fixed shapes (packed blocks) stay static; when the sequence length first changes (bucketing)
        and when the batch size first changes (a short last batch), it recompiles once with that size symbolic,
        and every later shape reuses the graph (tests/unit/test_compile.py); eval mode compiles its own."""
        entry = self.backbone if method == "forward" else getattr(self.backbone, method)  # the module: its hooks run
        if not self.compiles:
            return entry
        cache = self.__dict__["_compiled_methods"]
        if method not in cache:
            cache[method] = torch.compile(entry)
        return cache[method]

    # -- evaluation losses and results that are exact under DDP ---------------------------------
    def log_mean(self, name: str, value: torch.Tensor, weight: float | torch.Tensor, **kwargs) -> None:
        """Log the `weight`-weighted epoch mean of `value` (e.g. a batch's mean loss, weighted by its
        tokens or examples). A torchmetrics MeanMetric reduces the sums of value x weight and of
        weights across processes, so the mean is the whole split's; Lightning's `sync_dist` would
        average each process's mean instead, and shares of different sizes would skew it."""
        from torchmetrics import MeanMetric

        key = name.replace("/", "__").replace(".", "_")
        if key not in self.eval_means:
            self.eval_means[key] = MeanMetric().to(self.device)
        metric = self.eval_means[key]
        metric.update(value.detach().float(), torch.as_tensor(weight, dtype=torch.float32, device=self.device))
        self.log(name, metric, on_step=False, on_epoch=True, metric_attribute=f"eval_means.{key}", **kwargs)

    def gather_objects(self, obj) -> list:
        """[obj of every process] (all-gathered under DDP; [obj] in one process): evaluations that
        score whole outputs (SQuAD, BLEU, ROUGE) need every process's share."""
        if self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return [obj]
        out = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out

    # -- per-example test records, for reports ------------------------------------------------
    DEFAULT_TEST_NAME = "test"  # without a data module that names its test sets

    def test_names(self) -> list[str]:
        """The names of the test dataloaders' splits (the data module's `test_names`)."""
        dm = getattr(self.trainer, "datamodule", None)
        return list(getattr(dm, "test_names", None) or [self.DEFAULT_TEST_NAME])

    def test_split(self, dataloader_idx: int = 0) -> str:
        """The name of the split a test dataloader reads."""
        return self.test_names()[dataloader_idx]

    def record(self, split: str, **columns) -> None:
        """Append per-example values (lists or 1-D tensors of equal length) to `records[split]`."""
        rec = self.records.setdefault(split, {})
        for key, values in columns.items():
            rec.setdefault(key, []).extend(values.tolist() if isinstance(values, torch.Tensor) else values)

    def on_test_start(self) -> None:
        self.records, self._test_hashes = {}, {}

    def on_test_batch_start(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        digest = self._test_hashes.setdefault(self.test_split(dataloader_idx), hashlib.sha256())
        for key in sorted(batch):
            value = batch[key]
            if isinstance(value, torch.Tensor):
                digest.update(key.encode())
                digest.update(value.detach().to("cpu", torch.int64 if not value.is_floating_point() else
                                                torch.float64).numpy().tobytes())

    @property
    def test_fingerprints(self) -> dict[str, str]:
        """{split: sha256 of the evaluated batches} of the last test run."""
        return {split: h.hexdigest() for split, h in self._test_hashes.items()}

    # -- hooks: what a run writes and reports for this task (lit_llm.run, lit_llm.reporting) --------
    def report_statistics(self) -> dict[str, Any]:
        """{logged test metric: lit_llm.metrics.bootstrap.Statistic} from `records`, for the report's
        bootstrap intervals; {} when the task has no per-example metric."""
        return {}

    def report_examples(self) -> dict[str, dict[str, Any]]:
        """Examples to rank for the report's worst/best lists, from `records`: {split: {"score": what
        ranks them, "scores": [one per example], "rows": [a dict of fields per example]}}."""
        return {}

    def report_plots(self, out_dir: Path) -> dict[str, str]:
        """Task plots written under `out_dir/plots/`: {title: path relative to out_dir}."""
        return {}

    def write_outputs(self, out_dir: Path) -> None:
        """Files beside metrics.json after a test (predictions, confusion matrix)."""

    def baselines(self, datamodule) -> dict[str, float]:
        """Reference points computed from the data alone (e.g. a unigram perplexity), logged with the metrics."""
        return {}

    def generate_sample(self, tokenizer, prompt: str, max_new_tokens: int, temperature: float,
                        top_k: int | None, seed: int, num_samples: int = 1) -> str | None:
        """Text the model writes from `prompt` (the GenerateSamples callback); None: this task does not generate."""
        return None

    def batch_shape(self, batch: dict) -> dict[str, int] | None:
        """What the throughput counter (SpeedMonitor) reads of a training batch (`perf.batch_shape`; None: skip)."""
        from lit_llm.perf import batch_shape

        return batch_shape(batch) if "input_ids" in batch else None

    # -- distillation (lit_llm.distill) ----------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.distiller is not None and self.distiller.teacher is None:
            self.distiller.attach(self)

    def distill_logits(self, batch: dict) -> torch.Tensor:
        """The logits this task's loss reads, for `batch` (a teacher computes them for its student)."""
        raise NotImplementedError(f"{type(self).__name__} does not support distillation")

    def distilled(self, loss: torch.Tensor, logits: torch.Tensor, batch: dict,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss: `loss` (the hard-label loss of `logits`) as it is, or, with `task.distill`, combined
        with the teacher's soft targets for the same batch (`mask`: the logits rows that carry a label)."""
        if self.distiller is None:
            return loss
        total, soft = self.distiller.loss(self, loss, logits, batch, mask)
        self.log("train/hard_loss", loss.detach(), on_step=True, on_epoch=False)
        self.log("train/kd_loss", soft.detach(), on_step=True, on_epoch=False)
        return total

    def on_pretrained_loaded(self) -> None:
        """Called once `model.init_from`'s weights are in the backbone, before training (DPO copies its reference
        model here)."""

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.last_val_step = self.global_step  # run.train validates again only if training went on

    def configure_optimizers(self):
        mixed = str(self.trainer.precision).endswith("-mixed")  # Lightning's AMP plugin refuses fused + clipping
        return build_optimizer(self, self.optim, int(self.trainer.estimated_stepping_batches), fused=not mixed)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        import lit_llm
        from lit_llm.utils_io import sha256_text

        checkpoint["lit_llm"] = {
            "version": lit_llm.__version__,
            "task": self.task_kind,
            "backbone_config": self.config.to_dict(),
            "tokenizer_json": self.tokenizer_json,
            "tokenizer_fingerprint": sha256_text(self.tokenizer_json) if self.tokenizer_json else None,
            # the run's data/task settings, so pipelines/evaluate.py needs nothing but the checkpoint
            "run_config": self.run_config,
        }
        if self.peft_base is not None:  # LoRA: the frozen pretrained weights stay where they came from
            checkpoint["lit_llm"]["peft_base"] = {k: v for k, v in self.peft_base.items() if k != "keys"}
            checkpoint["lit_llm"]["peft_base"]["keys"] = sorted(self.peft_base["keys"])
            for key in lora_names(self.backbone, self.peft_base["keys"]):
                checkpoint["state_dict"].pop(BACKBONE + key, None)
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        from lit_llm.faults import start_next_epoch_afresh

        start_next_epoch_afresh(checkpoint)  # before Lightning restores its loops from it
        meta = checkpoint.get("lit_llm", {})
        self.tokenizer_json = meta.get("tokenizer_json", self.tokenizer_json)
        if meta.get("peft_base"):  # a LoRA checkpoint: its frozen base weights come back from where they came from
            base = restore_peft_base(meta["peft_base"])
            self.peft_base = {**meta["peft_base"], "keys": set(base)}
            for key, value in zip(lora_names(self.backbone, base), base.values()):
                checkpoint["state_dict"].setdefault(BACKBONE + key, value)
        rng = checkpoint.get("rng_state")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
