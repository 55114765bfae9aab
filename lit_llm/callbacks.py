"""Callbacks lit-llm adds to Lightning's own: throughput/MFU, generated samples, last checkpoint."""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lit_llm.perf import batch_flops, batch_shape, device_peak_flops, peak_memory, precision_dtype
from lit_llm.utils_io import atomic_write_text

log = logging.getLogger("lit_llm")


class SpeedMonitor(Callback):
    """Throughput and hardware use of the training steps (litgpt-style), logged and summarised.

    Every `log_every_n_steps` steps it logs `perf/tokens_per_s`, `perf/samples_per_s` and, with a
    known peak, `perf/mfu`. At the end of fit `summary` holds the averages over the timed steps:
    tokens/s (all processes; padding included, it costs compute) and real tokens/s (without padding),
    samples/s, model FLOPs per token (analytic, `backbone.train_flops`), achieved FLOP/s, the peak it
    is compared with and where that comes from (`lit_llm.perf.device_peak_flops`: a datasheet for
    known GPUs, else a matmul probe in the run's dtype), MFU, step time and peak memory. `train()`
    prints it and stores it in run.json as `perf`.

    A step's time runs from the end of the previous step (data loading included) to its own end; the
    first `warmup_steps` steps and the first step after each validation are left out. On a GPU the
    clock reads after a synchronize.

    `compute` is the run's compute accounting (run.json's `compute`), totals over *every* training
    micro-batch, warm-up included: analytic training FLOPs, tokens (padding included), real tokens and
    examples, all processes (this process's batch x world size, as for `summary`); micro-batches and
    optimizer steps (`trainer.global_step`); the wall time of fit (validation included) and the time
    inside training steps. The totals travel in checkpoints (`state_dict`), so a resumed run ends with
    the same totals as an uninterrupted one, wall times summed over its segments.
    """

    def __init__(self, warmup_steps: int = 5, log_every_n_steps: int = 10, peak_flops: float | None = None):
        self.warmup_steps = warmup_steps
        self.log_every_n_steps = log_every_n_steps
        self.peak_flops = peak_flops
        self.summary: dict[str, Any] = {}
        self._peak: float | None = None
        self._peak_source = ""
        self._peak_when = ""  # when the peak in use was measured (fit start, or the step that re-probed it)
        self._mfu_refused = False
        self._last: float | None = None
        self._steps = 0
        self._totals = {"time": 0.0, "tokens": 0, "real_tokens": 0, "samples": 0, "flops": 0.0, "steps": 0}
        self._step_times: list[float] = []
        self._first_step_s: float | None = None  # this segment's first training step (task.compile compiles in it)
        self._flops: dict[tuple, float | None] = {}
        # compute accounting: every micro-batch, kept in checkpoints (state_dict / load_state_dict)
        self._counts: dict[str, Any] = {"train_flops": 0.0, "tokens": 0, "real_tokens": 0, "examples": 0,
                                        "micro_batches": 0, "optimizer_steps": 0, "fit_wall_s": 0.0,
                                        "train_step_s": 0.0, "counted_from_step": None}
        self._context: dict[str, Any] = {}  # device, precision, world size, FLOPs formula: set at fit start
        self._fit_start: float | None = None  # perf_counter at this segment's fit start; None outside fit
        self._batch_start: float | None = None
        self._fit_done = False

    def _now(self, trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {**self._counts, "fit_wall_s": self._fit_wall()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._fit_done:  # test(ckpt_path=best) after fit restores callbacks too: it must not rewind the totals
            return
        self._counts.update(state_dict)

    def _fit_wall(self) -> float:
        """Fit wall time of the earlier segments (resume) plus this one's so far."""
        running = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return self._counts["fit_wall_s"] + running

    @property
    def compute(self) -> dict[str, Any] | None:
        """run.json's `compute`: the totals with the device and formula they come from; None when this
        process did not fit (e.g. the launcher of `ddp_spawn`, whose workers held the counts)."""
        if not self._context:
            return None
        c = self._counts
        return {"train_flops": c["train_flops"], "tokens": c["tokens"], "real_tokens": c["real_tokens"],
                "examples": c["examples"], "optimizer_steps": c["optimizer_steps"],
                "micro_batches": c["micro_batches"], "fit_wall_s": round(self._fit_wall(), 3),
                "train_step_s": round(c["train_step_s"], 3), "counted_from_step": c["counted_from_step"],
                **self._context}

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start, self._fit_done = time.perf_counter(), False
        self._context = {"device": _device_name(trainer.strategy.root_device), "precision": str(trainer.precision),
                         "world_size": trainer.world_size,
                         "flops_formula": flops_formula(getattr(pl_module, "backbone", None))}
        device = trainer.strategy.root_device
        dtype = precision_dtype(trainer.precision, device.type)
        if self.peak_flops:
            self._peak, self._peak_source = float(self.peak_flops), "configured (callbacks.speed_monitor.peak_flops)"
            self._peak_when = "given"
        else:
            self._peak, self._peak_source = device_peak_flops(device, dtype)
            self._peak_when = f"at fit start ({time.strftime('%H:%M:%S')})"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._last = None  # validation time is not training time

    def on_train_start(self, trainer, pl_module) -> None:
        if self._counts["counted_from_step"] is None:  # not resumed with counts: they start at this step
            self._counts["counted_from_step"] = trainer.global_step  # (restored by now, unlike at on_fit_start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()  # no synchronize: the previous batch end did one

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = self._now(trainer)
        last, self._last = self._last, now
        self._steps += 1
        shape = None
        if isinstance(batch, dict):
            shape = pl_module.batch_shape(batch) if hasattr(pl_module, "batch_shape") else batch_shape(batch)
        flops = self._batch_flops(pl_module, shape)
        self._count(trainer, shape, flops, now)
        if last is None or self._steps <= self.warmup_steps or shape is None:
            return
        dt = now - last
        world = trainer.world_size
        t = self._totals
        t["time"] += dt
        t["steps"] += 1
        t["tokens"] += shape["tokens"] * world
        t["real_tokens"] += shape["real_tokens"] * world
        t["samples"] += shape["samples"] * world
        t["flops"] += (flops or 0.0) * world
        self._step_times.append(dt)
        if trainer.global_step % self.log_every_n_steps == 0 and dt > 0:
            pl_module.log("perf/tokens_per_s", shape["tokens"] * world / dt, on_step=True, on_epoch=False,
                          rank_zero_only=True)
            pl_module.log("perf/samples_per_s", shape["samples"] * world / dt, on_step=True, on_epoch=False,
                          rank_zero_only=True)
            if flops and self._peak:
                mfu = self._honest_mfu(trainer, flops / dt, f"step {trainer.global_step}")
                if mfu is not None:
                    pl_module.log("perf/mfu", mfu, on_step=True, on_epoch=False, rank_zero_only=True)

    def _honest_mfu(self, trainer, achieved: float, where: str, devices: int = 1) -> float | None:
        """achieved / peak, never above 1: a measured peak that makes MFU exceed 1 read low (the probe ran while
        other work loaded the machine), so the peak is measured again (the higher reading is kept, and the
        summary says when); still above 1 (or above a configured peak), no MFU is reported, with one warning."""
        mfu = achieved / (self._peak * devices)
        if mfu <= 1.0:
            return mfu
        if not self.peak_flops and not self._peak_source.startswith("datasheet"):
            device = trainer.strategy.root_device
            before = self._peak
            self._peak, self._peak_source = device_peak_flops(device, precision_dtype(trainer.precision, device.type),
                                                              remeasure=True)
            self._peak_when = (f"re-measured at {where} ({time.strftime('%H:%M:%S')}): MFU read {mfu:.2f} against the "
                               f"earlier {before / 1e9:,.0f} GFLOP/s")
            log.info("perf: %s", self._peak_when)
            mfu = achieved / (self._peak * devices)
            if mfu <= 1.0:
                return mfu
        if not self._mfu_refused:
            self._mfu_refused = True
            log.warning(f"perf: MFU not reported: {achieved / 1e9:,.1f} GFLOP/s achieved at {where} is above the peak "
                        f"{self._peak * devices / 1e9:,.1f} GFLOP/s ({self._peak_source}); the peak is wrong for this "
                        "device (set callbacks.speed_monitor.peak_flops)")
        return None

    def _batch_flops(self, pl_module, shape: dict | None) -> float | None:
        if shape is None:
            return None
        key = (shape["samples"], shape["input_len"], shape["target_len"])
        if key not in self._flops:  # the formula walks the parameters: once per batch shape, not per step
            self._flops[key] = batch_flops(getattr(pl_module, "backbone", None), shape)
        return self._flops[key]

    def _count(self, trainer, shape: dict | None, flops: float | None, now: float) -> None:
        """Adds one micro-batch to the compute totals (FLOPs become None, unknown, once a batch has none)."""
        c, world = self._counts, trainer.world_size
        c["micro_batches"] += 1
        c["optimizer_steps"] = trainer.global_step
        if self._batch_start is not None:
            c["train_step_s"] += now - self._batch_start
            if self._first_step_s is None:
                self._first_step_s = now - self._batch_start
        if shape is not None:
            c["tokens"] += shape["tokens"] * world
            c["real_tokens"] += shape["real_tokens"] * world
            c["examples"] += shape["samples"] * world
        known = flops is not None and c["train_flops"] is not None
        c["train_flops"] = c["train_flops"] + flops * world if known else None

    def on_train_end(self, trainer, pl_module) -> None:
        self._counts.update(fit_wall_s=self._fit_wall(), optimizer_steps=trainer.global_step)
        self._fit_start, self._fit_done = None, True
        t = self._totals
        if t["time"] <= 0:
            return
        device = trainer.strategy.root_device
        summary: dict[str, Any] = {
            "tokens_per_s": t["tokens"] / t["time"],
            "real_tokens_per_s": t["real_tokens"] / t["time"],
            "real_token_fraction": t["real_tokens"] / max(1, t["tokens"]),  # 1 - the share of padding
            "samples_per_s": t["samples"] / t["time"],
            "step_time_ms_median": 1000 * statistics.median(self._step_times),
            "timed_steps": t["steps"],
            "world_size": trainer.world_size,
            "device": _device_name(device),
            "precision": str(trainer.precision),
        }
        if not self.peak_flops and t["time"] > 60 and not self._peak_source.startswith("datasheet"):
            before = self._peak  # a second probe after a long run: the higher is the peak
            self._peak, self._peak_source = device_peak_flops(device, precision_dtype(trainer.precision, device.type),
                                                              remeasure=True)
            if before and self._peak > before:
                self._peak_when = f"re-measured at the end of fit ({time.strftime('%H:%M:%S')}), higher than before"
        if t["flops"]:
            achieved = t["flops"] / t["time"]
            summary["model_flops_per_token"] = t["flops"] / t["tokens"]
            summary["model_flops_per_s"] = achieved
            if self._peak:
                # the peak is one device's: N processes have N devices (on CPU they share the cores)
                devices = trainer.world_size if device.type == "cuda" else 1
                mfu = self._honest_mfu(trainer, achieved, "the end of fit", devices)
                summary.update(peak_flops_per_s=self._peak * devices, peak_source=self._peak_source,
                               peak_measured=self._peak_when, mfu=mfu)
        if self._first_step_s is not None:
            summary["first_step_s"] = self._first_step_s
            if getattr(pl_module, "compiles", False):  # torch.compile traces and builds kernels in the first step;
                # recompiles later (a new batch shape, eval mode) are not in this figure
                summary["compile_s"] = max(0.0, self._first_step_s - statistics.median(self._step_times))
        summary.update(peak_memory(device))
        self.summary = summary


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def flops_formula(backbone) -> str:
    """One sentence naming the analytic formula behind a run's training FLOPs (run.json's `compute`)."""
    name = type(backbone).__name__
    if not hasattr(backbone, "train_flops"):
        return f"none: {name} has no train_flops formula, so training FLOPs are unknown"
    return (f"{name}.train_flops (PaLM appendix B / nanoGPT): 6 x matmul parameters x tokens + 12 x n_layer x n_embd x "
            "attended positions per token, forward + backward, padding included, every micro-batch of every process")


def format_perf(perf: dict) -> str:
    """One line of a run's performance summary (run.json's `perf`)."""
    if not perf:
        return ""
    parts = [f"{perf['tokens_per_s']:,.0f} tokens/s"]
    if "real_tokens_per_s" in perf:  # padded (what the model computed on) and real (what the data holds)
        real = perf["real_tokens_per_s"] / max(perf["tokens_per_s"], 1e-9)
        parts = [f"{perf['tokens_per_s']:,.0f} padded tokens/s", f"{perf['real_tokens_per_s']:,.0f} real tokens/s "
                 f"({100 * real:.0f}% real)"]
    parts += [f"{perf['samples_per_s']:,.1f} samples/s", f"{perf['step_time_ms_median']:.0f} ms/step"]
    if "model_flops_per_s" in perf:
        parts.append(f"{perf['model_flops_per_s'] / 1e9:,.1f} GFLOP/s")
    if perf.get("mfu") is not None:
        when = f", {perf['peak_measured']}" if perf.get("peak_measured") else ""
        parts.append(f"MFU {100 * perf['mfu']:.1f}% of {perf['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s "
                     f"({perf['peak_source']}{when})")
    elif "peak_flops_per_s" in perf:
        parts.append(f"MFU not reported: above the peak of {perf['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s "
                     f"({perf['peak_source']})")
    if "compile_s" in perf:
        parts.append(f"torch.compile ~{perf['compile_s']:.1f} s (first step)")
    mem = perf.get("peak_memory_gb", perf.get("peak_rss_gb"))
    if mem is not None:
        parts.append(f"peak memory {mem:.2f} GB" + (" (RSS)" if "peak_rss_gb" in perf else ""))
    return f"performance ({perf['device']}, {perf['precision']}, x{perf['world_size']}): " + ", ".join(parts)


class GenerateSamples(Callback):
    """At each validation end, writes a sampled continuation to `<output_dir>/step_XXXXXX.txt` (for tasks
    whose `generate_sample` hook writes text: causal language models).

    Uses its own seeded generator (never the global RNG) so sampling does not change training.
    """

    def __init__(self, output_dir: str, prompt: str = "", max_new_tokens: int = 200,
                 temperature: float = 0.8, top_k: int | None = 40, seed: int = 1234, num_samples: int = 1):
        self.output_dir = Path(output_dir)
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed
        self.num_samples = num_samples
        self.last_sample: str | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        tokenizer = getattr(trainer.datamodule, "tokenizer", None)
        if tokenizer is None:
            return
        text = pl_module.generate_sample(tokenizer, self.prompt, self.max_new_tokens, self.temperature, self.top_k,
                                         self.seed, self.num_samples)
        if text is None:
            return  # this task does not generate (only causal language models do)
        self.last_sample = text
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.output_dir / f"step_{trainer.global_step:06d}.txt", text + "\n")
