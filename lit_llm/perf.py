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

import json
import logging
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lit_llm.errors import ConfigError

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


# -- trainer.precision=auto ---------------------------------------------------------------------------
# Lightning's precision names (lightning_fabric.connector._PRECISION_INPUT) and ours: auto
PRECISIONS = ("auto", "32-true", "32", "64-true", "64", "bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16",
              "transformer-engine", "transformer-engine-float16")
BF16_MIN_SPEEDUP = 1.25  # bf16 matmuls must beat fp32 by this much: with native bf16 ~2x, without ~0.1x
PRECISION_CACHE = "precision_probe.json"  # in paths.cache_dir: {key: probe result}; deleting it is safe


@dataclass
class PrecisionChoice:
    """What `trainer.precision` became and why (run.json's `precision`)."""

    configured: str
    precision: str
    reason: str
    probe: dict | None = None  # the CPU probe's result (GFLOP/s in fp32 and bf16), cached or fresh

    def to_dict(self) -> dict:
        return asdict(self)


def probe_bf16_speedup(m: int = 1024, k: int = 512, n: int = 1024, budget_s: float = 0.15) -> dict:
    """Best-of GFLOP/s of `F.linear` on fp32 tensors [m, k] x [n, k] (the layout of every nn.Linear), plain and
    under bf16 autocast (casts included: what bf16-mixed runs), alternated; each about `budget_s` (a CPU without
    native bf16 takes ~60 ms a call, so the probe stays well under a second). On one thread: the ratio is the
    instruction set's, and with two threads on a busy machine the slower thread's waits hid it (1.0x, where one
    thread read 2.6-3.1x every time)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _probe_bf16_speedup(m, k, n, budget_s)
    finally:
        torch.set_num_threads(threads)


def _probe_bf16_speedup(m: int, k: int, n: int, budget_s: float) -> dict:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)

    def once(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            F.linear(a, b)
        return time.perf_counter() - t0

    best = {False: once(False), True: once(True)}  # warm-up
    started = time.perf_counter()
    while time.perf_counter() - started < 2 * budget_s or min(best.values()) == 0:
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], once(bf16))
    flops = 2.0 * m * k * n
    return {"fp32_gflops": round(flops / best[False] / 1e9, 1), "bf16_gflops": round(flops / best[True] / 1e9, 1),
            "shape": [m, k, n], "threads": 1}


def _probe_key() -> str:
    from lit_llm.reporting.metadata import cpu_model  # names the bf16 instructions: one model name can differ in them

    return f"{cpu_model()} | torch {torch.__version__}"


def cached_bf16_probe(cache_dir: str | Path | None, probe: Callable[[], dict] = probe_bf16_speedup) -> dict:
    """`probe()` for this CPU and torch version, kept in `cache_dir/precision_probe.json` (written
    atomically; a file that does not parse, or an entry without the figures, is ignored and rewritten)."""
    from lit_llm.utils_io import atomic_write_json

    key = _probe_key()
    path = Path(cache_dir) / PRECISION_CACHE if cache_dir else None
    entries: dict = {}
    if path is not None and path.is_file():
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = {}
        entries = entries if isinstance(entries, dict) else {}
        hit = entries.get(key)
        if isinstance(hit, dict) and all(isinstance(hit.get(f), (int, float)) and hit[f] > 0
                                         for f in ("fp32_gflops", "bf16_gflops")):
            return {**hit, "cached": True}
    result = {**probe(), "key": key}
    if path is not None:
        entries[key] = result
        atomic_write_json(path, entries)
    return {**result, "cached": False}


def choose_precision(precision: Any, accelerator: Any = "auto", cache_dir: str | Path | None = None,
                     probe: Callable[[], dict] = probe_bf16_speedup) -> PrecisionChoice:
    """`trainer.precision` as a concrete Lightning value. `auto`: bf16-mixed on a GPU that supports bf16; on a
    CPU, bf16-mixed where a short matmul probe (cached per CPU, `cached_bf16_probe`) finds bf16 at least
    `BF16_MIN_SPEEDUP` times faster than fp32 (AVX512-BF16 / AMX), else 32-true. Any other value is kept; one
    Lightning does not know is a ConfigError."""
    configured = str(precision)
    if configured not in PRECISIONS:
        raise ConfigError(f"trainer.precision={configured!r} is not one of {list(PRECISIONS)}; auto picks "
                          "bf16-mixed where this machine runs it faster, else 32-true")
    if configured != "auto":
        return PrecisionChoice(configured, configured, "configured")
    accelerator = str(accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return PrecisionChoice(configured, "bf16-mixed", f"GPU {torch.cuda.get_device_name()} supports bf16")
        return PrecisionChoice(configured, "32-true", "the GPU does not support bf16")
    if accelerator not in ("cpu", "auto"):
        return PrecisionChoice(configured, "32-true", f"accelerator={accelerator}: no bf16 rule for it")
    result = cached_bf16_probe(cache_dir, probe)
    speedup = result["bf16_gflops"] / result["fp32_gflops"]
    chosen = "bf16-mixed" if speedup >= BF16_MIN_SPEEDUP else "32-true"
    why = (f"CPU matmul probe{' (cached)' if result['cached'] else ''}: bf16 {result['bf16_gflops']:,.0f} vs fp32 "
           f"{result['fp32_gflops']:,.0f} GFLOP/s ({speedup:.2f}x; bf16 needs >= {BF16_MIN_SPEEDUP}x)")
    return PrecisionChoice(configured, chosen, why, result)


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


__all__ = ["PrecisionChoice", "choose_precision", "cached_bf16_probe", "probe_bf16_speedup", "precision_dtype", "measure_matmul_peak", "device_peak_flops", "batch_shape", "batch_flops", "peak_memory"]
