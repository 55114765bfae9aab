import math

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.models import GPT, GPTConfig

TINY = dict(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=32)


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **overrides})).eval()


def tokens(B=2, T=16, seed=1):
    return torch.randint(0, TINY["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_forward_shape(pos):
    logits = tiny(pos_embedding=pos)(tokens(3, 10))
    assert logits.shape == (3, 10, 97)
    assert logits.dtype == torch.float32


def test_param_count_by_hand():
    V, P, C, L = 97, 32, 32, 2
    block = (
        2 * C  # ln_1
        + C * 3 * C + 3 * C  # c_attn
        + C * C + C  # attn c_proj
        + 2 * C  # ln_2
        + C * 4 * C + 4 * C  # c_fc
        + 4 * C * C + C  # mlp c_proj
    )
    expected = V * C + P * C + L * block + 2 * C  # wte (= lm_head), wpe, blocks, ln_f
    model = tiny()
    assert expected == 29600
    assert model.num_params() == expected
    assert model.num_params(non_embedding=True) == expected - P * C
    # Untied: lm_head is a separate V x C matrix.
    assert tiny(tie_embeddings=False).num_params() == expected + V * C
    # Rope has no position embedding at all.
    assert tiny(pos_embedding="rope").num_params() == expected - P * C


def test_weight_tying():
    model = tiny()
    assert model.lm_head.weight is model.wte.weight
    assert model.lm_head.bias is None
    assert tiny(tie_embeddings=False).lm_head.weight is not tiny(tie_embeddings=False).wte.weight


def test_gpt_small_size_and_flops():
    model = GPT(GPTConfig(vocab_size=8192, block_size=256, n_layer=4, n_head=4, n_embd=256))
    # 8192*256 (wte) + 256*256 (wpe) + 4 * 789,760 (blocks) + 512 (ln_f) = 5,322,240
    assert 5.2e6 < model.num_params() < 5.4e6
    assert model.num_params() == 5_322_240
    n = model.num_params(non_embedding=True)
    assert model.flops_per_token() == 6 * n + 12 * 4 * 256 * 256
    assert model.flops_per_token(seq_len=64) == 6 * n + 12 * 4 * 256 * 64


def test_gpt2_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8192, block_size=256, n_layer=4, n_head=4, n_embd=256))
    residual = model.blocks[0].mlp.c_proj.weight
    assert residual.std().item() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.02)
    assert model.blocks[1].attn.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.03)
    assert model.blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert torch.all(model.blocks[0].attn.c_attn.bias == 0)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_causal_future_tokens_do_not_leak(pos):
    model = tiny(pos_embedding=pos)
    x = tokens(2, 12)
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 97
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_kv_cache_matches_full_forward(pos):
    model = tiny(pos_embedding=pos)
    x = tokens(2, 20)
    with torch.no_grad():
        full = model(x)
        cache = model.new_kv_cache(batch_size=2)
        parts = [model(x[:, :8], kv_cache=cache)]  # prefill
        parts += [model(x[:, t:t + 1], kv_cache=cache) for t in range(8, 14)]  # one token at a time
        parts.append(model(x[:, 14:], kv_cache=cache))  # a multi-token chunk onto a non-empty cache
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


def test_kv_cache_reorder_moves_the_filled_rows_into_recycled_buffers():
    """reorder(index) keeps rows `index` of every filled position; beam search's reorders (same batch size) cycle
    through a fixed set of buffers (no allocation per step); a smaller batch (greedy rows dropped) still works."""
    from lit_llm.models.layers import KVCache

    torch.manual_seed(0)
    cache = KVCache(n_layer=2, batch_size=4, n_head=2, max_len=8, head_dim=3)
    expected = {}
    for step, index in enumerate([[1, 1, 0, 3], [3, 2, 2, 0], [0, 1, 2, 3], [2, 0, 1, 1]]):
        for layer in range(2):
            k, v = torch.randn(4, 2, 1, 3), torch.randn(4, 2, 1, 3)
            cache.update(layer, k, v)
        cache.advance(1)
        expected = {(name, layer): getattr(cache, name)[layer][:, :, :cache.length].clone()
                    for name in ("k", "v") for layer in range(2)}
        before = {t.data_ptr() for t in cache.k + cache.v}
        cache.reorder(torch.tensor(index))
        for (name, layer), full in expected.items():
            torch.testing.assert_close(getattr(cache, name)[layer][:, :, :cache.length], full[index], rtol=0, atol=0)
        if step == 0:
            buffers = before | {t.data_ptr() for t in cache.k + cache.v}
        assert {t.data_ptr() for t in cache.k + cache.v} <= buffers  # 4 buffers + 1 spare, recycled
    assert len(buffers) == 5
    cache.reorder(torch.tensor([2, 0]))  # two rows left
    assert cache.batch_size == 2 and cache.k[0].shape == (2, 2, 8, 3)
    for (name, layer), full in expected.items():
        torch.testing.assert_close(getattr(cache, name)[layer][:, :, :cache.length],
                                   full[[2, 0, 1, 1]][[2, 0]], rtol=0, atol=0)


def test_kv_cache_is_preallocated():
    model = tiny()
    cache = model.new_kv_cache(batch_size=2, max_len=16)
    assert cache.k[0].shape == (2, 2, 16, 16)
    buffer = cache.k[1].data_ptr()
    with torch.no_grad():
        model(tokens(2, 4), kv_cache=cache)
        model(tokens(2, 1), kv_cache=cache)
    assert cache.k[1].data_ptr() == buffer  # written in place, never re-allocated
    with pytest.raises(ValueError, match="full"):
        model(tokens(2, 12), kv_cache=cache)


