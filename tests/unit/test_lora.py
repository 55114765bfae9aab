"""LoRA (`lit_llm.peft`): adapters on slices of fused Linears, merging, freezing and state-dict names, on tiny
versions of every backbone."""
from __future__ import annotations

import copy

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.models.encoder import Encoder
from lit_llm.models.encoder_decoder import EncoderDecoder
from lit_llm.models.gpt import GPT
from lit_llm.peft import (
    LoraConfig,
    LoRALinear,
    adapter_state_dict,
    apply_lora,
    base_state_dict,
    is_adapter_key,
    load_adapter_state_dict,
    load_base_state_dict,
    lora_modules,
    lora_parameters,
    merge_lora,
    merged_state_dict,
    plain_key,
    to_plain_state_dict,
)

V, C, H = 50, 32, 4
SMALL = dict(vocab_size=V, block_size=16, n_layer=2, n_head=H, n_embd=C, dropout=0.0)
BACKBONES = {
    "gpt2": lambda: GPT(SMALL),
    "llama": lambda: GPT(dict(SMALL, norm="rmsnorm", mlp="swiglu", pos_embedding="rope", bias=False, n_kv_head=2,
                              tie_embeddings=False)),
    "bert": lambda: Encoder(SMALL),
    "encdec": lambda: EncoderDecoder(dict(SMALL, n_decoder_layer=2)),
    # 2 heads of 8: attention 16 wide inside a 32-wide model, as T5's d_kv allows
    "t5": lambda: EncoderDecoder(dict(SMALL, n_decoder_layer=2, pos_embedding="relative", norm="rmsnorm", bias=False,
                                      n_head=2, head_dim=8, activation="geglu", scale_attention=False,
                                      tie_output=False)),
}


def build(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return BACKBONES[kind]().eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, V, (2, 7), generator=g)
    if isinstance(model, GPT):
        return model(ids)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    if isinstance(model, Encoder):
        return model.mlm_logits(model(ids, mask))
    return model(ids, torch.randint(4, V, (2, 5), generator=g), mask)


def randomize_adapters(model: torch.nn.Module) -> None:
    torch.manual_seed(2)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(std=0.2)


def lora(kind: str, targets, **options):
    model = build(kind)
    summary = apply_lora(model, LoraConfig(r=4, alpha=8, targets=targets, **options))
    return model, summary


