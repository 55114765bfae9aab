"""Training speed: our GPT vs Hugging Face's `GPT2LMHeadModel` of the same architecture and weights, (with
`hf_training.llama`) our Llama-style GPT vs `LlamaForCausalLM`, and (with `hf_training.t5`) our T5-style
EncoderDecoder vs `T5ForConditionalGeneration`.

Both run the same plain loop (`training.PlainLoop`, taking turns step by step: same batches, same AdamW
groups and schedule), in fp32 and in bf16 autocast ("bf16-mixed"). Each comparison at each precision runs in a
FRESH process (`fresh_process`, 'spawn'), as a user's training run starts: what ran earlier in the benchmark
process changes the speed of the models that follow, and not equally (measured on a 2-core Zen 4: Hugging Face
GPT-2's bf16 step 400 -> 347 ms after an fp32 run in the same process, ours 310 ms either way; its element-wise
copies, multiplies and fills ran twice as fast once the process had run the larger fp32 steps; fixing glibc's malloc
thresholds did not reproduce that), so in one process the figures depended on the order of sections and precisions.
The GPTs each train with their own library's loss, as a user of either would: ours with `CausalLMTask`'s
(`training.task_loss`: the LM head and cross-entropy in chunks), HF's with `labels=` (its `ForCausalLMLoss` on the
full logits; the same value, tested); the encoder-decoders (source, decoder input and source mask, teacher-forced)
both with cross-entropy on their logits. So the ratio is the implementations' alone; the T5 pair is checked to give
the same logits before it is timed. Encoder-decoder tokens are source + target tokens (what `perf.batch_shape`
counts). bf16 runs take `bf16_steps` timed steps: a CPU without AVX512-BF16 runs bf16 matmuls far slower than fp32,
and the table reports that as it is. Without transformers the section is one note row.
"""
from __future__ import annotations

import os
import statistics

import torch

from lit_llm.benchmarks import hf, run_fresh
from lit_llm.benchmarks.common import FP32, check, random_loader, ratio, resolve_device
from lit_llm.benchmarks.training import PlainLoop, interleaved, paired_ratio, peaks, speed_row, task_loss
from lit_llm.models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig
from lit_llm.models.gpt import GPT, GPTConfig
from lit_llm.perf import precision_dtype

MODELS = {"ours": "gpt (ours)", "hf": "GPT2LMHeadModel"}
# `llama`: the same comparison for a Llama-style GPT (RMSNorm, SwiGLU, rotary, GQA) against LlamaForCausalLM
LLAMA_OPTIONS = {"norm": "rmsnorm", "mlp": "swiglu", "pos_embedding": "rope", "bias": False}
# `t5`: a T5-style EncoderDecoder of the model's sizes (relative-position bias, RMSNorm, no biases, unscaled attention
# and embeddings) against T5ForConditionalGeneration; `t5` adds the MLP, the output layer and the lengths
T5_OPTIONS = {"arch": "encoder_decoder", "pos_embedding": "relative", "norm": "rmsnorm", "bias": False,
              "scale_attention": False, "scale_embeddings": False, "tie_embeddings": True, "pad_id": None,
              "ln_eps": 1e-6}
# a BART-style EncoderDecoder (learned positions from row 2, one table per stack, embedding LayerNorm, post-norm,
# biases, logits bias) against BartForConditionalGeneration (the generation section)
BART_OPTIONS = {"arch": "encoder_decoder", "pos_embedding": "learned", "position_offset": 2, "tie_positions": False,
                "embedding_norm": True, "norm": "layernorm", "norm_first": False, "bias": True, "tie_embeddings": True,
                "tie_output": True, "output_bias": True, "activation": "gelu", "ln_eps": 1e-5,
                "scale_embeddings": False}
SEQ2SEQ_INPUTS = ("input_ids", "decoder_input_ids", "attention_mask")


def run(cfg: dict) -> list[dict]:
    if not hf.available():
        return [{"run": "hf_training", "note": hf.SKIPPED}]
    device = resolve_device(cfg.get("device"))
    precisions = [str(p) for p in cfg["precisions"]]
    before, _ = peaks(device, precisions, cfg)
    # each comparison times its runs and returns `rows_of(peak)`: the rows are built once all runs are done and the
    # peak has been probed again (the higher reading counts)
    measured = [compare(cfg, dict(cfg["model"]), "gpt2", MODELS, "", device)]
    if cfg.get("llama"):  # e.g. {n_kv_head: 2, intermediate_size: 688}
        llama_cfg = {**dict(cfg["model"]), **LLAMA_OPTIONS, **dict(cfg["llama"])}
        measured.append(compare(cfg, llama_cfg, "llama",
                                {"ours": "gpt, llama options (ours)", "hf": "LlamaForCausalLM"}, "llama ", device))
    if cfg.get("t5"):  # e.g. {intermediate_size: 1024, activation: geglu, tie_output: false, target_len: 128}
        measured.append(compare_t5(cfg, dict(cfg["t5"]), device))
    peak, peak_rows = peaks(device, precisions, cfg, before)
    return [row for rows_of in measured for row in rows_of(peak)] + peak_rows


