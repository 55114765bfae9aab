"""Autoregressive generation: `generate` for the GPT (greedy, temperature / top-k / top-p sampling, KV
cache) and `generate_seq2seq` for the encoder-decoder (the same plus beam search) and `beam_search_gpt`, below.
`stream_tokens` / `stream_seq2seq` yield one row's tokens one at a time (a chat prints them as they come); they
pick exactly the tokens `generate` / `generate_seq2seq` pick for the same seeded generator.

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

from contextlib import closing
from typing import Collection, Iterator

import torch

from lit_llm.models.gpt import GPT


@torch.no_grad()
def generate(
    model: GPT,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Extend `input_ids` (B, T) by up to `max_new_tokens` tokens -> (B, T + new).

    temperature == 0 picks the argmax (greedy); otherwise logits are divided by the temperature
    and, with top_k / top_p, restricted to the k most likely tokens / the nucleus of probability
    top_p before sampling (`filter_logits`). Sampling draws from
    `generator` when given, so a seeded generator reproduces the output without touching the
    global RNG. Once a row emits `eos_id` it keeps emitting it (padding), and generation
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
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] or None")

    if temperature == 0 and eos_id is not None:
        # Greedy with eos: decode_tokens drops finished rows from the batch (early exit), same tokens.
        was_training = model.training
        model.eval()
        try:
            step, reorder = _gpt_decoder(model, input_ids, max_new_tokens, use_cache)
            new = decode_tokens(step, input_ids, max_new_tokens, eos_id, eos_id, reorder=reorder)
        finally:
            model.train(was_training)
        return torch.cat([input_ids, new], dim=1)
    done = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
    out = [input_ids]
    with closing(_gpt_tokens(model, input_ids, max_new_tokens, temperature, top_k, top_p, generator,
                             use_cache)) as tokens:
        for token in tokens:
            if eos_id is not None:  # finished rows keep emitting eos (and feed it back: they no longer matter)
                token.copy_(torch.where(done, torch.full_like(token, eos_id), token))
                done |= token == eos_id
            out.append(token[:, None])
            if eos_id is not None and bool(done.all()):
                break
    return torch.cat(out, dim=1)


@torch.no_grad()
def _gpt_tokens(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int | None,
                top_p: float | None, generator: torch.Generator | None, use_cache: bool) -> Iterator[torch.Tensor]:
    """The decoding loop `generate` and `stream_tokens` share: yields each step's (B,) next tokens, which the
    caller may overwrite in place before they are fed back. KV cache while the sequence fits in block_size,
    then the sliding-window recompute (see the module docstring)."""
    step, _ = _gpt_decoder(model, idx, max_new_tokens, use_cache)
    was_training = model.training
    model.eval()  # no dropout while generating
    try:
        for _ in range(max_new_tokens):
            token = _pick(step(idx).float(), temperature, top_k, generator, top_p)
            yield token
            idx = torch.cat((idx, token[:, None]), dim=1)
    finally:
        model.train(was_training)


def _gpt_decoder(model: GPT, idx: torch.Tensor, max_new_tokens: int, use_cache: bool):
    """(step, reorder) of the GPT for `decode_tokens`: the logits `_gpt_tokens` computes (KV cache while the
    sequence fits in block_size, then the sliding window); `reorder(rows)` keeps cache rows `rows`."""
    block_size = model.config.block_size
    B, T = idx.shape
    cache = None
    if use_cache and T <= block_size and max_new_tokens > 0:
        # Room for every token whose logits we will need while the sequence still fits.
        cache = model.new_kv_cache(B, max_len=min(block_size, T + max_new_tokens - 1))

    def step(tokens: torch.Tensor) -> torch.Tensor:
        if cache is not None and tokens.size(1) <= cache.max_len:
            # Feed only what the cache has not seen: the prompt first, then one token.
            return model(tokens[:, cache.length:], kv_cache=cache)[:, -1, :]
        return model(tokens[:, -block_size:])[:, -1, :]

    def reorder(rows: torch.Tensor) -> None:
        if cache is not None:
            cache.reorder(rows)

    return step, reorder


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None,
          generator: torch.Generator | None, top_p: float | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) next tokens: the argmax, or a sample after temperature, top-k and top-p."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def stream_tokens(model: GPT, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, stop_ids: Collection[int] = (),
                  generator: torch.Generator | None = None, use_cache: bool = True) -> Iterator[int]:
    """`generate` for one (1, T) prompt, token by token: yields each new token id as soon as it is picked, the
    same tokens `generate(model, input_ids, max_new_tokens, temperature, top_k, eos_id, use_cache, generator,
    top_p)` appends (KV cache while the sequence fits, then the sliding window). Ends after yielding a token of
    `stop_ids` (eos, a chat template's end of turn) or `max_new_tokens` tokens. Arguments are checked at the call,
    not at the first `next`."""
    if input_ids.dim() != 2 or input_ids.size(0) != 1 or input_ids.size(1) == 0:
        raise ValueError(f"input_ids must be one row (1, seq_len >= 1), got {tuple(input_ids.shape)}")
    if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k <= 0) or \
            (top_p is not None and not 0 < top_p <= 1):
        raise ValueError(f"max_new_tokens={max_new_tokens} >= 0, temperature={temperature} >= 0, top_k={top_k} "
                         f"> 0 or None and top_p={top_p} in (0, 1] or None are required")
    return _stream_gpt(model, input_ids, max_new_tokens, temperature, top_k, top_p, frozenset(stop_ids),
                       generator, use_cache)


def _stream_gpt(model, idx, max_new_tokens, temperature, top_k, top_p, stop_ids, generator, use_cache):
    with closing(_gpt_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache)) as tokens:
        for token in tokens:
            yield int(token)
            if int(token) in stop_ids:
                return


# ----------------------------------------------------------------------------------------------
# Decoding for any model behind a step function (the encoder-decoder; the GPT through `generate`).
#
# `step(tokens)` gets every decoder token so far (N, t), starting with the decoder-start token,
# and returns the logits of the next token (N, V); with a KV cache it feeds only the tokens the
# cache has not seen. `reorder(index)` keeps cache rows `index` (the parents of surviving beams).

GENERATION_OPTIONS = ("max_new_tokens", "min_new_tokens", "num_beams", "temperature", "top_k", "top_p",
                      "length_penalty", "early_stopping", "no_repeat_ngram_size", "use_cache")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Keep the `top_k` most likely tokens and/or the smallest set whose probability reaches
    `top_p` (nucleus sampling, Holtzman et al. 2020); the rest get -inf. (N, V) -> (N, V)."""
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # the mass before this token already >= p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def ban_repeated_ngrams(tokens: torch.Tensor, logits: torch.Tensor, n: int) -> torch.Tensor:
    """-inf for every token that would repeat an n-gram already in its row of `tokens` (N, t)."""
    t = tokens.shape[1]
    if n <= 0 or t < n:
        return logits
    if n == 1:
        return logits.scatter(1, tokens, float("-inf"))
    windows = tokens.unfold(1, n - 1, 1)[:, :-1]          # (N, t-n+1, n-1): every earlier (n-1)-gram
    match = (windows == tokens[:, None, t - n + 1 :]).all(-1)  # ... equal to the current last n-1 tokens
    rows, starts = match.nonzero(as_tuple=True)
    banned = tokens[rows, starts + n - 1]                 # the token that followed each match
    return logits.index_put((rows, banned), torch.tensor(float("-inf"), device=logits.device))


def _check_options(num_beams, temperature, top_k, top_p, max_new_tokens, min_new_tokens, length_penalty) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
    if not isinstance(min_new_tokens, int) or not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"min_new_tokens={min_new_tokens!r} must be in [0, max_new_tokens={max_new_tokens}]")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams={num_beams!r} must be a positive integer")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and (not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k={top_k!r} must be a positive integer or None")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] or None")
    if num_beams > 1 and temperature > 0:
        raise ValueError("beam search is deterministic: use temperature=0 with num_beams > 1")


