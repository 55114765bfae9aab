"""Train a model on any task: python pipelines/train.py experiment=<name> [key=value ...]

Pretraining (task=clm: GPT; task=mlm: BERT-style encoder; seq2seq denoising: encoder-decoder) and
fine-tuning (task=classification, qa, seq2seq; model.init_from=<run> starts from a pretrained backbone):
conf/experiment/*.yaml are complete recipes. Thin Hydra entry point over lit_llm.run.train; returns the
`optimized_metric` for sweepers.
Failures go through lit_llm.sweeps.run_job. A single run's user error (lit_llm.errors.ConfigError) prints
one line `error: ...` and exits with status 2 (lit_llm.errors.cli_errors). In a multirun (-m) a failing job
is recorded (run.json status "failed") and the others still run; the process then lists the failed jobs
and exits 1 (lit_llm/sweeps.py says why this is needed).
"""
import sys

import hydra
from omegaconf import DictConfig

import lit_llm  # noqa: F401  (registers the ${project_root:}, ${package_file:}, ${safe_dirname:} resolvers)
from lit_llm.sweeps import exit_after_sweep, run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lit_llm.run import optimized_value, train

    return run_job(cfg, lambda c: optimized_value(c, train(c)))


if __name__ == "__main__":
    sys.exit(exit_after_sweep(main))
