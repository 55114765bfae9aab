"""Prune a checkpoint: python pipelines/prune.py ckpt_path=<run dir | .ckpt> sparsity=0.5 scope=global|layer
[finetune_steps=N] [include_heads=true]

Thin Hydra entry point over lit_llm.compression.prune_checkpoint: zeroes the smallest-magnitude linear weights
(the backbone's alone: task heads are kept unless include_heads=true), optionally fine-tunes with the zeros held, writes <output dir>/checkpoints/last.ckpt (a task checkpoint that
pipelines/evaluate.py loads) and prune.json. A user error (lit_llm.errors.ConfigError) prints one line
`error: ...` and exits with status 2.
"""
from pathlib import Path

import hydra
from omegaconf import DictConfig

import lit_llm  # noqa: F401  (registers the config resolvers)
from lit_llm.errors import cli_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="prune")
@cli_errors()
def main(cfg: DictConfig) -> None:
    from lit_llm.compression import describe_pruning, prune_checkpoint
    from lit_llm.utils_io import atomic_write_json

    out_dir = Path(cfg.paths.output_dir)
    report = prune_checkpoint(cfg.ckpt_path, cfg.sparsity, cfg.scope, out_dir / "checkpoints" / "last.ckpt",
                              finetune_steps=cfg.finetune_steps or 0, data_dir_cfg=cfg.paths,
                              include_heads=bool(cfg.include_heads))
    atomic_write_json(out_dir / "prune.json", report)
    print(f"pruned {report['source']}: {report['sparsity']:.1%} of the {report['weights']:,} weights of "
          f"{describe_pruning(report)} are zero (scope={report['scope']}, finetune_steps={report['finetune_steps']}); "
          f"wrote {out_dir / 'checkpoints' / 'last.ckpt'}")


if __name__ == "__main__":
    main()
