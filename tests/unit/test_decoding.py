import pytest
import torch

from lit_llm.models import GPT, GPTConfig, generate

TINY = dict(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=32)


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **overrides})).eval()


def prompt(B=2, T=5, seed=1):
    return torch.randint(0, 97, (B, T), generator=torch.Generator().manual_seed(seed))


def seeded(seed=123):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_shape_and_prompt_kept(pos):
    x = prompt(3, 5)
    out = generate(tiny(pos_embedding=pos), x, max_new_tokens=7, generator=seeded())
    assert out.shape == (3, 12) and out.dtype == torch.long
    assert torch.equal(out[:, :5], x)
    assert generate(tiny(), x, max_new_tokens=0).shape == (3, 5)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_cache_equals_recompute_greedy(pos):
    model, x = tiny(pos_embedding=pos), prompt()
    with_cache = generate(model, x, 20, temperature=0, use_cache=True)
    without = generate(model, x, 20, temperature=0, use_cache=False)
    assert torch.equal(with_cache, without)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_cache_equals_recompute_sampling(pos):
    model, x = tiny(pos_embedding=pos), prompt()
    a = generate(model, x, 20, temperature=1.0, top_k=20, use_cache=True, generator=seeded())
    b = generate(model, x, 20, temperature=1.0, top_k=20, use_cache=False, generator=seeded())
    assert torch.equal(a, b)


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone():
    model, x = tiny(), prompt()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a = generate(model, x, 10, generator=seeded(1))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, generate(model, x, 10, generator=seeded(1)))
    assert not torch.equal(a, generate(model, x, 10, generator=seeded(2)))


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_beyond_block_size_falls_back_to_sliding_window(pos):
    # 28-token prompt + 12 new tokens > block_size 32: the cached path must hand over to the
    # sliding-window recompute and still match the reference exactly.
    model, x = tiny(pos_embedding=pos), prompt(2, 28)
    a = generate(model, x, 12, temperature=0, use_cache=True)
    b = generate(model, x, 12, temperature=0, use_cache=False)
    assert a.shape == (2, 40)
    assert torch.equal(a, b)
    # A prompt longer than the context is cropped, not rejected.
    long = prompt(1, 40)
    assert torch.equal(generate(model, long, 3, temperature=0), generate(model, long, 3, temperature=0, use_cache=False))


def test_temperature_zero_is_argmax():
    model, x = tiny(), prompt()
    out = generate(model, x, 1, temperature=0)
    with torch.no_grad():
        expected = model(x)[:, -1].argmax(-1)
    assert torch.equal(out[:, -1], expected)


def test_top_k_one_equals_greedy():
    model, x = tiny(), prompt()
    greedy = generate(model, x, 10, temperature=0)
    assert torch.equal(generate(model, x, 10, temperature=0.8, top_k=1, generator=seeded()), greedy)


def test_eos_pads_and_stops_early():
    model, x = tiny(), prompt(2, 5)
    free = generate(model, x, 10, temperature=0)
    eos = int(free[0, 7])  # row 0 emits this token at its 3rd new step
    out = generate(model, x, 10, temperature=0, eos_id=eos)
    row0 = out[0, 5:].tolist()
    first = row0.index(eos)
    assert all(t == eos for t in row0[first:])  # once finished, a row keeps emitting eos
    assert out[0, 5:5 + first].tolist() == free[0, 5:5 + first].tolist()

    # When every row has finished, generation stops before max_new_tokens.
    always = int(generate(model, x[:1], 1, temperature=0)[0, -1])
    short = generate(model, x[:1], 10, temperature=0, eos_id=always)
    assert short.shape == (1, 6)


def test_restores_training_mode():
    model = tiny(dropout=0.1).train()
    generate(model, prompt(), 2, generator=seeded())
    assert model.training
    model.eval()
    generate(model, prompt(), 2, generator=seeded())
    assert not model.training


def test_bad_arguments():
    model = tiny()
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt(), 2, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, prompt(), 2, top_k=0)
    with pytest.raises(ValueError, match="input_ids"):
        generate(model, torch.tensor([1, 2, 3]), 2)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_gpt_beam_search_cache_equals_recompute_and_one_beam_is_greedy(num_beams):
    from lit_llm.models.decoding import beam_search_gpt

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    prompt = torch.randint(7, 40, (2, 5))
    kw = dict(num_beams=num_beams, max_new_tokens=10, eos_id=3, pad_id=0)
    cached = beam_search_gpt(model, prompt, use_cache=True, **kw)
    assert torch.equal(cached, beam_search_gpt(model, prompt, use_cache=False, **kw))
    if num_beams == 1:
        greedy = generate(model, prompt, 10, temperature=0.0, eos_id=3)[:, 5:]
        assert torch.equal(cached, greedy[:, : cached.size(1)])
    with pytest.raises(ValueError, match="fit in block_size=32"):
        beam_search_gpt(model, prompt, num_beams=2, max_new_tokens=30, eos_id=3, pad_id=0)
