"""Sentence-pair classification recipes (issue 19): `data=rte` (GLUE RTE, premise / hypothesis with token types) and
rte_bert / rte_bert_pretrained, which work for any pair-labelled file through the data.* file and column overrides."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hydra.utils import instantiate

from lit_llm.errors import ConfigError
from lit_llm.run import train
from lit_llm.tokenization import load_tokenizer, train_char
from tests.conftest import TINY, requires_data

# TINY without its GPT model; a 2-layer encoder, one short epoch
SHORT = [o for o in TINY if not o.startswith(("model", "task.optim", "trainer.max_steps", "trainer.val_check_interval"))] + [
    "model=bert_tiny", "model.block_size=64", "data.max_length=64", "trainer.max_epochs=1",
    "callbacks.generate_samples=null", "tokenizer.vocab_size=300"]
ANIMALS = ["cat", "dog", "horse", "bird", "fish", "goat", "mouse", "sheep"]


def write_pair_file(path, rows: int = 80, seed: int = 0) -> None:
    """A tiny NLI-like file with its own column names: the claim holds when its animal is in the story."""
    rng = random.Random(seed)
    lines = ["id\tstory\tclaim\tgold"]
    for i in range(rows):
        seen = rng.sample(ANIMALS, 3)
        holds = i % 2 == 0
        animal = rng.choice(seen if holds else [a for a in ANIMALS if a not in seen])
        lines.append(f"{i}\tthe {seen[0]} met the {seen[1]} and the {seen[2]} today.\tthere was a {animal}.\t"
                     f"{'yes' if holds else 'no'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def pair_overrides(path) -> list[str]:
    return [f"data.train_files={path}", "data.test_files=null", "data.val_fraction=0.2", "data.test_fraction=0.2",
            "data.text_column=story", "data.text_pair_column=claim", "data.label_column=gold",
            "data.label_names=[no,yes]", "data.batch_size=8"]


def assert_pair_token_types(batch: dict) -> None:
    """Each row: [cls] premise [sep] with type 0, then hypothesis [sep] with type 1, then padding."""
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "example_index"}
    types, mask = batch["token_type_ids"].numpy(), batch["attention_mask"].numpy().astype(bool)
    for row_types, row_mask in zip(types, mask):
        real = row_types[row_mask].tolist()
        first = real.index(1)
        assert first >= 3 and set(real[:first]) == {0} and set(real[first:]) == {1} and len(real) - first >= 2


def test_rte_recipes_compose(compose_train):
    cfg = compose_train(["experiment=rte_bert"], tiny=False)
    assert cfg.data.text_column == "sentence1" and cfg.data.text_pair_column == "sentence2"
    assert list(cfg.data.label_names) == ["entailment", "not_entailment"]
    assert cfg.data.train_files.endswith("rte/train.tsv") and cfg.data.test_files.endswith("rte/dev.tsv")
    assert cfg.data.validation_files is None and cfg.data.val_fraction > 0 and cfg.data.split_seed == cfg.seed
    assert cfg.model.arch == "encoder" and cfg.model.init_from is None
    assert cfg.optimized_metric == "val/acc" and cfg.callbacks.model_checkpoint.monitor == "val/acc"
    assert cfg.trainer.max_epochs > 0 and cfg.trainer.max_steps == -1
    pre = compose_train(["experiment=rte_bert_pretrained", "model.init_from=/runs/mlm"], tiny=False)
    assert pre.task_name == "rte_bert_pretrained" and pre.model.init_from == "/runs/mlm"
    assert pre.data == cfg.data and pre.trainer == cfg.trainer and pre.task == cfg.task


def test_pretrained_rte_recipe_without_init_from_stops_at_once(compose_train, tmp_path):
    with pytest.raises(ConfigError, match="model.init_from is required: rte_bert_pretrained"):
        train(compose_train(["experiment=rte_bert_pretrained"], tmp_path / "run", tiny=False))


def test_any_pair_file_trains_through_the_rte_recipe(compose_train, tmp_path):
    """The recipe on a pair file of its own (other column names, labels no/yes): trains, tests accuracy and
    macro-F1; its batches carry token types 0 for the premise and 1 for the hypothesis."""
    path = tmp_path / "pairs.tsv"
    write_pair_file(path)
    out = tmp_path / "run"
    cfg = compose_train(["experiment=rte_bert", *SHORT, *pair_overrides(path)], out, tiny=False)
    metrics = train(cfg)
    assert {"test/test/acc", "test/test/f1_macro", "test/test/f1/no", "test/test/f1/yes", "val/acc"} <= set(metrics)
    assert 0 <= metrics["test/test/f1_macro"] <= 1

    dm = instantiate(cfg.data, cache_dir=str(tmp_path / "dm_cache"), _convert_="all")
    raw = dm.load_raw()
    assert {s: len(ds) for s, ds in raw.items()} == {"train": 48, "validation": 16, "test": 16}
    dm.set_tokenizer(load_tokenizer(out / "tokenizer.json"))
    dm.prepare_data()
    dm.setup("fit")
    assert_pair_token_types(next(iter(dm.train_dataloader())))


@requires_data("rte/train.tsv", "rte/dev.tsv")
def test_rte_data_loads_as_pairs_with_token_types(compose_train, tmp_path):
    cfg = compose_train(["data=rte"], tiny=False)
    dm = instantiate(cfg.data, cache_dir=str(tmp_path / "cache"), _convert_="all")
    raw = dm.load_raw()
    n_val = round(2490 * cfg.data.val_fraction)
    assert {s: len(ds) for s, ds in raw.items()} == {"train": 2490 - n_val, "validation": n_val, "test": 277}
    assert dm.test_names == ["test"]
    assert np.bincount(raw["test"]["label"]).tolist() == [146, 131]  # entailment, not_entailment (GLUE dev)
    assert raw["test"][0]["text_pair"] == "Christopher Reeve had an accident."
    dm.set_tokenizer(train_char(raw["train"]["text"][:200] + raw["train"]["text_pair"][:200]))
    dm.prepare_data()
    dm.setup("fit")
    assert_pair_token_types(next(iter(dm.train_dataloader())))
