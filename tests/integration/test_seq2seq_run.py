"""Seq2seq end to end on a tiny generated parallel corpus: train, generate, score, predictions.jsonl."""
from __future__ import annotations

import json
import random

import pytest

from lit_llm.errors import ConfigError
from lit_llm.run import train

WORDS = ["rot", "blau", "grün", "haus", "baum", "hund", "katze", "auto"]
EN = {"rot": "red", "blau": "blue", "grün": "green", "haus": "house", "baum": "tree", "hund": "dog",
      "katze": "cat", "auto": "car"}


def corpus(tmp_path):
    rng = random.Random(0)
    for split, n in (("train", 200), ("val", 20), ("test", 20)):
        de = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) for _ in range(n)]
        (tmp_path / f"{split}.de").write_text("".join(s + "\n" for s in de), encoding="utf-8")
        (tmp_path / f"{split}.en").write_text("".join(" ".join(EN[w] for w in s.split()) + "\n" for s in de))
    return [f"data.train_files={tmp_path}/train", f"data.validation_files={tmp_path}/val",
            f"data.test_files={tmp_path}/test"]


def overrides(tmp_path):
    return ["data=multi30k_de_en", *corpus(tmp_path), "tokenizer=char", "task=seq2seq", "model=transformer_tiny",
            "model.block_size=64", "data.batch_size=16", "data.max_source_length=48", "data.max_target_length=48",
            "task.generation.max_new_tokens=40", "trainer.limit_val_batches=1", "trainer.limit_test_batches=null"]


def test_seq2seq_run_generates_scores_and_writes_predictions(compose_train, tmp_path):
    out = tmp_path / "run"
    metrics = train(compose_train(overrides(tmp_path) + ["task.generation.num_beams=2"], out))
    assert {"val/loss", "val/bleu", "val/chrf", "test/test/loss", "test/test/bleu", "test/test/chrf", "test/test/examples"} <= set(metrics)
    assert metrics["test/test/examples"] == 20 and 0 <= metrics["test/test/bleu"] <= 100
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 20 and set(lines[0]) == {"index", "source", "prediction", "references"}
    assert lines[0]["references"][0] == " ".join(EN[w] for w in lines[0]["source"].split())
    run = json.loads((out / "run.json").read_text())
    assert run["metric_info"]["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:none")


def test_unknown_generation_option_and_wrong_backbone(compose_train, tmp_path):
    with pytest.raises(ConfigError, match=r"task\.generation\.beams is not a generation option; known: .*num_beams"):
        train(compose_train(overrides(tmp_path) + ["+task.generation.beams=4"], tmp_path / "x"))
    with pytest.raises(ConfigError, match=r"task=seq2seq needs model\.arch=encoder_decoder"):
        train(compose_train(overrides(tmp_path) + ["model=bert_tiny"], tmp_path / "y"))


def test_denoising_pretraining_then_translation_from_it(compose_train, tmp_path):
    """BART text infilling on the shipped corpus, then init_from into a translation run."""
    pre = tmp_path / "denoise"
    metrics = train(compose_train(["experiment=quickstart", "model=transformer_tiny", "model.block_size=40", "data.block_size=32", "task=seq2seq",
                                   "task.metric=none", "data.objective=denoise", "data.mlm_probability=0.3",
                                   "callbacks.generate_samples=null"], pre))
    assert {"val/loss", "test/validation/loss", "train/loss"} <= set(metrics)
    out = tmp_path / "mt"
    metrics = train(compose_train(overrides(tmp_path) + [f"model.init_from={pre}", "trainer.max_steps=2",
                                                         "data.max_source_length=40", "data.max_target_length=40",
                                                         "task.generation.max_new_tokens=10"], out))
    assert "test/test/bleu" in metrics
    assert json.loads((out / "run.json").read_text())["init_from"] == str(pre)


def test_a_tiny_copy_task_is_learned(compose_train, tmp_path):
    """Copy random letter strings: the encoder-decoder must learn to align through cross-attention
    (measured: the loss sits at ln(10) for ~300 steps, then drops to ~0 by step 600; BLEU > 90)."""
    rng = random.Random(0)
    letters = "abcdefghij"
    for split, n in (("train", 640), ("val", 32), ("test", 32)):
        rows = [" ".join(rng.choice(letters) for _ in range(rng.randint(4, 7))) for _ in range(n)]  # words for BLEU
        (tmp_path / f"{split}.src").write_text("".join(r + "\n" for r in rows))
        (tmp_path / f"{split}.tgt").write_text("".join(r + "\n" for r in rows))
    args = ["data=multi30k_de_en", f"data.train_files={tmp_path}/train", f"data.validation_files={tmp_path}/val",
            f"data.test_files={tmp_path}/test", "data.source_lang=src", "data.target_lang=tgt", "tokenizer=bpe",
            "tokenizer.vocab_size=300", "tokenizer.min_frequency=1",  # " b": one token per letter-word
            "task=seq2seq", "model=transformer_tiny", "model.block_size=12", "model.dropout=0.0", "data.max_source_length=12",
            "data.max_target_length=12", "data.batch_size=32", "task.optim.lr=2e-3", "task.optim.warmup_steps=20",
            "task.label_smoothing=0.0", "task.generation.max_new_tokens=10", "trainer.max_steps=800",
            "trainer.val_check_interval=800", "trainer.limit_val_batches=1", "trainer.limit_test_batches=null",
            "trainer.enable_progress_bar=false", "callbacks.generate_samples=null"]
    metrics = train(compose_train(args, tmp_path / "copy", tiny=False))
    assert metrics["test/test/bleu"] > 90, metrics


def test_generate_pipeline_from_seq2seq_and_gpt_checkpoints(compose_train, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    s2s, gpt = tmp_path / "s2s", tmp_path / "gpt"
    train(compose_train(overrides(tmp_path) + ["test=false"], s2s))
    train(compose_train(["experiment=quickstart", "test=false"], gpt))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("rot haus\nblau baum katze\n")

    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "pipelines" / "generate.py"), *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)

    proc = run(f"ckpt_path={s2s}", f"prompts_file={prompts}", "generation.num_beams=2", "generation.max_new_tokens=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "prompts.txt.generated.jsonl").read_text().splitlines()]
    assert [x["prompt"] for x in lines] == ["rot haus", "blau baum katze"] and all("generation" in x for x in lines)
    proc = run(f"ckpt_path={gpt}", "prompt=Once upon", "generation.temperature=0.8", "generation.top_p=0.9")
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-2000:]
    proc = run(f"ckpt_path={s2s}", "prompt=x", "generation.beams=2")
    assert proc.returncode != 0 and "generation.beams" in proc.stderr
