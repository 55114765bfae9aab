"""Generation speed: new tokens per second with the KV cache vs recomputing the prefix every step,
greedy and beam search, for the GPT and the encoder-decoder, and Hugging Face's `generate` on a
`GPT2LMHeadModel` holding the GPT's weights (its KV cache on, as by default).

Random weights: speed does not depend on them. Every row generates exactly `new_tokens` tokens
(`<eos>` is never emitted: our greedy decoder has no eos to stop at, beam search and HF ban it with
min_new_tokens). `vs_hf` (our KV-cache rows) is our new tokens/s over HF's in the same setting.
"""
from __future__ import annotations

import torch

from lit_llm.benchmarks import hf
from lit_llm.benchmarks.common import best_of, check, ratio, resolve_device
from lit_llm.models.decoding import beam_search_gpt, generate, generate_seq2seq
from lit_llm.models.encoder_decoder import EncoderDecoder
from lit_llm.models.gpt import GPT

EOS, START, PAD = 3, 2, 0


def _row(model: str, batch: int, beams: int, cache: bool, n: int, seconds: float) -> dict:
    return {"model": model, "batch": batch, "beams": beams, "kv_cache": cache,
            "new_tokens_per_s": round(batch * n / seconds, 1), "seconds": round(seconds, 3)}


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


def run(cfg: dict) -> list[dict]:
    device = resolve_device(cfg.get("device"))
    torch.manual_seed(int(cfg.get("seed", 0)))
    gpt = GPT(dict(cfg["gpt"])).to(device).eval()
    s2s = EncoderDecoder(dict(cfg["encoder_decoder"])).to(device).eval()
    with_hf = bool(cfg.get("hf", True)) and hf.available()
    hf_gpt = hf.gpt2_from(gpt).eval() if with_hf else None
    n, p, repeats = int(cfg["new_tokens"]), int(cfg["prompt_tokens"]), cfg["repeats"]
    rows = []

    def timed(fn, shape) -> float:
        def once():
            out = fn()
            assert tuple(out.shape) == shape, (tuple(out.shape), shape)  # exactly n new tokens per row
        return best_of(once, repeats, device)

    for batch in cfg["batch_sizes"]:
        prompt = torch.randint(7, gpt.config.vocab_size, (batch, p), device=device)
        for beams in cfg["num_beams"]:
            for cache in (True, False):
                seconds = timed(lambda: _gpt(gpt, prompt, n, beams, cache), (batch, n))
                rows.append(_row("gpt", batch, beams, cache, n, seconds))

                def s2s_run():
                    return generate_seq2seq(s2s, prompt, torch.ones_like(prompt), start_id=START, eos_id=EOS,
                                            pad_id=PAD, max_new_tokens=n, min_new_tokens=n, num_beams=beams,
                                            use_cache=cache)
                rows.append(_row("encoder_decoder", batch, beams, cache, n, timed(s2s_run, (batch, n))))
            if with_hf:
                seconds = timed(lambda: _hf(hf_gpt, prompt, n, beams), (batch, n))
                rows.append(_row("hf_gpt2", batch, beams, True, n, seconds))
    if cfg.get("hf", True) and not with_hf:
        rows.append({"model": "hf_gpt2", "note": hf.SKIPPED})

    by_key = {(r["model"], r["batch"], r["beams"], r["kv_cache"]): r for r in rows if "note" not in r}
    target = (cfg.get("targets") or {}).get("vs_hf")
    for r in rows:
        if "note" in r or not r["kv_cache"]:
            continue
        recompute = by_key.get((r["model"], r["batch"], r["beams"], False))
        if recompute:  # HF has no recompute row
            r["cache_speedup"] = ratio(r["new_tokens_per_s"], recompute["new_tokens_per_s"])
        reference = by_key.get(("hf_gpt2", r["batch"], r["beams"], True))
        if r["model"] == "gpt" and reference:
            r["vs_hf"] = ratio(r["new_tokens_per_s"], reference["new_tokens_per_s"])
            r.update(check("vs_hf", r["vs_hf"], target))
    return rows
