"""The BERT-style Encoder, the shared layers, and GPT.hidden_states."""
import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.models import GPT, Block, Encoder, EncoderConfig, GPTConfig
from lit_llm.models.layers import MLP, SelfAttention, padding_bias

TINY = dict(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=16, dropout=0.0)


def tiny(**overrides) -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderConfig(**{**TINY, **overrides})).eval()


def tokens(B=2, T=10, seed=1):
    # ids from 1: id 0 is the padding token
    return torch.randint(1, TINY["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_defaults():
    model = tiny()
    assert model.config.intermediate_size == 4 * 16
    assert model.blocks[0].mlp.c_fc.out_features == 64
    hidden = model(tokens(3, 7))
    assert hidden.shape == (3, 7, 16)
    assert model.mlm_logits(hidden).shape == (3, 7, 50)
    assert tiny(intermediate_size=37).blocks[1].mlp.c_fc.weight.shape == (37, 16)
    with pytest.raises(ValueError, match="block_size=24"):
        model(tokens(1, 25))


@pytest.mark.parametrize("norm_first,pos", [(False, "learned"), (True, "learned"), (True, "rope")])
def test_right_padding_does_not_change_real_positions(norm_first, pos):
    model = tiny(norm_first=norm_first, pos_embedding=pos)
    sentence = tokens(1, 6, seed=3)
    other = tokens(1, 10, seed=4)
    batch = torch.zeros(2, 10, dtype=torch.long)  # pad id 0
    batch[0, :6], batch[1] = sentence[0], other[0]
    mask = torch.zeros(2, 10, dtype=torch.long)
    mask[0, :6], mask[1] = 1, 1
    with torch.no_grad():
        alone = model(sentence)
        padded = model(batch, attention_mask=mask)
        unmasked = model(batch)
        also_alone = model(other)
    torch.testing.assert_close(padded[0, :6], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded[1], also_alone[0], atol=1e-5, rtol=0)
    assert (unmasked[0, :6] - alone[0]).abs().max() > 1e-3  # the mask is what makes it work


def test_bidirectional_and_all_padding_row_is_finite():
    model = tiny()
    x = tokens(1, 8)
    y = x.clone()
    y[0, -1] = (x[0, -1] % 49) + 1 if x[0, -1] != 49 else 1
    with torch.no_grad():
        assert (model(x)[0, 0] - model(y)[0, 0]).abs().max() > 1e-4  # the first token sees the last
        out = model(x, attention_mask=torch.zeros(1, 8, dtype=torch.long))
    assert torch.isfinite(out).all()


def test_token_types():
    model = tiny()
    x = tokens(1, 8)
    types = torch.zeros_like(x)
    types[0, 4:] = 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, token_type_ids=torch.zeros_like(x)))
        assert (model(x, token_type_ids=types) - model(x)).abs().max() > 1e-4
    no_types = tiny(type_vocab_size=0)
    assert no_types.tte is None
    no_types(x)
    with pytest.raises(ValueError, match="type_vocab_size=0"):
        no_types(x, token_type_ids=types)


def test_mlm_head_is_tied_and_params_counted_once():
    model = tiny()
    assert model.mlm.decoder.weight is model.wte.weight
    V, P, C, H, L, types = 50, 24, 16, 64, 2, 2
    block = (C * 3 * C + 3 * C) + (C * C + C) + 2 * C + (C * H + H) + (H * C + C) + 2 * C
    embeddings = V * C + P * C + types * C + 2 * C
    head = (C * C + C) + 2 * C + V  # dense, LayerNorm, decoder bias (weight = wte)
    assert model.num_params() == embeddings + L * block + head
    assert model.num_params(non_embedding=True) == model.num_params() - P * C - types * C
    # A gradient through the MLM logits reaches the word embeddings.
    model.train()
    model.mlm_logits(model(tokens(1, 5))).sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_bert_init():
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(vocab_size=4096, block_size=128, n_layer=2, n_head=4, n_embd=128))
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert model.blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert torch.all(model.wte.weight[0] == 0)  # the padding row
    assert torch.all(model.blocks[1].attn.c_attn.bias == 0)
    assert torch.all(model.blocks[1].ln_2.weight == 1) and torch.all(model.ln_emb.bias == 0)
    assert torch.all(model.mlm.decoder.bias == 0)


def test_config_errors():
    with pytest.raises(ConfigError, match="model.n_heads"):
        EncoderConfig.from_dict({**TINY, "n_heads": 2})
    with pytest.raises(ConfigError, match="model.n_head=3"):
        EncoderConfig(**{**TINY, "n_head": 3})
    with pytest.raises(ConfigError, match="model.activation"):
        EncoderConfig(**{**TINY, "activation": "relu"})
    with pytest.raises(ConfigError, match="model.pad_id"):
        EncoderConfig(**{**TINY, "pad_id": 50})
    with pytest.raises(ConfigError, match="model.type_vocab_size"):
        EncoderConfig(**{**TINY, "type_vocab_size": -1})
    with pytest.raises(ConfigError, match="model.intermediate_size"):
        EncoderConfig(**{**TINY, "intermediate_size": 0})
    with pytest.raises(ConfigError, match="model.norm_first"):
        EncoderConfig(**{**TINY, "norm_first": "yes"})
    config = EncoderConfig.from_dict(dict(TINY))
    assert EncoderConfig.from_dict(config.to_dict()) == config
    assert Encoder(TINY).config == config  # a plain dict works too


