"""Training speed: our GPT vs Hugging Face's `GPT2LMHeadModel` of the same architecture and weights, and (with
`hf_training.llama`) our Llama-style GPT vs `LlamaForCausalLM`.

Both run the same plain loop (`training.plain_train`: same batches, same AdamW groups and schedule,
same loss on logits), in fp32 and in bf16 autocast ("bf16-mixed"), so the ratio is the models'
alone. bf16 runs take `bf16_steps` timed steps: a CPU without AVX512-BF16 runs bf16 matmuls far
slower than fp32, and the table reports that as it is. Without transformers the section is one note row.
"""
from __future__ import annotations

import torch

from lit_llm.benchmarks import hf
from lit_llm.benchmarks.common import FP32, check, random_loader, ratio, resolve_device
from lit_llm.benchmarks.training import peaks, plain_train, speed_row
from lit_llm.models.gpt import GPT, GPTConfig

MODELS = {"ours": "gpt (ours)", "hf": "GPT2LMHeadModel"}
# `llama`: the same comparison for a Llama-style GPT (RMSNorm, SwiGLU, rotary, GQA) against LlamaForCausalLM
LLAMA_OPTIONS = {"norm": "rmsnorm", "mlp": "swiglu", "pos_embedding": "rope", "bias": False}


def run(cfg: dict) -> list[dict]:
    if not hf.available():
        return [{"run": "hf_training", "note": hf.SKIPPED}]
    device = resolve_device(cfg.get("device"))
    precisions = [str(p) for p in cfg["precisions"]]
    peak, peak_rows = peaks(device, precisions, cfg)
    rows = compare(cfg, dict(cfg["model"]), hf.gpt2_from, MODELS, "", device, peak)
    if cfg.get("llama"):  # e.g. {n_kv_head: 2, intermediate_size: 688}
        llama_cfg = {**dict(cfg["model"]), **LLAMA_OPTIONS, **dict(cfg["llama"])}
        rows += compare(cfg, llama_cfg, hf.llama_from, {"ours": "gpt, llama options (ours)", "hf": "LlamaForCausalLM"},
                        "llama ", device, peak)
    return rows + peak_rows


def compare(cfg: dict, model_cfg: dict, reference, names: dict, prefix: str, device, peak) -> list[dict]:
    """Rows of our GPT of `model_cfg` vs `reference(gpt)` (a transformers model with its weights), per precision:
    tokens/s, MFU and the ratio ours / HF; run names start with `prefix`."""
    seed = int(cfg.get("seed", 0))
    B, T = int(cfg["batch_size"]), int(cfg.get("seq_len") or model_cfg["block_size"])
    warmup = int(cfg["warmup_steps"])
    precisions = [str(p) for p in cfg["precisions"]]
    targets = cfg.get("targets") or {}
    rows = []

    def fresh(which: str):
        torch.manual_seed(seed)
        gpt = GPT(GPTConfig.from_dict(model_cfg))
        return (gpt, None) if which == "ours" else (reference(gpt), hf.logits)

    best: dict[tuple[str, str], float] = {}
    steps_of = {p: int(cfg["steps"] if p in FP32 else cfg["bf16_steps"]) for p in precisions}
    for precision in precisions:
        steps = steps_of[precision]
        loader = random_loader(warmup + steps, B, T, model_cfg["vocab_size"], seed)
        repeats = cfg.get("repeats", 1) if precision in FP32 else cfg.get("bf16_repeats", 1)
        for _ in range(max(1, int(repeats))):  # alternate ours / HF under the same load
            for which in names:
                model, forward = fresh(which)
                seconds, _ = plain_train(model, loader, device, precision, warmup, steps, cfg["optim"], forward)
                key = (which, precision)
                best[key] = min(best.get(key, float("inf")), seconds)

    with torch.device("meta"):  # same architecture: one FLOPs formula for both models
        gpt = GPT(GPTConfig.from_dict(model_cfg))
    for precision in precisions:
        for which, name in names.items():
            mfu_target = targets.get("mfu_fp32") if which == "ours" and not prefix else None  # ours to meet
            rows.append(speed_row(f"{prefix}{which} plain", name, gpt, precision, B, T, steps_of[precision],
                                  best[(which, precision)], device, peak, mfu_target))

    def tps(which: str, precision: str) -> float:
        return B * T * steps_of[precision] / best[(which, precision)]

    for precision in precisions:
        r = ratio(tps("ours", precision), tps("hf", precision))
        target = targets.get(f"{prefix.strip() + '_' if prefix else ''}ours_vs_hf_fp32") if precision in FP32 else None
        rows.append({"run": f"{prefix}ours / hf", "precision": precision, "ratio": r, **check("ratio", r, target)})
    fp32 = next((p for p in precisions if p in FP32), None)
    for precision in (p for p in precisions if p not in FP32 and fp32):
        for which in names:
            r = ratio(tps(which, precision), tps(which, fp32))
            target = targets.get("bf16_vs_fp32") if which == "ours" and not prefix else None
            rows.append({"run": f"{prefix}{which} {precision} / {fp32}", "precision": precision, "ratio": r,
                         **check("ratio", r, target)})
    return rows
