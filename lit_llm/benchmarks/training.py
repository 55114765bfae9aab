"""Training speed: our GPT through Lightning (the real `CausalLMTask` + `pl.Trainer`) vs a plain PyTorch loop.

Both paths do the same work on the same batches: same init (seed), same AdamW groups and warmup/cosine
schedule (`build_optimizer`, what the task's `configure_optimizers` returns), zero_grad, forward and the
task's loss (`task_loss`: hidden states, then the chunked LM head + cross-entropy), backward,
clip_grad_norm_(1.0), step. The unit tests check that they end with the same
weights, so the ratio measures Lightning's overhead and nothing else.

Timing: the two paths take turns step by step on the same batches (`TakeTurns`: the plain step runs between
Lightning's steps), each step timed after a GPU synchronize, a Lightning step including everything Lightning
does around it (data loading, hooks, logging); after `warmup_steps`, tokens/s come from the median step and the
ratio is the median of the per-step ratios (`paired_ratio`): this machine's speed drifts over seconds.

Every row gets model FLOP/s (tokens/s x `GPT.flops_per_token`, the analytic nanoGPT/PaLM count) and
its fraction of the peak: the datasheet on a known GPU, else the best n x n matmul measured here. fp32 rows are
checked against `targets.mfu_fp32` (eager) or `targets.mfu_compiled` (compile: true).
"""
from __future__ import annotations

import logging
import statistics
import time
import warnings

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from lit_llm.benchmarks.common import FP32, autocast, check, peak_flops, random_loader, resolve_device, sync
from lit_llm.models.gpt import GPT, GPTConfig
from lit_llm.perf import precision_dtype
from lit_llm.tasks.base import OptimConfig, build_optimizer
from lit_llm.tasks.clm import IGNORE_INDEX, LOSS_CHUNK_ROWS, CausalLMTask, chunked_cross_entropy

PATHS = ("lightning", "plain")


class TakeTurns(pl.Callback):
    """Times each Lightning step and, between Lightning's steps, runs and times the plain loop's step on the same
    batch (`interleaved`'s turn-taking, with the Trainer driving). A Lightning step is timed from the end of the
    previous plain step to the end of its own on_train_batch_end, so it includes everything Lightning does around
    the step (fetching the batch, hooks, logging). Steps after `warmup` are kept: `times[path]`."""

    def __init__(self, plain: PlainLoop | None, warmup: int, device: torch.device):
        self.plain, self.warmup, self.device = plain, warmup, device
        self.times: dict[str, list[float]] = {"lightning": [], **({"plain": []} if plain is not None else {})}
        self._mark: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._mark is None:  # the first step: nothing before it to time from
            sync(self.device)
            self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        now = time.perf_counter()
        timed = trainer.global_step > self.warmup
        if timed:
            self.times["lightning"].append(now - self._mark)
        if self.plain is not None:
            self.plain.step(batch)
            sync(self.device)
            if timed:
                self.times["plain"].append(time.perf_counter() - now)
        self._mark = time.perf_counter()


def _quiet_lightning() -> None:
    # The benchmark prints tables; Lightning's "GPU available", "does not have many workers" and
    # similar lines would only bury them.
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(pytorch_)?lightning.*")


def lightning_and_plain(model_cfg: dict, loader, device: torch.device, precision: str, warmup: int, steps: int,
                        optim: dict, seed: int, compile: bool = False, paths=PATHS, plain_compile: bool | None = None):
    """`CausalLMTask` in a `pl.Trainer` and the same model (same seed) in a `PlainLoop` with the task's loss,
    taking turns step by step on the same batches (`TakeTurns`); ({path: per-step seconds}, task, plain model).
    `paths` may hold one of the two: that one alone. `compile`: task.compile=true (and the plain loop's loss
    compiled the same way unless `plain_compile` says otherwise: False times compiled Lightning against eager)."""
    _quiet_lightning()
    plain = None
    if "plain" in paths:
        torch.manual_seed(seed)
        model = GPT(GPTConfig.from_dict(model_cfg))
        plain = PlainLoop(model, device, precision, warmup + steps, optim,
                          loss=task_loss(model, compile if plain_compile is None else plain_compile))
    if "lightning" not in paths:
        return interleaved({"plain": plain}, loader, warmup, steps, device), None, plain.model
    torch.manual_seed(seed)
    task = CausalLMTask(model=dict(model_cfg), optim=dict(optim), compile=compile)
    turns = TakeTurns(plain, warmup, device)
    pl.Trainer(
        accelerator=device.type, devices=1, precision=precision, max_steps=warmup + steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        gradient_clip_val=1.0, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[turns],
    ).fit(task, train_dataloaders=loader)
    return turns.times, task, None if plain is None else plain.model


