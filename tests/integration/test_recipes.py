"""The fine-tuning recipes (conf/experiment/finetune_*.yaml): each composes with a pretrained start and the
pretrained-body settings, stops at once without `model.init_from`, and two run from tiny checkpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lit_llm.errors import ConfigError
from lit_llm.run import train
from lit_llm.tasks.base import OptimConfig
from tests.conftest import CONF_DIR, ROOT, TINY, requires_data

RECIPES = sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("finetune_*.yaml"))
TASK_OF_RECIPE = {"finetune_sst2": "ClassificationTask", "finetune_tydiqa": "QuestionAnsweringTask",
                  "finetune_samsum": "Seq2SeqTask", "finetune_multi30k": "Seq2SeqTask",
                  "finetune_shakespeare": "CausalLMTask"}
# short runs: the recipes' warmup is a ratio, so TINY's task.optim.warmup_steps=2 is left out
SHORT = [o for o in TINY if not o.startswith(("model", "task.optim"))] + ["trainer.max_steps=6",
                                                                        "trainer.val_check_interval=3",
                                                                        "callbacks.generate_samples=null"]


def test_there_is_a_recipe_for_every_fine_tuning_task():
    assert RECIPES == sorted(TASK_OF_RECIPE)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_with_pretrained_body_defaults(compose_train, recipe):
    cfg = compose_train([f"experiment={recipe}", "model.init_from=/runs/pretrained"], tiny=False)
    OmegaConf.resolve(cfg)
    assert cfg.task_name == recipe and cfg.model.init_from == "/runs/pretrained"
    assert cfg.task._target_.endswith(TASK_OF_RECIPE[recipe])
    optim = OptimConfig(**cfg.task.optim)
    assert 2e-5 <= optim.lr <= 3e-4 and optim.warmup_steps == 0 and 0.06 <= optim.warmup_ratio <= 0.1
    assert 0.8 <= optim.layer_decay <= 1.0 and cfg.model.dropout == 0.1
    if recipe == "finetune_sst2":
        assert cfg.task.pooling == "auto"  # the backbone's own: cls for encoders, last for decoders


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_without_init_from_stops_at_once(compose_train, recipe, tmp_path):
    with pytest.raises(ConfigError, match=rf"^model.init_from is required: {recipe} fine-tunes a pretrained model; "
                                          r"give one, e.g. model.init_from=hf:\S+ .* or model.init_from=<a "):
        train(compose_train([f"experiment={recipe}"], tmp_path / "run", tiny=False))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "failed" and "data" not in run  # stopped before any data or model was built
    assert not (tmp_path / "run" / "tokenizer.json").exists()


def test_recipe_without_init_from_is_one_line_on_the_command_line(tmp_path, cache_dir):
    env = {**os.environ, "LIT_LLM_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "train.py"), "experiment=finetune_sst2",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: model.init_from is required: finetune_sst2 fine-tunes a pretrained model; give one, e.g. "
        "model.init_from=hf:google-bert/bert-base-uncased")
    assert "Traceback" not in proc.stderr and "MissingMandatoryValue" not in proc.stderr


def test_finetune_sst2_recipe_from_a_tiny_masked_lm(compose_train, tmp_path):
    """The classification recipe (here on the shipped tiny sentiment data) from a 2-step MLM run: the body
    loaded, the recipe's lr with layer-wise decay over the pretrained encoder's 2 blocks."""
    mlm = tmp_path / "mlm"
    train(compose_train(["experiment=quickstart", "model=bert_tiny", "model.block_size=32", "task=mlm",
                         "data.objective=mlm", "trainer.max_steps=2", "test=false", "callbacks.generate_samples=null"],
                        mlm))
    out = tmp_path / "cls"
    metrics = train(compose_train(["experiment=finetune_sst2", f"model.init_from={mlm}", "data=tiny_sentiment",
                                   "task.optim.layer_decay=0.5", *SHORT], out, tiny=False))
    assert {"val/acc", "test/test/acc"} <= set(metrics)
    assert json.loads((out / "run.json").read_text())["init_from"] == str(mlm)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    lr = ckpt["hyper_parameters"]["optim"]["lr"]
    # head 1, block 1: 1/2, block 0: 1/4, embeddings (+ their LayerNorm): 1/8; with and without weight decay each
    assert sorted(g["initial_lr"] for g in ckpt["optimizer_states"][0]["param_groups"]) == pytest.approx(
        sorted(lr * s for s in (1, 1, 1 / 2, 1 / 2, 1 / 4, 1 / 4, 1 / 8, 1 / 8)))


@requires_data("tinyshakespeare/input.txt")
def test_finetune_shakespeare_recipe_from_a_tiny_gpt(compose_train, tmp_path):
    """Causal-LM continuation: a 2-step quickstart GPT continued on Tiny Shakespeare with its own tokenizer."""
    gpt = tmp_path / "gpt"
    train(compose_train(["experiment=quickstart", "trainer.max_steps=2", "test=false",
                         "callbacks.generate_samples=null"], gpt))
    out = tmp_path / "continued"
    metrics = train(compose_train(["experiment=finetune_shakespeare", f"model.init_from={gpt}",
                                   "data.block_size=32", *SHORT], out, tiny=False))
    assert metrics["val/ppl"] > 1 and "test/validation/ppl" in metrics
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["n_embd"] == 64 and run["model"]["dropout"] == 0.1  # the checkpoint's body, recipe's dropout
    assert (out / "tokenizer.json").read_text() == (gpt / "tokenizer.json").read_text()


def test_auto_pooling_is_the_backbone_familys_own():
    from lit_llm.tasks.classification import ClassificationTask

    optim = {"lr": 1e-3}
    encoder = {"arch": "encoder", "vocab_size": 64, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
    gpt = {"arch": "gpt", "vocab_size": 64, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
    assert ClassificationTask(encoder, optim, num_labels=2, pooling="auto").pooling == "cls"
    assert ClassificationTask(gpt, optim, num_labels=2, pooling="auto").pooling == "last"
    assert ClassificationTask(gpt, optim, num_labels=2, pooling="mean").pooling == "mean"


def test_pretraining_study_pairs_its_two_starts(compose_train, tmp_path, capsys):
    """sst2_pretraining_value at toy scale (tiny sentiment data, a 2-step masked LM continued 2 steps by the TAPT
    recipe): both starts share tokenizer, architecture and test examples, so report.py pairs them."""
    import importlib.util

    body = ["model=bert_tiny", "model.block_size=128", "model.pos_embedding=rope", "model.norm_first=true",
            "model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.intermediate_size=256"]
    mlm, tapt = tmp_path / "mlm", tmp_path / "tapt"
    train(compose_train(["experiment=quickstart", *body, "data.block_size=32", "task=mlm", "data.objective=mlm",
                         "trainer.max_steps=2", "test=false", "callbacks.generate_samples=null"], mlm, tiny=False))
    train(compose_train(["experiment=sst2_tapt_mlm", f"model.init_from={mlm}", "data.files=" + str(
        ROOT / "lit_llm" / "corpora" / "quickstart.txt"), "data.text_column=text", "data.block_size=32",
        "trainer.max_steps=2", "test=false", "callbacks.generate_samples=null", "trainer.limit_val_batches=2"],
        tapt, tiny=False))
    sweep = tmp_path / "sweep"
    for start in ("scratch", "mlm"):
        train(compose_train(["experiment=sst2_pretraining_value", f"study.mlm_run={tapt}", f"start={start}",
                             "data=tiny_sentiment", "data.train_limit=40", "data.batch_size=8", "study.epochs=1",
                             "model=bert_tiny", "seed=3", "callbacks.generate_samples=null",
                             "report.resamples=50"], sweep / start, tiny=False))
    runs = {s: json.loads((sweep / s / "run.json").read_text()) for s in ("scratch", "mlm")}
    assert runs["mlm"]["init_from"] == str(tapt) and runs["scratch"]["init_from"] is None
    scratch_model = runs["scratch"]["model"]  # same architecture (the checkpoint's config also lists defaults)
    assert {k: runs["mlm"]["model"].get(k) for k in scratch_model} == scratch_model
    assert runs["mlm"]["data"]["train"]["examples"] == 40 and runs["mlm"]["global_step"] == 5  # 1 epoch of 40 / 8
    assert runs["mlm"]["compute"]["examples"] == 40 and runs["mlm"]["compute"]["optimizer_steps"] == 5
    # what the pretrained start cost: the TAPT run and the masked LM it continued
    earlier = [json.loads((d / "run.json").read_text())["compute"]["train_flops"] for d in (mlm, tapt)]
    assert runs["mlm"]["compute"]["pretraining_flops"] == pytest.approx(sum(earlier))
    assert runs["scratch"]["compute"]["pretraining_flops"] is None
    reports = {s: json.loads((sweep / s / "report.json").read_text()) for s in ("scratch", "mlm")}
    assert reports["mlm"]["data"]["fingerprints"] == reports["scratch"]["data"]["fingerprints"]
    for s in ("scratch", "mlm"):  # hydra's overrides, as a multirun job would have them
        (sweep / s / ".hydra").mkdir(exist_ok=True)
        (sweep / s / ".hydra" / "overrides.yaml").write_text(f"- start={s}\n- seed=3\n")
    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "pipelines" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(sweep), "--baseline", "start=scratch", "--resamples", "50"]) == 0
    rows = json.loads((sweep / "comparisons.json").read_text())["baseline"]["rows"]
    assert {(r["entry"], r["versus"], r["metric"]) for r in rows} == {
        ("mlm", "scratch", "test/test/acc"), ("mlm", "scratch", "test/test/f1_macro")}
    assert "mcnemar" in next(r for r in rows if r["metric"] == "test/test/acc")


def test_a_required_study_run_left_out_is_named(compose_train, tmp_path):
    """`study.tapt_run: ???` behind start=tapt: one ConfigError naming the key (not OmegaConf's traceback)."""
    cfg = compose_train(["experiment=sst2_pretraining_value", "study.mlm_run=/runs/mlm", "start=tapt"],
                        tmp_path / "run", tiny=False)
    with pytest.raises(ConfigError, match=r"^study.tapt_run is required \(model.init_from refers to it\): give "
                                          r"study.tapt_run=<value>"):
        train(cfg)
