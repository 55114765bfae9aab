"""Report interpretation: attention maps recomputed outside SDPA, projections, attributions, plots."""
from __future__ import annotations

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.models.encoder import Encoder
from lit_llm.models.gpt import GPT
from lit_llm.models.layers import SelfAttention
from lit_llm.reporting import interpret


def _encoder(**kw) -> Encoder:
    torch.manual_seed(0)
    return Encoder({"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32, **kw})


def _padded_batch():
    ids = torch.randint(5, 50, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids * mask, mask  # pad id 0


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_encoder_maps_reproduce_sdpa_and_are_distributions(pos):
    model = _encoder(pos_embedding=pos)
    ids, mask = _padded_batch()
    # check=True: probs @ v through c_proj must equal each module's own SDPA output
    maps = interpret.attention_maps(model, lambda: model(ids, attention_mask=mask), check=True)
    assert len(maps) == 2 and maps[0].shape == (3, 4, 10, 10)
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(3, 4, 10))
        assert (m >= 0).all()
        assert (m[1, :, :, 6:] == 0).all() and (m[2, :, :, 3:] == 0).all()  # padded keys get exactly 0


def test_maps_leave_training_mode_and_hooks_as_they_were():
    model = _encoder()
    model.train()
    ids, mask = _padded_batch()
    interpret.attention_maps(model, lambda: model(ids, attention_mask=mask))
    assert model.training
    attn = interpret.attention_modules(model)[0]
    assert not attn._forward_pre_hooks and not attn._forward_hooks


def test_causal_rope_gqa_maps_reproduce_sdpa():
    torch.manual_seed(0)
    model = GPT({"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32,
                 "pos_embedding": "rope"})
    ids = torch.randint(0, 50, (2, 9))
    maps = interpret.attention_maps(model, lambda: model.hidden_states(ids), check=True)
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 4, 9))
        assert (m.triu(diagonal=1) == 0).all()  # no position sees a later one


def test_additive_bias_and_custom_scale():
    torch.manual_seed(0)
    attn = SelfAttention(16, 2, causal=False, scale=1.0).eval()
    x = torch.randn(2, 5, 16)
    bias = torch.randn(2, 2, 5, 5)  # e.g. T5's relative position bias
    probs, v = interpret.attention_probs(attn, x, bias)
    y = attn.c_proj((probs @ v).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(y, attn(x, bias), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 5))


def _probe(model: Encoder, head: torch.nn.Linear, ids, mask) -> interpret.Probe:
    def outputs(batch):
        hidden = model(batch["input_ids"], attention_mask=batch["attention_mask"])
        return hidden[:, 0], head(hidden[:, 0])[:, 0]

    rows = [{"input_ids": i, "attention_mask": m} for i, m in zip(ids, mask)]
    return interpret.Probe(
        split="test", dataset=rows, collate=lambda xs: {k: torch.stack([x[k] for x in xs]) for k in xs[0]},
        feature_of=range(len(rows)), scores=[0.1 * i for i in range(len(rows))], score_name="s",
        groups=["a", "b", "a"], group_name="label", target_name="t", outputs=outputs,
        token_names=lambda xs: [f"t{int(i)}" for i in xs], embedding=model.wte)


def test_integrated_gradients_are_complete_and_grad_x_input_matches_autograd():
    model = _encoder(dropout=0.0).eval()
    head = torch.nn.Linear(32, 1)
    ids, mask = _padded_batch()
    probe = _probe(model, head, ids, mask)
    batch = {"input_ids": ids, "attention_mask": mask}
    ig = interpret.token_attributions(probe, batch, "integrated_gradients", steps=64)
    target = probe.outputs(batch)[1]
    with torch.no_grad():  # the baseline: all word embeddings zero (= the pad row)
        handle = model.wte.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
        baseline = probe.outputs(batch)[1]
        handle.remove()
    torch.testing.assert_close(ig.sum(-1), (target - baseline).detach(), rtol=2e-2, atol=2e-3)

    gxi = interpret.token_attributions(probe, batch, "grad_x_input")
    emb = model.wte(ids).detach().requires_grad_(True)
    handle = model.wte.register_forward_hook(lambda m, a, out: emb)
    (grad,) = torch.autograd.grad(probe.outputs(batch)[1].sum(), emb)
    handle.remove()
    torch.testing.assert_close(gxi, (grad * emb).sum(-1).detach())
    assert model.wte.weight.grad is None  # parameters' gradients untouched


def test_pca_2d_finds_the_main_direction():
    torch.manual_seed(0)
    x = torch.randn(200, 1) * torch.tensor([[5.0, 0, 0, 0]]) + 0.1 * torch.randn(200, 4)
    z, share = interpret.pca_2d(x)
    assert z.shape == (200, 2) and share[0] > 0.95


def test_settings_are_checked():
    assert interpret.interpret_settings(None)["projection"] == "auto"
    with pytest.raises(ConfigError, match="report.interpret.projection"):
        interpret.interpret_settings({"projection": "umap"})
    with pytest.raises(ConfigError, match="unknown keys"):
        interpret.interpret_settings({"exampels": 3})


class _Task(torch.nn.Module):
    def __init__(self, probe, backbone):
        super().__init__()
        self.backbone, self._probe = backbone, probe

    def interpret_probe(self):
        return self._probe


def test_write_interpretation_writes_the_plots(tmp_path):
    model = _encoder()
    ids, mask = _padded_batch()
    task = _Task(_probe(model, torch.nn.Linear(32, 1), ids, mask), model)
    out = interpret.write_interpretation(task, tmp_path, {"examples": 1, "attributions": "integrated_gradients",
                                                          "ig_steps": 4})
    assert out["projection"]["methods"][0] == "pca"
    assert [(r["which"], r["record"]) for r in out["attributions"]["examples"]] == [("worst", 0), ("best", 2)]
    for path in out["plots"].values():
        assert (tmp_path / path).stat().st_size > 1000
    assert "plots/attention_test_worst1.png" in out["plots"].values()
    assert "plots/attention_test_best1_mean.png" in out["plots"].values()
    assert task.training  # restored
