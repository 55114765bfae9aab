"""Generation speed: new tokens per second with the KV cache vs recomputing the prefix every step,
greedy and beam search, for the GPT and the encoder-decoder, and Hugging Face's `generate` on a
`GPT2LMHeadModel` holding the GPT's weights (its KV cache on, as by default). With `llama`, a Llama-style GPT
against `LlamaForCausalLM.generate`; with `hf_seq2seq` ([t5, bart]), a T5-style / BART-style EncoderDecoder of
`encoder_decoder`'s sizes against `T5ForConditionalGeneration` / `BartForConditionalGeneration.generate` holding
its weights (the evaluation setting: our `generate_seq2seq` vs HF's, examples/s).

Random weights: speed does not depend on them. Every row generates exactly `new_tokens` tokens
(`<eos>` is never emitted: our greedy decoder has no eos to stop at, beam search and HF ban it with
min_new_tokens; HF's forced bos/eos are off). `vs_hf` (our KV-cache rows) is our new tokens/s (examples/s: the
same ratio) over HF's in the same setting; target `seq2seq_vs_hf` for the T5/BART rows, `vs_hf` for the others.
"""
from __future__ import annotations

import torch

from lit_llm.benchmarks import hf
from lit_llm.benchmarks.common import best_of, check, ratio, resolve_device
from lit_llm.benchmarks.hf_training import BART_OPTIONS, LLAMA_OPTIONS, T5_OPTIONS
from lit_llm.models.decoding import beam_search_gpt, generate, generate_seq2seq
from lit_llm.models.encoder_decoder import EncoderDecoder
from lit_llm.models.gpt import GPT

EOS, START, PAD = 3, 2, 0
# `hf_seq2seq` families: (our EncoderDecoder options on top of `encoder_decoder`'s sizes, its transformers copy)
SEQ2SEQ_STYLES = {"t5": ({**T5_OPTIONS, "activation": "geglu", "tie_output": False}, "t5_from"),
                  "bart": (BART_OPTIONS, "bart_from")}
# our model's row -> Hugging Face's row in the same setting; the target key of the ratio
REFERENCE = {"gpt": "hf_gpt2", "llama": "hf_llama", "t5": "hf_t5", "bart": "hf_bart"}
TARGET_KEY = {"t5": "seq2seq_vs_hf", "bart": "seq2seq_vs_hf"}


def _row(model: str, batch: int, beams: int, cache: bool, n: int, seconds: float) -> dict:
    return {"model": model, "batch": batch, "beams": beams, "kv_cache": cache,
            "new_tokens_per_s": round(batch * n / seconds, 1), "examples_per_s": round(batch / seconds, 2),
            "seconds": round(seconds, 3)}


@torch.no_grad()
def _gpt(gpt: GPT, prompt: torch.Tensor, n: int, beams: int, cache: bool) -> torch.Tensor:
    if beams == 1:
        return generate(gpt, prompt, n, temperature=0.0, use_cache=cache)[:, prompt.size(1):]
    return beam_search_gpt(gpt, prompt, beams, n, EOS, PAD, min_new_tokens=n, use_cache=cache)


@torch.no_grad()
def _hf(model, prompt: torch.Tensor, n: int, beams: int) -> torch.Tensor:
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                         min_new_tokens=n, num_beams=beams, do_sample=False, use_cache=True,
                         eos_token_id=EOS, pad_token_id=PAD)
    return out[:, prompt.size(1):]


@torch.no_grad()
def _seq2seq(model: EncoderDecoder, src: torch.Tensor, n: int, beams: int, cache: bool = True) -> torch.Tensor:
    return generate_seq2seq(model, src, torch.ones_like(src), start_id=START, eos_id=EOS, pad_id=PAD,
                            max_new_tokens=n, min_new_tokens=n, num_beams=beams, use_cache=cache)


@torch.no_grad()
def _hf_seq2seq(model, src: torch.Tensor, n: int, beams: int) -> torch.Tensor:
    """HF generate with our decoding settings: our start token, exactly n tokens, no forced bos/eos, no length
    penalty, no early stop (the output starts with the start token: dropped)."""
    out = model.generate(input_ids=src, attention_mask=torch.ones_like(src), max_new_tokens=n, min_new_tokens=n,
                         num_beams=beams, do_sample=False, use_cache=True, decoder_start_token_id=START,
                         eos_token_id=EOS, pad_token_id=PAD, forced_bos_token_id=None, forced_eos_token_id=None,
                         length_penalty=1.0, early_stopping=False, no_repeat_ngram_size=0)
    return out[:, 1:]


