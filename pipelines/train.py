"""Pretrain a language model: python pipelines/train.py experiment=quickstart [key=value ...]

Thin Hydra entry point over lit_llm.run.train; returns the `optimized_metric` for sweepers.
"""
import sys

import hydra
from omegaconf import DictConfig

import lit_llm  # noqa: F401  (registers the ${project_root:} and ${package_file:} resolvers)
from lit_llm.errors import ConfigError


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lit_llm.run import optimized_value, train

    try:
        return optimized_value(cfg, train(cfg))
    except ConfigError as e:  # a user error: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