def compare(cfg: dict, model_cfg: dict, reference: str, names: dict, prefix: str, device):
    """Times our GPT of `model_cfg` against `REFERENCES[reference](gpt)` (a transformers model with its weights);
    returns `rows_of(peak)`: per precision, tokens/s and MFU of each (median step) and the ratio ours / HF; run
    names start with `prefix`."""
    B, T = int(cfg["batch_size"]), int(cfg.get("seq_len") or model_cfg["block_size"])
    times, steps_of = step_times(cfg, {"reference": reference, "model": model_cfg, "batch_size": B,
                                       "source_len": T}, device)
    with torch.device("meta"):  # same architecture: one FLOPs formula for both models
        gpt = GPT(GPTConfig.from_dict(model_cfg))
    targets = cfg.get("targets") or {}

    def rows_of(peak: dict) -> list[dict]:
        rows = []
        for precision, steps in steps_of.items():
            for which, name in names.items():
                mfu_target = targets.get("mfu_fp32") if which == "ours" and not prefix else None  # ours to meet
                rows.append(speed_row(f"{prefix}{which} plain", name, gpt, precision, B, T, steps,
                                      statistics.median(times[(which, precision)]) * steps, device, peak, mfu_target))
        return rows + ratio_rows(cfg, names, prefix, times, steps_of)

    return rows_of


def compare_t5(cfg: dict, t5: dict, device):
    """`rows_of(peak)` (as `compare`) of our T5-style EncoderDecoder vs T5ForConditionalGeneration with its weights
    (`hf.t5_from`): the model's sizes with T5_OPTIONS and `t5`'s settings; sources of `source_len` (default:
    seq_len or block_size) and targets of `target_len` (default: the source length) tokens."""
    B = int(cfg["batch_size"])
    S = int(t5.pop("source_len", None) or cfg.get("seq_len") or cfg["model"]["block_size"])
    T = int(t5.pop("target_len", None) or S)
    model_cfg = {**dict(cfg["model"]), **T5_OPTIONS, **t5}
    names = {"ours": "encoder_decoder, t5 options (ours)", "hf": "T5ForConditionalGeneration"}

    def build() -> EncoderDecoder:
        return EncoderDecoder(EncoderDecoderConfig.from_dict(model_cfg))

    check_same_logits(build, hf.t5_from, seq2seq_batches(1, 2, min(S, 16), min(T, 16), model_cfg["vocab_size"],
                                                         int(cfg.get("seed", 0))))
    times, steps_of = step_times(cfg, {"reference": "t5", "model": model_cfg, "batch_size": B, "source_len": S,
                                       "target_len": T}, device)
    with torch.device("meta"):
        flops_per_step = B * build().train_flops(S, T)

    def rows_of(peak: dict) -> list[dict]:
        rows = []
        for precision, steps in steps_of.items():
            for which, name in names.items():
                step_s = statistics.median(times[(which, precision)])
                flops = flops_per_step / step_s
                rows.append({"run": f"t5 {which} plain", "model": name, "precision": precision, "batch": B,
                             "seq_len": S, "target_len": T, "steps": steps,
                             "tokens_per_s": round(B * (S + T) / step_s, 1), "step_ms": round(1000 * step_s, 1),
                             "model_gflops": round(flops / 1e9, 1),
                             "mfu": round(flops / peak[precision_dtype(precision, device.type)][0], 3)})
        return rows + ratio_rows(cfg, names, "t5 ", times, steps_of)

    return rows_of


def step_times(cfg: dict, pair: dict, device) -> tuple[dict, dict]:
    """({(which, precision): per-step seconds of its timed steps}, {precision: timed steps}) of the comparison
    `pair` (`timed_pair`'s spec without the precision and loop settings), one precision at a time, each in a fresh
    process unless `cfg["fresh_process"]` is false."""
    precisions = [str(p) for p in cfg["precisions"]]
    steps_of = {p: int(cfg["steps"] if p in FP32 else cfg["bf16_steps"]) for p in precisions}
    times: dict[tuple[str, str], list[float]] = {}
    for precision in precisions:
        spec = {**pair, "precision": precision, "steps": steps_of[precision], "warmup_steps": int(cfg["warmup_steps"]),
                "seed": int(cfg.get("seed", 0)), "optim": dict(cfg["optim"]), "device": str(device),
                "threads": torch.get_num_threads()}
        result = run_fresh(timed_pair, spec) if cfg.get("fresh_process", True) else timed_pair(spec)
        times.update({(which, precision): t for which, t in result["times"].items()})
    return times, steps_of


REFERENCES = {"gpt2": "gpt2_from", "llama": "llama_from", "t5": "t5_from"}  # the transformers copy: hf.<function>