def decode_tokens(step, start: torch.Tensor, max_new_tokens: int, eos_id: int, pad_id: int, *,
                  temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                  min_new_tokens: int = 0, no_repeat_ngram_size: int = 0,
                  generator: torch.Generator | None = None, reorder=None) -> torch.Tensor:
    """Greedy (temperature 0) or sampled decoding, batched: (N, P) start tokens -> (N, L) new
    tokens, L <= max_new_tokens; a row that emitted `eos_id` is padded with `pad_id` and decoding
    stops when every row has.

    Early exit: with `reorder` (the step's cache follows `reorder(rows)`, as in beam search), greedy
    decoding drops finished rows from the step batch once at least a quarter of the rows in it have
    finished (compacting costs an index_select of the cache, so not at every finished row); their
    remaining tokens are pad, as without compaction. Sampling never compacts: multinomial over fewer
    rows would draw a different random stream, and seeded samples must stay as they were."""
    N, P = start.shape
    out = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=start.device)
    rows = torch.arange(N, device=start.device)  # the row of `out` of each row in the step batch
    tokens = start                               # the step batch's tokens so far
    done = torch.zeros(N, dtype=torch.bool, device=start.device)
    compact = reorder is not None and temperature == 0
    steps = 0
    for t in range(max_new_tokens):
        steps = t + 1
        logits = step(tokens).float()
        if t < min_new_tokens:
            logits[:, eos_id] = float("-inf")
        logits = ban_repeated_ngrams(tokens, logits, no_repeat_ngram_size)
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        done |= nxt == eos_id
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        out[rows, t] = nxt
        n_done = int(done.sum())
        if n_done == len(done):
            break
        if compact and 4 * n_done >= len(done) and t + 1 < max_new_tokens:
            running = (~done).nonzero().squeeze(1)
            reorder(running)
            tokens, rows, done = tokens.index_select(0, running), rows.index_select(0, running), done[running]
    return out[:, :steps]


