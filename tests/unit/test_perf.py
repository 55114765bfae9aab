"""FLOPs formulas against PyTorch's FLOP counter, activation checkpointing, peak FLOP/s, the speed monitor."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lit_llm.callbacks import SpeedMonitor, format_perf
from lit_llm.errors import ConfigError
from lit_llm.models.encoder import Encoder
from lit_llm.models.encoder_decoder import EncoderDecoder
from lit_llm.models.gpt import GPT
from lit_llm.perf import batch_flops, batch_shape, device_peak_flops, precision_dtype

SMALL = {"vocab_size": 512, "block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 64, "dropout": 0.0}


def _counted(fn) -> int:
    """Matmul + attention FLOPs of forward and backward, as torch's FlopCounterMode counts them
    (attention through sdpa's math path, whose matmuls it sees; it does not count the CPU fused kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn().float().pow(2).mean().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("tie", [True, False])
def test_gpt_train_flops_match_the_flop_counter(tie):
    model = GPT({**SMALL, "tie_embeddings": tie})
    ids = torch.randint(0, 512, (3, 48))
    counted = _counted(lambda: model(ids))
    # the analytic count includes biases and LayerNorms (6 FLOPs per parameter and token), which the counter skips
    assert 3 * model.train_flops(48) == pytest.approx(counted, rel=0.02)


def test_encoder_train_flops_match_the_flop_counter():
    model = Encoder({**SMALL, "pos_embedding": "rope"})
    ids = torch.randint(0, 512, (2, 40))
    counted = _counted(lambda: model(ids, attention_mask=torch.ones_like(ids)))
    assert 2 * model.train_flops(40) == pytest.approx(counted, rel=0.02)


def test_encoder_decoder_train_flops_match_the_flop_counter():
    model = EncoderDecoder({**SMALL, "n_decoder_layer": 3})
    src, tgt = torch.randint(1, 512, (2, 40)), torch.randint(1, 512, (2, 24))
    counted = _counted(lambda: model(src, tgt, torch.ones_like(src)))
    assert 2 * model.train_flops(40, 24) == pytest.approx(counted, rel=0.02)


def test_batch_flops_count_padding_and_decoder_tokens():
    model = EncoderDecoder(SMALL)
    batch = {"input_ids": torch.ones(2, 10, dtype=torch.long), "attention_mask": torch.tensor([[1] * 10, [1] * 4 + [0] * 6]),
             "decoder_input_ids": torch.ones(2, 6, dtype=torch.long), "labels": torch.tensor([[1] * 6, [1] * 3 + [-100] * 3])}
    shape = batch_shape(batch)
    assert shape == {"samples": 2, "input_len": 10, "target_len": 6, "tokens": 32, "real_tokens": 14 + 9}
    assert batch_flops(model, shape) == 2 * model.train_flops(10, 6)
    assert batch_flops(torch.nn.Linear(2, 2), shape) is None


def _grads(model, checkpointing: bool, run) -> dict[str, torch.Tensor]:
    model.config.activation_checkpointing = checkpointing
    model.zero_grad()
    run(model).float().pow(2).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("build,run", [
    (lambda: GPT({**SMALL, "pos_embedding": "rope"}), lambda m: m(torch.arange(40).view(2, 20))),
    (lambda: Encoder(SMALL), lambda m: m(torch.arange(1, 41).view(2, 20), attention_mask=torch.ones(2, 20))),
    (lambda: EncoderDecoder(SMALL), lambda m: m(torch.arange(1, 41).view(2, 20), torch.arange(1, 21).view(2, 10))),
])
def test_activation_checkpointing_gives_the_same_gradients(build, run):
    torch.manual_seed(0)
    model = build().train()
    plain, recomputed = _grads(model, False, run), _grads(model, True, run)
    assert plain.keys() == recomputed.keys() and plain
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_activation_checkpointing_keeps_fewer_activations():
    """What checkpointing is for: the tensors saved for backward shrink (only each block's input)."""
    def saved_bytes(checkpointing: bool) -> int:
        model = GPT({**SMALL, "n_layer": 4, "activation_checkpointing": checkpointing}).train()
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(torch.randint(0, 512, (4, 64))).flatten(0, 1), torch.zeros(256, dtype=torch.long))
        loss.backward()
        return total

    assert saved_bytes(True) < 0.5 * saved_bytes(False)


def test_activation_checkpointing_is_a_checked_option():
    with pytest.raises(ConfigError, match="model.activation_checkpointing"):
        GPT({**SMALL, "activation_checkpointing": "yes"})


