"""trainer.precision=auto: the choice by hardware (GPU bf16 support, a cached CPU matmul probe), resolved once into
the config, and the ConfigError for a precision Lightning does not know."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from lit_llm import perf
from lit_llm.builders import resolve_precision
from lit_llm.errors import ConfigError
from lit_llm.perf import PRECISION_CACHE, cached_bf16_probe, choose_precision


class Probe:
    """A stand-in for the CPU matmul probe that counts its calls."""

    def __init__(self, fp32: float = 150.0, bf16: float = 17.0):
        self.calls, self.result = 0, {"fp32_gflops": fp32, "bf16_gflops": bf16}

    def __call__(self) -> dict:
        self.calls += 1
        return dict(self.result)


def _no_probe() -> dict:
    raise AssertionError("the CPU probe must not run")


def test_a_gpu_with_bf16_gets_bf16_mixed_without_a_probe(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake H100")
    choice = choose_precision("auto", "auto", tmp_path, probe=_no_probe)
    assert choice.precision == "bf16-mixed" and "Fake H100" in choice.reason
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose_precision("auto", "gpu", tmp_path, probe=_no_probe).precision == "32-true"


def test_a_cpu_without_fast_bf16_gets_32_true_and_with_it_bf16_mixed(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    slow = choose_precision("auto", "auto", tmp_path / "a", probe=Probe(fp32=150, bf16=17))
    assert slow.precision == "32-true" and "0.11x" in slow.reason and slow.probe["cached"] is False
    fast = choose_precision("auto", "cpu", tmp_path / "b", probe=Probe(fp32=180, bf16=400))
    assert fast.precision == "bf16-mixed" and "2.22x" in fast.reason
    # a speed-up inside the noise is not enough
    assert choose_precision("auto", "cpu", tmp_path / "c", probe=Probe(fp32=180, bf16=200)).precision == "32-true"


def test_the_cache_hit_skips_the_probe(tmp_path):
    probe = Probe(fp32=180, bf16=400)
    first = cached_bf16_probe(tmp_path, probe)
    second = cached_bf16_probe(tmp_path, probe)
    assert probe.calls == 1 and first["cached"] is False and second["cached"] is True
    assert second["bf16_gflops"] == 400
    assert perf._probe_key() in json.loads((tmp_path / PRECISION_CACHE).read_text())


def test_another_key_is_probed_again(monkeypatch, tmp_path):
    probe = Probe()
    cached_bf16_probe(tmp_path, probe)
    monkeypatch.setattr(perf, "_probe_key", lambda: "another CPU")
    cached_bf16_probe(tmp_path, probe)
    assert probe.calls == 2 and len(json.loads((tmp_path / PRECISION_CACHE).read_text())) == 2


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"KEY": {"fp32_gflops": "fast"}}', ""])
def test_a_corrupt_cache_file_is_ignored_and_rewritten(tmp_path, content):
    path = tmp_path / PRECISION_CACHE
    path.write_text(content.replace("KEY", perf._probe_key()))
    probe = Probe(fp32=180, bf16=400)
    assert cached_bf16_probe(tmp_path, probe)["cached"] is False and probe.calls == 1
    assert json.loads(path.read_text())[perf._probe_key()]["bf16_gflops"] == 400
    assert cached_bf16_probe(tmp_path, probe)["cached"] is True and probe.calls == 1


def test_resolve_precision_writes_the_concrete_value_into_the_config(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    real = perf.cached_bf16_probe
    monkeypatch.setattr(perf, "cached_bf16_probe", lambda cache_dir, probe: real(cache_dir, Probe(fp32=180, bf16=400)))
    trainer = OmegaConf.create({"accelerator": "cpu", "precision": "auto"})
    choice = resolve_precision(trainer, tmp_path)
    assert trainer.precision == "bf16-mixed" == choice.to_dict()["precision"]
    assert choice.to_dict()["configured"] == "auto"
    assert resolve_precision(trainer, tmp_path).reason == "configured"  # resolved once: concrete from now on


@pytest.mark.parametrize("value", ["bf17-mixed", "fp8", "auto-true", 8])
def test_an_unknown_precision_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"trainer.precision=.* is not one of .*auto picks bf16-mixed"):
        choose_precision(value, "cpu", probe=_no_probe)


@pytest.mark.parametrize("value", ["32-true", "bf16-mixed", "16-mixed", 32, "64"])
def test_a_concrete_precision_is_kept(value):
    assert choose_precision(value, "cpu", probe=_no_probe).precision == str(value)


def test_the_real_probe_is_quick_and_measures_both_dtypes():
    import time

    started = time.perf_counter()
    result = perf.probe_bf16_speedup(m=256, k=128, n=256, budget_s=0.02)
    assert time.perf_counter() - started < 5.0
    assert result["fp32_gflops"] > 0 and result["bf16_gflops"] > 0


def test_evaluate_resolves_auto_too(monkeypatch, tmp_path):
    from lit_llm.evaluation import eval_trainer_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    real = perf.cached_bf16_probe
    monkeypatch.setattr(perf, "cached_bf16_probe", lambda cache_dir, probe: real(cache_dir, Probe(fp32=150, bf16=17)))
    cfg = OmegaConf.create({"precision": "auto", "accelerator": "cpu", "paths": {"cache_dir": str(tmp_path)}})
    assert eval_trainer_config(cfg, {})["precision"] == "32-true"
    assert (tmp_path / PRECISION_CACHE).is_file()
    # a checkpoint's stored (already resolved) precision is used as it is
    stored = {"trainer": {"precision": "bf16-mixed"}}
    assert eval_trainer_config(OmegaConf.create({"precision": None}), stored)["precision"] == "bf16-mixed"
