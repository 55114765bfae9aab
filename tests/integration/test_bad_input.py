"""Every user error stops early with a short message naming the config key or file and the fix."""
from __future__ import annotations

import json
import os

import pytest
import torch
from hydra.errors import ConfigCompositionException

from lit_llm.checkpointing import AtomicCheckpointIO
from lit_llm.errors import ConfigError
from lit_llm.run import train


def _fails(cfg, *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        train(cfg)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, msg
    assert len(msg) < 600, msg
    return msg


def test_missing_data_files(compose_train, tmp_path):
    _fails(compose_train([f"data.files={tmp_path}/nope/*.txt"]), "data.files", "nope")


def test_empty_corpus(compose_train, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    _fails(compose_train([f"data.files={empty}"]), "empty.txt")


def test_missing_text_column(compose_train, tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text("\n".join(json.dumps({"content": f"document {i}"}) for i in range(20)))
    _fails(compose_train([f"data.files={f}", "data.text_column=body"]), "data.text_column", "content")


def test_block_size_above_model_context(compose_train):
    _fails(compose_train(["data.block_size=64", "model.block_size=32"]), "data.block_size=64", "model.block_size=32")


def test_vocabulary_larger_than_embedding(compose_train):
    _fails(compose_train(["tokenizer=char", "model.vocab_size=16"]), "model.vocab_size=16", "tokenizer")


def test_checkpoint_from_another_model_config(compose_train, tmp_path):
    first = tmp_path / "first"
    train(compose_train(["trainer.max_steps=2", "test=false"], first))
    msg = _fails(compose_train(["model.n_layer=3", f"ckpt_path={first}/checkpoints/last.ckpt"], tmp_path / "b"),
                 "ckpt_path", "model.n_layer=2")
    assert "model.n_layer=2" in msg  # the fix: resume with the checkpoint's value


def test_missing_checkpoint_file(compose_train, tmp_path):
    _fails(compose_train([f"ckpt_path={tmp_path}/none.ckpt"]), "ckpt_path", "none.ckpt")


def test_unknown_config_option(compose_train):
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(["model.n_layers=3"])
    assert "n_layers" in str(info.value)


def test_killed_mid_checkpoint_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    def crash(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=False) == {"step": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temp file left behind


def test_truncated_checkpoint_is_reported(compose_train, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    _fails(compose_train([f"ckpt_path={bad}"]), "bad.ckpt")


def test_uncached_hub_dataset_fails_fast_offline(compose_train):
    import time

    started = time.monotonic()
    _fails(compose_train(["data=hub", "data.hub_name=lit-llm/no-such-dataset"]), "data.hub_name", "data.files")
    assert time.monotonic() - started < 15  # not ~20 s of download retries per attempt
