"""Seq2seq data: parallel files, table columns, the translation schema, references, truncation, batches."""
from __future__ import annotations

import json

import pytest

from lit_llm.data.collate import IGNORE_INDEX
from lit_llm.data.seq2seq import Seq2SeqDataModule
from lit_llm.errors import ConfigError
from lit_llm.tokenization import train_char


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def parallel(tmp_path, n_src=4, n_tgt=4, stem="train"):
    write(tmp_path / f"{stem}.de", "".join(f"ein satz {i}\n" for i in range(n_src)))
    write(tmp_path / f"{stem}.en", "".join(f"a sentence {i}\n" for i in range(n_tgt)))
    return str(tmp_path / stem)


def ready(dm: Seq2SeqDataModule) -> Seq2SeqDataModule:
    dm.load_raw()
    dm.set_tokenizer(train_char([t for b in dm.train_texts() for t in b]))
    dm.prepare_data()
    dm.setup()
    return dm


def test_parallel_files_and_the_batch_layout(tmp_path):
    dm = ready(Seq2SeqDataModule(train_files=parallel(tmp_path, 20, 20), source_lang="de", target_lang="en",
                                 val_fraction=0.1, batch_size=4, cache_dir=str(tmp_path / "cache")))
    assert {k: len(v) for k, v in dm.raw.items()} == {"train": 18, "validation": 2}
    ids = dm.special_ids
    first = dm.raw["train"][0]
    assert first["source"].startswith("ein satz") and first["target"].startswith("a sentence")
    batch = dm.collator()([dm.features["train"][0], dm.features["train"][11]])
    target = dm.tokenizer.encode(dm.raw["train"][0]["target"]).ids + [ids["eos"]]
    T = batch["labels"].shape[1]
    assert batch["labels"][0, : len(target)].tolist() == target
    assert batch["decoder_input_ids"][0, : len(target)].tolist() == [ids["bos"]] + target[:-1]  # shifted right
    assert (batch["labels"][0, len(target):] == IGNORE_INDEX).all() and T >= len(target)
    assert batch["input_ids"][0, batch["attention_mask"][0].sum() - 1] == ids["eos"]


def test_misaligned_parallel_files_name_both_files_and_counts(tmp_path):
    stem = parallel(tmp_path, 5, 4)
    with pytest.raises(ConfigError, match=r"misaligned: .*train\.de has 5 lines, .*train\.en has 4"):
        Seq2SeqDataModule(train_files=stem, source_lang="de", target_lang="en").load_raw()
    with pytest.raises(ConfigError, match=r"no file .*train\.fr"):
        Seq2SeqDataModule(train_files=stem, source_lang="fr", target_lang="en").load_raw()


def test_table_columns_empty_pairs_and_merged_references(tmp_path):
    rows = [{"dialogue": "A: hi\nB: hello", "summary": "they greet"}, {"dialogue": " ", "summary": "empty"},
            {"dialogue": "A: bye", "summary": "they part"}, {"dialogue": "A: bye", "summary": "A leaves"}]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    dm = Seq2SeqDataModule(train_files=path, test_files=path, source_column="dialogue", target_column="summary",
                           val_fraction=0.4, cache_dir=str(tmp_path / "cache"))
    raw = dm.load_raw()
    assert dm.load_stats["test"] == {"pairs": 4, "dropped_empty": 1, "examples": 2, "merged_rows": 1,
                                     "references_per_example": 1.5}
    assert raw["test"]["references"] == [["they greet"], ["they part", "A leaves"]]  # every reference kept
    with pytest.raises(ConfigError, match=r"data\.target_column='abstract' is not a column of .*d\.jsonl"):
        Seq2SeqDataModule(train_files=path, source_column="dialogue", target_column="abstract").load_raw()


def test_translation_schema_and_truncation_counts(tmp_path):
    rows = [{"translation": {"de": "ein " * n + "ende", "en": "one " * n + "end"}} for n in range(1, 9)]
    rows += [{"translation": {"de": "ja", "en": "yes"}}] * 8  # short pairs: no split is cut entirely (an error)
    path = write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    dm = ready(Seq2SeqDataModule(train_files=path, source_lang="de", target_lang="en", max_source_length=12,
                                 max_target_length=10, val_fraction=0.25, batch_size=2,
                                 cache_dir=str(tmp_path / "cache")))
    assert dm.raw["train"][0]["source"].startswith("ein")
    stats = dm.stats["train"]
    assert stats["source_truncated"] > 0 and stats["target_truncated"] > 0
    assert max(len(dm.features["train"][i]["source_ids"]) for i in range(len(dm.features["train"]))) == 12
    assert max(len(dm.features["train"][i]["target_ids"]) for i in range(len(dm.features["train"]))) == 10


def test_all_empty_and_bad_settings(tmp_path):
    path = write(tmp_path / "e.csv", "source,target\n ,x\ny, \n")
    with pytest.raises(ConfigError, match=r"all 2 pairs have an empty source or target"):
        Seq2SeqDataModule(train_files=path, validation_files=path).load_raw()
    with pytest.raises(ConfigError, match=r"data\.max_target_length=1 must be an integer >= 2"):
        Seq2SeqDataModule(train_files=path, max_target_length=1)
