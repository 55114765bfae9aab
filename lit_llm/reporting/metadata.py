"""Provenance of a run: seed, command, git state, package versions, device, data fingerprints."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "omegaconf", "torchmetrics", "datasets",
            "tokenizers", "numpy", "lit_llm")


def git_state(root: Path) -> dict:
    """Commit, dirty flag and the uncommitted diff (so a dirty run can still be reproduced)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain", "--untracked-files=no")
        diff = git("diff", "HEAD") if status.strip() else ""
        return {"commit": commit, "dirty": bool(status.strip()), "diff": diff}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "diff": ""}


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str | None:
    """The CPU's model name and whether it has AVX-512 / AVX512-BF16 (machines of one kind differ in both, and
    with them float results and speed), from /proc/cpuinfo; None where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    isa = ("AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags
           else "AVX-512" if "avx512f" in flags else "no AVX-512")
    return f"{name} ({isa})"


def device_info() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def run_metadata(root: Path) -> dict:
    git = git_state(root)
    return {
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "git": {"commit": git["commit"], "dirty": git["dirty"]},
        "versions": package_versions(),
        "device": device_info(),
        "_git_diff": git["diff"],
    }
