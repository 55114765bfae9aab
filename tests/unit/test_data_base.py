"""What the data modules share (lit_llm/data/base.py): the seeded hold-out, special-token checks, the
data-module protocol and renamed settings. The hold-out tests pin the exact rows and data fingerprints
of earlier versions: a change there moves every held-out split and invalidates every cache."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from lit_llm.data.base import (
    DataModuleProtocol,
    hold_out_indices,
    hold_out_rows,
    holdout_size,
    renamed_setting,
    require_special_tokens,
    resolve_special_ids,
)
from lit_llm.data.classification import ClassificationDataModule
from lit_llm.data.corpus import CorpusDataModule
from lit_llm.data.qa import QADataModule
from lit_llm.data.seq2seq import Seq2SeqDataModule
from lit_llm.errors import ConfigError
from lit_llm.tokenization import train_char

SQUAD_TRAIN = str(Path(__file__).resolve().parents[1] / "data" / "tiny_squad_train.json")
SIZES = [2, 3, 7, 10, 23, 101, 1000]
FRACTIONS = [0.01, 0.05, 0.1, 0.15, 0.25, 0.5, 0.9]
SEEDS = [0, 7, 1234]


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# ============================================================================ the seeded hold-out

def _old_rows(n, f, seed):  # corpus data.split=rows before hold_out_indices
    n_val = min(n - 1, max(1, round(n * f)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


def _old_lists(n, f, seed):  # QA and seq2seq before hold_out_indices
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * f))
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


def _old_classification(n, test_f, val_f, seed):  # test first, then validation, then the rest
    sizes = [round(n * test_f), round(n * val_f)]
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(perm[: sizes[0]]), np.sort(perm[sizes[0] : sum(sizes)]), np.sort(perm[sum(sizes):])]


@pytest.mark.parametrize("seed", SEEDS)
def test_hold_out_indices_selects_the_rows_of_the_four_former_copies(seed):
    for n in SIZES:
        for f in FRACTIONS:
            validation, train = hold_out_indices(n, [min(n - 1, holdout_size(n, f))], seed)
            old = _old_rows(n, f, seed)
            assert np.array_equal(validation, old[0]) and np.array_equal(train, old[1]), (n, f)
            if holdout_size(n, f) < n:
                got = hold_out_indices(n, [holdout_size(n, f)], seed)
                assert all(np.array_equal(a, b) for a, b in zip(got, _old_lists(n, f, seed))), (n, f)
            for test_f in (0.1, 0.15, 0.2):
                sizes = [round(n * test_f), round(n * f)]
                if min(sizes) >= 1 and sum(sizes) < n:
                    got = hold_out_indices(n, sizes, seed)
                    assert all(np.array_equal(a, b) for a, b in zip(got, _old_classification(n, test_f, f, seed)))


def test_hold_out_indices_values_are_pinned():
    """The literal rows (numpy's PCG64 permutation is stable across versions, by numpy's policy)."""
    assert [p.tolist() for p in hold_out_indices(10, [2, 3], 1234)] == [[8, 9], [0, 2, 5], [1, 3, 4, 6, 7]]
    assert holdout_size(10, 0.05) == 1 and holdout_size(10, 0.25) == 2 and holdout_size(30, 0.05) == 2  # half to even
    with pytest.raises(ValueError, match="leaves no training rows"):
        hold_out_indices(3, [1, 2], 0)


def test_hold_out_rows_keeps_order_and_refuses_an_empty_train_part():
    validation, train = hold_out_rows(list("abcdefghij"), 0.2, 1234)
    assert validation == ["i", "j"] and train == list("abcdefgh")
    with pytest.raises(ConfigError, match=r"data\.val_fraction=0\.6 of 1 pairs leaves no training pairs"):
        hold_out_rows(["x"], 0.6, 0, "pairs")


def test_every_data_module_keeps_its_held_out_rows_and_data_fingerprint(tmp_path):
    """Fingerprints and rows computed with the code before the shared hold-out (they key every cache)."""
    corpus = write(tmp_path / "c.txt", "\n".join(f"line {i}" for i in range(40)) + "\n")
    doc = write(tmp_path / "doc.txt", "".join(chr(97 + i % 26) for i in range(500)) + "\n")
    tsv = write(tmp_path / "t.tsv", "sentence\tlabel\n" + "".join(f"text number {i}\t{i % 2}\n" for i in range(50)))
    pairs = write(tmp_path / "p.jsonl",
                  "".join(json.dumps({"source": f"src {i}", "target": f"tgt {i}"}) + "\n" for i in range(23)))
    cache = str(tmp_path / "cache")

    dm = CorpusDataModule(files=corpus, val_fraction=0.1, split_seed=7, cache_dir=cache)
    assert list(dm.load_raw()["validation"]["text"]) == ["line 0", "line 4", "line 20", "line 28"]
    assert dm.data_fingerprint == "e4c7f665d47be7310013faf9c318af2721890137b45f078d94c8ab7eda39abcb"
    dm = CorpusDataModule(files=doc, sample_by="document", val_fraction=0.1, holdout="tail", cache_dir=cache)
    dm.load_raw()  # fingerprinted as {"split": "tail", ...}: the key keeps data.holdout's old name
    assert dm.data_fingerprint == "5bf72c3416d4ba34b833b9cada4a95c359c2d1f46ec997b303b1613d180d7fa9"

    dm = ClassificationDataModule(train_files=tsv, label_names=["a", "b"], val_fraction=0.1, test_fraction=0.2,
                                  split_seed=3, cache_dir=cache)
    raw = dm.load_raw()
    assert [int(t.split()[-1]) for t in raw["validation"]["text"]] == [3, 4, 35, 40, 46]
    assert [int(t.split()[-1]) for t in raw["test"]["text"]] == [2, 11, 17, 23, 25, 28, 30, 32, 39, 41]
    assert dm.data_fingerprint == "886818e835631c17351d06ecb564e8b7acd6e0eff950a58bb1a6f6660184a76a"

    dm = QADataModule(train_files=SQUAD_TRAIN, val_fraction=0.2, split_seed=5, cache_dir=cache)
    assert list(dm.load_raw()["validation"]["id"]) == ["3", "3#1", "0"]
    assert dm.data_fingerprint == "0d177f600c121927064980d87814dba21d18c383c934a5db2941d4ffe2c232cb"

    dm = Seq2SeqDataModule(train_files=pairs, val_fraction=0.1, split_seed=11, cache_dir=cache)
    assert list(dm.load_raw()["validation"]["source"]) == ["src 19", "src 22"]
    assert dm.data_fingerprint == "ad2deb7182833ef3adde20a10f49c055bb61362d56e50431dc9b071bb8a72764"


# ============================================================================ data.split -> data.holdout

def test_data_split_is_read_as_data_holdout_with_a_deprecation_message(tmp_path, caplog):
    doc = write(tmp_path / "doc.txt", "".join(chr(97 + i % 26) for i in range(500)) + "\n")
    new = CorpusDataModule(files=doc, sample_by="document", holdout="tail", cache_dir=str(tmp_path / "c"))
    with caplog.at_level(logging.WARNING, logger="lit_llm"), pytest.warns(DeprecationWarning, match="data.holdout"):
        old = CorpusDataModule(files=doc, sample_by="document", split="tail", cache_dir=str(tmp_path / "c"))
    assert "data.split is deprecated" in caplog.text and "use data.holdout" in caplog.text
    assert old.holdout == "tail"
    new.load_raw(), old.load_raw()
    assert old.data_fingerprint == new.data_fingerprint
    assert list(old.raw["validation"]["text"]) == list(new.raw["validation"]["text"])
    with pytest.raises(ConfigError, match=r"data\.split='tail' and data\.holdout='rows' disagree.*data\.holdout only"):
        CorpusDataModule(files=doc, split="tail", holdout="rows")
    assert CorpusDataModule(files=doc).holdout == "rows"


def test_renamed_setting():
    assert renamed_setting("split", "holdout", None, "tail") == "tail"
    assert renamed_setting("split", "holdout", None, None) is None
    with pytest.warns(DeprecationWarning):
        assert renamed_setting("split", "holdout", "rows", "rows") == "rows"


# ============================================================================ special tokens

def test_require_special_tokens_names_every_missing_token():
    require_special_tokens({"cls": 1, "sep": 2}, ("cls", "sep"), "x", "y")
    with pytest.raises(ConfigError, match=r"^QA inputs: the tokenizer has no <cls>, <pad> tokens; use this\.$"):
        require_special_tokens({"sep": 2}, ("cls", "sep", "pad"), "QA inputs", "use this")
    with pytest.raises(ConfigError, match=r"has no <mask> token; "):
        require_special_tokens({"pad": 0}, ("mask", "pad"), "data.objective=mlm", "fix")


def test_resolve_special_ids_prefers_the_given_ids():
    tok = train_char(["abc"])
    ids = resolve_special_ids(tok)
    assert ids["pad"] == tok.token_to_id("<pad>") and ids["cls"] == tok.token_to_id("<cls>")
    assert resolve_special_ids(tok, {"<CLS>": 101, "sep": 102})["cls"] == 101


def test_each_module_checks_its_special_tokens(tmp_path):
    from tokenizers import Tokenizer, models

    bare = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    doc = write(tmp_path / "c.txt", "a\na\na\n")
    with pytest.raises(ConfigError, match=r"data\.objective=mlm .*no <mask>, <pad> tokens"):
        CorpusDataModule(files=doc, objective="mlm").set_tokenizer(bare)
    with pytest.raises(ConfigError, match=r"data\.objective=denoise .*no <mask>, <pad>, <eos>, <bos> tokens"):
        CorpusDataModule(files=doc, objective="denoise").set_tokenizer(bare)
    with pytest.raises(ConfigError, match=r"QA inputs .*no <cls>, <sep>, <pad> tokens.*BERT or RoBERTa tokenizer"):
        QADataModule(train_files=SQUAD_TRAIN).set_tokenizer(bare)
    with pytest.raises(ConfigError, match=r"seq2seq sequences .*no <bos>, <eos>, <pad> tokens"):
        Seq2SeqDataModule(train_files=doc).set_tokenizer(bare)


# ============================================================================ the data-module protocol

def test_max_sequence_length_right_after_construction(tmp_path):
    doc = write(tmp_path / "c.txt", "a\nb\n")
    cases = [
        (CorpusDataModule(files=doc, block_size=64), ("data.block_size", 64)),
        (CorpusDataModule(files=doc, block_size=64, objective="mlm"), ("data.block_size", 64)),
        (CorpusDataModule(files=doc, block_size=64, objective="denoise"),
         ("data.block_size (+1 for <eos>, data.objective=denoise)", 65)),
        (ClassificationDataModule(train_files=doc, max_length=40), ("data.max_length", 40)),
        (QADataModule(train_files=SQUAD_TRAIN, max_length=96, doc_stride=16), ("data.max_length", 96)),
        (Seq2SeqDataModule(train_files=doc, max_source_length=32, max_target_length=48), ("data.max_target_length", 48)),
        (Seq2SeqDataModule(train_files=doc, max_source_length=48, max_target_length=32), ("data.max_source_length", 48)),
        (Seq2SeqDataModule(train_files=doc, max_source_length=32, max_target_length=32), ("data.max_source_length", 32)),
    ]
    for dm, expected in cases:
        assert isinstance(dm, DataModuleProtocol)
        assert dm.max_sequence_length() == expected
        assert dm.raw is None  # nothing was read


def test_set_test_split_accepts_the_data_splits_only(tmp_path):
    corpus = CorpusDataModule(files={"train": write(tmp_path / "t.txt", "one\ntwo\nthree\nfour\n")},
                              eval_files={"extra": write(tmp_path / "e.txt", "extra\n")}, val_fraction=0.25)
    assert corpus.test_split_names() == ["train", "validation", "extra"]
    corpus.set_test_split("extra")
    assert corpus.test_names == ["extra"] and corpus.split_of("extra") == "eval_extra"
    with pytest.raises(ConfigError) as err:
        corpus.set_test_split("test")
    assert str(err.value) == ("split='test' is not a split of this data (splits: train, validation, extra); "
                              "use one of them, or split=null for the data's test sets")
    qa = QADataModule(train_files=SQUAD_TRAIN, test_files={"tiny": SQUAD_TRAIN}, val_fraction=0.2)
    qa.set_test_split("train")
    assert qa.test_names == ["train"]
    with pytest.raises(ConfigError, match=r"split='dev' is not a split of this data \(splits: tiny, train, validation\)"):
        qa.set_test_split("dev")


def test_set_eval_batch_size_and_task_arguments(tmp_path):
    tsv = write(tmp_path / "t.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{'ab'[i % 2]}\n" for i in range(20)))
    dm = ClassificationDataModule(train_files=tsv, val_fraction=0.2, batch_size=4, cache_dir=str(tmp_path / "c"))
    # class_counts: the train split's (16 of 20 rows after the hold-out), for task.class_weights=balanced
    assert dm.task_arguments() == {"num_labels": 2, "label_names": ["a", "b"], "class_counts": [8, 8]}
    dm.set_tokenizer(train_char([t for batch in dm.train_texts() for t in batch]))
    dm.set_eval_batch_size(3)
    assert [len(b["labels"]) for b in dm.val_dataloader()] == [3, 1]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="must be a positive integer"):
            dm.set_eval_batch_size(bad)
    assert QADataModule(train_files=SQUAD_TRAIN).task_arguments() == {}
    assert CorpusDataModule(files=tsv).task_arguments() == {}


def test_check_truncation_warns_over_five_percent_and_refuses_all(caplog):
    from lit_llm.data.base import check_truncation

    with caplog.at_level(logging.WARNING, logger="lit_llm"):
        assert check_truncation("train", [10] * 95 + [20] * 5, 12, "data.max_length") == 5  # 5%: quiet
        assert not caplog.records
        assert check_truncation("train", [10] * 91 + [20] * 9, 12, "data.max_length") == 9
    message = caplog.records[-1].getMessage()
    assert message.startswith("data: train: 9 of 100 examples (9.0%) are truncated to data.max_length=12")
    assert "median 10, p90 10, p95 20, p99 20, max 20" in message and "raise data.max_length (e.g. to 20)" in message
    with pytest.raises(ConfigError, match=r"data.max_target_length=4: every one of the 3 pairs of the test split is "
                                          r"longer \(lengths in tokens: median 6"):
        check_truncation("test", [5, 6, 7], 4, "data.max_target_length", "pairs")