def test_post_ln_block_formula():
    torch.manual_seed(0)
    block = Block(16, 2, causal=False, norm_first=False, ln_eps=1e-12, activation="gelu",
                  intermediate_size=20).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        h = block.ln_1(x + block.attn(x))
        expected = block.ln_2(h + block.mlp(h))
        torch.testing.assert_close(block(x), expected)
        pre = Block(16, 2, causal=True, norm_first=True).eval()
        h = x + pre.attn(pre.ln_1(x))
        torch.testing.assert_close(pre(x), h + pre.mlp(pre.ln_2(h)))


def test_pre_ln_encoder_is_blocks_then_final_layernorm():
    post, pre = tiny(), tiny(norm_first=True)
    assert post.ln_f is None and "ln_f.weight" not in post.state_dict()  # BERT's layout unchanged
    assert all(block.norm_first for block in pre.blocks)
    x = tokens(2, 9)
    with torch.no_grad():
        h = pre.drop(pre.ln_emb(pre.wte(x) + pre.wpe(torch.arange(9)) + pre.tte(torch.zeros_like(x))))
        for block in pre.blocks:
            h = h + block.attn(block.ln_1(h))
            h = h + block.mlp(block.ln_2(h))
        torch.testing.assert_close(pre(x), pre.ln_f(h))


def test_rotary_encoder_sees_relative_positions_only():
    model = tiny(pos_embedding="rope")
    assert model.wpe is None and "rope_cos" not in model.state_dict()  # nothing to learn or save
    assert model.num_params(non_embedding=True) == model.num_params() - model.tte.weight.numel()
    x = tokens(1, 6)
    with torch.no_grad():
        # the same tokens shifted right by two positions (after two padding tokens that nobody attends to)
        shifted = torch.cat([torch.zeros(1, 2, dtype=torch.long), x], dim=1)
        mask = torch.ones_like(shifted)
        mask[0, :2] = 0
        torch.testing.assert_close(model(shifted, attention_mask=mask)[0, 2:], model(x)[0], atol=1e-5, rtol=0)
        learned = tiny()  # absolute positions: a shift changes the hidden states
        assert (learned(shifted, attention_mask=mask)[0, 2:] - learned(x)[0]).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="model.pos_embedding='alibi'"):
        EncoderConfig(**{**TINY, "pos_embedding": "alibi"})
    with pytest.raises(ConfigError, match="even head size"):
        EncoderConfig(**{**TINY, "n_embd": 18, "n_head": 2, "pos_embedding": "rope"})


def test_attention_masks():
    mask = torch.tensor([[1, 1, 0]])
    bias = padding_bias(mask, torch.float32)
    assert bias.shape == (1, 1, 1, 3)
    assert bias[0, 0, 0, 0] == 0 and bias[0, 0, 0, 2] == torch.finfo(torch.float32).min
    causal = SelfAttention(16, 2, causal=True)
    with pytest.raises(ValueError, match="causal attention takes no padding mask"):
        causal(torch.randn(1, 3, 16), attention_mask=mask)
    with pytest.raises(ValueError, match="activation"):
        MLP(16, activation="tanh")


def test_gpt_hidden_states_feed_lm_head():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    x = tokens(2, 9)
    with torch.no_grad():
        hidden = gpt.hidden_states(x)
        assert hidden.shape == (2, 9, 16)
        torch.testing.assert_close(gpt.lm_head(hidden), gpt(x))
        # The mask is accepted and ignored: right padding cannot reach real (earlier) tokens.
        mask = torch.ones_like(x)
        mask[0, 5:] = 0
        torch.testing.assert_close(gpt.hidden_states(x, attention_mask=mask), hidden)
        torch.testing.assert_close(gpt(x, attention_mask=mask), gpt(x))
        torch.testing.assert_close(gpt.hidden_states(x[:1, :5])[0], hidden[0, :5], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="attention_mask shape"):
        gpt.hidden_states(x, attention_mask=mask[:, :3])


# model.pad_token_id was renamed model.pad_id: old configs and checkpoints still load.


def test_old_pad_token_id_key_builds_the_same_model(caplog):
    with pytest.warns(DeprecationWarning, match=r"model\.pad_token_id .*model\.pad_id"), \
            caplog.at_level("WARNING", logger="lit_llm"):
        config = EncoderConfig.from_dict({**TINY, "pad_token_id": 3})
    assert config == EncoderConfig.from_dict({**TINY, "pad_id": 3}) and "pad_token_id" not in config.to_dict()
    assert caplog.text.count("will be removed in the next release") == 1
    torch.manual_seed(0)
    from_old = Encoder(config)
    torch.manual_seed(0)
    from_new = Encoder({**TINY, "pad_id": 3})
    assert from_old.wte.padding_idx == 3 and from_old.num_params() == from_new.num_params()
    assert from_old.state_dict().keys() == from_new.state_dict().keys()
    for name, value in from_new.state_dict().items():
        torch.testing.assert_close(from_old.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"model\.pad_token_id=3 and model\.pad_id=0"):
        EncoderConfig.from_dict({**TINY, "pad_token_id": 3, "pad_id": 0})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_safetensors_with_old_keys_loads(tmp_path):
    import json

    from safetensors.torch import save_model

    from lit_llm.checkpointing import load_backbone

    model = tiny()
    old = model.config.to_dict()
    old["pad_token_id"] = old.pop("pad_id")
    save_model(model, str(tmp_path / "model.safetensors"), metadata={"lit_llm_backbone_config": json.dumps(old)})
    loaded, _ = load_backbone(str(tmp_path / "model.safetensors"))
    assert loaded.config == model.config
    ids = tokens()
    torch.testing.assert_close(loaded(ids, torch.ones_like(ids)), model(ids, torch.ones_like(ids)), rtol=0, atol=0)
