"""In-process training runs on tiny configs: files, metrics, overfitting, resume, determinism."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lit_llm.run import train


def _state(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def test_run_directory_contract(compose_train, tmp_path):
    out = tmp_path / "run"
    metrics = train(compose_train(["experiment=quickstart"], out))

    for key in ("val/loss", "val/ppl", "train/loss", "test/validation/ppl", "baseline/unigram_ppl"):
        assert key in metrics
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics)
    assert metrics["val/ppl"] == pytest.approx(torch.exp(torch.tensor(metrics["val/loss"])).item(), rel=1e-3)

    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "checkpoints").glob("best-step*.ckpt"))
    assert (out / "tokenizer.json").is_file()
    assert (out / "metrics.csv").is_file()
    assert sorted(p.name for p in (out / "samples").iterdir())  # one sample per validation

    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["seed"] == 1234 and run["global_step"] == 8
    assert {"python", "torch", "pytorch-lightning", "hydra-core"} <= set(run["versions"])
    assert "commit" in run["git"] and "dirty" in run["git"]
    assert run["model"]["params"] > 0 and len(run["data"]["fingerprint"]) == 64
    assert "cpu_count" in run["device"]

    # the checkpoint is self-contained: backbone config + tokenizer inside
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["lit_llm"]["backbone_config"]["n_layer"] == 2
    assert ckpt["lit_llm"]["tokenizer_json"] == (out / "tokenizer.json").read_text()
    assert ckpt["global_step"] == 8


def test_loss_falls_when_overfitting_one_batch(compose_train, tmp_path):
    out = tmp_path / "run"
    train(compose_train(["experiment=quickstart", "debug=overfit", "trainer.max_steps=60",
                         "task.optim.lr=3e-3"], out))
    with open(out / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) >= 5
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("dropout,batches,first,total", [(0.0, 5, 6, 12), (0.1, 5, 6, 12), (0.0, 4, 4, 10)])
def test_resume_equals_uninterrupted(compose_train, tmp_path, dropout, batches, first, total):
    # limit_train_batches=5 makes 12 steps cross two epoch boundaries (data order must resume too);
    # decay_steps=total gives the shorter run the same LR schedule as the full one; dropout > 0
    # checks that the RNG stream resumes too. 4 of 10 stops exactly at an epoch's end: Lightning then
    # keeps the finished epoch's batch counts (lit_llm.faults.start_next_epoch_afresh), and its epoch numbers must not
    # pick the data order; 10 steps cross the next epoch boundary too.
    common = ["experiment=quickstart", f"model.dropout={dropout}", f"trainer.limit_train_batches={batches}",
              "trainer.val_check_interval=3", f"task.optim.decay_steps={total}", "test=false",
              "trainer.log_every_n_steps=1"]
    full, part, resumed = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train(compose_train(common + [f"trainer.max_steps={total}"], full))
    train(compose_train(common + [f"trainer.max_steps={first}"], part))
    train(compose_train(common + [f"trainer.max_steps={total}", f"ckpt_path={part}/checkpoints/last.ckpt"], resumed))

    a, b = _state(full / "checkpoints" / "last.ckpt"), _state(resumed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    # and the resumed run did start from the checkpoint's step, not from scratch
    assert json.loads((resumed / "run.json").read_text())["global_step"] == total
    assert _first_logged_step(resumed) >= first


def _first_logged_step(run_dir: Path) -> int:
    """The first step at which the run logged its learning rate (a run from scratch logs step 0)."""
    with open(run_dir / "metrics.csv") as f:
        return min(int(r["step"]) for r in csv.DictReader(f) if any(r[k] for k in r if k.startswith("lr-")))


def test_same_seed_deterministic_runs_give_identical_metrics(compose_train, tmp_path):
    overrides = ["experiment=quickstart", "trainer.deterministic=true", "model.dropout=0.1"]
    train(compose_train(overrides, tmp_path / "a"))
    train(compose_train(overrides, tmp_path / "b"))
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()
    train(compose_train(overrides + ["seed=7"], tmp_path / "c"))
    assert (tmp_path / "a" / "metrics.json").read_text() != (tmp_path / "c" / "metrics.json").read_text()


class AutocastProbe(pl.Callback):
    """Records, from inside the backbone's forward in every training step, whether CPU autocast is on, its
    dtype, the dtype of a linear layer's output (the first block's attention input projection) and of its
    weights, as JSON lines in `path`. A callback like any other: the test adds it with
    `+callbacks.autocast_probe._target_=...`."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_fit_start(self, trainer, pl_module):
        def record(module, args, output):
            if module.training:
                row = {"autocast": torch.is_autocast_enabled("cpu"), "dtype": str(torch.get_autocast_dtype("cpu")),
                       "output": str(output.dtype), "weights": str(next(module.parameters()).dtype)}
                with self.path.open("a") as f:
                    f.write(json.dumps(row) + "\n")

        self._handle = pl_module.backbone.blocks[0].attn.c_attn.register_forward_hook(record)

    def on_fit_end(self, trainer, pl_module):
        self._handle.remove()


