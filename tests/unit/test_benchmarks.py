"""The benchmark compares like with like: Lightning and the plain loop do the same steps, our GPT and
Hugging Face's GPT-2 are the same model. Speeds are never asserted (the machine is shared)."""
from __future__ import annotations

import pytest
import torch

from lit_llm.benchmarks import data, memory
from lit_llm.benchmarks.common import check, random_loader
from lit_llm.benchmarks.training import lightning_and_plain, plain_train, task_loss
from lit_llm.models.gpt import GPT, GPTConfig

TINY = {"arch": "gpt", "vocab_size": 128, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0}
OPTIM = {"lr": 1e-2, "warmup_steps": 2}  # a large lr, so that any difference in the steps shows
CPU = torch.device("cpu")


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


def test_lightning_and_plain_loop_end_with_the_same_weights():
    loader = random_loader(num_batches=4, batch_size=4, seq_len=16, vocab_size=128, seed=0)
    times, task, _ = lightning_and_plain(TINY, loader, CPU, "32-true", warmup=1, steps=3, optim=OPTIM, seed=7,
                                         paths=["lightning"])
    assert sum(times["lightning"]) > 0 and task.global_step == 4
    torch.manual_seed(7)
    init = GPT(GPTConfig.from_dict(TINY))
    torch.manual_seed(7)
    model = GPT(GPTConfig.from_dict(TINY))
    _, plain = plain_train(model, loader, CPU, "32-true", warmup=1, steps=3, optim=OPTIM, loss=task_loss(model))
    assert max_diff(task.backbone, init) > 1e-3  # the weights moved...
    assert max_diff(task.backbone, plain) < 1e-5  # ...by the same steps on both paths


def test_lightning_and_the_plain_loop_taking_turns_end_with_the_same_weights():
    """The benchmark's timing: the plain loop steps between Lightning's steps, on the same batches."""
    from lit_llm.benchmarks.training import paired_ratio

    loader = random_loader(num_batches=5, batch_size=4, seq_len=16, vocab_size=128, seed=0)
    times, task, plain = lightning_and_plain(TINY, loader, CPU, "32-true", warmup=2, steps=3, optim=OPTIM, seed=7)
    assert task.global_step == 5 and {k: len(v) for k, v in times.items()} == {"lightning": 3, "plain": 3}
    torch.manual_seed(7)
    init = GPT(GPTConfig.from_dict(TINY))
    assert max_diff(task.backbone, init) > 1e-3 and max_diff(task.backbone, plain) < 1e-5
    assert paired_ratio([2.0, 3.0, 9.0], [1.0, 3.0, 3.0]) == 2.0  # the median of 2, 1, 3