def test_device_peak_is_measured_once_on_cpu():
    flops, source = device_peak_flops("cpu", torch.float32)
    assert flops > 1e8 and source.startswith("measured")
    assert device_peak_flops("cpu", torch.float32) == (flops, source)  # cached: no second probe
    again, _ = device_peak_flops("cpu", torch.float32, remeasure=True)
    assert again >= flops and device_peak_flops("cpu", torch.float32)[0] == again  # the higher probe is kept
    assert precision_dtype("bf16-mixed") is torch.bfloat16 and precision_dtype("32-true") is torch.float32
    assert precision_dtype("16-mixed", "cpu") is torch.bfloat16  # as Lightning does on CPU
    assert precision_dtype("16-mixed", "cuda") is torch.float16


def test_format_perf_names_the_peak_and_memory():
    line = format_perf({"tokens_per_s": 1234.5, "samples_per_s": 9.6, "step_time_ms_median": 830.0,
                        "model_flops_per_s": 5e10, "mfu": 0.5, "peak_flops_per_s": 1e11, "peak_source": "measured",
                        "peak_rss_gb": 1.5, "device": "cpu (2 threads)", "precision": "32-true", "world_size": 1})
    assert line == ("performance (cpu (2 threads), 32-true, x1): 1,234 tokens/s, 9.6 samples/s, 830 ms/step, "
                    "50.0 GFLOP/s, MFU 50.0% of 100 GFLOP/s (measured), peak memory 1.50 GB (RSS)")
    assert SpeedMonitor().summary == {}


class _Trainer:
    """What SpeedMonitor reads of a trainer to re-probe the peak."""
    precision = "32-true"
    strategy = type("S", (), {"root_device": torch.device("cpu")})()


def test_mfu_above_one_re_probes_the_peak_and_says_when(monkeypatch):
    """A probe taken while other work ran reads low (85 instead of ~180 GFLOP/s here): MFU 1.14 against it is
    measured again, and the figure reported is against the new peak, with the step that re-probed it."""
    import lit_llm.callbacks as callbacks

    monkeypatch.setattr(callbacks, "device_peak_flops", lambda device, dtype, remeasure=False: (190e9, "measured: x"))
    sm = SpeedMonitor()
    sm._peak, sm._peak_source, sm._peak_when = 85e9, "measured: x", "at fit start"
    assert sm._honest_mfu(_Trainer(), 50e9, "step 3") == pytest.approx(50 / 85)  # below 1: the peak stays
    assert sm._peak == 85e9
    assert sm._honest_mfu(_Trainer(), 97e9, "step 7") == pytest.approx(97 / 190)
    assert sm._peak == 190e9 and sm._peak_when.startswith("re-measured at step 7 (")
    assert "MFU read 1.14 against the earlier 85 GFLOP/s" in sm._peak_when


def test_mfu_above_a_peak_that_stays_too_low_is_not_reported(monkeypatch, caplog):
    import lit_llm.callbacks as callbacks

    monkeypatch.setattr(callbacks, "device_peak_flops", lambda device, dtype, remeasure=False: (85e9, "measured: x"))
    sm = SpeedMonitor()
    sm._peak, sm._peak_source = 85e9, "measured: x"
    with caplog.at_level("WARNING", logger="lit_llm"):
        assert sm._honest_mfu(_Trainer(), 97e9, "step 7") is None
        assert sm._honest_mfu(_Trainer(), 98e9, "step 8") is None
    assert [r.getMessage() for r in caplog.records] == [
        "perf: MFU not reported: 97.0 GFLOP/s achieved at step 7 is above the peak 85.0 GFLOP/s (measured: x); the "
        "peak is wrong for this device (set callbacks.speed_monitor.peak_flops)"]
    configured = SpeedMonitor(peak_flops=50e9)  # a configured peak is not probed again
    configured._peak, configured._peak_source = 50e9, "configured"
    monkeypatch.setattr(callbacks, "device_peak_flops", None)
    assert configured._honest_mfu(_Trainer(), 60e9, "step 1") is None
    line = format_perf({"tokens_per_s": 1.0, "samples_per_s": 1.0, "step_time_ms_median": 1.0, "mfu": None,
                        "model_flops_per_s": 6e10, "peak_flops_per_s": 5e10, "peak_source": "configured",
                        "device": "cpu", "precision": "32-true", "world_size": 1})
    assert "MFU not reported: above the peak of 50 GFLOP/s (configured)" in line