def test_bf16_mixed_on_cpu(compose_train, tmp_path):
    """precision=bf16-mixed really computes in bfloat16: every training step's forward runs under CPU autocast
    to bfloat16 (a linear layer's output in bfloat16) while the weights stay float32, and run.json says so."""
    out, probe = tmp_path / "run", tmp_path / "autocast.jsonl"
    metrics = train(compose_train(["experiment=quickstart", "trainer.precision=bf16-mixed", "test=false",
                                   f"+callbacks.autocast_probe._target_={__name__}.AutocastProbe",
                                   f"+callbacks.autocast_probe.path={probe}"], out))
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    steps = [json.loads(line) for line in probe.read_text().splitlines()]
    assert len(steps) == 8  # TINY: trainer.max_steps=8, one forward each
    assert all(s == {"autocast": True, "dtype": "torch.bfloat16", "output": "torch.bfloat16",
                     "weights": "torch.float32"} for s in steps), steps
    assert json.loads((out / "run.json").read_text())["perf"]["precision"] == "bf16-mixed"


def test_rope_and_tensorboard(compose_train, tmp_path):
    out = tmp_path / "run"
    train(compose_train(["experiment=quickstart", "model.pos_embedding=rope", "logger=tensorboard",
                         "test=false"], out))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "metrics.csv").is_file()


def test_fast_dev_run(compose_train, tmp_path):
    out = tmp_path / "run"
    metrics = train(compose_train(["experiment=quickstart", "debug=fast_dev_run"], out))
    assert "val/loss" in metrics and (out / "metrics.json").is_file()


def test_checkpoint_loads_again_without_config(compose_train, tmp_path):
    from lit_llm.checkpointing import load_backbone
    from lit_llm.inference import sample_text

    out = tmp_path / "run"
    train(compose_train(["experiment=quickstart", "test=false"], out))
    model, tokenizer = load_backbone(str(out))  # a run directory resolves to checkpoints/last.ckpt
    state = _state(out / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(model.wte.weight, state["backbone.wte.weight"])
    assert tokenizer.to_str() == (out / "tokenizer.json").read_text()
    text = sample_text(model, tokenizer, "Once upon", 20, temperature=0.0, top_k=None, seed=0)
    assert isinstance(text, str) and len(text) > 0

    # model.safetensors: the same weights (test=false: the final ones), loadable on their own
    exported, tok2 = load_backbone(str(out / "model.safetensors"))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[name], tensor, msg=name)
    assert exported.lm_head.weight is exported.wte.weight  # tying survives the export
    assert tok2.to_str() == tokenizer.to_str()


def test_a_crashed_run_says_so_in_run_json(compose_train, tmp_path, monkeypatch):
    from lit_llm.tasks.clm import CausalLMTask

    def boom(self, batch, batch_idx):
        raise RuntimeError("boom at step %d" % self.global_step)

    monkeypatch.setattr(CausalLMTask, "training_step", boom)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        train(compose_train(["experiment=quickstart"], out))
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and "boom at step 0" in run["error"]
    assert not (out / "metrics.json").exists()
