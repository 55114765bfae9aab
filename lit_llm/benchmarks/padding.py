"""Padding: real (non-padding) tokens / all tokens in the training batches of the fine-tuning recipes, by default.

For each recipe (`experiment=<name>` of conf/train.yaml) the data module is built as `lit_llm.run.train` builds it
(`model_settings` + `data_and_tokenizer`: the recipe's tokenizer, cached, and its configured train sampler), then
the first `batches` train batches are counted: real tokens are attention-mask ones (sources) and labels other than
-100 (a seq2seq target); a seq2seq row counts source and target tokens together (`real_fraction`) and also
reports each. Target `real_fraction`. A recipe whose data is missing under paths.data_dir is a note row.

python -m lit_llm.benchmarks.padding experiment=samsum_t5 [data.sampler=random]: one recipe, printed as JSON.
"""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time

from lit_llm.benchmarks.common import check
from lit_llm.errors import ConfigError

IGNORE_INDEX = -100


def count_tokens(loader, batches: int) -> dict:
    """{batches, source_real, source_all, target_real, target_all} over the first `batches` batches of `loader`."""
    counts = dict.fromkeys(("source_real", "source_all", "target_real", "target_all"), 0)
    n = 0
    for batch in loader:
        if n >= batches:
            break
        mask = batch.get("attention_mask")
        if mask is not None:
            counts["source_real"] += int(mask.sum())
            counts["source_all"] += mask.numel()
        else:  # no mask: every position is real
            counts["source_real"] += batch["input_ids"].numel()
            counts["source_all"] += batch["input_ids"].numel()
        if "decoder_input_ids" in batch:
            counts["target_real"] += int((batch["labels"] != IGNORE_INDEX).sum())
            counts["target_all"] += batch["labels"].numel()
        n += 1
    return {"batches": n, **counts}


def fractions(counts: dict) -> dict:
    """real / all tokens, source and target together (`real_fraction`), and per side for a seq2seq batch."""
    real, total = counts["source_real"] + counts["target_real"], counts["source_all"] + counts["target_all"]
    out = {"batches": counts["batches"], "tokens": total, "real_fraction": round(real / total, 3) if total else None}
    if counts["target_all"]:
        out["source_fraction"] = round(counts["source_real"] / max(1, counts["source_all"]), 3)
        out["target_fraction"] = round(counts["target_real"] / counts["target_all"], 3)
    return out


@contextlib.contextmanager
def train_config(overrides: list[str]):
    """conf/train.yaml composed with `overrides` (and its hydra node, which `${hydra:...}` values need). Inside
    the benchmark's own Hydra app the compose uses its search path and the app's HydraConfig comes back after."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import lit_llm

    initialised = GlobalHydra.instance().is_initialized()
    ctx = contextlib.nullcontext() if initialised else initialize_config_dir(
        config_dir=str(lit_llm.project_root() / "conf"), version_base="1.3")
    previous = HydraConfig.instance().cfg
    with ctx:
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            yield cfg
        finally:
            HydraConfig.instance().cfg = previous


def measure(experiment: str, batches: int, overrides: list[str] = ()) -> dict:
    """The row of one recipe: its train sampler, batch size and real-token fractions."""
    from lit_llm.run import data_and_tokenizer, model_settings

    with tempfile.TemporaryDirectory() as out, train_config(
            [f"experiment={experiment}", f"paths.output_dir={out}", *overrides]) as cfg:
        started = time.perf_counter()
        dm, _, _ = data_and_tokenizer(cfg, model_settings(cfg))
        row = {"recipe": experiment, "sampler": dm.train_order, "batch_size": dm.batch_size,
               **fractions(count_tokens(dm.train_dataloader(), batches))}
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def missing_data(error: Exception) -> bool:
    return isinstance(error, FileNotFoundError) or (isinstance(error, ConfigError) and "no file matches" in str(error))


def run(cfg: dict) -> list[dict]:
    overrides = [f"seed={cfg.get('seed', 0)}"]
    if cfg.get("data_dir"):
        overrides.append(f"paths.data_dir={cfg['data_dir']}")
    target = (cfg.get("targets") or {}).get("real_fraction")
    rows = []
    for experiment in cfg["recipes"]:
        try:
            row = measure(experiment, int(cfg["batches"]), overrides)
        except (ConfigError, FileNotFoundError) as e:
            if not missing_data(e):
                raise
            rows.append({"recipe": experiment, "note": f"skipped: no data ({str(e).splitlines()[0][:200]})"})
            continue
        rows.append({**row, **check("real_fraction", row["real_fraction"], target)})
    return rows


if __name__ == "__main__":  # python -m lit_llm.benchmarks.padding experiment=<recipe> [--batches N] [overrides]
    argv = sys.argv[1:]
    n = int(argv[argv.index("--batches") + 1]) if "--batches" in argv else 200
    if "--batches" in argv:
        del argv[argv.index("--batches"):argv.index("--batches") + 2]
    experiment = next(a.split("=", 1)[1] for a in argv if a.startswith("experiment="))
    print(json.dumps(measure(experiment, n, [a for a in argv if not a.startswith("experiment=")])))
