"""lit-llm: from raw text to a reproducible evaluation report."""
from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The repository root (holds `conf/`); `LIT_LLM_ROOT` overrides, else the current directory."""
    env = os.environ.get("LIT_LLM_ROOT")
    if env:
        return Path(env).resolve()
    candidate = PACKAGE_DIR.parent
    if (candidate / "conf").is_dir():
        return candidate
    return Path.cwd()


def package_file(relative: str) -> str:
    """Absolute path of a file shipped inside the package (small corpora, fixtures)."""
    return str(PACKAGE_DIR / relative)


def steps_for_epochs(rows: int, batch_size: int, epochs: float = 1) -> int:
    """Optimizer steps for `epochs` passes over `rows` examples in batches of `batch_size` (the last batch may be
    short): a training budget proportional to the data, e.g. `${steps_for_epochs:${data.train_limit},32,3}`."""
    if int(rows) < 1 or int(batch_size) < 1 or float(epochs) <= 0:
        raise ValueError(f"steps_for_epochs({rows}, {batch_size}, {epochs}): rows and batch size must be >= 1, "
                         "epochs > 0")
    return max(1, round(float(epochs) * -(-int(rows) // int(batch_size))))


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("package_file"):
        OmegaConf.register_new_resolver("package_file", package_file)
    if not OmegaConf.has_resolver("steps_for_epochs"):
        OmegaConf.register_new_resolver("steps_for_epochs", steps_for_epochs)
    if not OmegaConf.has_resolver("safe_dirname"):  # multirun job directories named from their overrides
        from lit_llm.sweeps import safe_dirname

        OmegaConf.register_new_resolver("safe_dirname", safe_dirname)


_register_resolvers()
