"""Memory of one training step (forward + loss + backward) vs sequence length, with and without
activation checkpointing (`GPTConfig.activation_checkpointing`: each block's activations are recomputed
in backward instead of kept).

CPU: each configuration runs in a FRESH process ('spawn'), so nothing of an earlier one (allocator
caches, a larger earlier peak) is counted. Reported: the process's peak resident set during the step
minus the resident set after building the model and the batch (what the step adds: activations,
gradients, temporaries). The peak is VmHWM from /proc, restarted after the build (/proc/self/clear_refs),
not `ru_maxrss`: Linux carries ru_maxrss over exec from the forked parent, so a spawned child would
report at least the benchmark process's size. glibc's malloc keeps freed blocks below a threshold that
grows as large blocks are freed, so the resident set would also count memory freed earlier in the step
(measured: checkpointing then seemed to save 3% instead of 30%); `malloc_mmap_threshold` fixes that
threshold in the child (MALLOC_MMAP_THRESHOLD_): large tensors come from and go back to the OS, and
the resident set follows the live tensors.

GPU: `torch.cuda.max_memory_allocated` after a reset, minus what was allocated before the step.
Step time: the median of `steps` steps after the first measured one.
"""
from __future__ import annotations

import contextlib
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from lit_llm.benchmarks import run_fresh
from lit_llm.benchmarks.common import autocast, ratio, resolve_device, sync
from lit_llm.models import build_backbone

MB = 2**20


def _status_kb(field: str) -> int | None:
    """A memory figure of this process from /proc/self/status (Linux), in KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> None:
    """Start the peak resident set (VmHWM) afresh from the current one (Linux >= 4.0; else no-op)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_bytes(peak: bool) -> int:
    """The current (VmRSS) or peak (VmHWM) resident set. Not `ru_maxrss` where /proc exists: Linux
    carries it over exec from the forked parent, so a spawned child would report at least the
    benchmark process's own size. Elsewhere ru_maxrss is the best there is."""
    kb = _status_kb("VmHWM" if peak else "VmRSS")
    if kb is not None:
        return kb * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if os.uname().sysname == "Darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