def beam_search(step, reorder, start: torch.Tensor, num_beams: int, max_new_tokens: int, eos_id: int,
                pad_id: int, *, length_penalty: float = 1.0, early_stopping: bool = False,
                min_new_tokens: int = 0, no_repeat_ngram_size: int = 0) -> torch.Tensor:
    """Beam search from (B, P) start tokens (a decoder-start token, or a GPT's prompt) -> (B, L) best
    new tokens per row (pad after eos).

    Each step keeps the `num_beams` best continuations of every row (by summed log-probability);
    a beam that emits eos among them becomes a finished hypothesis scored sum / length**length_penalty
    (length = its new tokens, eos included). A row is done when it has num_beams finished
    hypotheses and (early_stopping) at once, or (otherwise) when no running beam can still beat the
    worst finished one. Rows still running at max_new_tokens finish with their beams.
    """
    B, K = start.size(0), num_beams
    P = start.size(1)  # tokens before the generated ones
    device = start.device
    tokens = start.repeat_interleave(K, dim=0)                        # (B*K, 1)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")                                     # all beams start equal: expand one
    scores = scores.view(-1)
    finished: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(B)]
    done = [False] * B
    steps = 0
    for t in range(max_new_tokens):
        steps = t + 1
        logp = torch.log_softmax(step(tokens).float(), dim=-1)       # (B*K, V)
        if t < min_new_tokens:
            logp[:, eos_id] = float("-inf")
        logp = ban_repeated_ngrams(tokens, logp, no_repeat_ngram_size)
        V = logp.size(-1)
        cand = (scores[:, None] + logp).view(B, K * V)
        top_scores, top_idx = cand.topk(2 * K, dim=1)                # (B, 2K), best first
        top_rows = top_idx // V + torch.arange(0, B * K, K, device=device)[:, None]  # parent beam of each
        top_tokens = top_idx % V
        is_eos = top_tokens == eos_id
        # The beams kept: the first K non-eos candidates of each row, in topk order. Each parent beam has one
        # eos candidate at most, so 2K candidates always hold K non-eos ones; a stable sort on the eos flag
        # brings them to the front. A -inf pick (fewer than K finite candidates) and every beam of a row
        # already done leave their slot as it is at the start: -inf score, its own row, pad.
        keep = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :K]
        next_scores = top_scores.gather(1, keep)
        was_done = torch.tensor(done, device=device)
        empty = (next_scores == float("-inf")) | was_done[:, None]
        next_scores = next_scores.masked_fill(empty, float("-inf"))
        next_rows = torch.where(empty, torch.arange(B * K, device=device).view(B, K), top_rows.gather(1, keep))
        next_tokens = torch.where(empty, torch.full_like(top_tokens[:, :K], pad_id), top_tokens.gather(1, keep))
        # Finished hypotheses: the finite eos candidates ranked < K (an eos outside the top K is not a better
        # hypothesis than the beams kept) of rows still running, in row and rank order: the only Python work.
        eos_b, eos_rank = (is_eos[:, :K] & (top_scores[:, :K] != float("-inf")) & ~was_done[:, None]).nonzero(
            as_tuple=True)
        if len(eos_b):
            eos_parents = top_rows[eos_b, eos_rank].tolist()
            for b, parent, score in zip(eos_b.tolist(), eos_parents, top_scores[eos_b, eos_rank].tolist()):
                seq = torch.cat([tokens[parent, P:], tokens.new_tensor([eos_id])])
                finished[b].append((score / steps ** length_penalty, seq))
                finished[b].sort(key=lambda h: -h[0])
                del finished[b][K:]
        full = [b for b in range(B) if not done[b] and len(finished[b]) == K]
        if full:
            best_scores = next_scores.max(dim=1).values.tolist()
            for b in full:
                best_running = best_scores[b] / steps ** length_penalty
                done[b] = early_stopping or finished[b][-1][0] >= best_running
        if all(done):
            break
        rows = next_rows.view(-1)
        tokens = torch.cat([tokens.index_select(0, rows), next_tokens.view(-1, 1)], dim=1)
        scores = next_scores.view(-1)
        reorder(rows)
    best = []
    for b in range(B):
        hyps = list(finished[b])
        if not done[b]:  # max_new_tokens reached: the running beams compete too
            for k in range(K):
                s = scores[b * K + k].item()
                if s != float("-inf"):
                    hyps.append((s / steps ** length_penalty, tokens[b * K + k, P:]))
        best.append(max(hyps, key=lambda h: h[0])[1] if hyps else tokens.new_zeros(0))
    width = max(len(s) for s in best)
    out = torch.full((B, width), pad_id, dtype=torch.long, device=device)
    for b, seq in enumerate(best):
        out[b, : len(seq)] = seq
    return out


