"""task.peft=lora end to end: adapters on a pretrained encoder, checkpoints without the frozen base (a reference
and its sha256 instead), resume equal to an uninterrupted run, evaluate equal to the run's test, a changed base
refused, export merged."""
from __future__ import annotations

import json

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.evaluation import evaluate
from lit_llm.run import train
from tests.integration.test_finetune import CLASSIFY


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    """A tiny encoder, MLM-pretrained on the shipped corpus: the base the adapters train on."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR, TINY, shared_data_dir

    out, cache = tmp_path_factory.mktemp("mlm"), tmp_path_factory.mktemp("cache")
    data = shared_data_dir()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        train(compose("train", overrides=TINY + [
            "experiment=quickstart", "model=bert_tiny", "model.block_size=32", "task=mlm", "data.objective=mlm",
            "callbacks.generate_samples=null", "trainer.max_steps=4", f"paths.output_dir={out}",
            f"paths.cache_dir={cache}"] + ([f"paths.data_dir={data}"] if data is not None else [])))
    return out


def lora(mlm, *extra):
    return CLASSIFY + ["model=bert_tiny", f"model.init_from={mlm}", "task/peft=lora", "task.peft.r=4",
                       "task.peft.targets=[q,v]", "trainer.max_steps=6", "trainer.val_check_interval=3", *extra]


def test_lora_run_checkpoint_evaluate_and_a_changed_base(compose_train, compose_eval, mlm, tmp_path):
    out = tmp_path / "lora"
    metrics = train(compose_train(lora(mlm), out, tiny=False))
    run = json.loads((out / "run.json").read_text())
    params = run["parameters"]
    assert params["peft"]["r"] == 4 and 0 < params["trainable"] < params["total"] / 5
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state, ref = ckpt["state_dict"], ckpt["lit_llm"]["peft_base"]
    assert "backbone.blocks.0.attn.c_attn.lora_A.q" in state and "head.weight" in state
    left_out = ("backbone.wte.weight", "backbone.mlm.decoder.weight")  # the tied decoder too: every name of it
    assert not any(k.endswith("c_attn.base.weight") or k in left_out for k in state)  # base left out
    assert ref["init_from"].startswith(str(mlm)) and len(ref["sha256"]) == 64 and "wte.weight" in ref["keys"]
    base_size = (mlm / "checkpoints" / "last.ckpt").stat().st_size
    assert (out / "checkpoints" / "last.ckpt").stat().st_size < base_size / 2

    evaluated = evaluate(compose_eval([f"ckpt_path={out}"], tmp_path / "eval"))
    for key, value in evaluated.items():
        assert abs(value - metrics[key]) <= 1e-6, key

    # the base changes: the adapters do not fit it any more, and loading says so
    base_ckpt = mlm / "checkpoints" / "last.ckpt"
    saved = base_ckpt.read_bytes()
    try:
        changed = torch.load(base_ckpt, map_location="cpu", weights_only=True)
        changed["state_dict"]["backbone.blocks.0.attn.c_attn.weight"] += 0.01
        torch.save(changed, base_ckpt)
        with pytest.raises(ConfigError, match=r"other base weights than model\.init_from=.*sha256"):
            evaluate(compose_eval([f"ckpt_path={out}"], tmp_path / "eval2"))
    finally:
        base_ckpt.write_bytes(saved)


def test_lora_resume_equals_uninterrupted(compose_train, mlm, tmp_path):
    common = lora(mlm, "trainer.limit_train_batches=5", "task.optim.decay_steps=12", "test=false",
                  "model.dropout=0.1", "task.peft.dropout=0.1")
    full, first, resumed = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train(compose_train(common + ["trainer.max_steps=12"], full, tiny=False))
    train(compose_train(common + ["trainer.max_steps=6"], first, tiny=False))
    train(compose_train(common + ["trainer.max_steps=12", f"ckpt_path={first}/checkpoints/last.ckpt"], resumed,
                        tiny=False))
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def test_lora_needs_a_pretrained_model(compose_train, tmp_path):
    with pytest.raises(ConfigError, match=r"task\.peft=lora trains adapters on a pretrained model"):
        train(compose_train(CLASSIFY + ["model=bert_tiny", "task/peft=lora", "trainer.max_steps=1"], tmp_path / "x",
                            tiny=False))


def test_lora_run_exports_merged(compose_train, mlm, tmp_path):
    """The run's model.safetensors and `export.py --merge` hold base + adapters merged: hidden states equal the
    adapter model's within 1e-5; transformers loads the export; without --merge the export says what to add."""
    import subprocess
    import sys
    from pathlib import Path

    from lit_llm.checkpointing import load_backbone, read_checkpoint
    from lit_llm.models import build_backbone
    from lit_llm.peft import apply_lora, peft_config, restore_peft_base, to_lora_state_dict

    out = tmp_path / "lora"
    train(compose_train(lora(mlm, "task.peft.targets=[attention,mlp]", "test=false"), out, tiny=False))
    ckpt = read_checkpoint(out / "checkpoints" / "last.ckpt")
    adapters = build_backbone(ckpt["lit_llm"]["backbone_config"])
    apply_lora(adapters, peft_config(ckpt["hyper_parameters"]["peft"]))
    state = {k[9:]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
    adapters.load_state_dict({**to_lora_state_dict(restore_peft_base(ckpt["lit_llm"]["peft_base"]), adapters), **state})
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)  # the adapters did train
    ids = torch.randint(5, adapters.config.vocab_size, (2, 12))
    merged, _ = load_backbone(str(out / "checkpoints" / "last.ckpt"))
    from_file, _ = load_backbone(str(out / "model.safetensors"))
    with torch.no_grad():
        expected = adapters.eval()(ids)
        torch.testing.assert_close(merged(ids), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(from_file(ids), expected, atol=1e-5, rtol=0)

    script = str(Path(__file__).resolve().parents[2] / "pipelines" / "export.py")
    refused = subprocess.run([sys.executable, script, str(out), str(tmp_path / "hf")], capture_output=True, text=True)
    assert refused.returncode == 2 and "add --merge" in refused.stderr
    done = subprocess.run([sys.executable, script, str(out), str(tmp_path / "hf"), "--merge"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).last_hidden_state, expected, atol=1e-5, rtol=0)


LLAMA = [f"++model.{o}" for o in ("norm=rmsnorm", "mlp=swiglu", "pos_embedding=rope", "bias=false", "n_head=4",
                                   "n_kv_head=2")]


@pytest.mark.parametrize("kind", ["clm_llama", "seq2seq_t5_style", "qa", "mlm"])
def test_lora_on_every_backbone_and_task(kind, compose_train, mlm, tmp_path):
    """A pretrained start of each kind (a 4-step run), then a LoRA run on it: only adapters (and a task head) train,
    the checkpoint leaves the base out, and the run's merged model.safetensors loads."""
    from lit_llm.checkpointing import load_backbone
    from tests.integration.test_qa_run import QA
    from tests.integration.test_seq2seq_run import overrides as translation

    base = tmp_path / "base"
    if kind == "clm_llama":
        train(compose_train(["experiment=quickstart", *LLAMA, "callbacks.generate_samples=null"], base))
        run = ["experiment=quickstart", "callbacks.generate_samples=null", "task.peft.targets=[q,v,gate,up]"]
    elif kind == "seq2seq_t5_style":
        t5 = [f"++model.{o}" for o in ("pos_embedding=relative", "norm=rmsnorm", "bias=false", "activation=geglu",
                                       "scale_attention=false", "head_dim=16")]
        train(compose_train(["experiment=quickstart", "model=transformer_tiny", "model.block_size=40",
                             "data.block_size=32", "task=seq2seq", "task.metric=none", "data.objective=denoise",
                             "callbacks.generate_samples=null", *t5], base))
        run = [*translation(tmp_path), "trainer.max_steps=2", "data.max_source_length=40", "data.max_target_length=40",
               "task.generation.max_new_tokens=6", "task.peft.targets=[attention]"]
    elif kind == "qa":
        base = mlm
        run = [*QA, "task.peft.targets=[all_linear]", "trainer.max_steps=3", "data.max_length=32", "data.doc_stride=8"]
    else:  # masked-LM training continued with adapters (the MLM head, inside the backbone, stays frozen)
        base = mlm
        run = ["experiment=quickstart", "model=bert_tiny", "model.block_size=32", "task=mlm", "data.objective=mlm",
               "callbacks.generate_samples=null", "trainer.max_steps=3", "task.peft.targets=[q,k,v,o,up,down]"]
    out = tmp_path / "lora"
    train(compose_train([*run, f"model.init_from={base}", "task/peft=lora", "task.peft.r=2"], out))
    params = json.loads((out / "run.json").read_text())["parameters"]
    assert 0 < params["trainable"] < params["total"]
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert any("lora_A" in k for k in state) and not any(k.endswith(".base.weight") for k in state)
    merged, _ = load_backbone(str(out / "model.safetensors"))
    assert not any("lora" in k for k in merged.state_dict())
