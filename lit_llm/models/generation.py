"""Autoregressive generation for `GPT`: greedy, temperature and top-k sampling, KV cache.

Two paths compute the same tokens:
- `use_cache=False` (the reference): every step re-runs the model on the whole sequence,
  cropped to the last `block_size` tokens. O(T^2) work per step but obviously right.
- `use_cache=True`: run the prompt once to fill a KV cache, then feed one token per step.

Past the context window the two cannot agree: the reference slides the window, so every token
moves to a new position, while cached keys were computed at their old positions. So the cached
path is used while the whole sequence fits in `block_size`, and generation falls back to the
sliding-window recompute for the remaining steps. Results then still equal the reference,
only slower once the context is full.
"""
from __future__ import annotations

import torch

from lit_llm.models.gpt import GPT


@torch.no_grad()
def generate(
    model: GPT,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_token_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend `input_ids` (B, T) by up to `max_new_tokens` tokens -> (B, T + new).

    temperature == 0 picks the argmax (greedy); otherwise logits are divided by the temperature
    and, with top_k, restricted to the k most likely tokens before sampling. Sampling draws from
    `generator` when given, so a seeded generator reproduces the output without touching the
    global RNG. Once a row emits `eos_token_id` it keeps emitting it (padding), and generation
    stops early, returning fewer than max_new_tokens new tokens, when every row has finished.
    """
    if input_ids.dim() != 2 or input_ids.size(1) == 0:
        raise ValueError(f"input_ids must be (batch, seq_len) with seq_len >= 1, got {tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k={top_k} must be a positive integer or None")

    block_size = model.config.block_size
    B, T = input_ids.shape
    idx = input_ids
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)

    cache = None
    if use_cache and T <= block_size and max_new_tokens > 0:
        # Room for every token whose logits we will need while the sequence still fits.
        cache = model.new_kv_cache(B, max_len=min(block_size, T + max_new_tokens - 1))

    was_training = model.training
    model.eval()  # no dropout while generating
    try:
        for _ in range(max_new_tokens):
            if cache is not None and idx.size(1) <= cache.max_len:
                # Feed only what the cache has not seen: the prompt first, then one token.
                logits = model(idx[:, cache.length:], kv_cache=cache)[:, -1, :]
            else:
                logits = model(idx[:, -block_size:])[:, -1, :]
            next_token = _pick(logits.float(), temperature, top_k, generator)
            if eos_token_id is not None:
                next_token = torch.where(done, torch.full_like(next_token, eos_token_id), next_token)
                done |= next_token == eos_token_id
            idx = torch.cat((idx, next_token[:, None]), dim=1)
            if eos_token_id is not None and bool(done.all()):
                break
    finally:
        model.train(was_training)
    return idx


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) next tokens."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        k = min(top_k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
