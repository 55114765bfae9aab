"""What the benchmark sections share: the device, timing, random batches, the FLOP/s peak, targets."""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from lit_llm.perf import device_peak_flops, precision_dtype

FP32 = ("32", "32-true")


def resolve_device(name: str | None) -> torch.device:
    """`auto` -> cuda when available, else cpu; anything else as given."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read afterwards includes it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(fn, repeats: int, device: torch.device = torch.device("cpu")) -> float:
    """The fastest of `repeats` calls of `fn`, in seconds: the least disturbed by a shared machine."""
    best = float("inf")
    for _ in range(max(1, int(repeats))):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def autocast(device: torch.device, precision: str):
    """The context a plain loop runs forward + loss in: what Lightning's `precision` plugin does."""
    if str(precision) in FP32:
        return contextlib.nullcontext()
    if str(precision).endswith("-mixed"):
        return torch.autocast(device.type, dtype=precision_dtype(precision, device.type))
    raise ValueError(f"precision={precision!r}: the benchmark supports 32-true and *-mixed precisions")


def random_loader(num_batches: int, batch_size: int, seq_len: int, vocab_size: int, seed: int) -> DataLoader:
    """Seeded random token blocks [batch, seq_len + 1] collated as the corpus data module does
    (input_ids / labels shifted by one): training speed does not depend on what the tokens say."""
    from lit_llm.data.corpus import BlockDataset, collate_blocks  # here: memory's child processes skip datasets

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, vocab_size, size=(num_batches * batch_size, seq_len + 1), dtype=np.int32)
    return DataLoader(BlockDataset(blocks), batch_size=batch_size, shuffle=False, drop_last=True,
                      collate_fn=collate_blocks)


def peak_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, budget_s: float = 1.0,
               remeasure: bool = False) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from), once per process unless `remeasure` (then the higher of the two): the
    datasheet on a known GPU, else the best n x n matmul measured here (n = 2048: large enough that the BLAS
    reaches its steady speed)."""
    return device_peak_flops(device, dtype, remeasure=remeasure, n=n, budget_s=budget_s)


def check(name: str, value: float | None, target: float | None) -> dict:
    """The `target` / `meets` columns of a row (nothing when no target applies)."""
    if target is None or value is None:
        return {}
    return {"target": f"{name} >= {target}", "meets": bool(value >= target)}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None
