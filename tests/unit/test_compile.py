"""task.compile=true: every task's forward pass goes through `BackboneTask.compiled`, training losses equal eager
ones, the first step's compile time reaches run.json's perf, and a missing C++ compiler fails at once."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lit_llm.callbacks import SpeedMonitor, format_perf
from lit_llm.errors import ConfigError
from lit_llm.tasks import base
from lit_llm.tasks.classification import ClassificationTask
from lit_llm.tasks.clm import CausalLMTask
from lit_llm.tasks.dpo import DPOTask
from lit_llm.tasks.mlm import MaskedLMTask
from lit_llm.tasks.qa import QuestionAnsweringTask
from lit_llm.tasks.seq2seq import Seq2SeqTask
from lit_llm.tasks.sft import SFTTask

V = 64
GPT = dict(arch="gpt", vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
ENCODER = dict(arch="encoder", vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
SEQ2SEQ = dict(arch="encoder_decoder", vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
OPTIM = dict(lr=1e-3, warmup_steps=0, weight_decay=0.0)


def _ids(B: int = 2, T: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def traced(monkeypatch):
    """torch.compile replaced by a recorder that runs the function eagerly: which backbone entries a task compiles,
    without paying for inductor."""
    calls: list[str] = []

    def fake_compile(fn, **kwargs):
        name = "forward" if isinstance(fn, torch.nn.Module) else fn.__name__

        def run(*args, **kw):
            calls.append(name)
            return fn(*args, **kw)
        return run

    monkeypatch.setattr(base.torch, "compile", fake_compile)
    return calls


def _dpo() -> DPOTask:
    task = DPOTask(GPT, OPTIM, compile=True)
    task.on_pretrained_loaded()  # the frozen reference copy (its forward stays eager)
    return task


def _forward_passes():
    ids, mask = _ids(), torch.ones(2, 8, dtype=torch.long)
    pair = dict(chosen_ids=ids, rejected_ids=_ids(seed=1), chosen_labels=ids, rejected_labels=ids)
    return [
        ("clm", lambda: CausalLMTask(GPT, OPTIM, compile=True), lambda t: t(ids), "forward"),
        ("classification gpt", lambda: ClassificationTask(GPT, OPTIM, num_labels=3, pooling="last", compile=True),
         lambda t: t({"input_ids": ids, "attention_mask": mask}), "hidden_states"),
        ("classification encoder", lambda: ClassificationTask(ENCODER, OPTIM, num_labels=3, compile=True),
         lambda t: t({"input_ids": ids, "attention_mask": mask}), "forward"),
        ("mlm", lambda: MaskedLMTask(ENCODER, OPTIM, compile=True), lambda t: t({"input_ids": ids}), "forward"),
        ("qa", lambda: QuestionAnsweringTask(ENCODER, OPTIM, compile=True), lambda t: t({"input_ids": ids}), "forward"),
        ("seq2seq", lambda: Seq2SeqTask(SEQ2SEQ, OPTIM, compile=True),
         lambda t: t({"input_ids": ids, "decoder_input_ids": ids, "attention_mask": mask}), "forward"),
        ("sft gpt", lambda: SFTTask(GPT, OPTIM, compile=True), lambda t: t({"input_ids": ids}), "forward"),
        ("dpo", _dpo, lambda t: t.pair_scores(pair), "forward"),
    ]


@pytest.mark.parametrize("name, build, run, entry", _forward_passes(), ids=[p[0] for p in _forward_passes()])
def test_every_task_forward_goes_through_the_compiled_backbone(traced, name, build, run, entry):
    task = build()
    assert traced == []  # compiled lazily, on first use
    run(task)
    assert traced and set(traced) == {entry}


def test_without_compile_the_plain_backbone_runs(traced):
    task = CausalLMTask(GPT, OPTIM)
    assert task.compiled() is task.backbone and task.compiled("hidden_states") == task.backbone.hidden_states
    task(_ids())
    assert traced == [] and task.__dict__["_compiled_methods"] == {}


def test_compiled_wrappers_add_no_state_dict_keys(traced):
    eager, compiled = CausalLMTask(GPT, OPTIM), CausalLMTask(GPT, OPTIM, compile=True)
    compiled(_ids())
    assert list(eager.state_dict()) == list(compiled.state_dict())


def test_compile_without_a_cxx_compiler_fails_at_once(monkeypatch):
    monkeypatch.setattr(base.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"task.compile=true: torch.compile \(inductor\) needs a C\+\+ compiler"):
        CausalLMTask(GPT, OPTIM, compile=True)
    CausalLMTask(GPT, OPTIM)  # without compile no compiler is needed


def test_perf_reports_the_first_steps_compile_time():
    monitor = SpeedMonitor(warmup_steps=0)
    monitor._first_step_s, monitor._step_times = 3.0, [0.1, 0.2, 0.1]
    monitor._totals.update(time=0.4, steps=3, tokens=30, real_tokens=30, samples=3)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1,
                              precision="32-true", global_step=3)
    monitor.on_train_end(trainer, SimpleNamespace(compiles=True))
    assert monitor.summary["first_step_s"] == 3.0 and monitor.summary["compile_s"] == pytest.approx(2.9)
    assert "torch.compile ~2.9 s" in format_perf(monitor.summary)
    monitor.on_train_end(trainer, SimpleNamespace(compiles=False))
    assert "compile_s" not in monitor.summary


def _losses(task, batches, loss_fn) -> tuple[list[float], float]:
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    losses, start = [], time.perf_counter()
    for batch in batches:
        loss = loss_fn(task, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, time.perf_counter() - start


def _clm_loss(task, batch):
    return task._loss(task(batch[:, :-1]), batch[:, 1:])


def _classification_loss(task, batch):
    return F.cross_entropy(task(batch), batch["labels"])


def _equal_losses(build, batches, loss_fn):
    torch.manual_seed(0)
    eager = build(False)
    compiled = build(True)
    compiled.load_state_dict(eager.state_dict())
    eager.train(), compiled.train()
    expected, _ = _losses(eager, batches, loss_fn)
    got, seconds = _losses(compiled, batches, loss_fn)
    assert got == pytest.approx(expected, abs=1e-4), (got, expected)
    return seconds


@pytest.mark.slow  # ~33 s with a cold inductor cache on a 2-core CPU (one thread)
def test_compiled_gpt_clm_trains_like_eager():
    """3 AdamW steps of eager and compiled copies of one model give the same losses."""
    batches = [_ids(4, 13, seed=s) for s in range(3)]
    _equal_losses(lambda c: CausalLMTask(GPT, OPTIM, compile=c), batches, _clm_loss)


@pytest.mark.slow  # ~17 s with a cold inductor cache
def test_compiled_encoder_classification_trains_like_eager():
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, 9:] = 0  # padding: the key bias path
    batches = [{"input_ids": _ids(4, 12, seed=s), "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}
               for s in range(3)]
    _equal_losses(lambda c: ClassificationTask(ENCODER, OPTIM, num_labels=3, head_dropout=0.0, compile=c),
                  batches, _classification_loss)


@pytest.mark.slow  # ~60 s with a cold inductor cache: a static compile, then two with symbolic sizes
def test_varying_lengths_recompile_once_per_dimension_not_every_batch():
    """Bucketed batches change length (and a last batch its size) from step to step: dynamic=None compiles the first
    shape statically, recompiles once when the length first changes (the length becomes symbolic) and once when the
    batch size first changes, and reuses that graph for every later shape."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    task = CausalLMTask(GPT, OPTIM, compile=True)
    graphs = []
    for B, T in [(4, 8), (4, 12), (3, 6), (4, 15), (2, 9), (4, 11), (3, 14)]:
        _clm_loss(task, _ids(B, T + 1)).backward()
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs == [1, 2, 3, 3, 3, 3, 3]
