"""Every user error stops early with a short message naming the config key or file and the fix.

Bad data files and rows of every data family, and foreign or broken checkpoints, are tried one by one in
tests/unit/test_bad_rows.py; here: through `lit_llm.run.train` / `lit_llm.evaluation.evaluate`, and through the
real command line (one line on stderr, exit status 2, no traceback, nothing half-written).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from lit_llm.checkpointing import AtomicCheckpointIO
from lit_llm.errors import ConfigError
from lit_llm.evaluation import evaluate
from lit_llm.run import train
from tests.conftest import ROOT, TINY


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


# ----------------------------------------------------------------------------- configs and checkpoints


def test_wrong_type_in_a_data_setting(compose_train):
    _fails(compose_train(["data.batch_size=abc"]), "data.batch_size='abc' must be a positive integer")


def test_unknown_config_group_value(compose_train):
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(["data=nope"])
    assert "Could not find 'data/nope'" in str(info.value) and "quickstart" in str(info.value)  # lists the options


@pytest.mark.parametrize("override", ["seed=abc", "trainer.max_steps=abc", "task.optim.lr=abc"])
def test_wrong_type_in_a_trainer_or_run_setting(compose_train, override):
    _fails(compose_train([override, "test=false"]), override.split("=")[0])


def test_foreign_checkpoint_as_init_from(compose_train, tmp_path):
    foreign = tmp_path / "pytorch_model.bin"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 2)}, foreign)
    _fails(compose_train([f"model.init_from={foreign}"]), f"model.init_from={foreign} was not written by lit-llm",
           "model.init_from=hf:<its directory>")
    text = tmp_path / "notes.ckpt"
    text.write_text("best epoch: 3\n")
    _fails(compose_train([f"model.init_from={text}"]), "model.init_from=", "notes.ckpt is not a readable checkpoint",
           "it is a text file")


def _truncated_checkpoint(path: Path) -> Path:
    torch.save({"lit_llm": {"backbone_config": {}, "task": "clm"},
                "state_dict": {f"backbone.w{i}": torch.randn(500) for i in range(4)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_checkpoint_for_evaluate(compose_eval, tmp_path):
    bad = _truncated_checkpoint(tmp_path / "last.ckpt")
    with pytest.raises(ConfigError, match=r"ckpt_path=.*last\.ckpt is not a readable checkpoint: a truncated or "
                                          r"damaged PyTorch file"):
        evaluate(compose_eval([f"ckpt_path={bad}"], tmp_path / "e"))
    assert not (tmp_path / "e").exists()  # refused before the run directory is made


# ----------------------------------------------------------------------------- the command line


def _cli(script: str, args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LIT_LLM_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _half_written(*roots: Path) -> list[str]:
    return [str(p) for root in roots if root.exists() for p in root.rglob("*")
            if ".tmp-" in p.name or p.name.endswith(".incomplete")]


def test_cli_bad_data_file_is_one_line_and_leaves_nothing_half_written(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_bytes(b"To be, or not to be\n" + "café".encode("latin-1") + b"\n")
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    proc = _cli("train.py", ["experiment=quickstart", *TINY, f"data.files={data}", f"hydra.run.dir={run_dir}"],
                tmp_path, cache)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error == [f"error: data.files: {data} is not UTF-8 text: line 2, column 4 has the byte 0xe9 (text in "
                     "another encoding, e.g. Latin-1 or Windows-1252, or binary data); convert the file to UTF-8 "
                     "(e.g. iconv -f latin1 -t utf-8) or fix that line."], proc.stderr[-2000:]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    left = {p.name for p in run_dir.iterdir() if not p.name.endswith(".lock")}
    assert left <= {".hydra", "run.json", "quickstart.log", "train.log"}, left
    assert _half_written(run_dir, cache) == []
    assert [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []  # nothing cached


def test_cli_truncated_checkpoint_and_unknown_config_value(tmp_path):
    bad = _truncated_checkpoint(tmp_path / "last.ckpt")
    proc = _cli("evaluate.py", [f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'e'}", "progress_bar=false"],
                tmp_path, tmp_path / "cache")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"error: ckpt_path={bad} is not a readable checkpoint: a truncated or damaged PyTorch file" in proc.stderr
    assert _half_written(tmp_path) == []
    proc = _cli("train.py", ["data=nope"], tmp_path, tmp_path / "cache")  # Hydra's own message and status
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "Could not find 'data/nope'" in proc.stderr and "Available options in 'data'" in proc.stderr
