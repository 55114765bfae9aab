"""Question answering end to end on the shipped fixture: train, test on two named test sets, predictions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_llm.errors import ConfigError
from lit_llm.run import train

DATA = Path(__file__).resolve().parents[1] / "data"
QA = ["data=tydiqa_en", f"data.train_files={DATA / 'tiny_squad_train.json'}",
      f"data.validation_files={DATA / 'tiny_squad_test.json'}",
      f"+data.test_files.tiny={DATA / 'tiny_squad_test.json'}", f"+data.test_files.again={DATA / 'tiny_squad_test.json'}",
      "~data.test_files.tydiqa_en", "tokenizer=bpe", "tokenizer.vocab_size=400", "tokenizer.min_frequency=1",
      "task=qa", "model=bert_tiny", "model.block_size=48", "data.doc_stride=16", "data.max_query_length=12",
      "data.batch_size=8", "trainer.limit_val_batches=null", "trainer.limit_test_batches=null"]


def test_qa_run_reports_each_test_set_and_writes_predictions(compose_train, tmp_path):
    out = tmp_path / "qa"
    metrics = train(compose_train(QA, out))
    assert {"val/em", "val/f1", "test/tiny/em", "test/tiny/f1", "test/again/em", "test/again/f1"} <= set(metrics)
    assert metrics["test/tiny/f1"] == metrics["test/again/f1"]  # the same file twice: the same score
    assert 0 <= metrics["test/tiny/em"] <= metrics["test/tiny/f1"] <= 100
    assert metrics["test/tiny/questions"] == 9 and metrics["val/questions"] == 9
    predictions = json.loads((out / "predictions.json").read_text())
    test_ids = [qa["id"] for art in json.loads((DATA / "tiny_squad_test.json").read_text())["data"]
                for para in art["paragraphs"] for qa in para["qas"]]
    assert sorted(predictions) == sorted(test_ids) and all(isinstance(v, str) for v in predictions.values())
    assert json.loads((out / "predictions_again.json").read_text()) == predictions
    stats = json.loads((out / "run.json").read_text())["data"]
    assert stats["train"]["renamed_ids"] == 13 and stats["train"]["features"] > 17


def test_qa_needs_an_encoder(compose_train, tmp_path):
    with pytest.raises(ConfigError, match=r"task=qa needs an encoder backbone"):
        train(compose_train(QA + ["model=gpt_tiny"], tmp_path / "x"))


def test_qa_from_a_hugging_face_bert_with_a_wordpiece_vocabulary(compose_train, tmp_path):
    """model.init_from=hf:<dir>: BERT weights and vocab.txt (its [CLS]/[SEP]/[PAD] ids, lower-casing,
    offsets through WordPiece) drive the same features and post-processing."""
    transformers = pytest.importorskip("transformers")
    import re

    texts = [t for art in json.loads((DATA / "tiny_squad_train.json").read_text())["data"]
             for para in art["paragraphs"] for t in [para["context"]] + [q["question"] for q in para["qas"]]]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    hf_dir = tmp_path / "bert"
    transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64)).save_pretrained(hf_dir)
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))

    out = tmp_path / "qa_hf"
    metrics = train(compose_train(QA + ["model=bert_tiny", f"model.init_from=hf:{hf_dir}"], out))
    assert {"test/tiny/em", "test/tiny/f1"} <= set(metrics)
    contexts = " ".join(texts)
    predictions = json.loads((out / "predictions.json").read_text())
    assert all(answer in contexts for answer in predictions.values())  # spans of the original text, cased
    stats = json.loads((out / "run.json").read_text())["data"]
    assert stats["train"]["span_mismatch"] == 0  # whole words: every labelled span is exactly the answer
