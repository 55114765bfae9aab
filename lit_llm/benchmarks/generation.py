"""Generation speed: new tokens per second with the KV cache vs recomputing the prefix every step,
greedy and beam search, for the GPT and the encoder-decoder (random weights: speed does not depend
on them; `<eos>` is banned so every row generates exactly `new_tokens` tokens)."""
from __future__ import annotations

import time

import torch

from lit_llm.models.encoder_decoder import EncoderDecoder
from lit_llm.models.generation import generate, generate_seq2seq
from lit_llm.models.gpt import GPT

EOS, START, PAD = 3, 2, 0


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(cfg: dict) -> list[dict]:
    torch.manual_seed(0)
    gpt = GPT(dict(cfg["gpt"])).eval()
    s2s = EncoderDecoder(dict(cfg["encoder_decoder"])).eval()
    n, p = int(cfg["new_tokens"]), int(cfg["prompt_tokens"])
    rows = []
    for batch in cfg["batch_sizes"]:
        prompt = torch.randint(7, gpt.config.vocab_size, (batch, p))
        for beams in cfg["num_beams"]:
            for cache in (True, False):
                if beams == 1:  # the GPT decodes greedily (beam search is the encoder-decoder's)
                    def gpt_run():
                        with torch.no_grad():
                            out = generate(gpt, prompt, n, temperature=0.0, use_cache=cache)
                        assert out.shape == (batch, p + n)
                    seconds = _best_of(gpt_run, cfg["repeats"])
                    rows.append({"model": "gpt", "batch": batch, "beams": 1, "kv_cache": cache,
                                 "new_tokens_per_s": round(batch * n / seconds, 1), "seconds": round(seconds, 3)})

                def s2s_run():
                    out = generate_seq2seq(s2s, prompt, torch.ones_like(prompt), start_id=START, eos_id=EOS,
                                           pad_id=PAD, max_new_tokens=n, min_new_tokens=n, num_beams=beams,
                                           use_cache=cache)
                    assert out.shape == (batch, n)
                seconds = _best_of(s2s_run, cfg["repeats"])
                rows.append({"model": "encoder_decoder", "batch": batch, "beams": beams, "kv_cache": cache,
                             "new_tokens_per_s": round(batch * n / seconds, 1), "seconds": round(seconds, 3)})
    by_key = {(r["model"], r["batch"], r["beams"], r["kv_cache"]): r for r in rows}
    for r in rows:
        if r["kv_cache"]:
            r["cache_speedup"] = round(r["new_tokens_per_s"] / by_key[(r["model"], r["batch"], r["beams"], False)]
                                       ["new_tokens_per_s"], 2)
    return rows
