"""Vectorized beam search and early exit of finished rows (greedy decoding compacts the batch): both must give
exactly the tokens of the previous implementations, copied here as references (`_reference_*`)."""
from __future__ import annotations

from contextlib import closing

import pytest
import torch

from lit_llm.models import GPT, GPTConfig, decoding, generate
from lit_llm.models.decoding import ban_repeated_ngrams, beam_search, decode_tokens, filter_logits, generate_seq2seq
from lit_llm.models.encoder_decoder import EncoderDecoder

# ---------------------------------------------------------------------------------------------
# References: the implementations before vectorization / compaction, verbatim.

def _reference_decode_tokens(step, start: torch.Tensor, max_new_tokens: int, eos_id: int, pad_id: int, *,
                             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                             min_new_tokens: int = 0, no_repeat_ngram_size: int = 0,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    tokens = start
    done = torch.zeros(start.size(0), dtype=torch.bool, device=start.device)
    for t in range(max_new_tokens):
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
        if bool(done.all()):
            break
    return tokens[:, start.size(1):]


@torch.no_grad()
def _reference_generate(model, input_ids, max_new_tokens, temperature=1.0, top_k=None, eos_id=None,
                        use_cache=True, generator=None, top_p=None):
    done = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
    out = [input_ids]
    with closing(decoding._gpt_tokens(model, input_ids, max_new_tokens, temperature, top_k, top_p, generator,
                                      use_cache)) as tokens:
        for token in tokens:
            if eos_id is not None:
                token.copy_(torch.where(done, torch.full_like(token, eos_id), token))
                done |= token == eos_id
            out.append(token[:, None])
            if eos_id is not None and bool(done.all()):
                break
    return torch.cat(out, dim=1)


def _reference_beam_search(step, reorder, start: torch.Tensor, num_beams: int, max_new_tokens: int, eos_id: int,
                           pad_id: int, *, length_penalty: float = 1.0, early_stopping: bool = False,
                           min_new_tokens: int = 0, no_repeat_ngram_size: int = 0) -> torch.Tensor:
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
        top_scores, top_idx = cand.topk(2 * K, dim=1)
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
        next_scores = torch.full((B, K), float("-inf"), device=device)
        next_rows = torch.arange(B * K, device=device).view(B, K).clone()
        next_tokens = torch.full((B, K), pad_id, dtype=torch.long, device=device)
        for b in range(B):
            if done[b]:
                continue
            k = 0
            for rank, (score, idx) in enumerate(zip(top_scores[b], top_idx[b])):
                if score == float("-inf"):
                    break
                parent, token = b * K + idx // V, idx % V
                if token == eos_id:
                    if rank < K:  # an eos outside the top K is not a better hypothesis than the beams kept
                        seq = torch.cat([tokens[parent, P:], tokens.new_tensor([eos_id])])
                        finished[b].append((score / steps ** length_penalty, seq))
                        finished[b].sort(key=lambda h: -h[0])
                        del finished[b][K:]
                    continue
                next_scores[b, k], next_rows[b, k], next_tokens[b, k] = score, parent, token
                k += 1
                if k == K:
                    break
            if len(finished[b]) == K:
                best_running = next_scores[b].max().item() / steps ** length_penalty
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


# ---------------------------------------------------------------------------------------------
# A model-free step: the logits of a row depend only on its tokens (seeded by them), so beams that follow their
# parents see the same logits in both implementations. eos is boosted to be often among the top candidates;
# `ties` rounds the logits so that equal scores (topk order) occur; `holes` bans some tokens (-inf logits).

def random_step(V: int, eos_id: int, seed: int, eos_boost: float = 1.5, ties: bool = False, holes: bool = False):
    calls = []

    def step(tokens: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(tokens.shape))
        rows = []
        for row in tokens.tolist():
            g = torch.Generator().manual_seed(hash((seed, *row)) % (2 ** 31))
            logits = torch.randn(V, generator=g) * 2
            if ties:
                logits = logits.round()
            if holes:
                logits[torch.rand(V, generator=g) < 0.3] = float("-inf")
                logits[eos_id if torch.rand(1, generator=g) < 0.5 else (eos_id + 1) % V] = 0.0  # one finite at least
            rows.append(logits)
        out = torch.stack(rows)
        out[:, eos_id] += eos_boost
        return out

    step.calls = calls
    return step


def _beam_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    pick = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    B, K, V, P = pick(1, 5), pick(2, 5), pick(3, 9), pick(1, 3)
    eos_id = pick(0, V - 1)
    max_new = pick(1, 9)
    kw = dict(length_penalty=[1.0, 0.6, 1.7, 0.0, -0.5][pick(0, 4)], early_stopping=bool(pick(0, 1)),
              min_new_tokens=pick(0, min(2, max_new)), no_repeat_ngram_size=pick(0, 3))
    step = dict(V=V, eos_id=eos_id, seed=seed, eos_boost=[0.0, 1.5, 3.0][pick(0, 2)], ties=bool(pick(0, 1)),
                holes=pick(0, 3) == 0)
    start = torch.randint(0, V, (B, P), generator=g)
    return B, K, max_new, eos_id, start, kw, step


@pytest.mark.parametrize("chunk", range(4))
def test_beam_search_equals_reference_on_random_logits(chunk):
    """400 random cases: batch 1-5, 2-5 beams, eos often on top, ties, -inf logits, every option."""
    for seed in range(chunk * 100, chunk * 100 + 100):
        B, K, max_new, eos_id, start, kw, step_kw = _beam_case(seed)
        pad_id = (eos_id + 1) % step_kw["V"]
        runs = []
        for search in (_reference_beam_search, beam_search):
            step, reorders = random_step(**step_kw), []
            out = search(step, reorders.append, start, K, max_new, eos_id, pad_id, **kw)
            runs.append((out, step.calls, [r.tolist() for r in reorders]))
        (ref, ref_calls, ref_rows), (out, calls, rows) = runs
        assert torch.equal(out, ref) and out.dtype == ref.dtype, (seed, kw, step_kw, out, ref)
        assert calls == ref_calls and rows == ref_rows, seed  # same steps, same cache reorders


def test_beam_search_equals_reference_with_a_model_and_cache():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    x = torch.randint(0, 40, (4, 5), generator=torch.Generator().manual_seed(1))
    for eos_id, lp, es in [(7, 1.0, False), (int(model(x)[:, -1].argmax(-1)[0]), 0.8, True)]:
        outs = []
        for search in (_reference_beam_search, beam_search):
            old, decoding.beam_search = decoding.beam_search, search
            try:
                outs.append(decoding.beam_search_gpt(model, x, 3, 10, eos_id, 0, length_penalty=lp, early_stopping=es,
                                                     no_repeat_ngram_size=2))
            finally:
                decoding.beam_search = old
        assert torch.equal(outs[0], outs[1])


# ---------------------------------------------------------------------------------------------
# Early exit: greedy decoding drops finished rows from the step batch; the tokens stay those of the reference.

@pytest.mark.parametrize("seed", range(60))
def test_decode_tokens_compaction_equals_reference_on_random_logits(seed):
    g = torch.Generator().manual_seed(seed)
    N, V, P, max_new = int(torch.randint(1, 9, (1,), generator=g)), 6, 2, int(torch.randint(1, 12, (1,), generator=g))
    eos_id, pad_id = 1, 0
    start = torch.randint(0, V, (N, P), generator=g)
    kw = dict(min_new_tokens=seed % 3 if seed % 3 <= max_new else 0, no_repeat_ngram_size=seed % 4)
    ref = _reference_decode_tokens(random_step(V, eos_id, seed, eos_boost=0.8), start, max_new, eos_id, pad_id, **kw)
    step, kept = random_step(V, eos_id, seed, eos_boost=0.8), []
    out = decode_tokens(step, start, max_new, eos_id, pad_id, reorder=kept.append, **kw)
    assert torch.equal(out, ref) and out.dtype == ref.dtype, (seed, out, ref)
    sizes = [shape[0] for shape in step.calls]
    assert sizes == sorted(sizes, reverse=True) and len(kept) == sum(a != b for a, b in zip(sizes, sizes[1:]))


def test_decode_tokens_compacts_only_when_a_quarter_finished_and_never_when_sampling():
    """Rows 0..7 emit eos at steps 1, 2, ..., 8 (eos when the row has t new tokens and t == its row id + 1)."""
    V, eos_id, N = 5, 4, 8

    def step(tokens):
        step.sizes.append(tokens.size(0))
        logits = torch.zeros(tokens.size(0), V)
        t = tokens.size(1) - 1
        finish = tokens[:, 0] == t  # the first token says when to finish
        logits[:, 2] = 1.0
        logits[finish, eos_id] = 2.0
        return logits

    start = torch.arange(N)[:, None]
    step.sizes = []
    ref = _reference_decode_tokens(step, start, 12, eos_id, 0)
    step.sizes, kept = [], []
    out = decode_tokens(step, start, 12, eos_id, 0, reorder=kept.append)
    assert torch.equal(out, ref) and out.shape == (8, 8)
    assert (out.diagonal() == eos_id).all() and (out.triu(1) == 0).all()  # pad after eos
    # 8 running: compact after 2 finished (steps 1-2) -> 6; after 2 more -> 4; after 1 -> 3; 1 -> 2; 1 -> 1
    assert step.sizes == [8, 8, 6, 6, 4, 3, 2, 1] and [len(r) for r in kept] == [6, 4, 3, 2, 1]
    assert [r.tolist() for r in kept][:2] == [[2, 3, 4, 5, 6, 7], [2, 3, 4, 5]]  # positions in the step batch
    step.sizes, kept = [], []
    a = decode_tokens(step, start, 12, eos_id, 0, temperature=1.0, reorder=kept.append,
                      generator=torch.Generator().manual_seed(3))
    b = _reference_decode_tokens(step, start, 12, eos_id, 0, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not kept  # sampling keeps every row: the seeded random stream is unchanged


def _gpt(**overrides) -> GPT:
    """A tiny random GPT plus a random bigram bias on its logits (a function of each fed token, so the same with
    or without cache): alone, its greedy rows collapse into repeating one token and rarely finish apart."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**dict(vocab_size=23, block_size=32, n_layer=2, n_head=2, n_embd=32), **overrides}))
    bigram = torch.randn(23, 23, generator=torch.Generator().manual_seed(2))
    model.register_forward_hook(lambda m, args, out: out + bigram[args[0]])
    return model.eval()


def _staggered_eos(greedy: torch.Tensor, start: int) -> int:
    """A token that the greedy continuations (B, L) emit first at several different steps (rows finish apart)."""
    best, best_spread = None, 0
    for v in range(int(greedy.max()) + 1):
        first = [(row[start:] == v).nonzero()[0].item() for row in greedy if (row[start:] == v).any()]
        if len(set(first)) > best_spread:
            best, best_spread = v, len(set(first))
    assert best_spread >= 3
    return best


@pytest.mark.parametrize("pos,use_cache,T", [("learned", True, 4), ("rope", True, 4), ("rope", False, 4),
                                             ("learned", True, 20)])
def test_gpt_greedy_generate_with_early_exit_equals_reference(pos, use_cache, T):
    """T=20 + 20 new tokens > block_size 32: the cached path hands over to the sliding window after compacting."""
    model = _gpt(pos_embedding=pos)
    x = torch.randint(0, 23, (8, T), generator=torch.Generator().manual_seed(1))
    eos = _staggered_eos(_reference_generate(model, x, 20, temperature=0), T)
    ref = _reference_generate(model, x, 20, temperature=0, eos_id=eos, use_cache=use_cache)
    sizes = []
    hook = model.register_forward_hook(lambda m, args, out: sizes.append(out.size(0)))
    try:
        out = generate(model, x, 20, temperature=0, eos_id=eos, use_cache=use_cache)
    finally:
        hook.remove()
    assert torch.equal(out, ref)
    assert sizes[-1] < 8  # finished rows were dropped
    # sampling is untouched: the same seeded tokens as before
    a = generate(model, x, 12, temperature=1.0, eos_id=eos, generator=torch.Generator().manual_seed(5))
    b = _reference_generate(model, x, 12, temperature=1.0, eos_id=eos, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("use_cache", [True, False])
def test_seq2seq_greedy_with_early_exit_equals_reference(use_cache):
    torch.manual_seed(0)
    model = EncoderDecoder(dict(vocab_size=50, block_size=32, n_layer=2, n_decoder_layer=2, n_head=2, n_embd=32,
                                dropout=0.0)).eval()
    g = torch.Generator().manual_seed(1)
    src = torch.randint(7, 50, (8, 7), generator=g)
    mask = torch.ones(8, 7, dtype=torch.long)
    for b, n in enumerate([7, 4, 6, 3, 7, 5, 2, 6]):
        mask[b, n:] = 0
    src = src.masked_fill(mask == 0, 0)
    # The tiny model alone repeats the start token in every row: bias its logits by the fed token (a bigram) and
    # by the source length, read from the source mask that the cache (or the recompute) carries for each row,
    # so that rows differ, finish apart, and a row-order mistake in compaction changes the tokens.
    decode, bigram = model.decode, torch.randn(50, 50, generator=torch.Generator().manual_seed(4)) * 3
    bigram.fill_diagonal_(-20.0)  # ... and it prefers the token it was fed
    by_length = torch.randn(8, 50, generator=torch.Generator().manual_seed(5))

    def biased_decode(tgt, memory=None, src_mask=None, cache=None):
        lengths = src_mask.sum(1) if cache is None else (cache.memory_bias[:, 0, 0] == 0).sum(1)
        return decode(tgt, memory, src_mask, cache=cache) + bigram[tgt] + by_length[lengths][:, None]

    model.decode = biased_decode
    kw = dict(start_id=2, pad_id=0, max_new_tokens=20)
    with torch.no_grad():
        step, _ = decoding._seq2seq_decoder(model, src, mask, 1, 20, use_cache=True)
        greedy = _reference_decode_tokens(step, torch.full((8, 1), 2), 20, eos_id=-1, pad_id=0)
    eos = _staggered_eos(greedy, 0)
    with torch.no_grad():
        step, _ = decoding._seq2seq_decoder(model, src, mask, 1, 20, use_cache=use_cache)
        ref = _reference_decode_tokens(step, torch.full((8, 1), 2), 20, eos_id=eos, pad_id=0, min_new_tokens=1,
                                       no_repeat_ngram_size=4)
    sizes = []
    hook = model.lm_head.register_forward_hook(lambda m, args, out: sizes.append(out.size(0)))
    try:
        out = generate_seq2seq(model, src, mask, eos_id=eos, min_new_tokens=1, no_repeat_ngram_size=4,
                               use_cache=use_cache, **kw)
    finally:
        hook.remove()
    assert torch.equal(out, ref)
    assert sizes[-1] < 8
