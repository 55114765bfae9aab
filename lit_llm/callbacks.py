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
    """

    def __init__(self, warmup_steps: int = 5, log_every_n_steps: int = 10, peak_flops: float | None = None):
        self.warmup_steps = warmup_steps
        self.log_every_n_steps = log_every_n_steps
        self.peak_flops = peak_flops
        self.summary: dict[str, Any] = {}
        self._peak: float | None = None
        self._peak_source = ""
        self._last: float | None = None
        self._steps = 0
        self._totals = {"time": 0.0, "tokens": 0, "real_tokens": 0, "samples": 0, "flops": 0.0, "steps": 0}
        self._step_times: list[float] = []
        self._flops: dict[tuple, float | None] = {}

    def _now(self, trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_fit_start(self, trainer, pl_module) -> None:
        device = trainer.strategy.root_device
        dtype = precision_dtype(trainer.precision, device.type)
        if self.peak_flops:
            self._peak, self._peak_source = float(self.peak_flops), "configured (callbacks.speed_monitor.peak_flops)"
        else:
            self._peak, self._peak_source = device_peak_flops(device, dtype)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._last = None  # validation time is not training time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = self._now(trainer)
        last, self._last = self._last, now
        self._steps += 1
        if last is None or self._steps <= self.warmup_steps or not isinstance(batch, dict):
            return
        shape = pl_module.batch_shape(batch) if hasattr(pl_module, "batch_shape") else batch_shape(batch)
        if shape is None:
            return
        dt = now - last
        world = trainer.world_size
        key = (shape["samples"], shape["input_len"], shape["target_len"])
        if key not in self._flops:  # the formula walks the parameters: once per batch shape, not per step
            self._flops[key] = batch_flops(getattr(pl_module, "backbone", None), shape)
        flops = self._flops[key]
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
                pl_module.log("perf/mfu", flops / dt / self._peak, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_end(self, trainer, pl_module) -> None:
        t = self._totals
        if t["time"] <= 0:
            return
        device = trainer.strategy.root_device
        summary: dict[str, Any] = {
            "tokens_per_s": t["tokens"] / t["time"],
            "real_tokens_per_s": t["real_tokens"] / t["time"],
            "samples_per_s": t["samples"] / t["time"],
            "step_time_ms_median": 1000 * statistics.median(self._step_times),
            "timed_steps": t["steps"],
            "world_size": trainer.world_size,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "precision": str(trainer.precision),
        }
        if not self.peak_flops and t["time"] > 60:  # a second probe after a long run: the higher is the peak
            self._peak, self._peak_source = device_peak_flops(device, precision_dtype(trainer.precision, device.type),
                                                              remeasure=True)
        if t["flops"]:
            achieved = t["flops"] / t["time"]
            summary["model_flops_per_token"] = t["flops"] / t["tokens"]
            summary["model_flops_per_s"] = achieved
            if self._peak:
                # the peak is one device's: N processes have N devices (on CPU they share the cores)
                devices = trainer.world_size if device.type == "cuda" else 1
                summary.update(peak_flops_per_s=self._peak * devices, peak_source=self._peak_source,
                               mfu=achieved / (self._peak * devices))
        summary.update(peak_memory(device))
        self.summary = summary


def format_perf(perf: dict) -> str:
    """One line of a run's performance summary (run.json's `perf`)."""
    if not perf:
        return ""
    parts = [f"{perf['tokens_per_s']:,.0f} tokens/s", f"{perf['samples_per_s']:,.1f} samples/s",
             f"{perf['step_time_ms_median']:.0f} ms/step"]
    if "model_flops_per_s" in perf:
        parts.append(f"{perf['model_flops_per_s'] / 1e9:,.1f} GFLOP/s")
    if "mfu" in perf:
        parts.append(f"MFU {100 * perf['mfu']:.1f}% of {perf['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s "
                     f"({perf['peak_source']})")
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