def measure(spec: dict) -> dict:
    """One configuration (run it in a fresh process on CPU): {"peak_mb", "step_ms"}. `spec["model"]` is a
    `model` config (arch gpt: next-token loss; arch encoder: MLM loss on every position); `spec["mask"]`: GPT:
    one packed document (an explicit [T, T] mask instead of SDPA's is_causal), encoder: a padding mask (the
    last token padded)."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    torch.manual_seed(int(spec.get("seed", 0)))
    T, B = int(spec["seq_len"]), int(spec["batch_size"])
    model = build_backbone({**spec["model"], "block_size": T,
                            "activation_checkpointing": spec["checkpointing"]}).to(device).train()
    encoder = model.config.arch == "encoder"
    ids = torch.randint(0, model.config.vocab_size, (B, T + 1), device=device)
    inputs, labels = ids[:, :-1], (ids[:, :-1] if encoder else ids[:, 1:])
    mask = torch.ones_like(inputs) if spec.get("mask") else None
    if mask is not None and encoder:
        mask[:, -1] = 0

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> float:
        model.zero_grad(set_to_none=True)  # as a training loop does: last step's gradients are gone
        sync(device)
        t0 = time.perf_counter()
        with autocast(device, spec.get("precision", "32-true")):
            m = None if mask is None else mask[:inputs.size(0), :inputs.size(1)]
            if encoder:
                logits = model.mlm_logits(model(inputs, attention_mask=m))
            else:
                logits = model(inputs, document_ids=None if m is None else 1 - m)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.reshape(-1))
        loss.backward()
        sync(device)
        return time.perf_counter() - t0

    # A tiny step first: lazy initialisation (kernel code paged in, autograd threads) is not the step's memory.
    step(inputs[:1, :8], labels[:1, :8])
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        _reset_peak_rss()  # so the peak is the step's, not an earlier moment's (imports, model init)
        base = _rss_bytes(peak=False)
    times = [step(inputs, labels) for _ in range(1 + int(spec["steps"]))]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _rss_bytes(peak=True)
    return {"peak_mb": round((peak - base) / MB, 1),
            "step_ms": round(1000 * statistics.median(times[1:] or times), 1)}


@contextlib.contextmanager
def _child_env(mmap_threshold: int | None):
    """MALLOC_MMAP_THRESHOLD_ for the processes started inside (glibc reads it at start-up)."""
    key, old = "MALLOC_MMAP_THRESHOLD_", os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if mmap_threshold is not None:
        os.environ[key] = str(int(mmap_threshold))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def run(cfg: dict) -> list[dict]:
    device = resolve_device(cfg.get("device"))
    specs = [{"model": dict(cfg["model"]), "seq_len": int(T), "checkpointing": ckpt, "device": str(device),
              "batch_size": int(cfg["batch_size"]), "steps": int(cfg["steps"]), "seed": int(cfg.get("seed", 0)),
              "threads": cfg.get("threads") or torch.get_num_threads(),
              "precision": str(cfg.get("precision", "32-true"))}
             for T in cfg["seq_lens"] for ckpt in (False, True)]
    rows = []
    for spec in specs:
        result = measure_fresh(spec, cfg.get("malloc_mmap_threshold"))
        rows.append({"seq_len": spec["seq_len"], "batch": spec["batch_size"], "checkpointing": spec["checkpointing"],
                     "precision": spec["precision"], **result, "measure": measure_name(device)})
    plain = {r["seq_len"]: r for r in rows if not r["checkpointing"]}
    for r in rows:
        if r["checkpointing"]:
            r["memory_ratio"] = ratio(r["peak_mb"], plain[r["seq_len"]]["peak_mb"])
            r["time_ratio"] = ratio(r["step_ms"], plain[r["seq_len"]]["step_ms"])
    return rows


def measure_fresh(spec: dict, mmap_threshold: int | None = None) -> dict:
    """`measure(spec)` in a fresh process: nothing kept from an earlier configuration (allocator caches, peaks)."""
    with _child_env(mmap_threshold):
        return run_fresh(measure, spec)


def measure_name(device: torch.device) -> str:
    return "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS - RSS after build"


def run_attention(cfg: dict) -> list[dict]:
    """Sliding-window attention (`model.attention_window`) against full attention: one training step of a GPT
    and an encoder at each sequence length, fresh process each. Full attention runs as SDPA runs it without a
    mask (GPT: is_causal; encoder: no padding) and with an explicit mask (GPT: one packed document, a [T, T]
    bias; encoder: a padding mask), since a kernel's memory depends on which it gets."""
    device = resolve_device(cfg.get("device"))
    rows = []
    for arch in cfg["archs"]:
        variants = [(None, False), (None, True)] + [(w, arch == "encoder") for w in cfg["windows"]]
        for T in cfg["seq_lens"]:
            for window, mask in variants:
                spec = {"model": {**cfg["model"], "arch": arch, "attention_window": window}, "seq_len": int(T),
                        "checkpointing": False, "device": str(device), "batch_size": int(cfg["batch_size"]),
                        "steps": int(cfg["steps"]), "seed": int(cfg.get("seed", 0)), "mask": mask,
                        "threads": cfg.get("threads") or torch.get_num_threads(),
                        "precision": str(cfg.get("precision", "32-true"))}
                result = measure_fresh(spec, cfg.get("malloc_mmap_threshold"))
                what = ("document mask [T,T]" if arch == "gpt" else "padding mask") if mask else "no mask"
                rows.append({"arch": arch, "seq_len": int(T), "attention_window": window, "mask": what, **result,
                             "measure": measure_name(device)})
    full = {(r["arch"], r["seq_len"]): r for r in rows if r["attention_window"] is None and r["mask"] == "no mask"}
    for r in rows:
        r["memory_vs_full"] = ratio(r["peak_mb"], full[r["arch"], r["seq_len"]]["peak_mb"])
    return rows
