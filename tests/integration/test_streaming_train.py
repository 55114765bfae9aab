"""Training on a streamed corpus (data.streaming=true): a resumed run equals an uninterrupted one."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lit_llm.run import train


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_streaming_resume_equals_uninterrupted(compose_train, tmp_path):
    # limit_train_batches=5: the 12 steps cross epoch boundaries (each epoch is a new iteration of the stream,
    # which must start at the trainer's position); dropout > 0: the RNG stream resumes too.
    common = ["experiment=quickstart", "data.streaming=true", "data.val_documents=50", "model.dropout=0.1",
              "trainer.limit_train_batches=5", "trainer.val_check_interval=3", "task.optim.decay_steps=12",
              "test=false"]
    full, first, resumed = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train(compose_train(common + ["trainer.max_steps=12"], full))
    train(compose_train(common + ["trainer.max_steps=7"], first))
    ckpt = _checkpoint(first / "checkpoints" / "last.ckpt")
    position = ckpt["CorpusDataModule"]["stream"]
    assert position["blocks"] == 7 * 8 and position["source"] is not None  # 7 steps of 8 blocks: consumed, not fetched
    train(compose_train(common + ["trainer.max_steps=12", f"ckpt_path={first}/checkpoints/last.ckpt"], resumed))

    a = _checkpoint(full / "checkpoints" / "last.ckpt")
    b = _checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], atol=1e-6, rtol=0, msg=k)
    assert a["CorpusDataModule"]["stream"] == b["CorpusDataModule"]["stream"]
    run = json.loads((resumed / "run.json").read_text())
    assert run["global_step"] == 12 and run["data"]["validation"]["documents"] == 50
