"""The training hot path: the chunked LM-head cross-entropy equals F.cross_entropy (loss and gradients), the fused /
foreach AdamW equals the per-parameter loop, and the task picks the kernel Lightning accepts for its precision."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lit_llm.errors import ConfigError
from lit_llm.models.gpt import GPT
from lit_llm.tasks.base import OptimConfig, build_optimizer, param_groups
from lit_llm.tasks.clm import IGNORE_INDEX, LOSS_CHUNK_ROWS, CausalLMTask, chunked_cross_entropy, lm_head_weight

TINY = {"vocab_size": 96, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0}
OPTIM = {"lr": 1e-2, "warmup_steps": 0, "weight_decay": 0.1}


def _reference(hidden, weight, labels):
    logits = hidden @ weight.t()
    return F.cross_entropy(logits.float().view(-1, weight.size(0)), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def _loss_and_grads(fn, hidden, weight, labels):
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    loss = fn(h, w, labels)
    loss.backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("chunk", [1, 7, 32, 1000])
def test_chunked_cross_entropy_equals_cross_entropy_with_ignored_labels(chunk):
    gen = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(3, 20, 16, generator=gen), torch.randn(50, 16, generator=gen) * 0.3
    labels = torch.randint(0, 50, (3, 20), generator=gen)
    labels[0, :9] = IGNORE_INDEX  # a whole chunk may be ignored
    labels[2, -1] = IGNORE_INDEX
    ref = _loss_and_grads(_reference, hidden, weight, labels)
    out = _loss_and_grads(lambda h, w, y: chunked_cross_entropy(h, w, y, chunk), hidden, weight, labels)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out[2], ref[2], rtol=1e-5, atol=1e-7)


def test_chunked_cross_entropy_of_only_ignored_labels_is_zero_like_a_masked_sum():
    hidden, weight = torch.randn(2, 4, 8, requires_grad=True), torch.randn(10, 8, requires_grad=True)
    loss = chunked_cross_entropy(hidden, weight, torch.full((2, 4), IGNORE_INDEX), 3)
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.abs().sum() == 0 and weight.grad.abs().sum() == 0


def test_chunked_cross_entropy_under_bf16_autocast_is_close_and_keeps_the_dtypes():
    gen = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(2, 12, 16, generator=gen), torch.randn(40, 16, generator=gen) * 0.3
    labels = torch.randint(0, 40, (2, 12), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _loss_and_grads(_reference, hidden, weight, labels)
        out = _loss_and_grads(lambda h, w, y: chunked_cross_entropy(h, w, y, 5), hidden, weight, labels)
    assert out[1].dtype == out[2].dtype == torch.float32
    torch.testing.assert_close(out[0], ref[0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out[2], ref[2], rtol=5e-2, atol=5e-3)


def test_the_task_trains_with_the_chunked_loss_as_with_the_full_one():
    batch = {"input_ids": torch.randint(0, 96, (2, 16)), "labels": torch.randint(0, 96, (2, 16))}
    batch["labels"][0, :5] = IGNORE_INDEX
    grads = []
    for chunk in (None, 6):
        torch.manual_seed(0)
        task = CausalLMTask(TINY, OPTIM, loss_chunk_size=chunk)
        task.log = lambda *a, **k: None
        task.training_step(batch, 0).backward()
        grads.append({n: p.grad for n, p in task.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "many"])
def test_a_bad_loss_chunk_size_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="task.loss_chunk_size="):
        CausalLMTask(TINY, OPTIM, loss_chunk_size=bad)


def test_the_chunked_loss_is_the_default_and_compile_compiles_the_backbone_below_it(monkeypatch):
    assert CausalLMTask(TINY, OPTIM).loss_chunk_size == LOSS_CHUNK_ROWS
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn.__name__) or fn)
    task = CausalLMTask(TINY, OPTIM, compile=True)
    task.log = lambda *a, **k: None
    batch = {"input_ids": torch.randint(0, 96, (2, 16)), "labels": torch.randint(0, 96, (2, 16))}
    loss = task.training_step(batch, 0)
    assert compiled == ["hidden_states"]  # the LM head + loss run eagerly, chunk by chunk
    torch.testing.assert_close(loss, _reference(task.backbone.hidden_states(batch["input_ids"]),
                                                task.backbone.lm_head.weight, batch["labels"]))


def test_distillation_and_an_adapted_head_take_the_full_logits():
    task = CausalLMTask(TINY, OPTIM)
    assert lm_head_weight(task) is task.backbone.lm_head.weight
    task.distiller = object()
    assert lm_head_weight(task) is None
    task = CausalLMTask(TINY, OPTIM)
    task.backbone.lm_head = torch.nn.Sequential(task.backbone.lm_head)  # e.g. an adapter wrapping the head
    assert lm_head_weight(task) is None
    assert lm_head_weight(CausalLMTask(TINY, OPTIM, loss_chunk_size=None)) is None


def test_sft_trains_on_the_answer_rows_with_the_loss_and_gradients_of_the_full_logits():
    from lit_llm.tasks.sft import SFTTask

    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 96, (2, 16), generator=gen)
    labels = torch.full((2, 16), IGNORE_INDEX)
    labels[0, 5:9], labels[1, 10:16] = ids[0, 6:10], torch.randint(0, 96, (6,), generator=gen)
    batch = {"input_ids": ids, "labels": labels, "document_ids": torch.tensor([[0] * 9 + [1] * 7, [0] * 16])}
    grads, losses = [], []
    for chunk in (None, 3):
        torch.manual_seed(0)
        task = SFTTask(TINY, OPTIM, loss_chunk_size=chunk)
        task.log = lambda *a, **k: None
        loss = task.training_step(batch, 0)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in task.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


def _three_steps(opt_factory) -> dict:
    torch.manual_seed(0)
    model = GPT(TINY)
    opt = opt_factory(model)
    x = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(2))
    for _ in range(3):
        F.cross_entropy(model(x[:, :-1]).reshape(-1, 96), x[:, 1:].reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("fused", [True, False])
def test_fused_and_foreach_adamw_give_the_weights_of_the_per_parameter_loop(fused):
    optim = OptimConfig(**OPTIM)
    loop = _three_steps(lambda m: torch.optim.AdamW(param_groups(m, optim.weight_decay), lr=optim.lr,
                                                    betas=optim.betas, eps=optim.eps, foreach=False))
    ours = _three_steps(lambda m: build_optimizer(m, optim, 10, fused=fused)["optimizer"])
    for name in loop:
        torch.testing.assert_close(ours[name], loop[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("precision, fused", [("32-true", True), ("bf16-mixed", False), ("16-mixed", False)])
def test_the_task_uses_the_fused_kernel_except_with_mixed_precision(precision, fused):
    task = CausalLMTask(TINY, OPTIM)
    task._trainer = SimpleNamespace(precision=precision, estimated_stepping_batches=10)
    opt = task.configure_optimizers()["optimizer"]
    assert opt.defaults["fused"] is (True if fused else None) and opt.defaults["foreach"] is (None if fused else True)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_lightning_fits_with_gradient_clipping_in_either_precision(precision, tmp_path):
    data = [{"input_ids": torch.randint(0, 96, (16,)), "labels": torch.randint(0, 96, (16,))} for _ in range(4)]
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, precision=precision, gradient_clip_val=1.0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(CausalLMTask(TINY, OPTIM, loss_chunk_size=8), DataLoader(data, batch_size=2))
    assert trainer.global_step == 2
