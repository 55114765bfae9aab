"""Evaluate a checkpoint: python pipelines/evaluate.py ckpt_path=<run dir | .ckpt> [data=<name>] [split=...]

Thin Hydra entry point over lit_llm.run.evaluate: the checkpoint brings its task, model, tokenizer
and data settings; writes metrics.json, report.json and report.md into the run directory.
"""
import sys

import hydra
from omegaconf import DictConfig

import lit_llm  # noqa: F401  (registers the ${project_root:} and ${package_file:} resolvers)
from lit_llm.errors import ConfigError


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from lit_llm.run import evaluate

    try:
        evaluate(cfg)
    except ConfigError as e:  # a user error: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
