"""Evaluate a checkpoint: python pipelines/evaluate.py ckpt_path=<run dir | .ckpt> [data=<name>] [split=...]

Thin Hydra entry point over lit_llm.evaluation.evaluate: the checkpoint brings its task, model, tokenizer
and data settings; writes metrics.json, report.json and report.md into the run directory.
A user error (lit_llm.errors.ConfigError) prints one line `error: ...` and exits with status 2.
"""
import hydra
from omegaconf import DictConfig

import lit_llm  # noqa: F401  (registers the ${project_root:} and ${package_file:} resolvers)
from lit_llm.errors import cli_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@cli_errors()
def main(cfg: DictConfig) -> None:
    from lit_llm.evaluation import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
