"""Benchmarks: python pipelines/benchmark.py [training.steps=50 memory.enabled=false ...]
GPU recipe (GPT-2 124M, bf16, Lightning): python pipelines/benchmark.py --config-name benchmark_gpu

One process, one run: writes benchmark.json and benchmark.md (a table per section) into the run
directory and prints the tables. Sections (each `<name>.enabled`; SECTIONS names its module in
lit_llm/benchmarks, whose `run(cfg) -> rows`): training (Lightning vs plain loop), hf_training (ours vs
Hugging Face GPT-2, Llama, T5), generation (KV cache vs recompute, ours vs HF generate), data (tokenize + pack),
families (import / fine-tune / export a tiny checkpoint of each Hugging Face family), memory (activation
checkpointing), padding (real-token fraction of the fine-tuning recipes' batches), attention_memory
(sliding-window vs full attention, GPT and encoder; off by default; its module entry names a function:
"memory:run_attention"), packing (tokenize + pack memory vs corpus size; off by
default). A row with a target says it
(`target`) and whether it is met (`meets`).
A user error (lit_llm.errors.ConfigError, e.g. device=cuda without CUDA) prints one line `error: ...` and
exits with status 2, before any work.
"""
import importlib
import platform
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import lit_llm  # noqa: F401  (registers the config resolvers)
from lit_llm.errors import ConfigError, cli_errors

SECTIONS = {  # config key -> (module in lit_llm/benchmarks, table title), in the order they run
    "training": ("training", "Training: Lightning (CausalLMTask + Trainer) vs a plain PyTorch loop"),
    "hf_training": ("hf_training",
                    "Training: our GPT vs Hugging Face GPT2LMHeadModel (plain loops, same weights and batches)"),
    "generation": ("generation_speed",
                   "Generation: new tokens/s (KV cache vs recompute; ours vs Hugging Face generate)"),
    "data": ("data", "Data pipeline: tokenizer training, tokenize + pack, cached reload"),
    "families": ("families", "Hugging Face families: import, fine-tune and export a tiny random checkpoint of each"),
    "memory": ("memory", "Memory: one training step (forward + backward) vs sequence length, with/without activation "
                         "checkpointing"),
    "padding": ("padding", "Padding: real (non-padding) tokens / all tokens in fine-tuning train batches, by default"),
    "attention_memory": ("memory:run_attention", "Memory: one training step, sliding-window (model.attention_window) "
                                                 "vs full attention, GPT and encoder"),
    "packing": ("packing", "Tokenize + pack vs corpus size: peak memory, tokens/s, cached reload (fresh processes)"),
}


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def targets_summary(sections: dict[str, list[dict]]) -> dict:
    checked = [(name, r) for name, rows in sections.items() for r in rows if "meets" in r]
    missed = [f"{name}: {r.get('run') or r.get('model') or r.get('recipe')} ({r['target']})"
              for name, r in checked if not r["meets"]]
    return {"checked": len(checked), "met": len(checked) - len(missed), "missed": missed}


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
@cli_errors()
def main(cfg: DictConfig) -> None:
    import torch
    from hydra.core.hydra_config import HydraConfig

    from lit_llm.benchmarks.common import resolve_device
    from lit_llm.reporting.metadata import run_metadata
    from lit_llm.utils_io import atomic_write_json, atomic_write_text

    try:
        device = resolve_device(cfg.device)
    except RuntimeError:  # torch.device("gpu"): "Expected one of cpu, cuda, ... device type at start of ..."
        raise ConfigError(f"device={cfg.device} is not a device: use auto, cpu, cuda or cuda:<n>") from None
    if device.type == "cuda" and not torch.cuda.is_available():  # before any work: one clear line
        raise ConfigError(f"device={cfg.device} but CUDA is not available here (torch {torch.__version__}); "
                          "run on a GPU machine, or use the CPU benchmark: python pipelines/benchmark.py")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    cpu = platform.processor() or platform.machine()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    report = {"config": OmegaConf.to_container(cfg, resolve=True), "device": str(device), "device_name": device_name,
              "torch_threads": torch.get_num_threads(), "cpu": cpu,
              "sections": {}, "seconds": {}}
    meta = run_metadata(lit_llm.project_root())
    meta.pop("_git_diff", None)
    report["metadata"] = meta
    md = ["# lit-llm benchmark\n\n",
          f"device {device} ({device_name}), torch {torch.__version__}, {torch.get_num_threads()} threads\n"]
    for name, (module, title) in SECTIONS.items():
        section = cfg.get(name)
        if section is None or not section.enabled:
            continue
        section_cfg = {**OmegaConf.to_container(section, resolve=True), "device": str(device), "seed": cfg.seed,
                       "threads": cfg.threads}
        started = time.perf_counter()
        module, _, function = module.partition(":")
        rows = getattr(importlib.import_module(f"lit_llm.benchmarks.{module}"), function or "run")(section_cfg)
        report["seconds"][name] = round(time.perf_counter() - started, 1)
        report["sections"][name] = rows
        md += [f"\n## {title}\n\n", markdown(rows)]
    report["targets"] = summary = targets_summary(report["sections"])
    md.append(f"\nTargets met: {summary['met']} of {summary['checked']}"
              + ("".join(f"\n- missed: {m}" for m in summary["missed"]) if summary["missed"] else "") + "\n")
    atomic_write_json(out_dir / "benchmark.json", report)
    atomic_write_text(out_dir / "benchmark.md", "".join(md))
    print("".join(md))
    print(f"written: {out_dir / 'benchmark.json'}, {out_dir / 'benchmark.md'}")


if __name__ == "__main__":
    main()
