"""The encoder-decoder Transformer and its decoding: masks, KV-cache equivalence, beam search."""
from __future__ import annotations

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.models.decoding import ban_repeated_ngrams, beam_search, decode_tokens, filter_logits, generate_seq2seq
from lit_llm.models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig

PAD, START, EOS = 0, 2, 3


def tiny(**overrides) -> EncoderDecoder:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, block_size=32, n_layer=2, n_decoder_layer=2, n_head=2, n_embd=32, dropout=0.0)
    cfg.update(overrides)
    return EncoderDecoder(cfg).eval()


def sources():
    """Three sources, right-padded: lengths 7, 4, 6."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(7, 50, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:], mask[2, 6:] = 0, 0
    return ids.masked_fill(mask == 0, PAD), mask


def test_shapes_tied_output_and_config_errors():
    model = tiny()
    src, mask = sources()
    tgt = torch.randint(7, 50, (3, 5))
    assert model(src, tgt, mask).shape == (3, 5, 50)
    assert model.lm_head.weight is model.wte.weight and model.wte_src is None
    assert tiny(tie_embeddings=False).wte_src is not None
    with pytest.raises(ConfigError, match=r"model\.n_head=3 must divide model\.n_embd=32"):
        EncoderDecoderConfig(n_head=3, n_embd=32)
    with pytest.raises(ConfigError, match=r"model\.n_layers is not an encoder-decoder option"):
        EncoderDecoderConfig.from_dict({"n_layers": 2})
    with pytest.raises(ValueError, match="block_size=32"):
        model(src, torch.randint(7, 50, (3, 33)), mask)


def test_source_padding_does_not_change_the_outputs():
    model = tiny()
    src, mask = sources()
    tgt = torch.randint(7, 50, (3, 5))
    with torch.no_grad():
        batch = model(src, tgt, mask)
        alone = model(src[1:2, :4], tgt[1:2])
        unmasked = model(src[1:2], tgt[1:2])
    torch.testing.assert_close(batch[1], alone[0], atol=1e-5, rtol=0)
    assert (unmasked[0] - alone[0]).abs().max() > 1e-4  # the mask is what makes it work


def test_cached_decoding_equals_teacher_forcing():
    model = tiny()
    src, mask = sources()
    tgt = torch.randint(7, 50, (3, 6))
    with torch.no_grad():
        memory = model.encode(src, mask)
        full = model.decode(tgt, memory, mask)
        cache = model.new_cache(memory, mask, max_len=6)
        first = model.decode(tgt[:, :2], cache=cache)  # a chunk of two, then one at a time
        steps = [first] + [model.decode(tgt[:, i : i + 1], cache=cache) for i in range(2, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_generation_with_cache_equals_recompute(num_beams):
    model = tiny()
    src, mask = sources()
    kw = dict(start_id=START, eos_id=EOS, pad_id=PAD, max_new_tokens=12, num_beams=num_beams)
    cached = generate_seq2seq(model, src, mask, use_cache=True, **kw)
    recomputed = generate_seq2seq(model, src, mask, use_cache=False, **kw)
    assert cached.shape[0] == 3 and torch.equal(cached, recomputed)


def test_beam_size_one_is_greedy():
    model = tiny()
    src, mask = sources()
    decode, boost = model.decode, torch.zeros(50)
    boost[EOS] = 3.0  # (measured) every row emits <eos> as its 6th token: the stop path is exercised
    model.decode = lambda *a, **k: decode(*a, **k) + boost
    greedy = generate_seq2seq(model, src, mask, start_id=START, eos_id=EOS, pad_id=PAD, max_new_tokens=20)
    assert greedy.shape == (3, 6) and (greedy[:, -1] == EOS).all()
    assert torch.equal(beam_search_one(model, src, mask), greedy)


def test_rows_stop_at_their_own_eos_and_are_padded():
    def step(tokens):  # row r emits <eos> as its (r + 1)-th token, token 9 before that
        logits = torch.zeros(tokens.size(0), 10)
        for r in range(tokens.size(0)):
            logits[r, EOS if tokens.size(1) == r + 1 else 9] = 1.0
        return logits

    out = decode_tokens(step, torch.full((3, 1), START), max_new_tokens=10, eos_id=EOS, pad_id=PAD)
    assert out.tolist() == [[EOS, PAD, PAD], [9, EOS, PAD], [9, 9, EOS]]  # stopped once every row ended


def beam_search_one(model, src, mask):
    """Beam search with one beam, through the public function (so its bookkeeping is exercised)."""
    memory = model.encode(src, mask)
    cache = model.new_cache(memory, mask, max_len=21)
    step = lambda tokens: model.decode(tokens[:, cache.length :], cache=cache)[:, -1]  # noqa: E731
    with torch.no_grad():
        return beam_search(step, cache.reorder, torch.full((3, 1), START), 1, 20, EOS, PAD)


def test_beam_search_finds_the_best_sequence_that_greedy_misses():
    """A toy scorer over tokens {0: pad, 1: a, 2: start, 3: eos, 4: b}: greedy takes 'a' (0.6) and
    then faces a flat 0.34/0.33/0.33; 'b' (0.4) leads to eos with 0.99. Best: b eos (0.396 vs 0.204)."""
    def step(tokens):
        last = tokens[:, -1]
        probs = torch.full((tokens.size(0), 5), 1e-9)
        for r, t in enumerate(last.tolist()):
            if t == 2:
                probs[r, 1], probs[r, 4] = 0.6, 0.4
            elif t == 1:
                probs[r, 3], probs[r, 1], probs[r, 4] = 0.34, 0.33, 0.33
            else:
                probs[r, 3], probs[r, 1] = 0.99, 0.01
        return probs.log()

    start = torch.full((1, 1), 2)
    greedy = decode_tokens(step, start, 5, eos_id=3, pad_id=0)
    assert greedy.tolist() == [[1, 3]]
    best = beam_search(step, lambda rows: None, start, num_beams=2, max_new_tokens=5, eos_id=3, pad_id=0,
                       length_penalty=0.0)
    assert best.tolist() == [[4, 3]]


def test_no_repeat_ngram_and_nucleus_filtering():
    tokens = torch.tensor([[5, 6, 7, 5, 6]])
    logits = ban_repeated_ngrams(tokens, torch.zeros(1, 10), n=3)  # "5 6" was followed by 7
    assert torch.isinf(logits[0, 7]) and torch.isfinite(logits[0, [5, 6, 8]]).all()
    assert torch.isinf(ban_repeated_ngrams(tokens, torch.zeros(1, 10), n=1)[0, [5, 6, 7]]).all()
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.8))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    assert torch.isfinite(filter_logits(probs.log(), top_p=0.81)).sum() == 3
    assert torch.isfinite(filter_logits(probs.log(), top_k=1)).tolist() == [[True, False, False, False]]


def test_min_new_tokens_and_bad_options():
    model = tiny()
    src, mask = sources()
    decode, boost = model.decode, torch.zeros(50)
    boost[EOS] = 100.0
    model.decode = lambda *a, **k: decode(*a, **k) + boost  # eos is now the argmax everywhere
    kw = dict(start_id=START, eos_id=EOS, pad_id=PAD, max_new_tokens=8)
    assert generate_seq2seq(model, src, mask, **kw)[:, 0].tolist() == [EOS] * 3
    out = generate_seq2seq(model, src, mask, min_new_tokens=3, **kw)
    assert (out[:, :3] != EOS).all()
    with pytest.raises(ValueError, match="top_p=1.5"):
        generate_seq2seq(model, src, mask, top_p=1.5, temperature=1.0, **kw)
    with pytest.raises(ValueError, match="beam search is deterministic"):
        generate_seq2seq(model, src, mask, num_beams=2, temperature=0.7, **kw)


def test_the_decoder_cannot_see_the_future():
    model = tiny()
    src, mask = sources()
    tgt = torch.randint(7, 50, (3, 6))
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(7, 50, (3, 2))
    with torch.no_grad():
        a, b = model(src, tgt, mask), model(src, changed, mask)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=0)  # positions before the change
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-4


def test_old_pad_token_id_key_builds_the_same_model(caplog):
    with pytest.warns(DeprecationWarning, match=r"model\.pad_token_id .*model\.pad_id"), \
            caplog.at_level("WARNING", logger="lit_llm"):
        old = tiny(pad_token_id=1)
    assert caplog.text.count("will be removed in the next release") == 1
    new = tiny(pad_id=1)
    assert old.config == new.config and old.num_params() == new.num_params()
    assert old.state_dict().keys() == new.state_dict().keys()
    for name, value in new.state_dict().items():
        torch.testing.assert_close(old.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"model\.pad_token_id=1 and model\.pad_id=0"):
        EncoderDecoderConfig.from_dict({"pad_token_id": 1, "pad_id": 0})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_checkpoint_with_old_keys_loads(tmp_path):
    from lit_llm.checkpointing import load_backbone

    model = tiny(tie_embeddings=False)
    old = model.config.to_dict()
    old["pad_token_id"] = old.pop("pad_id")
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "lit_llm": {"backbone_config": old}}, tmp_path / "old.ckpt")
    loaded, _ = load_backbone(str(tmp_path / "old.ckpt"))
    assert loaded.config == model.config
    src, mask = sources()
    tgt = torch.randint(7, 50, (3, 5))
    torch.testing.assert_close(loaded(src, tgt, mask), model(src, tgt, mask), rtol=0, atol=0)
