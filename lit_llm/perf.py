"""How fast, against what: the device's peak FLOP/s, model FLOPs per batch, peak memory.

- GPUs: the datasheet peak for the device and dtype from Lightning's table
  (`lightning_fabric.utilities.throughput.get_available_flops`: A100, H100, H200, L4, ...).
- CPUs (and GPUs the table lacks): a short probe measures it, the best of a few square matmuls in
  the training dtype. MFU against a measured peak says how close the model comes to what this
  machine's BLAS actually delivers, not to a marketing number.
- Model FLOPs are analytic (`backbone.train_flops`, nanoGPT/PaLM's 6N + 12·L·H·Q·T and its
  encoder / encoder-decoder equivalents), never profiled: the same formula on every device.
"""
from __future__ import annotations

import logging
import resource
import time
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger("lit_llm")

PRECISION_DTYPES = {
    "32": torch.float32, "32-true": torch.float32, "64": torch.float64, "64-true": torch.float64,
    "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16,
    "16": torch.float16, "16-mixed": torch.float16, "16-true": torch.float16,
}

_PROBES: dict[tuple, float] = {}  # (device type, dtype, threads) -> measured FLOP/s, once per process


def precision_dtype(precision: Any, device_type: str = "cpu") -> torch.dtype:
    """The dtype the matmuls of a Lightning `precision` run in (16-mixed on CPU is bf16, as Lightning does)."""
    dtype = PRECISION_DTYPES.get(str(precision), torch.float32)
    if dtype is torch.float16 and device_type == "cpu":
        return torch.bfloat16
    return dtype


def measure_matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        n: int = 1024, budget_s: float = 0.3) -> float:
    """FLOP/s of the best of several n x n matmuls `a @ b.T` (2 n^3 FLOPs each) within about `budget_s`."""
    device = torch.device(device)
    # a private generator: drawing from the global RNG would shift every later draw (dropout, data order) of a
    # run that probes against one that reuses the process's cached peak (the second job of a multirun)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        # x @ W^T, the layout of every nn.Linear: on CPUs without native bf16, bf16 kernels for the
        # plain a @ b layout are ~8x slower, which would put a bf16 "MFU" above 1
        F.linear(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    first = min(once(), once())  # warm-up (BLAS threads, kernels)
    best = first
    for _ in range(max(2, min(50, int(budget_s / max(first, 1e-6))))):
        best = min(best, once())
    return 2.0 * n**3 / best


def device_peak_flops(device: torch.device | str, dtype: torch.dtype, remeasure: bool = False, n: int = 1024,
                      budget_s: float = 0.3) -> tuple[float | None, str]:
    """(peak FLOP/s, where it comes from) for matmuls in `dtype` on `device`. A measured peak is kept
    for the process; `remeasure` probes again and keeps the higher figure (a probe that ran while other
    work loaded the machine reads low, which would inflate MFU)."""
    device = torch.device(device)
    if device.type == "cuda":
        from lightning_fabric.utilities.throughput import get_available_flops

        try:
            flops = get_available_flops(device, dtype)
        except Exception:  # noqa: BLE001 - an unknown chip or dtype: measure instead
            flops = None
        if flops:
            return float(flops), f"datasheet ({torch.cuda.get_device_name(device)}, {dtype})"
    key = (device.type, dtype, torch.get_num_threads(), n)
    if key not in _PROBES or remeasure:
        _PROBES[key] = max(_PROBES.get(key, 0.0), measure_matmul_peak(device, dtype, n=n, budget_s=budget_s))
        log.info("perf: measured matmul peak %.1f GFLOP/s (%s, %s, %d threads)",
                 _PROBES[key] / 1e9, device.type, dtype, key[2])
    return _PROBES[key], f"measured: best {n}x{n} matmul, {str(dtype).removeprefix('torch.')}, {key[2]} threads"


def batch_shape(batch: dict) -> dict[str, int]:
    """Sizes a throughput counter needs from a batch dict: samples, tokens processed (padding
    included: it costs compute), real tokens (attention_mask), and the sequence lengths."""
    ids = batch["input_ids"]
    B, T = ids.shape[0], ids.shape[-1]
    tokens = ids.numel()
    mask = batch.get("attention_mask")
    real = int(mask.sum()) if mask is not None else tokens
    dec = batch.get("decoder_input_ids")
    target_len = None
    if dec is not None:
        target_len = dec.shape[-1]
        tokens += dec.numel()
        dec_mask = batch.get("labels")
        real += int((dec_mask != -100).sum()) if dec_mask is not None else dec.numel()
    return {"samples": B, "input_len": T, "target_len": target_len, "tokens": tokens, "real_tokens": real}


def batch_flops(backbone, shape: dict[str, int]) -> float | None:
    """Training FLOPs of one batch (forward + backward), or None for a backbone without a formula."""
    if not hasattr(backbone, "train_flops"):
        return None
    return shape["samples"] * backbone.train_flops(shape["input_len"], shape["target_len"])


def peak_memory(device: torch.device | str) -> dict[str, float]:
    """The run's peak memory: allocated by PyTorch on a GPU; the process's peak resident set on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30,
                "peak_reserved_gb": torch.cuda.max_memory_reserved(device) / 2**30}
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


__all__ = ["precision_dtype", "measure_matmul_peak", "device_peak_flops", "batch_shape", "batch_flops", "peak_memory"]
