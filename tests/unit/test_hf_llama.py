"""The Llama family (Llama with GQA and llama3 rope scaling, Mistral, Qwen2 with q/k/v biases and tied embeddings):
tiny random models made and saved by `transformers` load into our GPT with equal logits, greedy generation
with our KV cache equals `transformers`' token for token, and our export loads back with equal logits."""
from __future__ import annotations

import pytest
import torch

from lit_llm.checkpointing import load_pretrained
from lit_llm.errors import ConfigError
from lit_llm.models import GPT, build_backbone
from lit_llm.models.decoding import generate
from lit_llm.models.hf_io import export_hf, load_hf, read_hf_state_dict

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, bos_token_id=None, eos_token_id=None,
            pad_token_id=None)
FAMILIES = {
    "llama_gqa_llama3_rope": (transformers.LlamaConfig, dict(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}, rope_theta=500000.0)),
    "llama_linear_rope_mha": (transformers.LlamaConfig, dict(num_key_value_heads=4,
                                                             rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "mistral": (transformers.MistralConfig, dict(sliding_window=None)),
    "qwen2_tied": (transformers.Qwen2Config, dict(tie_word_embeddings=True, rope_theta=1000000.0)),
}


def make(family: str, out, **save):
    cls, extra = FAMILIES[family]
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(cls(**{**TINY, **extra})).eval()
    with torch.no_grad():  # random norms and biases, so a mapping mistake cannot hide behind ones and zeros
        for name, p in hf.named_parameters():
            if name.endswith(("norm.weight", "layernorm.weight", "bias")):
                p.copy_(torch.randn_like(p) * 0.5 + (0 if name.endswith("bias") else 1))
    hf.save_pretrained(out, **save)
    return hf


def save_tokenizer(out) -> None:
    """A word-level tokenizer of the 96 ids, with </s>-style end of text "w1" named in its config."""
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(96)}, unk_token="w0"))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w1", unk_token="w0").save_pretrained(out)


@pytest.mark.parametrize("family", FAMILIES)
def test_hugging_face_llama_family_loads_generates_and_exports_equal(family, tmp_path):
    hf = make(family, tmp_path / "hf")
    ours, _ = load_hf(tmp_path / "hf")
    assert isinstance(ours, GPT) and ours.config.norm == "rmsnorm" and ours.config.mlp == "swiglu"
    ids = torch.randint(0, 96, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=0)
        prompt = ids[:, :5]
        theirs = hf.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=0)
        mine = generate(ours, prompt, 30, temperature=0.0)  # KV cache by default
        assert torch.equal(mine, theirs)

    name, out = export_hf(ours, tmp_path / "export")
    assert name == ("Qwen2" if family.startswith("qwen2") else "Llama")
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert back.config.model_type == ("qwen2" if family.startswith("qwen2") else "llama")
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)


def test_sharded_safetensors_and_init_from(tmp_path):
    make("llama_gqa_llama3_rope", tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "hf").glob("model-*.safetensors"))) > 1
    assert len(read_hf_state_dict(tmp_path / "hf")) == 3 + 2 * 9  # embed, final norm, lm_head + 9 per layer
    save_tokenizer(tmp_path / "hf")
    pretrained = load_pretrained(f"hf:{tmp_path / 'hf'}")
    assert pretrained.special_ids["<eos>"] == 1  # from the tokenizer's own config files
    model = build_backbone(pretrained.backbone_config)
    model.load_state_dict(pretrained.state_dict)
    assert model.config.n_kv_head == 2 and model.config.rope_scaling["type"] == "llama3"


def test_llama_options_from_scratch_and_what_cannot_be_imported(tmp_path):
    model = build_backbone({"arch": "gpt", "vocab_size": 64, "block_size": 16, "n_layer": 1, "n_head": 4,
                            "n_embd": 32, "norm": "rmsnorm", "mlp": "swiglu", "pos_embedding": "rope",
                            "n_kv_head": 1, "bias": False, "tie_embeddings": False})
    kv = model.new_kv_cache(2)
    assert kv.k[0].shape == (2, 1, 16, 8)  # one key/value head
    with pytest.raises(ConfigError, match="model.n_kv_head=3 must divide model.n_head=4"):
        build_backbone({"arch": "gpt", "n_head": 4, "n_kv_head": 3})
    with pytest.raises(ConfigError, match="model.rope_scaling=.*needs model.pos_embedding=rope"):
        build_backbone({"arch": "gpt", "rope_scaling": {"type": "linear", "factor": 2.0}})
    # a sliding window on some layers only (Qwen2's max_window_layers) has no model.attention_window equivalent
    qwen2 = transformers.Qwen2Config(**{**TINY, "use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1})
    transformers.AutoModelForCausalLM.from_config(qwen2).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="sliding window .16. on some layers only"):
        load_hf(tmp_path)


def test_llama_presets_have_the_published_sizes():
    from omegaconf import OmegaConf

    from lit_llm.models.gpt import GPTConfig
    from tests.conftest import CONF_DIR

    def config(name: str) -> dict:
        cfg = OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/model/{name}.yaml"))
        cfg.pop("init_from")
        return {**cfg, "vocab_size": cfg["vocab_size"] or 8192}

    assert build_backbone(config("smollm_135m")).num_params() == 134_515_008  # HuggingFaceTB/SmolLM-135M
    qwen = GPTConfig.from_dict(config("qwen2_0_5b"))  # 494 M parameters: counted, not built
    kv = qwen.n_kv_head * qwen.n_embd // qwen.n_head
    per_layer = (qwen.n_embd * (qwen.n_embd + 2 * kv) + qwen.n_embd + 2 * kv + qwen.n_embd ** 2
                 + 3 * qwen.n_embd * qwen.intermediate_size + 2 * qwen.n_embd)
    assert qwen.vocab_size * qwen.n_embd + qwen.n_layer * per_layer + qwen.n_embd == 494_032_768  # Qwen/Qwen2-0.5B
    tiny = build_backbone(config("llama_tiny"))
    assert tiny.config.n_kv_head == 2 and tiny(torch.randint(0, 64, (1, 8))).shape == (1, 8, 8192)


def test_hub_ids_resolve_in_the_local_cache_offline_or_fail_in_one_line(tmp_path, monkeypatch):
    """hf:<org>/<name>[@revision] in the Hugging Face cache layout (models--org--name/refs, snapshots/<commit>),
    with the hub unreachable: loaded from the cache; an id that is not there fails at once, naming id and cache."""
    import shutil

    import lit_llm.data.sources as sources
    from lit_llm.models.hf_io import resolve_hf

    hf = make("qwen2_tied", tmp_path / "saved")
    save_tokenizer(tmp_path / "saved")
    cache, commit = tmp_path / "hub", "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--acme--tiny-qwen"
    shutil.copytree(tmp_path / "saved", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=1.5: False)

    assert resolve_hf("acme/tiny-qwen") == repo / "snapshots" / commit
    assert resolve_hf(f"acme/tiny-qwen@{commit}") == repo / "snapshots" / commit
    pretrained = load_pretrained("hf:acme/tiny-qwen")
    model = build_backbone(pretrained.backbone_config)
    model.load_state_dict(pretrained.state_dict)
    ids = torch.randint(0, 96, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match=rf"model.init_from=hf:acme/absent: acme/absent is not in the Hugging Face "
                                          rf"cache {cache} and the hub is unreachable \(offline\)"):
        resolve_hf("acme/absent")
    with pytest.raises(ConfigError, match="model.init_from=hf:/no/such/dir: no such directory"):
        resolve_hf("/no/such/dir")
