"""Compute accounting: the Pareto front, FLOPs formatting, SpeedMonitor's totals (by hand, across a resume)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from lit_llm.callbacks import SpeedMonitor
from lit_llm.models.gpt import GPT
from lit_llm.perf import batch_flops, batch_shape
from lit_llm.reporting.compute import compute_of, fmt_flops, pareto_front, pareto_plot
from lit_llm.run import train

# (training FLOPs, metric): a hand-made leaderboard
TABLE = [(1e15, 0.70), (2e15, 0.80), (2e15, 0.75), (4e15, 0.80), (8e15, 0.90), (1e15, 0.70), (3e15, 0.60),
         (float("nan"), 0.99), (None, 0.99)]


def test_pareto_front_maximising():
    # 2 dominated by nothing; 2 (0.75) by 1; 3 by 1 (same metric, more compute); 6 by everything; 0 and 5 tie
    assert pareto_front(TABLE, "max") == [0, 5, 1, 4]


def test_pareto_front_minimising():
    # lower is better: 6 (3e15, 0.60) beats all cheaper ones; 0 and 5 tie at the smallest compute
    assert pareto_front(TABLE, "min") == [0, 5, 6]


def test_pareto_front_edge_cases():
    assert pareto_front([], "max") == []
    assert pareto_front([(1.0, 1.0)], "min") == [0]
    assert pareto_front([(2.0, 1.0), (1.0, 1.0)], "max") == [1]  # equal metric, less compute wins
    with pytest.raises(ValueError, match="direction"):
        pareto_front([(1.0, 1.0)], "best")


def test_fmt_flops_and_compute_of():
    assert fmt_flops(3.21e15) == "3.2e15" and fmt_flops(1.0e9) == "1.0e9" and fmt_flops(4.5e-3) == "4.5e-3"
    assert fmt_flops(None) == "—" and fmt_flops(float("nan")) == "—" and fmt_flops(0) == "0"
    assert compute_of({"compute": {"train_flops": 1.0}}) == {"train_flops": 1.0}
    assert compute_of({"seed": 1}) is None and compute_of({"compute": None}) is None


def test_pareto_plot_is_a_png():
    png = pareto_plot(["a", "b", "c", "none"], [1e15, 2e15, 4e15, None], [0.5, 0.7, 0.6, 0.9], "val/acc", "max")
    assert png.startswith(b"\x89PNG")
    assert pareto_plot([], [], [], "val/loss", "min").startswith(b"\x89PNG")


def _stub_trainer(world_size: int = 1):
    return SimpleNamespace(world_size=world_size, global_step=0, precision="32-true",
                           strategy=SimpleNamespace(root_device=torch.device("cpu")))


def test_speed_monitor_without_a_formula_has_unknown_flops_and_keeps_its_totals_after_fit():
    trainer, module = _stub_trainer(world_size=2), SimpleNamespace(backbone=torch.nn.Linear(2, 2))
    mon = SpeedMonitor(warmup_steps=100, peak_flops=1e12)
    batch = {"input_ids": torch.ones(4, 16, dtype=torch.long), "attention_mask": torch.ones(4, 16)}
    batch["attention_mask"][0, 10:] = 0
    mon.on_fit_start(trainer, module)
    mon.on_train_start(trainer, module)
    for i in range(3):
        mon.on_train_batch_start(trainer, module, batch, i)
        trainer.global_step += 1
        mon.on_train_batch_end(trainer, module, None, batch, i)
    mon.on_train_end(trainer, module)
    c = mon.compute
    assert c["train_flops"] is None and "no train_flops" in c["flops_formula"]
    assert (c["tokens"], c["real_tokens"], c["examples"]) == (3 * 64 * 2, 3 * 58 * 2, 3 * 4 * 2)
    assert (c["micro_batches"], c["optimizer_steps"], c["world_size"], c["counted_from_step"]) == (3, 3, 2, 0)
    assert c["fit_wall_s"] >= c["train_step_s"] >= 0
    # after fit, a checkpoint loaded by test(ckpt_path=best) must not rewind the totals
    mon.load_state_dict({**mon.state_dict(), "examples": 0})
    assert mon.compute["examples"] == 24
    assert SpeedMonitor().compute is None  # never fitted in this process


def _run_json(out) -> dict:
    return json.loads((out / "run.json").read_text())


def test_totals_equal_a_hand_count_with_gradient_accumulation(compose_train, tmp_path):
    # mode=max makes the *worst* validation the best checkpoint: testing it must not rewind the totals
    out = tmp_path / "run"
    train(compose_train(["experiment=quickstart", "trainer.max_steps=3", "trainer.accumulate_grad_batches=2",
                         "trainer.val_check_interval=2", "callbacks.model_checkpoint.mode=max"], out))
    run = _run_json(out)
    assert "step3" not in run["best_checkpoint"]
    compute = run["compute"]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    shape = batch_shape({"input_ids": torch.ones(8, 32, dtype=torch.long)})
    per_batch = batch_flops(GPT(ckpt["lit_llm"]["backbone_config"]), shape)
    micro = 3 * 2
    assert compute["train_flops"] == pytest.approx(micro * per_batch, rel=1e-12)
    assert (compute["tokens"], compute["examples"], compute["micro_batches"], compute["optimizer_steps"]) == (
        micro * 8 * 32, micro * 8, micro, 3)
    assert compute["real_tokens"] == compute["tokens"]  # packed text: no padding
    assert compute["world_size"] == 1 and compute["precision"] == "32-true" and compute["device"].startswith("cpu")
    assert "GPT.train_flops" in compute["flops_formula"]
    assert compute["fit_wall_s"] > 0 and compute["counted_from_step"] == 0


def test_resumed_totals_equal_an_uninterrupted_run(compose_train, tmp_path):
    # limit_train_batches=3 makes 8 steps cross epoch boundaries; the checkpoint of step 4 carries the totals
    common = ["experiment=quickstart", "trainer.limit_train_batches=3", "trainer.val_check_interval=2",
              "test=false"]
    full, first, resumed = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train(compose_train(common + ["trainer.max_steps=8"], full))
    train(compose_train(common + ["trainer.max_steps=4"], first))
    train(compose_train(common + ["trainer.max_steps=8", f"ckpt_path={first}/checkpoints/last.ckpt"], resumed))

    a, half, b = (_run_json(d)["compute"] for d in (full, first, resumed))
    wall = ("fit_wall_s", "train_step_s")
    assert {k: v for k, v in a.items() if k not in wall} == {k: v for k, v in b.items() if k not in wall}
    assert b["optimizer_steps"] == 8 and b["micro_batches"] == 8 and half["micro_batches"] == 4
    assert b["fit_wall_s"] >= half["fit_wall_s"]  # the first segment's wall time is carried over


def test_without_the_speed_monitor_compute_is_null(compose_train, tmp_path):
    out = tmp_path / "run"
    train(compose_train(["experiment=quickstart", "callbacks=none", "trainer.max_steps=2", "test=false"], out))
    run = _run_json(out)
    assert run["status"] == "completed" and run["compute"] is None


def test_pretraining_flops_follow_the_chain_of_starts(tmp_path):
    from lit_llm.reporting.compute import pretraining_flops

    def run(name, flops, init_from=None, earlier=None):
        d = tmp_path / name
        (d / "checkpoints").mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"init_from": init_from, "compute": {
            "train_flops": flops, "pretraining_flops": earlier}}))
        return str(d)

    base = run("base", 10.0)
    tapt = run("tapt", 5.0, base, 10.0)
    assert pretraining_flops(base) == 10.0 and pretraining_flops(tapt) == 15.0
    assert pretraining_flops(f"{tapt}/checkpoints/last.ckpt") == 15.0  # a checkpoint inside a run directory
    assert pretraining_flops(run("from_hf", 3.0, "hf:gpt2", None)) is None  # an unknown link: unknown total
    assert pretraining_flops("hf:gpt2") is None and pretraining_flops(None) is None
    assert pretraining_flops(str(tmp_path / "nowhere")) is None
