"""Sliding-window (local) attention, `model.attention_window`: the blocked kernel equals a dense band-masked
reference (causal and bidirectional, padding, RoPE, GQA, T not a multiple of the chunk), a window covering the
sequence is full attention, gradients flow, KV-cache generation equals recompute, interpret.py's maps follow the
window, Hugging Face Mistral's sliding_window is the same rule, and bad settings name the config key."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_llm.errors import ConfigError
from lit_llm.models import GPT, Encoder, build_backbone
from lit_llm.models.decoding import generate
from lit_llm.models.hf_io import export_hf
from lit_llm.models.layers import SelfAttention, apply_rope, rope_cache, window_keep
from lit_llm.reporting import interpret


def dense_reference(attn: SelfAttention, x, pad_mask=None, rope=None):
    """The layer's output through SDPA with an explicit [T, T] band mask (plus padding): O(T^2), obviously right."""
    B, T, _ = x.shape
    q, k, v = attn.c_attn(x).split(attn.qkv_sizes, dim=2)
    q = q.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2)
    k, v = (t.view(B, T, attn.n_kv_head, attn.head_dim).transpose(1, 2) for t in (k, v))
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    pos = torch.arange(T)
    keep = window_keep(pos, pos, attn.window, attn.causal)
    if pad_mask is not None:
        keep = keep & pad_mask.bool()[:, None, None, :]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=attn.n_kv_head != attn.n_head)
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, -1)), keep.expand(B, 1, T, T).any(-1)[:, 0]