def task_loss(model: GPT, compile: bool = False):
    """batch -> the training loss `CausalLMTask.training_step` computes with its default settings: the backbone's
    hidden states (compiled with `compile`, as `task.compile=true` does), then the LM head and cross-entropy
    `LOSS_CHUNK_ROWS` rows at a time (`chunked_cross_entropy`)."""
    hidden_states = torch.compile(model.hidden_states) if compile else model.hidden_states
    return lambda batch: chunked_cross_entropy(hidden_states(batch["input_ids"]), model.lm_head.weight,
                                               batch["labels"], LOSS_CHUNK_ROWS)


class PlainLoop:
    """The plain PyTorch training loop, one step at a time (`step(batch)`): zero_grad, forward and loss under the
    precision's autocast, backward, clip_grad_norm_(1.0), AdamW step, scheduler step. The loss: `loss(batch)` when
    given (a model's own training loss, e.g. `task_loss(model)`), else the cross-entropy of `forward(model,
    *batch[inputs]) -> logits` (default: `model(*batch[inputs])`; an encoder-decoder takes `inputs=("input_ids",
    "decoder_input_ids", "attention_mask")`) against `batch["labels"]`."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str, total_steps: int, optim: dict,
                 forward=None, compile: bool = False, inputs: tuple[str, ...] = ("input_ids",), loss=None):
        self.model, self.device, self.precision = model.to(device).train(), device, precision
        self.run = torch.compile(model) if compile and loss is None else model
        self.forward = forward or (lambda m, *args: m(*args))
        self.inputs, self.loss = inputs, loss
        sched = build_optimizer(model, OptimConfig(**dict(optim)), total_steps)
        self.opt, self.scheduler = sched["optimizer"], sched["lr_scheduler"]["scheduler"]

    def step(self, batch: dict) -> None:
        batch = {k: v.to(self.device) for k, v in batch.items() if k in (*self.inputs, "labels")}
        self.opt.zero_grad(set_to_none=True)
        with torch.enable_grad(), autocast(self.device, self.precision):
            if self.loss is not None:
                value = self.loss(batch)
            else:
                logits = self.forward(self.run, *(batch[k] for k in self.inputs))
                value = F.cross_entropy(logits.float().view(-1, logits.size(-1)), batch["labels"].view(-1),
                                        ignore_index=IGNORE_INDEX)
        value.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.scheduler.step()


def plain_train(model: torch.nn.Module, loader, device: torch.device, precision: str, warmup: int, steps: int,
                optim: dict, forward=None, compile: bool = False,
                inputs: tuple[str, ...] = ("input_ids",), loss=None) -> tuple[float, torch.nn.Module]:
    """`warmup + steps` steps of a `PlainLoop` (arguments as there); (seconds of the last `steps`, the model)."""
    total = warmup + steps
    loop = PlainLoop(model, device, precision, total, optim, forward, compile, inputs, loss)
    marks = {}
    for step, batch in enumerate(loader, start=1):
        loop.step(batch)
        if step in (warmup, total):
            sync(device)
            marks[step] = time.perf_counter()
        if step == total:
            break
    if total not in marks:
        raise ValueError(f"the loader has fewer than {total} batches")
    return marks[total] - marks[warmup], loop.model


def interleaved(loops: dict[str, PlainLoop], loader, warmup: int, steps: int,
                device: torch.device) -> dict[str, list[float]]:
    """{name: seconds of each of its `steps` timed steps}: the loops take turns on every batch (who goes first
    alternates), after `warmup` untimed steps each. This machine's speed drifts by 10-20% over seconds (other
    work on the host), so loops timed one after another compare different machines; taking turns step by step,
    neighbouring steps see the same machine, and the per-step ratios (`paired_ratio`) cancel the drift."""
    names, times = list(loops), {name: [] for name in loops}
    for i, batch in enumerate(loader):
        if i == warmup + steps:
            break
        for name in (names if i % 2 == 0 else names[::-1]):
            sync(device)
            started = time.perf_counter()
            loops[name].step(batch)
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - started)
    if any(len(t) < steps for t in times.values()):
        raise ValueError(f"the loader has fewer than {warmup + steps} batches")
    return times


def paired_ratio(times_a: list[float], times_b: list[float]) -> float:
    """The median of the step-by-step time ratios a[i] / b[i], i.e. b's speed / a's speed, of two interleaved runs:
    neighbouring steps ran on the same machine state, so the drift cancels in each ratio."""
    return statistics.median(a / b for a, b in zip(times_a, times_b, strict=True))


def speed_row(run: str, model_name: str, gpt: GPT, precision: str, batch: int, seq_len: int, steps: int,
              seconds: float, device: torch.device, peak: dict, mfu_target: float | None) -> dict:
    """tokens/s, step time, model FLOP/s and its fraction of the peak for one measurement."""
    tokens_per_s = batch * seq_len * steps / seconds
    flops = tokens_per_s * gpt.flops_per_token(seq_len)
    dtype = precision_dtype(precision, device.type)
    mfu = flops / peak[dtype][0]
    row = {"run": run, "model": model_name, "precision": precision, "batch": batch, "seq_len": seq_len,
           "steps": steps, "tokens_per_s": round(tokens_per_s, 1), "step_ms": round(1000 * seconds / steps, 1),
           "model_gflops": round(flops / 1e9, 1), "mfu": round(mfu, 3)}
    return {**row, **check("mfu", mfu, mfu_target if str(precision) in FP32 else None)}


def peaks(device: torch.device, precisions, cfg: dict, before: dict | None = None) -> tuple[dict, list[dict]]:
    """{dtype: (FLOP/s, source)} for the precisions measured, and a row for each. Low-precision probes
    use `peak.low_precision_n`: bf16 matmuls on a CPU without AVX512-BF16 take seconds at n = 2048.
    `before`: the probes taken before the timed runs; each is taken again and the higher reading kept (a probe
    that ran while the host was busy reads low, which would inflate MFU: SpeedMonitor's rule)."""
    out, rows = {}, []
    for precision in precisions:
        dtype = precision_dtype(precision, device.type)
        if dtype not in out:
            probe = cfg["peak"]
            n = int(probe["n"] if dtype is torch.float32 else probe.get("low_precision_n", probe["n"]))
            flops, source = peak_flops(device, dtype, n, float(probe["budget_s"]), remeasure=before is not None)
            if before is not None and dtype in before and source.startswith("measured"):
                flops, source = max(flops, before[dtype][0]), f"{source}, the best of a probe before and after the runs"
            out[dtype] = (flops, source)
            rows.append({"run": "matmul peak", "precision": str(dtype).removeprefix("torch."),
                         "peak_gflops": round(out[dtype][0] / 1e9, 1), "source": out[dtype][1]})
    return out, rows


def mfu_target_of(targets: dict, compiled: bool) -> float | None:
    """The MFU target of fp32 rows: `mfu_compiled` with torch.compile (falling back to `mfu_fp32`), else `mfu_fp32`."""
    if compiled and targets.get("mfu_compiled") is not None:
        return targets["mfu_compiled"]
    return targets.get("mfu_fp32")


def run(cfg: dict) -> list[dict]:
    device = resolve_device(cfg.get("device"))
    paths = list(cfg.get("paths") or PATHS)
    unknown = set(paths) - set(PATHS)
    if unknown:
        raise ValueError(f"training.paths: {sorted(unknown)} not in {list(PATHS)}")
    model_cfg, seed, precision = dict(cfg["model"]), int(cfg.get("seed", 0)), str(cfg["precision"])
    B, T = int(cfg["batch_size"]), int(cfg.get("seq_len") or model_cfg["block_size"])
    warmup, steps = int(cfg["warmup_steps"]), int(cfg["steps"])
    if warmup < 1 or steps < 1:
        raise ValueError("training.warmup_steps and training.steps must be >= 1 (the first step builds state)")
    with torch.device("meta"):  # for the FLOPs formula only: no memory, no init time
        gpt = GPT(GPTConfig.from_dict(model_cfg))
    loader = random_loader(warmup + steps, B, T, gpt.config.vocab_size, seed)
    peak, _ = peaks(device, [precision], cfg)
    rows = []
    targets = cfg.get("targets") or {}

    times, _, _ = lightning_and_plain(model_cfg, loader, device, precision, warmup, steps, cfg["optim"], seed,
                                      bool(cfg.get("compile")), paths)
    peak, peak_rows = peaks(device, [precision], cfg, peak)  # probed again after the runs: the higher one counts
    mfu_target = mfu_target_of(targets, bool(cfg.get("compile")))
    for path in paths:
        rows.append(speed_row(path, "gpt", gpt, precision, B, T, steps, statistics.median(times[path]) * steps,
                              device, peak, mfu_target))
    if len(paths) == 2:
        r = round(paired_ratio(times["plain"], times["lightning"]), 3)  # tokens/s ratio lightning / plain
        rows.append({"run": "lightning / plain", "precision": precision, "ratio": r,
                     **check("ratio", r, targets.get("lightning_vs_plain"))})
    if cfg.get("compiled_row") and not cfg.get("compile") and "lightning" in paths:
        # the same Lightning run with task.compile=true (compiled in its warmup steps), against mfu_compiled; with the
        # plain path, taking turns with the eager plain loop: compiled / eager is then a paired ratio (two Lightning
        # runs one after the other read 0.94 and 1.11 on this shared machine)
        compiled, _, _ = lightning_and_plain(model_cfg, loader, device, precision, warmup, steps, cfg["optim"], seed,
                                             True, paths, plain_compile=False)
        peak, peak_rows = peaks(device, [precision], cfg, peak)
        rows.append(speed_row("lightning compiled", "gpt", gpt, precision, B, T, steps,
                              statistics.median(compiled["lightning"]) * steps, device, peak,
                              mfu_target_of(targets, True)))
        if "plain" in compiled:
            rows.append({"run": "lightning compiled / plain eager", "precision": precision,
                         "ratio": round(paired_ratio(compiled["plain"], compiled["lightning"]), 3)})
    return rows + peak_rows
