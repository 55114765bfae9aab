"""pipelines/benchmark.py end to end on tiny sizes: every enabled section writes its table, a disabled
one is absent, missing data or transformers become note rows, the GPU recipe composes and, without
CUDA, stops at once with one line. The figures themselves are never asserted (shared machine)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR, ROOT, shared_data_dir

HAS_HF = importlib.util.find_spec("transformers") is not None
TINY_GPT = "{arch: gpt, vocab_size: 256, block_size: 64, n_layer: 2, n_head: 2, n_embd: 64, dropout: 0.0}"
TINY_S2S = "{arch: encoder_decoder, vocab_size: 256, block_size: 64, n_layer: 1, n_head: 2, n_embd: 64}"
TINY = [
    "threads=1", f"model={TINY_GPT}", "peak.n=128", "peak.low_precision_n=64", "peak.budget_s=0.05",
    "training.steps=2", "training.warmup_steps=1", "training.batch_size=2",
    "hf_training.steps=2", "hf_training.bf16_steps=1", "hf_training.warmup_steps=1",
    "hf_training.batch_size=2", "hf_training.t5.intermediate_size=96", "hf_training.t5.source_len=16",
    "hf_training.t5.target_len=8",
    "families.steps=2", "families.batch_size=2", "families.seq_len=8",
    "families.size={vocab: 64, hidden: 32, layers: 1, heads: 2, intermediate: 48, positions: 16}",
    f"generation.encoder_decoder={TINY_S2S}", "generation.new_tokens=3", "generation.prompt_tokens=4",
    "generation.batch_sizes=[2]", "generation.repeats=1",
    "data.tokenizer.vocab_size=300", "~data.datasets.wikitext2",
    "memory.seq_lens=[32,64]", "memory.batch_size=2", "memory.steps=1",
    "hf_training.llama.intermediate_size=96", "padding.batches=2",
]
ALL_SECTIONS = {"training", "hf_training", "generation", "data", "families", "memory", "padding"}
RECIPES = ["sst2_bert", "tydiqa_bert", "samsum_t5"]
FAMILIES = ["bert", "roberta", "distilbert", "electra", "gpt2", "llama", "qwen2", "t5", "bart"]


def _run(args: list[str], tmp_path: Path, data_dir: Path | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LIT_LLM_DATA_DIR", None)
    if data_dir is not None:
        env["LIT_LLM_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "benchmark.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def _runs(rows: list[dict]) -> set:
    return {(r.get("run"), r.get("precision")) for r in rows}


@pytest.mark.slow  # every benchmark section (~40 s); test_disabled_sections_* stays in the default run
def test_every_section_writes_its_table(tmp_path):
    out = tmp_path / "bench"
    data_dir = shared_data_dir()
    proc = _run([*TINY, f"hydra.run.dir={out}"], tmp_path, data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "benchmark.json").read_text())
    sections = report["sections"]
    assert set(sections) == ALL_SECTIONS and report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")

    training = sections["training"]
    assert _runs(training) == {("lightning", "32-true"), ("plain", "32-true"), ("lightning / plain", "32-true"),
                               ("lightning compiled", "32-true"), ("lightning compiled / plain eager", "32-true"),
                               ("matmul peak", "float32")}
    for r in training[:2]:
        assert {"tokens_per_s", "step_ms", "model_gflops", "mfu", "target", "meets"} <= set(r) and r["tokens_per_s"] > 0
    assert training[2]["target"] == "ratio >= 0.99" and isinstance(training[2]["meets"], bool)
    compiled = next(r for r in training if r["run"] == "lightning compiled")
    assert compiled["target"] == "mfu >= 0.85" and compiled["tokens_per_s"] > 0  # the compiled MFU target

    hf_rows = sections["hf_training"]
    if HAS_HF:
        assert {("ours plain", "32-true"), ("hf plain", "32-true"), ("ours plain", "bf16-mixed"),
                ("hf plain", "bf16-mixed"), ("ours / hf", "32-true"),
                ("ours bf16-mixed / 32-true", "bf16-mixed")} <= _runs(hf_rows)
        assert next(r for r in hf_rows if r["run"] == "ours / hf" and r["precision"] == "32-true")["target"] \
            == "ratio >= 1.25"
        assert next(r for r in hf_rows if r["run"] == "ours / hf" and r["precision"] == "bf16-mixed")["target"] \
            == "ratio >= 1.2"  # ours vs HF, both in bf16
        assert {("llama ours plain", "32-true"), ("llama hf plain", "32-true"), ("llama ours / hf", "32-true")} \
            <= _runs(hf_rows)  # the Llama-style GPT against LlamaForCausalLM
        assert next(r for r in hf_rows if r["run"] == "llama hf plain")["model"] == "LlamaForCausalLM"
        assert next(r for r in hf_rows if r["run"] == "llama ours / hf" and r["precision"] == "32-true")["target"] \
            == "ratio >= 1.15"
        # the T5-style encoder-decoder against T5ForConditionalGeneration: source + target tokens
        assert {("t5 ours plain", "32-true"), ("t5 hf plain", "32-true"), ("t5 ours plain", "bf16-mixed"),
                ("t5 hf plain", "bf16-mixed"), ("t5 ours / hf", "32-true")} <= _runs(hf_rows)
        t5_hf = next(r for r in hf_rows if r["run"] == "t5 hf plain")
        assert t5_hf["model"] == "T5ForConditionalGeneration" and (t5_hf["seq_len"], t5_hf["target_len"]) == (16, 8)
        assert t5_hf["tokens_per_s"] > 0 and "mfu" in t5_hf
        assert next(r for r in hf_rows if r["run"] == "t5 ours / hf" and r["precision"] == "32-true")["target"] \
            == "ratio >= 1.0"
    else:
        assert hf_rows == [{"run": "hf_training", "note": "skipped: transformers not installed"}]

    family_rows = sections["families"]
    if HAS_HF:  # every family imports, fine-tunes and exports back to its own format
        assert [r["family"] for r in family_rows] == FAMILIES
        for r in family_rows:
            assert {"hf_model", "params", "import_s", "finetune_2_s", "export_s", "exported_as"} <= set(r)
            assert r["params"] > 0 and r["finetune_2_s"] > 0
        assert [r["exported_as"] for r in family_rows] == ["BERT", "RoBERTa", "BERT", "ELECTRA", "GPT-2", "Llama",
                                                            "Qwen2", "T5", "BART"]
    else:
        assert family_rows == [{"family": "(all)", "note": "skipped: transformers not installed"}]

    generation = sections["generation"]
    models = {(r["model"], r.get("beams"), r.get("kv_cache")) for r in generation}
    assert {("gpt", 1, True), ("gpt", 4, False), ("encoder_decoder", 4, True)} <= models
    assert (("hf_gpt2", 4, True) in models) == HAS_HF
    if HAS_HF:
        assert all("vs_hf" in r and "meets" in r for r in generation if r["model"] == "gpt" and r["kv_cache"])
        # seq2seq evaluation: our T5-style / BART-style generation vs HF generate on the same weights
        for model in ("t5", "bart"):
            assert {(model, 1, True), (model, 4, True), (f"hf_{model}", 4, True)} <= models
            assert all(r["target"] == "vs_hf >= 1.2" and r["examples_per_s"] > 0
                       for r in generation if r["model"] == model)
        assert {("llama", 1, True), ("hf_llama", 1, True)} <= models

    padding_rows = sections["padding"]
    assert [r["recipe"] for r in padding_rows] == RECIPES
    for r in padding_rows:  # the recipe's data present: its real-token fraction; else a note
        assert ("note" in r) or (r["batches"] == 2 and 0 < r["real_fraction"] <= 1
                                 and r["target"] == "real_fraction >= 0.9")

    data_rows = sections["data"]
    assert [r["dataset"] for r in data_rows] == ["tinyshakespeare"]
    if data_dir is not None and (data_dir / "tinyshakespeare").is_dir():
        assert data_rows[0]["tokens_per_s"] > 0 and data_rows[0]["vocab"] <= 300
        assert {"tokenizer_train_s", "tokenize_pack_s", "cached_reload_s"} <= set(data_rows[0])
    else:
        assert data_rows[0]["note"].startswith("skipped: no data at")

    mem = sections["memory"]
    assert [(r["seq_len"], r["checkpointing"]) for r in mem] == [(32, False), (32, True), (64, False), (64, True)]
    assert all(r["step_ms"] > 0 for r in mem) and all("memory_ratio" in r for r in mem if r["checkpointing"])

    md = (out / "benchmark.md").read_text()
    for title in ("## Training: Lightning", "## Training: our GPT vs Hugging Face", "## Generation", "## Data",
                  "## Hugging Face families", "## Memory", "## Padding", "| run |", "| seq_len |", "Targets met:"):
        assert title in md
    assert md in proc.stdout and report["targets"]["checked"] >= 3


def test_disabled_sections_are_absent_and_missing_data_is_a_note(tmp_path):
    out = tmp_path / "bench"
    proc = _run([*TINY, "training.enabled=false", "hf_training.enabled=false", "generation.enabled=false",
                 "families.enabled=false", "memory.enabled=false", f"paths.data_dir={tmp_path / 'no_data'}",
                 f"hydra.run.dir={out}"],
                tmp_path, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "benchmark.json").read_text())
    assert list(report["sections"]) == ["data", "padding"]
    assert report["sections"]["data"][0]["note"].startswith(f"skipped: no data at {tmp_path / 'no_data'}")
    assert [(r["recipe"], r["note"][:16]) for r in report["sections"]["padding"]] == \
        [(name, "skipped: no data") for name in RECIPES]
    assert "## Training" not in (out / "benchmark.md").read_text()


def test_gpu_recipe_composes():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("benchmark_gpu")
    assert cfg.device == "cuda" and cfg.training.enabled and list(cfg.training.paths) == ["lightning"]
    assert cfg.training.precision == "bf16-mixed" and cfg.training.warmup_steps + cfg.training.steps == 50
    assert dict(cfg.training.model) == {"arch": "gpt", "vocab_size": 50304, "block_size": 1024, "n_layer": 12,
                                        "n_head": 12, "n_embd": 768, "dropout": 0.0}
    assert not any(cfg[s].enabled for s in ALL_SECTIONS - {"training"})
    from lit_llm.models.gpt import GPTConfig

    GPTConfig.from_dict(cfg.training.model)  # a valid model config


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the recipe would really run")
def test_gpu_recipe_without_cuda_stops_with_one_line(tmp_path):
    out = tmp_path / "bench"
    proc = _run(["--config-name", "benchmark_gpu", f"hydra.run.dir={out}"], tmp_path, None)
    assert proc.returncode == 2
    assert "error: device=cuda but CUDA is not available" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (out / "benchmark.json").exists()