def test_block_size_overflow_raises():
    model = tiny()
    with pytest.raises(ValueError, match="block_size=32"):
        model(tokens(1, 33))
    cache = model.new_kv_cache(batch_size=1)
    with torch.no_grad():
        model(tokens(1, 30), kv_cache=cache)
    with pytest.raises(ValueError, match="30 cached tokens"):
        model(tokens(1, 3), kv_cache=cache)


def test_rope_has_no_wpe_and_differs_from_learned():
    rope, learned = tiny(pos_embedding="rope"), tiny(pos_embedding="learned")
    assert rope.wpe is None
    assert not any("wpe" in name for name, _ in rope.named_parameters())
    assert "rope_cos" not in rope.state_dict()  # derived from the config, not checkpointed
    x = tokens(1, 8)
    with torch.no_grad():
        assert not torch.allclose(rope(x), learned(x))


def test_rope_scores_depend_on_relative_position_only():
    from lit_llm.models.gpt import apply_rope, rope_cache

    cos, sin = rope_cache(32, 16, 10000.0)
    q, k = torch.randn(16), torch.randn(16)

    def score(i, j):
        qi = apply_rope(q[None, None, None], cos[i:i + 1], sin[i:i + 1])
        kj = apply_rope(k[None, None, None], cos[j:j + 1], sin[j:j + 1])
        return (qi * kj).sum().item()

    assert score(5, 2) == pytest.approx(score(20, 17), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-5)


def test_rope_distinguishes_token_order():
    # No position parameters, yet order still matters through the rotated queries and keys.
    model = tiny(pos_embedding="rope")
    a = torch.tensor([[3, 5, 7]])
    b = torch.tensor([[5, 3, 7]])
    with torch.no_grad():
        assert not torch.allclose(model(a)[:, -1], model(b)[:, -1])


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(n_head=3), "model.n_head=3"),
        (dict(n_embd=0), "model.n_embd=0"),
        (dict(vocab_size=-1), "model.vocab_size"),
        (dict(block_size=2.5), "model.block_size"),
        (dict(pos_embedding="alibi"), "model.pos_embedding"),
        (dict(pos_embedding="rope", n_embd=6, n_head=2), "model.pos_embedding='rope'"),
        (dict(dropout=1.5), "model.dropout"),
        (dict(arch="bert"), "model.arch"),
    ],
)
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        GPTConfig(**{**TINY, **overrides})
    assert key in str(err.value)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = GPTConfig(**TINY, pos_embedding="rope")
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["arch"] == "gpt"
    with pytest.raises(ConfigError, match=r"model\.n_heads is not a GPT option; known: .*n_head"):
        GPTConfig.from_dict({**TINY, "n_heads": 2})
    # GPT also accepts a plain mapping (e.g. a Hydra DictConfig).
    assert GPT(cfg.to_dict()).config == cfg


def test_dropout_only_in_training():
    model = tiny(dropout=0.5)
    x = tokens(1, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        model.train()
        assert not torch.allclose(model(x), model(x))


# ----------------------------------------------------------------------------------------------
# model.tie_weights was renamed model.tie_embeddings: old configs and checkpoints still load.


def test_old_tie_weights_key_builds_the_same_model(caplog):
    new = {**TINY, "tie_embeddings": False}
    old = {**TINY, "tie_weights": False}
    with pytest.warns(DeprecationWarning, match=r"model\.tie_weights .*model\.tie_embeddings"), \
            caplog.at_level("WARNING", logger="lit_llm"):
        config = GPTConfig.from_dict(old)
    assert config == GPTConfig.from_dict(new) and "tie_weights" not in config.to_dict()
    assert caplog.text.count("will be removed in the next release") == 1
    assert "model.tie_weights" in caplog.text and "model.tie_embeddings" in caplog.text
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning):
        from_old = GPT(old)  # a plain mapping goes through from_dict too
    torch.manual_seed(0)
    from_new = GPT(new)
    assert from_old.config == from_new.config and from_old.num_params() == from_new.num_params()
    assert from_old.state_dict().keys() == from_new.state_dict().keys()
    for name, value in from_new.state_dict().items():
        torch.testing.assert_close(from_old.state_dict()[name], value, rtol=0, atol=0)


def test_old_and_new_tie_key_together():
    with pytest.warns(DeprecationWarning):  # the same value twice: accepted
        assert GPTConfig.from_dict({**TINY, "tie_weights": False, "tie_embeddings": False}).tie_embeddings is False
    with pytest.raises(ConfigError, match=r"model\.tie_weights=False and model\.tie_embeddings=True"):
        GPTConfig.from_dict({**TINY, "tie_weights": False, "tie_embeddings": True})


def _old_gpt_config(model: GPT) -> dict:
    """The config dict as checkpoints stored it before the rename."""
    config = model.config.to_dict()
    config["tie_weights"] = config.pop("tie_embeddings")
    return config


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_checkpoint_with_old_keys_loads(tmp_path):
    from lit_llm.checkpointing import load_backbone

    model = tiny(tie_embeddings=False)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "lit_llm": {"backbone_config": _old_gpt_config(model)}}, tmp_path / "old.ckpt")
    loaded, _ = load_backbone(str(tmp_path / "old.ckpt"))
    assert loaded.config == model.config
    ids = tokens()
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_safetensors_with_old_keys_loads(tmp_path):
    import json

    from safetensors.torch import save_model

    from lit_llm.checkpointing import load_backbone

    model = tiny()
    save_model(model, str(tmp_path / "model.safetensors"),
               metadata={"lit_llm_backbone_config": json.dumps(_old_gpt_config(model))})
    loaded, _ = load_backbone(str(tmp_path / "model.safetensors"))
    assert loaded.config == model.config and loaded.lm_head.weight is loaded.wte.weight
    ids = tokens()
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