def timed_pair(spec: dict) -> dict:
    """Ours vs its transformers copy at one precision: {"times": {"ours" | "hf": per-step seconds}, "pid"}.
    Ours is built from `spec["model"]` (a GPT, or an EncoderDecoder for reference "t5") and the reference model
    is `hf.<REFERENCES[reference]>(ours)`, both from the same seed, taking turns step by step on the same
    seeded random batches (`training.interleaved`: the machine's drift cancels in the per-step ratios). The GPTs
    each train with their own library's loss (ours: the task's chunked LM-head loss; HF: `labels=` in its
    forward); the encoder-decoders both with the cross-entropy of their logits. spec: reference, model,
    batch_size, source_len (and target_len: encoder-decoder), precision, steps, warmup_steps, seed, optim, device,
    threads (None: PyTorch's default)."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device, precision, seed = torch.device(spec["device"]), spec["precision"], int(spec["seed"])
    warmup, steps, B, S = int(spec["warmup_steps"]), int(spec["steps"]), int(spec["batch_size"]), int(spec["source_len"])
    model_cfg, reference = dict(spec["model"]), getattr(hf, REFERENCES[spec["reference"]])
    n, vocab = warmup + steps, model_cfg["vocab_size"]
    if spec["reference"] == "t5":
        build = lambda: EncoderDecoder(EncoderDecoderConfig.from_dict(model_cfg))  # noqa: E731
        batches = seq2seq_batches(n, B, S, int(spec["target_len"]), vocab, seed)
        losses, forward, inputs = None, hf.seq2seq_logits, SEQ2SEQ_INPUTS
    else:
        build = lambda: GPT(GPTConfig.from_dict(model_cfg))  # noqa: E731
        batches = random_loader(n, B, S, vocab, seed)
        losses, forward, inputs = {"ours": task_loss, "hf": hf.causal_lm_loss}, None, ("input_ids",)
    loops = {}
    for which in ("ours", "hf"):
        torch.manual_seed(seed)
        model = build() if which == "ours" else reference(build())
        loops[which] = PlainLoop(model, device, precision, n, spec["optim"], forward if which == "hf" else None,
                                 inputs=inputs, loss=losses[which](model) if losses else None)
    return {"times": interleaved(loops, batches, warmup, steps, device), "pid": os.getpid()}


def ratio_rows(cfg: dict, names: dict, prefix: str, times: dict, steps_of: dict) -> list[dict]:
    """ours / hf tokens/s per precision, the median of the per-step ratios of the interleaved runs (target
    `<prefix>_ours_vs_hf_<fp32|bf16|fp16>`), and each model's low-precision / fp32 ratio of median step times
    (separate runs; target `bf16_vs_fp32` for our GPT). Same tokens per step for both models."""
    targets, rows = cfg.get("targets") or {}, []
    for precision in steps_of:
        r = round(paired_ratio(times[("hf", precision)], times[("ours", precision)]), 3)
        target = targets.get(f"{prefix.strip() + '_' if prefix else ''}ours_vs_hf_{precision_key(precision)}")
        rows.append({"run": f"{prefix}ours / hf", "precision": precision, "ratio": r, **check("ratio", r, target)})
    fp32 = next((p for p in steps_of if p in FP32), None)
    for precision in (p for p in steps_of if p not in FP32 and fp32):
        for which in names:
            r = ratio(statistics.median(times[(which, fp32)]), statistics.median(times[(which, precision)]))
            target = targets.get("bf16_vs_fp32") if which == "ours" and not prefix else None
            rows.append({"run": f"{prefix}{which} {precision} / {fp32}", "precision": precision, "ratio": r,
                         **check("ratio", r, target)})
    return rows


def precision_key(precision: str) -> str:
    """fp32 / bf16 / fp16: how a target's name says a precision (32-true, bf16-mixed, 16-mixed)."""
    return "fp32" if precision in FP32 else {"bf16": "bf16", "16": "fp16"}.get(precision.split("-")[0], precision)


def seq2seq_batches(num_batches: int, batch_size: int, source_len: int, target_len: int, vocab_size: int,
                    seed: int) -> list[dict]:
    """Seeded random teacher-forcing batches as the seq2seq collator gives them: source ids + an all-ones mask,
    labels, and the decoder input = labels shifted right behind a start id (0)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num_batches):
        src = torch.randint(0, vocab_size, (batch_size, source_len), generator=g)
        labels = torch.randint(0, vocab_size, (batch_size, target_len), generator=g)
        dec = torch.cat([torch.zeros(batch_size, 1, dtype=labels.dtype), labels[:, :-1]], dim=1)
        out.append({"input_ids": src, "attention_mask": torch.ones_like(src), "decoder_input_ids": dec,
                    "labels": labels})
    return out


def check_same_logits(build, reference, batches: list[dict]) -> None:
    """The two models compute the same function (else the speed comparison compares different work)."""
    torch.manual_seed(0)
    ours = build().eval()
    theirs = reference(ours).eval()
    b = batches[0]
    with torch.no_grad():
        mine = ours(b["input_ids"], b["decoder_input_ids"], b["attention_mask"])
        ref = hf.seq2seq_logits(theirs, b["input_ids"], b["decoder_input_ids"], b["attention_mask"])
    diff = (mine - ref).abs().max().item()
    if diff > 1e-4 * max(1.0, ref.abs().max().item()):
        raise RuntimeError(f"our encoder-decoder and its transformers copy differ: max |logits diff| = {diff:.3g}")