@torch.no_grad()
def generate_seq2seq(model, src_ids: torch.Tensor, src_mask: torch.Tensor | None, *, start_id: int, eos_id: int,
                     pad_id: int, max_new_tokens: int = 64, min_new_tokens: int = 0, num_beams: int = 1,
                     temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                     length_penalty: float = 1.0, early_stopping: bool = False, no_repeat_ngram_size: int = 0,
                     use_cache: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Generate target tokens for a batch of sources with an `EncoderDecoder`: (B, S) -> (B, L).

    The encoder runs once. use_cache=True: the decoder's self-attention keys/values grow by one
    position per step and the cross-attention keys/values are computed once; use_cache=False
    recomputes the decoder over the whole prefix every step (the reference: same tokens, slower)."""
    _check_options(num_beams, temperature, top_k, top_p, max_new_tokens, min_new_tokens, length_penalty)
    max_new_tokens = min(max_new_tokens, model.config.block_size - 1)
    was_training = model.training
    model.eval()
    try:
        step, reorder = _seq2seq_decoder(model, src_ids, src_mask, num_beams, max_new_tokens, use_cache)
        start = torch.full((src_ids.size(0), 1), start_id, dtype=torch.long, device=src_ids.device)
        if num_beams > 1:
            return beam_search(step, reorder, start, num_beams, max_new_tokens, eos_id, pad_id,
                               length_penalty=length_penalty, early_stopping=early_stopping,
                               min_new_tokens=min_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size)
        return decode_tokens(step, start, max_new_tokens, eos_id, pad_id, temperature=temperature, top_k=top_k,
                             top_p=top_p, min_new_tokens=min_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size,
                             generator=generator, reorder=reorder)
    finally:
        model.train(was_training)


def _seq2seq_decoder(model, src_ids: torch.Tensor, src_mask: torch.Tensor | None, num_beams: int,
                     max_new_tokens: int, use_cache: bool):
    """(step, reorder) of an encoder-decoder for these sources: the encoder runs once, here."""
    memory = model.encode(src_ids, src_mask)
    if num_beams > 1:
        memory = memory.repeat_interleave(num_beams, dim=0)
        src_mask = None if src_mask is None else src_mask.repeat_interleave(num_beams, dim=0)
    state = {"memory": memory, "mask": src_mask}
    cache = model.new_cache(memory, src_mask, max_len=max_new_tokens + 1) if use_cache else None

    def step(tokens: torch.Tensor) -> torch.Tensor:
        if cache is not None:
            return model.decode(tokens[:, cache.length :], cache=cache)[:, -1]
        return model.decode(tokens, state["memory"], state["mask"])[:, -1]

    def reorder(rows: torch.Tensor) -> None:
        if cache is not None:  # beam search permutes beams of the same source: their cross-attention stays
            cache.reorder(rows, memory=num_beams == 1)
        else:
            state["memory"] = state["memory"].index_select(0, rows)
            state["mask"] = None if state["mask"] is None else state["mask"].index_select(0, rows)

    return step, reorder


def stream_seq2seq(model, src_ids: torch.Tensor, src_mask: torch.Tensor | None, *, start_id: int,
                   stop_ids: Collection[int], max_new_tokens: int = 64, min_new_tokens: int = 0,
                   temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                   no_repeat_ngram_size: int = 0, use_cache: bool = True,
                   generator: torch.Generator | None = None) -> Iterator[int]:
    """`generate_seq2seq` (greedy or sampled, not beam search) for one (1, S) source, token by token: yields the
    tokens it generates with eos_id in `stop_ids`, ending after a token of `stop_ids` (min_new_tokens bans them
    all) or at max_new_tokens (capped at block_size - 1)."""
    _check_options(1, temperature, top_k, top_p, max_new_tokens, min_new_tokens, 1.0)
    if src_ids.dim() != 2 or src_ids.size(0) != 1:
        raise ValueError(f"src_ids must be one row (1, src_len), got {tuple(src_ids.shape)}")
    return _stream_seq2seq(model, src_ids, src_mask, start_id, frozenset(stop_ids),
                           min(max_new_tokens, model.config.block_size - 1), min_new_tokens, temperature, top_k,
                           top_p, no_repeat_ngram_size, use_cache, generator)


@torch.no_grad()
def _stream_seq2seq(model, src_ids, src_mask, start_id, stop_ids, max_new_tokens, min_new_tokens, temperature,
                    top_k, top_p, no_repeat_ngram_size, use_cache, generator):
    was_training = model.training
    model.eval()
    try:
        step, _ = _seq2seq_decoder(model, src_ids, src_mask, 1, max_new_tokens, use_cache)
        tokens = torch.full((1, 1), start_id, dtype=torch.long, device=src_ids.device)
        for t in range(max_new_tokens):  # as decode_tokens, one row
            logits = step(tokens).float()
            if t < min_new_tokens:
                logits[:, list(stop_ids)] = float("-inf")
            logits = ban_repeated_ngrams(tokens, logits, no_repeat_ngram_size)
            token = _pick(logits, temperature, top_k, generator, top_p)
            tokens = torch.cat([tokens, token[:, None]], dim=1)
            yield int(token)
            if int(token) in stop_ids:
                return
    finally:
        model.train(was_training)


@torch.no_grad()
def beam_search_gpt(model: GPT, input_ids: torch.Tensor, num_beams: int, max_new_tokens: int, eos_id: int,
                    pad_id: int, *, length_penalty: float = 1.0, early_stopping: bool = False,
                    min_new_tokens: int = 0, no_repeat_ngram_size: int = 0, use_cache: bool = True) -> torch.Tensor:
    """Beam search for the GPT: (B, T) prompts (one length) -> (B, L) best continuations (pad after eos).
    With use_cache the beams share one KV cache whose rows follow their parents (`KVCache.reorder`)."""
    _check_options(num_beams, 0.0, None, None, max_new_tokens, min_new_tokens, length_penalty)
    B, T = input_ids.shape
    if T + max_new_tokens > model.config.block_size:
        raise ValueError(f"beam search needs prompt + max_new_tokens ({T} + {max_new_tokens}) to fit in "
                         f"block_size={model.config.block_size}")
    was_training = model.training
    model.eval()
    try:
        cache = model.new_kv_cache(B * num_beams, max_len=T + max_new_tokens) if use_cache else None

        def step(tokens: torch.Tensor) -> torch.Tensor:
            if cache is not None:
                return model(tokens[:, cache.length :], kv_cache=cache)[:, -1]
            return model(tokens)[:, -1]

        def reorder(rows: torch.Tensor) -> None:
            if cache is not None:
                cache.reorder(rows)

        return beam_search(step, reorder, input_ids, num_beams, max_new_tokens, eos_id, pad_id,
                           length_penalty=length_penalty, early_stopping=early_stopping,
                           min_new_tokens=min_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size)
    finally:
        model.train(was_training)