def hf_pairs(cfg: dict, device: torch.device) -> list[tuple[str, object, object, object]]:
    """(name, our model, its transformers copy, our generate(model, prompt, n, beams)) for `llama` and each
    `hf_seq2seq` family: the same weights (fresh from the seed)."""
    pairs = []
    if cfg.get("llama"):
        torch.manual_seed(int(cfg.get("seed", 0)))
        llama = GPT({**dict(cfg["gpt"]), **LLAMA_OPTIONS, **dict(cfg["llama"])}).to(device).eval()
        pairs.append(("llama", llama, hf.llama_from(llama).eval(), lambda m, x, n, k: _gpt(m, x, n, k, True)))
    for family in cfg.get("hf_seq2seq") or []:
        if family not in SEQ2SEQ_STYLES:
            raise ValueError(f"generation.hf_seq2seq: {family!r} is not one of {list(SEQ2SEQ_STYLES)}")
        options, convert = SEQ2SEQ_STYLES[family]
        torch.manual_seed(int(cfg.get("seed", 0)))
        model = EncoderDecoder({**dict(cfg["encoder_decoder"]), **options}).to(device).eval()
        pairs.append((family, model, getattr(hf, convert)(model).eval(), _seq2seq))
    return pairs


def run(cfg: dict) -> list[dict]:
    device = resolve_device(cfg.get("device"))
    torch.manual_seed(int(cfg.get("seed", 0)))
    gpt = GPT(dict(cfg["gpt"])).to(device).eval()
    s2s = EncoderDecoder(dict(cfg["encoder_decoder"])).to(device).eval()
    with_hf = bool(cfg.get("hf", True)) and hf.available()
    hf_gpt = hf.gpt2_from(gpt).eval() if with_hf else None
    pairs = hf_pairs(cfg, device) if with_hf else []
    n, p, repeats = int(cfg["new_tokens"]), int(cfg["prompt_tokens"]), cfg["repeats"]
    rows = []

    def checked(fn, shape):
        def once():
            out = fn()
            assert tuple(out.shape) == shape, (tuple(out.shape), shape)  # exactly n new tokens per row
        return once

    def timed(fn, shape) -> float:
        return best_of(checked(fn, shape), repeats, device)

    def side_by_side(ours, theirs, shape) -> tuple[float, float]:
        """Best seconds of ours and of HF's, taking turns `repeats` times (the machine's speed drifts)."""
        best = [float("inf"), float("inf")]
        for _ in range(max(1, int(repeats))):
            for i, fn in enumerate((ours, theirs)):
                best[i] = min(best[i], best_of(checked(fn, shape), 1, device))
        return best[0], best[1]

    for batch in cfg["batch_sizes"]:
        prompt = torch.randint(7, gpt.config.vocab_size, (batch, p), device=device)
        for beams in cfg["num_beams"]:
            for cache in (True, False):
                if cache and with_hf:  # our GPT and HF's GPT-2 take turns
                    seconds, hf_seconds = side_by_side(lambda: _gpt(gpt, prompt, n, beams, True),
                                                       lambda: _hf(hf_gpt, prompt, n, beams), (batch, n))
                    rows.append(_row("hf_gpt2", batch, beams, True, n, hf_seconds))
                else:
                    seconds = timed(lambda: _gpt(gpt, prompt, n, beams, cache), (batch, n))
                rows.append(_row("gpt", batch, beams, cache, n, seconds))
                rows.append(_row("encoder_decoder", batch, beams, cache, n,
                                 timed(lambda: _seq2seq(s2s, prompt, n, beams, cache), (batch, n))))
            for name, ours, theirs, ours_generate in pairs:  # ours and HF take turns under the same load
                hf_generate = _hf if name == "llama" else _hf_seq2seq
                seconds, hf_seconds = side_by_side(lambda: ours_generate(ours, prompt, n, beams),
                                                   lambda: hf_generate(theirs, prompt, n, beams), (batch, n))
                rows.append(_row(name, batch, beams, True, n, seconds))
                rows.append(_row(REFERENCE[name], batch, beams, True, n, hf_seconds))
    if cfg.get("hf", True) and not with_hf:
        rows.append({"model": "hf_gpt2", "note": hf.SKIPPED})

    by_key = {(r["model"], r["batch"], r["beams"], r["kv_cache"]): r for r in rows if "note" not in r}
    targets = cfg.get("targets") or {}
    for r in rows:
        if "note" in r or not r["kv_cache"]:
            continue
        recompute = by_key.get((r["model"], r["batch"], r["beams"], False))
        if recompute:  # HF has no recompute row
            r["cache_speedup"] = ratio(r["new_tokens_per_s"], recompute["new_tokens_per_s"])
        reference = by_key.get((REFERENCE.get(r["model"]), r["batch"], r["beams"], True))
        if reference:
            r["vs_hf"] = ratio(r["new_tokens_per_s"], reference["new_tokens_per_s"])
            r.update(check("vs_hf", r["vs_hf"], targets.get(TARGET_KEY.get(r["model"], "vs_hf"))))
    return rows