@pytest.mark.parametrize("kind", list(BACKBONES))
@pytest.mark.parametrize("targets", [["attention"], ["all_linear"], ["q", "v"], ["k", "mlp"]])
def test_lora_equals_its_merged_model(kind, targets):
    model, summary = lora(kind, targets)
    randomize_adapters(model)
    out = logits(model)
    merged = merge_lora(copy.deepcopy(model))
    assert not lora_modules(merged)
    torch.testing.assert_close(logits(merged), out, rtol=0, atol=1e-5)
    assert not torch.allclose(out, logits(build(kind)), atol=1e-3)  # the adapters do something
    # the merged model is a plain one: the original names, and it loads into a fresh model
    assert list(merged.state_dict()) == list(build(kind).state_dict())
    fresh = build(kind, seed=5)
    fresh.load_state_dict(merged_state_dict(model))
    torch.testing.assert_close(logits(fresh), out, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_zero_b_starts_from_the_base_model_exactly(kind):
    model, _ = lora(kind, ["all_linear"])
    with torch.no_grad():  # SDPA on CPU may pick another kernel when nothing needs a gradient: compare like for like
        assert torch.equal(logits(model), logits(build(kind)))


def test_targets_per_backbone():
    assert lora("gpt2", ["attention"])[1]["targets"] == [f"blocks.{i}.attn.{m}" for i in (0, 1)
                                                        for m in ("c_attn", "c_proj")]
    ed = lora("encdec", ["attention"])[1]["targets"]
    assert "decoder.0.cross.c_kv" in ed and "encoder.1.attn.c_attn" in ed and len(ed) == 2 * 2 + 2 * 5
    model, summary = lora("t5", ["gate", "cross_v"])
    assert summary["targets"] == ["encoder.0.mlp.c_fc", "encoder.1.mlp.c_fc", "decoder.0.cross.c_kv",
                                  "decoder.0.mlp.c_fc", "decoder.1.cross.c_kv", "decoder.1.mlp.c_fc"]
    assert model.decoder[0].cross.c_kv.slices == {"cross_v": (16, 32)}  # [k | v], 2 heads x 8 each
    assert model.decoder[0].mlp.c_fc.slices == {"gate": (0, 4 * C)}
    assert lora("bert", ["up", "down"])[0].blocks[0].mlp.c_fc.slices == {"up": (0, 4 * C)}  # not gated


def expected_trainable(kind: str, targets: list[str], r: int = 4) -> int:
    """sum over slices of r * (in + slice's outputs), from the configs (not from the modules)."""
    inner = 2 * 8 if kind == "t5" else C
    kv = C // 2 if kind == "llama" else inner  # llama: 2 of 4 heads for k and v
    mlp_in = 4 * C
    sizes = {"q": (C, inner), "k": (C, kv), "v": (C, kv), "o": (inner, C),
             "cross_q": (C, inner), "cross_k": (C, inner), "cross_v": (C, inner), "cross_o": (inner, C),
             "gate": (C, mlp_in), "up": (C, mlp_in), "down": (mlp_in, C)}
    gated = kind in ("llama", "t5")
    layers = {"q": 2, "k": 2, "v": 2, "o": 2, "up": 2, "down": 2, "gate": 2 if gated else 0}
    if kind in ("encdec", "t5"):  # 2 encoder + 2 decoder layers, cross-attention in the decoder's
        layers = {name: 2 * n for name, n in layers.items()} | {name: 2 for name in
                                                               ("cross_q", "cross_k", "cross_v", "cross_o")}
    return sum(layers.get(t, 0) * r * sum(sizes[t]) for t in targets)


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_only_adapters_train_and_their_count(kind):
    everything = ["q", "k", "v", "o", "cross_q", "cross_k", "cross_v", "cross_o", "gate", "up", "down"]
    for targets, names in ((["attention"], everything[:8]), (["all_linear"], everything), (["q", "v"], ["q", "v"])):
        model, summary = lora(kind, targets)
        assert summary["trainable"] == expected_trainable(kind, names)
        assert summary["trainable"] == sum(p.numel() for p in lora_parameters(model))
        assert summary["total"] == sum(p.numel() for p in model.parameters())
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(is_adapter_key(name) for name in trainable)

    model, summary = lora(kind, ["q", "v"], train_embeddings=True, train_norms=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "wte.weight" in trainable and not any(".c_fc." in n or "base" in n for n in trainable)
    assert any(".ln_1." in n for n in trainable)
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    norms = sum(p.numel() for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm))
                for p in m.parameters())
    assert summary["trainable"] == expected_trainable(kind, ["q", "v"]) + embeddings + norms

    # backward reaches the adapters only
    model, _ = lora(kind, ["all_linear"])
    randomize_adapters(model)
    logits(model).square().mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == is_adapter_key(name), name