def test_window_rule():
    pos = torch.arange(6)
    causal = window_keep(pos, pos, 3, causal=True)
    assert causal[5].tolist() == [False, False, False, True, True, True]  # itself and the 2 before it
    both = window_keep(pos, pos, 4, causal=False)
    assert both[2].tolist() == [True, True, True, True, True, False]  # 4 // 2 = 2 on each side


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window, T", [(1, 7), (3, 17), (4, 16), (5, 23), (8, 9), (6, 40)])
def test_blocked_equals_dense_band_reference(causal, window, T):
    torch.manual_seed(window * 100 + T)
    attn = SelfAttention(32, 4, causal=causal, n_kv_head=2, window=window).eval()  # GQA
    x = torch.randn(3, T, 32)
    rope = tuple(r[:T] for r in rope_cache(64, 8, 10000.0))
    pad = None
    if not causal:
        pad = torch.ones(3, T, dtype=torch.long)
        pad[1, T - T // 3:] = 0  # right padding
        pad[2, : T // 4] = 0  # left padding
    y = attn(x, pad, rope)
    ref, has_keys = dense_reference(attn, x, pad, rope)
    # a pad query whose window holds only pads has no defined output (uniform over different key sets)
    torch.testing.assert_close(y[has_keys], ref[has_keys], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal, window, T", [(True, 8, 8), (True, 64, 10), (False, 16, 9), (False, 64, 30)])
def test_window_covering_the_sequence_is_full_attention(causal, window, T):
    torch.manual_seed(0)
    full = SelfAttention(32, 4, causal=causal).eval()
    local = SelfAttention(32, 4, causal=causal, window=window).eval()
    local.load_state_dict(full.state_dict())
    x = torch.randn(2, T, 32)
    assert torch.equal(local(x), full(x))  # the same code path, bit for bit


@pytest.mark.parametrize("arch", ["gpt", "encoder"])
def test_gradients_flow_with_checkpointing(arch):
    torch.manual_seed(0)
    model = build_backbone({"arch": arch, "vocab_size": 40, "block_size": 32, "n_layer": 2, "n_head": 4,
                            "n_embd": 32, "dropout": 0.0, "attention_window": 4, "activation_checkpointing": True,
                            "pos_embedding": "rope"}).train()
    ids = torch.randint(1, 40, (2, 21))
    out = model(ids) if arch == "gpt" else model(ids, attention_mask=torch.ones_like(ids))
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.blocks.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.blocks[0].attn.c_attn.weight.grad.abs().sum() > 0
    # the window really limits what a token sees: changing token 0 leaves outputs beyond the receptive field alone
    model.eval()
    ids2 = ids.clone()
    ids2[:, 0] = (ids[:, 0] % 39) + 1
    with torch.no_grad():
        a, b = model(ids), model(ids2)
    reach = 2 * 3 if arch == "gpt" else 2 * 2  # n_layer x (window - 1) causal, n_layer x window // 2 both sides
    assert torch.equal(a[:, reach + 1:], b[:, reach + 1:]) and not torch.equal(a[:, :reach + 1], b[:, :reach + 1])


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_kv_cache_generation_equals_recompute_of_the_windowed_model(pos):
    torch.manual_seed(0)
    model = GPT({"vocab_size": 50, "block_size": 48, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32,
                 "pos_embedding": pos, "attention_window": 5}).eval()
    prompt = torch.randint(0, 50, (2, 9))  # the prefill (9 > 5) already takes the blocked path
    cached = generate(model, prompt, 12, temperature=0.0)
    ids = prompt
    with torch.no_grad():
        for _ in range(12):  # full recompute of the whole sequence, token by token
            ids = torch.cat([ids, model(ids)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(cached, ids)
    # and a multi-token chunk appended to a non-empty cache (the dense band path) equals the whole-sequence logits
    cache = model.new_kv_cache(2)
    with torch.no_grad():
        first = model(ids[:, :11], kv_cache=cache)
        second = model(ids[:, 11:19], kv_cache=cache)
        whole = model(ids[:, :19])
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-5)


def test_packed_documents_and_window_combine():
    torch.manual_seed(0)
    model = GPT({"vocab_size": 50, "block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 16,
                 "pos_embedding": "rope", "attention_window": 3}).eval()
    a, b = torch.randint(0, 50, (1, 7)), torch.randint(0, 50, (1, 9))
    docs = torch.tensor([[0] * 7 + [1] * 9])
    with torch.no_grad():
        packed = model(torch.cat([a, b], 1), document_ids=docs)
        torch.testing.assert_close(packed, torch.cat([model(a), model(b)], 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt", "encoder"])
def test_interpret_maps_follow_the_window(arch):
    torch.manual_seed(0)
    model = build_backbone({"arch": arch, "vocab_size": 50, "block_size": 32, "n_layer": 2, "n_head": 4,
                            "n_embd": 32, "attention_window": 4, "pos_embedding": "rope"})
    ids = torch.randint(1, 50, (2, 13))
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, 11:] = 0  # every pad query still sees a real token within 2 positions
    run = (lambda: model.hidden_states(ids)) if arch == "gpt" else (lambda: model(ids, attention_mask=mask))
    maps = interpret.attention_maps(model, run, check=True)  # check: probs @ v equals the layer's own output
    pos = torch.arange(13)
    outside = ~window_keep(pos, pos, 4, causal=arch == "gpt")
    for m in maps:
        assert (m[..., outside] == 0).all()
        torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)))


def test_config_errors_name_the_key():
    for bad in (0, -3, 2.5, True, "256"):
        for arch in ("gpt", "encoder"):
            with pytest.raises(ConfigError, match=r"model\.attention_window=.* must be null .* or a positive integer"):
                build_backbone({"arch": arch, "attention_window": bad})
    with pytest.raises(ValueError, match="attention window=0"):
        SelfAttention(16, 2, window=0)


def test_export_refuses_what_hugging_face_cannot_express(tmp_path):
    gpt2 = GPT({"vocab_size": 50, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16, "attention_window": 4})
    with pytest.raises(ConfigError, match=r"model\.attention_window=4 cannot be exported as GPT-2"):
        export_hf(gpt2, tmp_path / "gpt2")
    bert = Encoder({"vocab_size": 50, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16,
                    "attention_window": 4})
    with pytest.raises(ConfigError, match=r"model\.attention_window=4 has no Hugging Face BERT equivalent"):
        export_hf(bert, tmp_path / "bert")
    qwen2 = GPT({"vocab_size": 50, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16, "norm": "rmsnorm",
                 "mlp": "swiglu", "pos_embedding": "rope", "bias": False, "qkv_bias": True, "attention_window": 4})
    with pytest.raises(ConfigError, match=r"model\.attention_window=4 with model\.qkv_bias=true"):
        export_hf(qwen2, tmp_path / "qwen2")


def test_hugging_face_mistral_sliding_window_is_the_same_rule(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lit_llm.models.hf_io import load_hf

    torch.manual_seed(0)
    config = transformers.MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        sliding_window=5, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    hf.save_pretrained(tmp_path / "hf")
    ours, _ = load_hf(tmp_path / "hf")
    assert ours.config.attention_window == 5
    ids = torch.randint(0, 64, (2, 23))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=0)
    name, out = export_hf(ours, tmp_path / "export")
    assert name == "Mistral"
    back = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    assert back.config.sliding_window == 5
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch, window, mask", [("gpt", 4, False), ("gpt", None, True), ("encoder", 4, True)])
def test_memory_benchmark_measures_windowed_and_masked_steps(monkeypatch, arch, window, mask):
    from lit_llm.benchmarks import memory

    monkeypatch.setattr(memory, "_reset_peak_rss", lambda: None)  # leave pytest's own peak RSS alone
    spec = {"model": {"arch": arch, "vocab_size": 40, "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0,
                      "attention_window": window},
            "seq_len": 24, "checkpointing": False, "device": "cpu", "batch_size": 1, "steps": 1, "mask": mask}
    result = memory.measure(spec)
    assert set(result) == {"peak_mb", "step_ms"} and result["step_ms"] > 0