def test_the_compiled_row_takes_turns_with_the_eager_plain_loop(monkeypatch):
    """`plain_compile=False`: Lightning with task.compile=true, the plain loop eager (torch.compile monkeypatched
    to record what it compiles): compiled / eager becomes a paired ratio of the same steps."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    loader = random_loader(num_batches=3, batch_size=2, seq_len=16, vocab_size=128, seed=0)
    times, task, plain = lightning_and_plain(TINY, loader, CPU, "32-true", warmup=1, steps=2, optim=OPTIM, seed=7,
                                             compile=True, plain_compile=False)
    assert [fn.__self__ for fn in compiled] == [task.backbone]  # the task's backbone only, not the plain model
    assert {k: len(v) for k, v in times.items()} == {"lightning": 2, "plain": 2}
    assert max_diff(task.backbone, plain) < 1e-5  # the same steps
    compiled.clear()
    lightning_and_plain(TINY, loader, CPU, "32-true", warmup=1, steps=2, optim=OPTIM, seed=7, compile=True)
    assert len(compiled) == 2  # by default the plain loop is compiled as the task is


@pytest.mark.parametrize("paths", [["lightning", "plain"], ["lightning"]])
def test_the_training_section_pairs_the_compiled_row_only_with_the_plain_path(monkeypatch, paths):
    """The GPU recipe runs Lightning alone: its compiled row stays Lightning alone (no plain model on the GPU)."""
    from lit_llm.benchmarks import training

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    cfg = {"model": TINY, "paths": paths, "precision": "32-true", "batch_size": 2, "warmup_steps": 1, "steps": 2,
           "compiled_row": True, "optim": OPTIM, "peak": {"n": 64, "budget_s": 0.01},
           "targets": {"lightning_vs_plain": 0.99, "mfu_fp32": 0.75, "mfu_compiled": 0.85}}
    runs = [r["run"] for r in training.run(cfg)]
    assert "lightning compiled" in runs
    assert ("lightning compiled / plain eager" in runs) == ("plain" in paths)


def test_interleaved_plain_loops_take_turns_and_time_every_step():
    from lit_llm.benchmarks.training import PlainLoop, interleaved

    loader = random_loader(num_batches=4, batch_size=2, seq_len=16, vocab_size=128, seed=0)
    order = []
    loops = {}
    for name in ("a", "b"):
        torch.manual_seed(1)
        model = GPT(GPTConfig.from_dict(TINY))
        loops[name] = PlainLoop(model, CPU, "32-true", 4, OPTIM, loss=task_loss(model))
        step = loops[name].step
        loops[name].step = lambda batch, name=name, step=step: (order.append(name), step(batch))
    times = interleaved(loops, loader, warmup=1, steps=3, device=CPU)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]  # who goes first alternates
    assert [len(t) for t in times.values()] == [3, 3] and all(x > 0 for t in times.values() for x in t)
    assert max_diff(loops["a"].model, loops["b"].model) == 0.0  # same steps on the same batches


def test_plain_loop_in_bf16_autocast_runs():
    loader = random_loader(num_batches=2, batch_size=2, seq_len=16, vocab_size=128, seed=0)
    seconds, model = plain_train(GPT(GPTConfig.from_dict(TINY)), loader, CPU, "bf16-mixed", warmup=1, steps=1,
                                 optim=OPTIM)
    assert seconds > 0 and next(model.parameters()).dtype == torch.float32  # mixed: fp32 master weights


def test_hf_gpt2_is_our_model_with_our_weights():
    pytest.importorskip("transformers")
    from lit_llm.benchmarks import hf

    torch.manual_seed(0)
    gpt = GPT(GPTConfig.from_dict(TINY)).eval()
    model = hf.gpt2_from(gpt).eval()
    assert model.config._attn_implementation == "sdpa" and model.config.resid_pdrop == 0.0
    # same parameters, so the one analytic FLOPs formula is right for both
    assert sum(p.numel() for p in model.parameters()) == gpt.num_params()
    assert sum(p.numel() for n, p in model.named_parameters() if "wpe" not in n) == gpt.num_params(non_embedding=True)
    ids = torch.randint(0, TINY["vocab_size"], (2, 16))
    with torch.no_grad():
        assert (hf.logits(model, ids) - gpt(ids)).abs().max().item() < 1e-5


def test_ours_and_hf_train_alike_in_the_plain_loop():
    """The ours-vs-HF comparison trains the same weights the same way (only the implementation differs)."""
    pytest.importorskip("transformers")
    from lit_llm.benchmarks import hf

    loader = random_loader(num_batches=3, batch_size=2, seq_len=16, vocab_size=128, seed=1)
    torch.manual_seed(0)
    ours = GPT(GPTConfig.from_dict(TINY))
    theirs = hf.gpt2_from(ours)
    batch = next(iter(loader))
    torch.testing.assert_close(hf.causal_lm_loss(theirs)(batch), task_loss(ours)(batch))  # each library's own loss
    _, ours = plain_train(ours, loader, CPU, "32-true", warmup=1, steps=2, optim=OPTIM, loss=task_loss(ours))
    _, theirs = plain_train(theirs, loader, CPU, "32-true", warmup=1, steps=2, optim=OPTIM,
                            loss=hf.causal_lm_loss(theirs))
    ids = torch.randint(0, TINY["vocab_size"], (2, 16))
    with torch.no_grad():
        assert (hf.logits(theirs.eval(), ids) - ours.eval()(ids)).abs().max().item() < 1e-4


@pytest.mark.parametrize("reference", ["gpt2", "llama", "t5"])
def test_timed_pair_times_ours_and_its_transformers_copy_step_by_step(reference):
    """One comparison at one precision, as the fresh process runs it: both models, every timed step."""
    pytest.importorskip("transformers")
    import os

    from lit_llm.benchmarks.hf_training import LLAMA_OPTIONS, T5_OPTIONS, timed_pair

    model = {"gpt2": TINY, "llama": {**TINY, **LLAMA_OPTIONS, "n_kv_head": 1, "intermediate_size": 48},
             "t5": {**TINY, **T5_OPTIONS, "n_head": 4, "intermediate_size": 48}}[reference]
    spec = {"reference": reference, "model": model, "batch_size": 2, "source_len": 12, "target_len": 7,
            "precision": "32-true", "steps": 3, "warmup_steps": 1, "seed": 0, "optim": OPTIM, "device": "cpu",
            "threads": None}
    result = timed_pair(spec)
    assert result["pid"] == os.getpid()
    assert {k: len(v) for k, v in result["times"].items()} == {"ours": 3, "hf": 3}
    assert all(t > 0 for times in result["times"].values() for t in times)


@pytest.mark.parametrize("fresh", [True, False])
def test_each_precision_of_a_comparison_runs_in_its_own_fresh_process(monkeypatch, fresh):
    """In one process HF's speed depended on what ran before it (the section order): `fresh_process` gives each
    comparison at each precision its own process (monkeypatched here to record the calls and run in this one)."""
    from lit_llm.benchmarks import hf_training

    calls = []
    monkeypatch.setattr(hf_training, "run_fresh", lambda fn, spec: calls.append(spec["precision"]) or fn(spec))
    monkeypatch.setattr(hf_training, "timed_pair",
                        lambda spec: {"times": {"ours": [1.0] * spec["steps"], "hf": [2.0] * spec["steps"]}})
    cfg = {"precisions": ["32-true", "bf16-mixed"], "steps": 3, "bf16_steps": 2, "warmup_steps": 1, "optim": OPTIM,
           "fresh_process": fresh}
    times, steps = hf_training.step_times(cfg, {"reference": "gpt2", "model": TINY}, CPU)
    assert calls == (["32-true", "bf16-mixed"] if fresh else []) and steps == {"32-true": 3, "bf16-mixed": 2}
    assert times[("hf", "bf16-mixed")] == [2.0, 2.0] and times[("ours", "32-true")] == [1.0, 1.0, 1.0]


def test_run_fresh_runs_in_another_process():
    import os

    from lit_llm.benchmarks import run_fresh

    assert run_fresh(os.getpid) != os.getpid()


T5_TINY = {**TINY, "block_size": 32, "n_head": 4, "intermediate_size": 48}


@pytest.mark.parametrize("t5", [{"activation": "geglu", "tie_output": False},  # T5 v1.1 / flan
                                {"activation": "relu", "tie_output": True, "scale_output": True}])  # T5 v1.0
def test_hf_t5_is_our_t5_style_model_with_our_weights(t5):
    pytest.importorskip("transformers")
    from lit_llm.benchmarks import hf
    from lit_llm.benchmarks.hf_training import T5_OPTIONS, check_same_logits, seq2seq_batches
    from lit_llm.models.encoder_decoder import EncoderDecoder

    cfg = {**T5_TINY, **T5_OPTIONS, **t5}
    model = EncoderDecoder(cfg)
    theirs = hf.t5_from(model)
    assert theirs.config._attn_implementation == "sdpa"
    assert sum(p.numel() for p in theirs.parameters()) == model.num_params()  # the same parameters, once each
    check_same_logits(lambda: EncoderDecoder(cfg), hf.t5_from, seq2seq_batches(1, 2, 12, 7, 128, 0))
    model.lm_head.weight.data.add_(1.0)  # a different model: the check says so
    with pytest.raises(RuntimeError, match="differ"):
        check_same_logits(lambda: model, lambda m: theirs, seq2seq_batches(1, 2, 12, 7, 128, 0))


def test_ours_and_hf_t5_train_alike_in_the_plain_loop():
    """The seq2seq plain loop (source, decoder input, mask -> logits vs labels) trains both the same way."""
    pytest.importorskip("transformers")
    from lit_llm.benchmarks import hf
    from lit_llm.benchmarks.hf_training import SEQ2SEQ_INPUTS, T5_OPTIONS, seq2seq_batches
    from lit_llm.models.encoder_decoder import EncoderDecoder

    batches = seq2seq_batches(3, 2, 12, 7, 128, seed=1)
    torch.manual_seed(0)
    ours = EncoderDecoder({**T5_TINY, **T5_OPTIONS, "activation": "geglu", "tie_output": False})
    theirs = hf.t5_from(ours)
    _, ours = plain_train(ours, batches, CPU, "32-true", 1, 2, OPTIM, inputs=SEQ2SEQ_INPUTS)
    _, theirs = plain_train(theirs, batches, CPU, "32-true", 1, 2, OPTIM, hf.seq2seq_logits, inputs=SEQ2SEQ_INPUTS)
    b = batches[0]
    with torch.no_grad():
        mine = ours.eval()(b["input_ids"], b["decoder_input_ids"], b["attention_mask"])
        ref = hf.seq2seq_logits(theirs.eval(), b["input_ids"], b["decoder_input_ids"], b["attention_mask"])
    assert (mine - ref).abs().max().item() < 1e-4


def test_memory_measure_one_configuration_in_process(monkeypatch):
    monkeypatch.setattr(memory, "_reset_peak_rss", lambda: None)  # leave pytest's own peak RSS alone
    spec = {"model": TINY, "seq_len": 16, "checkpointing": True, "device": "cpu", "batch_size": 2, "steps": 1}
    result = memory.measure(spec)
    assert set(result) == {"peak_mb", "step_ms"} and result["step_ms"] > 0


def test_data_section_notes_missing_corpora(tmp_path):
    rows = data.run({"block_size": 16, "tokenizer": {"kind": "char"},
                     "datasets": {"absent": {"files": str(tmp_path / "none.txt")}}})
    assert rows == [{"dataset": "absent", "note": f"skipped: no data at {tmp_path / 'none.txt'} "
                                                  "(LIT_LLM_DATA_DIR / paths.data_dir)"}]


def test_targets_are_reported_only_where_they_apply():
    assert check("ratio", 0.98, 0.97) == {"target": "ratio >= 0.97", "meets": True}
    assert check("mfu", 0.5, 0.65) == {"target": "mfu >= 0.65", "meets": False}
    assert check("mfu", 0.5, None) == {}


def test_compiled_runs_take_the_compiled_mfu_target():
    from lit_llm.benchmarks.training import mfu_target_of

    targets = {"mfu_fp32": 0.75, "mfu_compiled": 0.85}
    assert mfu_target_of(targets, compiled=False) == 0.75 and mfu_target_of(targets, compiled=True) == 0.85
    assert mfu_target_of({"mfu_fp32": 0.75}, compiled=True) == 0.75  # no compiled key: the eager one


def test_ours_vs_hf_has_a_target_per_precision():
    from lit_llm.benchmarks.hf_training import ratio_rows

    # per-step seconds of interleaved runs: the ratio is the median of the step-by-step ratios (here 1.3 and 1.1)
    best = {("ours", "32-true"): [1.0, 2.0, 1.0], ("hf", "32-true"): [1.3, 2.6, 1.0],
            ("ours", "bf16-mixed"): [1.0, 1.0, 1.0], ("hf", "bf16-mixed"): [1.1, 1.1, 1.1]}
    steps = {"32-true": 10, "bf16-mixed": 10}
    cfg = {"targets": {"ours_vs_hf_fp32": 1.25, "ours_vs_hf_bf16": 1.2, "llama_ours_vs_hf_fp32": 1.15}}
    rows = {(r["run"], r["precision"]): r for r in ratio_rows(cfg, {"ours": "a", "hf": "b"}, "", best, steps)}
    assert rows[("ours / hf", "32-true")]["target"] == "ratio >= 1.25" and rows[("ours / hf", "32-true")]["meets"]
    assert rows[("ours / hf", "bf16-mixed")]["target"] == "ratio >= 1.2"
    assert rows[("ours / hf", "bf16-mixed")]["meets"] is False  # 1.1 / 1.0
    llama = {(r["run"], r["precision"]): r for r in ratio_rows(cfg, {"ours": "a", "hf": "b"}, "llama ", best, steps)}
    assert llama[("llama ours / hf", "32-true")]["target"] == "ratio >= 1.15"
    assert "target" not in llama[("llama ours / hf", "bf16-mixed")]  # no llama bf16 key configured


S2S_TINY = {"vocab_size": 128, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32, "intermediate_size": 48,
            "dropout": 0.0}


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_seq2seq_generation_rows_compare_the_same_model(family):
    """Our generate_seq2seq and HF generate on the copy give the same tokens (greedy and beam): the same work."""
    pytest.importorskip("transformers")
    from lit_llm.benchmarks import generation_speed as gs
    from lit_llm.benchmarks import hf
    from lit_llm.models.encoder_decoder import EncoderDecoder

    options, convert = gs.SEQ2SEQ_STYLES[family]
    torch.manual_seed(0)
    ours = EncoderDecoder({**S2S_TINY, **options}).eval()
    theirs = getattr(hf, convert)(ours).eval()
    src = torch.randint(7, 128, (3, 10))
    for beams in (1, 4):
        mine, ref = gs._seq2seq(ours, src, 8, beams), gs._hf_seq2seq(theirs, src, 8, beams)
        assert mine.shape == ref.shape == (3, 8) and torch.equal(mine, ref)


def test_generation_section_checks_seq2seq_and_llama_against_hf():
    pytest.importorskip("transformers")
    from lit_llm.benchmarks import generation_speed

    cfg = {"gpt": TINY, "encoder_decoder": {"arch": "encoder_decoder", **S2S_TINY}, "hf": True,
           "llama": {"n_kv_head": 1, "intermediate_size": 48}, "hf_seq2seq": ["t5", "bart"], "prompt_tokens": 4,
           "new_tokens": 3, "batch_sizes": [2], "num_beams": [1], "repeats": 1, "device": "cpu",
           "targets": {"vs_hf": 1.0, "seq2seq_vs_hf": 1.2}}
    rows = {(r["model"], r["kv_cache"]): r for r in generation_speed.run(cfg)}
    assert {"t5", "hf_t5", "bart", "hf_bart", "llama", "hf_llama"} <= {m for m, _ in rows}
    for model in ("t5", "bart"):
        assert rows[(model, True)]["target"] == "vs_hf >= 1.2" and rows[(model, True)]["examples_per_s"] > 0
    assert rows[("llama", True)]["target"] == "vs_hf >= 1.0" and rows[("gpt", True)]["target"] == "vs_hf >= 1.0"
    assert "target" not in rows[("hf_t5", True)] and "target" not in rows[("encoder_decoder", True)]


def test_padding_counts_source_and_target_tokens_together():
    from lit_llm.benchmarks.padding import count_tokens, fractions

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    labels = torch.tensor([[5, 6, -100, -100], [5, 6, 7, 8]])
    batch = {"input_ids": mask, "attention_mask": mask, "decoder_input_ids": labels, "labels": labels}
    counts = count_tokens([batch, batch, batch], batches=2)
    assert counts == {"batches": 2, "source_real": 14, "source_all": 16, "target_real": 12, "target_all": 16}
    assert fractions(counts) == {"batches": 2, "tokens": 32, "real_fraction": round(26 / 32, 3),
                                 "source_fraction": round(14 / 16, 3), "target_fraction": 0.75}
    assert fractions(count_tokens([{"input_ids": mask, "attention_mask": mask}], 5))["real_fraction"] == 0.875


def test_padding_section_notes_missing_data(tmp_path):
    from lit_llm.benchmarks import padding

    rows = padding.run({"recipes": ["sst2_bert"], "batches": 1, "data_dir": str(tmp_path / "none"),
                        "targets": {"real_fraction": 0.9}})
    assert len(rows) == 1 and rows[0]["recipe"] == "sst2_bert" and rows[0]["note"].startswith("skipped: no data")