@pytest.mark.parametrize("kind,layer,target,rows", [
    ("gpt2", "blocks.0.attn.c_attn", "k", (C, 2 * C)),
    ("llama", "blocks.1.attn.c_attn", "k", (C, C + C // 2)),  # GQA: k and v half as wide as q
    ("llama", "blocks.1.attn.c_attn", "v", (C + C // 2, 2 * C)),
    ("llama", "blocks.0.mlp.c_fc", "up", (4 * C, 8 * C)),
    ("t5", "decoder.1.cross.c_kv", "cross_k", (0, 16)),
    ("t5", "decoder.1.cross.c_kv", "cross_v", (16, 32)),
    ("t5", "encoder.0.attn.c_attn", "v", (32, 48)),
    ("t5", "decoder.0.mlp.c_fc", "gate", (0, 4 * C)),
])
def test_a_slice_changes_only_its_rows(kind, layer, target, rows):
    model, _ = lora(kind, [target])
    randomize_adapters(model)
    wrapped = model.get_submodule(layer)
    changed = (wrapped.merged_weight() != wrapped.base.weight).any(dim=1).nonzero().flatten()
    assert changed.tolist() == list(range(*rows))
    merged = merge_lora(copy.deepcopy(model)).get_submodule(layer)
    assert torch.equal(merged.weight, wrapped.merged_weight())
    if wrapped.base.bias is not None:
        assert torch.equal(merged.bias, wrapped.base.bias)


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_state_dict_names_go_both_ways(kind):
    original = build(kind)
    model = build(kind, seed=3)  # other weights: they must all be replaced
    apply_lora(model, LoraConfig(r=4, targets=["all_linear"]))
    keys = list(model.state_dict())
    assert any(k.endswith(".c_attn.base.weight") for k in keys) and any(k.endswith(".lora_B.q") for k in keys)
    assert [plain_key(k) for k in keys if not is_adapter_key(k)] == list(original.state_dict())

    load_base_state_dict(model, original.state_dict())
    with torch.no_grad():  # zero B: the loaded base exactly
        assert torch.equal(logits(model), logits(original))
    for name, t in original.state_dict().items():
        assert torch.equal(base_state_dict(model)[name], t)
    prefixed = to_plain_state_dict({f"backbone.{k}": t for k, t in model.state_dict().items()})
    assert list(prefixed) == [f"backbone.{k}" for k in original.state_dict()]

    with pytest.raises(ValueError, match="missing"):
        load_base_state_dict(model, {k: t for k, t in original.state_dict().items() if "c_attn" not in k})

    # adapters alone save and load
    randomize_adapters(model)
    adapters = adapter_state_dict(model)
    assert adapters and all(".lora_" in k for k in adapters)
    other = build(kind)
    apply_lora(other, LoraConfig(r=4, targets=["all_linear"]))
    load_adapter_state_dict(other, adapters)
    torch.testing.assert_close(logits(other), logits(model), rtol=0, atol=0)


def test_lora_linear_alone():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 10)
    layer = LoRALinear(base, {"b": (7, 10), "a": (2, 5)}, r=2, alpha=3, dropout=0.5)
    assert list(layer.slices) == ["a", "b"] and not base.weight.requires_grad and layer.scaling == 1.5
    assert [n for n, _ in layer.named_parameters()] == ["base.weight", "base.bias", "lora_A.a", "lora_A.b",
                                                        "lora_B.a", "lora_B.b"]
    with torch.no_grad():
        for p in lora_parameters(layer):
            p.normal_()
    x = torch.randn(3, 4, 6)
    layer.eval()  # no dropout: the merged layer's output
    torch.testing.assert_close(layer(x), layer.merge()(x), rtol=0, atol=1e-5)
    expected = base(x).clone()
    for name, (s, e) in layer.slices.items():
        expected[..., s:e] += 1.5 * x @ layer.lora_A[name].T @ layer.lora_B[name].T
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-5)
    layer.train()
    assert not torch.allclose(layer(x), expected)  # dropout on the adapters' input
    assert torch.equal(layer(x)[..., 5:7], base(x)[..., 5:7])  # rows without an adapter: the base's
    with pytest.raises(ValueError, match="overlaps"):
        LoRALinear(torch.nn.Linear(6, 10), {"a": (0, 5), "b": (4, 8)})


def test_config_errors_name_the_key():
    assert LoraConfig().targets == ["q", "k", "v", "o"]
    assert LoraConfig(targets="q, v").targets == ["q", "v"]
    assert LoraConfig.from_dict({"r": 4, "targets": ["mlp"]}).to_dict()["r"] == 4
    for bad, key in ((dict(r=0), "r"), (dict(r=2.5), "r"), (dict(alpha=0), "alpha"), (dict(alpha=-1.0), "alpha"),
                     (dict(dropout=1.0), "dropout"), (dict(targets=["query"]), "targets"), (dict(targets=[]), "targets"),
                     (dict(kind="ia3"), "kind"), (dict(train_norms="yes"), "train_norms")):
        with pytest.raises(ConfigError, match=rf"task\.peft\.{key}"):
            LoraConfig(**bad)
    with pytest.raises(ConfigError, match=r"task\.peft\.rank is not a LoRA option"):
        LoraConfig.from_dict({"rank": 8})

    model = build("gpt2")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=r"task\.peft\.targets: \['cross_q'\] match no layer of this GPT; "
                                          r"it has q, k, v, o, up, down"):
        apply_lora(model, LoraConfig(targets=["q", "cross_q"]))
    with pytest.raises(ConfigError, match="not gated"):
        apply_lora(model, LoraConfig(targets=["gate"]))
    assert not lora_modules(model) and all(p.requires_grad for p in model.parameters())  # left as it was
    assert list(model.state_dict()) == list(before)
    apply_lora(model, {"targets": ["attention"], "r": 2})  # a mapping (task.peft) works too
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(model, LoraConfig())
