"""Callbacks lit-llm adds to Lightning's own: throughput/MFU, generated samples, last checkpoint."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lit_llm.utils_io import atomic_write_text

log = logging.getLogger("lit_llm")


class SpeedMonitor(Callback):
    """Logs tokens/s (and MFU when the peak FLOP/s is known) and keeps a run summary.

    The first `warmup_steps` steps are left out of the averages (allocator warm-up, compilation).
    """

    def __init__(self, warmup_steps: int = 5, log_every_n_steps: int = 10, peak_flops: float | None = None):
        self.warmup_steps = warmup_steps
        self.log_every_n_steps = log_every_n_steps
        self.peak_flops = peak_flops
        self.summary: dict[str, float] = {}
        self._t0 = 0.0
        self._tokens = 0
        self._time = 0.0
        self._steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dt = time.perf_counter() - self._t0
        tokens = batch["input_ids"].numel() * trainer.world_size
        self._steps += 1
        if self._steps > self.warmup_steps:
            self._tokens += tokens
            self._time += dt
        if trainer.global_step % self.log_every_n_steps == 0 and dt > 0:
            pl_module.log("perf/tokens_per_s", tokens / dt, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._time <= 0:
            return
        tps = self._tokens / self._time
        backbone = getattr(pl_module, "backbone", None)
        summary = {"tokens_per_s": tps, "timed_steps": self._steps - self.warmup_steps}
        if backbone is not None and hasattr(backbone, "flops_per_token"):
            flops = backbone.flops_per_token() * tps
            summary["model_flops_per_s"] = flops
            if self.peak_flops:
                summary["mfu"] = flops / self.peak_flops
        if torch.cuda.is_available():
            summary["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        else:
            import resource

            summary["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        self.summary = summary


class GenerateSamples(Callback):
    """At each validation end, writes a sampled continuation to `<output_dir>/step_XXXXXX.txt`.

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
        if tokenizer is None or getattr(pl_module, "task_kind", None) != "clm":
            return  # only causal language models generate
        text = sample_text(pl_module.backbone, tokenizer, self.prompt, self.max_new_tokens,
                           self.temperature, self.top_k, self.seed, self.num_samples)
        self.last_sample = text
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.output_dir / f"step_{trainer.global_step:06d}.txt", text + "\n")


def sample_text(backbone, tokenizer, prompt: str, max_new_tokens: int, temperature: float,
                top_k: int | None, seed: int, num_samples: int = 1) -> str:
    """Decode `num_samples` continuations of `prompt`; documents start after an <eos> token."""
    from lit_llm.models.generation import generate
    from lit_llm.tokenization import token_id

    eos = token_id(tokenizer, "<eos>")
    ids = [eos] + tokenizer.encode(prompt, add_special_tokens=False).ids
    device = next(backbone.parameters()).device
    x = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    # past block_size, generate() slides its window (recomputing the last block_size tokens)
    out = generate(backbone, x, max_new_tokens, temperature=temperature, top_k=top_k, generator=gen)
    texts = []
    for row in out.tolist():
        docs, cur = [], []
        for t in row[1:]:  # drop the leading <eos>
            if t == eos:
                docs.append(cur)
                cur = []
            else:
                cur.append(t)
        docs.append(cur)
        texts.append("\n".join(tokenizer.decode(d, skip_special_tokens=True) for d in docs))
    return "\n---\n".join(texts)
