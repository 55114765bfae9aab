"""Shared fixtures: compose Hydra configs in-process (no global state left behind), data location."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import lit_llm

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")

# Overrides that make any experiment tiny: seconds on 2 CPU cores.
TINY = [
    "model=gpt_tiny",
    "model.block_size=32",
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "data.batch_size=8",
    "trainer.max_steps=8",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.precision=32-true",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "task.optim.warmup_steps=2",
    "callbacks.generate_samples.max_new_tokens=20",
    "report.interpret.enabled=false",  # seconds of plots per report: tests/unit/test_interpret.py covers it
]


def shared_data_dir() -> Path | None:
    """LIT_LLM_DATA_DIR, else ../shared/data beside the checkout; None when neither exists."""
    env = os.environ.get("LIT_LLM_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def requires_data(*relative: str):
    """Skip (with the reason) when the shared datasets folder or one of its files is absent."""
    data = shared_data_dir()
    missing = [r for r in relative if data is None or not (data / r).exists()]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"needs {missing} under LIT_LLM_DATA_DIR (unset or ../shared/data absent: {data})",
    )


def last_weights(run_dir: Path) -> dict:
    """The weights in a run directory's checkpoints/last.ckpt."""
    import torch

    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    """Two runs ended with the same weights (their last.ckpt), tensor by tensor, to `atol`."""
    import torch

    wa, wb = last_weights(a), last_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One tokenizer / tokenized-data cache for the whole session (tests also check cache hits)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose_train(tmp_path, cache_dir):
    """compose_train(overrides, out=None) -> DictConfig with output and cache under tmp dirs."""

    def _compose(overrides: list[str], out: Path | None = None, tiny: bool = True) -> DictConfig:
        out = out or tmp_path / "run"
        data = shared_data_dir()
        extra = [f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}"]
        if data is not None:
            extra.append(f"paths.data_dir={data}")
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("train", overrides=(TINY if tiny else []) + list(overrides) + extra)

    return _compose


assert lit_llm  # resolvers registered before any compose


@pytest.fixture
def compose_eval(tmp_path, cache_dir):
    """compose_eval(overrides, out) -> the conf/eval.yaml DictConfig with output and cache under tmp dirs."""

    def _compose(overrides: list[str], out: Path) -> DictConfig:
        data = shared_data_dir()
        extra = [f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}", "progress_bar=false",
                 "report.interpret.enabled=false"]
        if data is not None:
            extra.append(f"paths.data_dir={data}")
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("eval", overrides=list(overrides) + extra)

    return _compose
