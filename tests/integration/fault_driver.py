"""A training run that kills itself (SIGKILL: no handler, no cleanup) at a chosen moment, for tests/integration/test_kill.py.

    python tests/integration/fault_driver.py <out dir> <cache dir> <fault> [overrides ...]

<fault>: `none`; `mid-step:K` (after step K's backward, before its optimizer step changes any weight);
`checkpoint-write:N` (half-way through writing the N-th checkpoint file); `tokenize` (when the train split's
cache entry is built but not yet in place). The config is the tests' tiny one (tests/conftest.py TINY).
"""
from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def inject(fault: str) -> list[str]:
    """Patch the moment `fault` names; returns extra config overrides."""
    kind, _, arg = fault.partition(":")
    if kind == "none":
        return []
    if kind == "mid-step":
        return ["+callbacks.kill._target_=tests.integration.fault_driver.KillBeforeOptimizerStep",
                f"+callbacks.kill.step={int(arg)}"]
    if kind == "checkpoint-write":
        import torch

        real_save, calls = torch.save, [0]

        def save_then_die(obj, f, *args, **kwargs):
            calls[0] += 1
            if calls[0] < int(arg) or not hasattr(f, "write"):
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])  # half the checkpoint is on disk
            f.flush()
            os.fsync(f.fileno())
            die()

        torch.save = save_then_die
        return []
    if kind == "tokenize":
        from lit_llm.data.corpus import CorpusDataModule

        real_build = CorpusDataModule._build_split

        def build_then_die(self, split, out_dir):
            stats = real_build(self, split, out_dir)
            if split == "train":
                die()  # the entry is written in its temporary directory, not renamed into place
            return stats

        CorpusDataModule._build_split = build_then_die
        return []
    raise SystemExit(f"unknown fault {fault!r}")


class KillBeforeOptimizerStep(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.step:
            die()


def main(argv: list[str]) -> None:
    out, cache, fault, *overrides = argv
    from hydra import compose, initialize_config_dir

    from lit_llm.run import train
    from tests.conftest import CONF_DIR, TINY, shared_data_dir

    extra = inject(fault)
    data = shared_data_dir()
    paths = [f"paths.output_dir={out}", f"paths.cache_dir={cache}"] + ([f"paths.data_dir={data}"] if data else [])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=TINY + overrides + extra + paths)
    train(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
