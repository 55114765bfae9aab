"""Benchmarks: python pipelines/benchmark.py [generation.batch_sizes=[1,8] ...]

One process; writes benchmark.json and benchmark.md (a table per section) into the run directory
and prints the tables. Sections: generation (new tokens/s with and without the KV cache, greedy and
beam search).
"""
import platform
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import lit_llm  # noqa: F401  (registers the config resolvers)


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from lit_llm.reporting.metadata import run_metadata
    from lit_llm.utils_io import atomic_write_json, atomic_write_text

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    report = {"config": OmegaConf.to_container(cfg, resolve=True), "torch_threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "sections": {}}
    meta = run_metadata(lit_llm.project_root())
    meta.pop("_git_diff", None)
    report["metadata"] = meta
    md = ["# lit-llm benchmark\n", f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"]
    if cfg.generation.enabled:
        from lit_llm.benchmarks import generation

        rows = generation.run(OmegaConf.to_container(cfg.generation, resolve=True))
        report["sections"]["generation"] = rows
        md += ["\n## Generation: new tokens/s (KV cache vs recompute)\n\n", markdown(rows)]
    atomic_write_json(out_dir / "benchmark.json", report)
    atomic_write_text(out_dir / "benchmark.md", "".join(md))
    print("".join(md))
    print(f"written: {out_dir / 'benchmark.json'}, {out_dir / 'benchmark.md'}")


if __name__ == "__main__":
    main()
