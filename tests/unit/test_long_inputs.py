"""Long inputs: classification of documents longer than data.max_length by overlapping windows
(data.long_inputs=windows, data.doc_stride, data.max_windows) and the task's aggregation of their logits
(task.window_aggregation)."""
from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from lit_llm.data.classification import ClassificationDataModule, _encode_examples, _encode_windows
from lit_llm.data.collate import WindowCollator
from lit_llm.errors import ConfigError
from lit_llm.run import train
from lit_llm.tasks.classification import ClassificationTask, aggregate_windows
from tests.unit.test_classification_data import CLS, PAD, SEP, _FakeTokenizer, make_dm, ready, tsv


def _windows(texts, pairs=None, max_length=6, doc_stride=1, max_windows=None, tokenizer=None, windowed_text="second"):
    batch = {"text": texts, "label": [0] * len(texts)}
    if pairs is not None:
        batch["text_pair"] = pairs
    return _encode_windows(batch, tokenizer or _FakeTokenizer(), CLS, SEP, max_length, doc_stride, max_windows,
                           windowed_text)


def _template_tokenizer(pair="[CLS] $A [SEP] $B:1 [SEP]:1"):
    """A WordLevel tokenizer over "10".."39" with its own post-processor (BERT's template by default)."""
    vocab = {"[UNK]": 0, "[CLS]": CLS, "[SEP]": SEP, **{str(i): i for i in range(10, 40)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair=pair, special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)])
    return tok


def _split(out, row):
    ids, lengths = out["input_ids"][row], out["window_lengths"][row]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    return [ids[s : s + n] for s, n in zip(starts, lengths)]


TEN = " ".join(str(t) for t in range(10, 20))  # ten text tokens 10..19


# ============================================================================ window construction

def test_windows_of_a_single_text_overlap_by_doc_stride():
    out = _windows([TEN], max_length=6, doc_stride=1)  # room 4 text tokens; consecutive windows share 1
    assert _split(out, 0) == [[CLS, 10, 11, 12, 13, SEP], [CLS, 13, 14, 15, 16, SEP], [CLS, 16, 17, 18, 19, SEP]]
    assert out["window_lengths"] == [[6, 6, 6]] and out["length"] == [18] and out["needed"] == [12]
    assert out["dropped"] == [0] and "token_type_ids" not in out
    # doc_stride=0: windows side by side; the last one is shorter
    assert _split(_windows([TEN], doc_stride=0), 0) == [[CLS, 10, 11, 12, 13, SEP], [CLS, 14, 15, 16, 17, SEP],
                                                        [CLS, 18, 19, SEP]]
    # doc_stride=3: a new window every room - doc_stride = 1 token
    assert [w[1] for w in _split(_windows([TEN], doc_stride=3), 0)] == [10, 11, 12, 13, 14, 15, 16]


def test_max_windows_caps_and_counts_the_dropped_tokens():
    out = _windows([TEN], doc_stride=1, max_windows=2)
    assert _split(out, 0) == [[CLS, 10, 11, 12, 13, SEP], [CLS, 13, 14, 15, 16, SEP]]
    assert out["dropped"] == [3]  # 17, 18, 19


def test_short_documents_are_one_window_equal_to_truncate():
    texts, pairs = ["10 11", "10 11 12 13"], ["20 21", "20"]
    for p in (None, pairs):
        batch = {"text": texts, "label": [0, 1], **({"text_pair": p} if p else {})}
        max_length = 8 if p else 6
        win = _encode_windows(batch, _FakeTokenizer(), CLS, SEP, max_length, 1, None)
        trunc = _encode_examples(batch, _FakeTokenizer(), CLS, SEP, max_length)
        assert win["input_ids"] == trunc["input_ids"] and win["window_lengths"] == [[n] for n in trunc["length"]]
        if p:
            assert win["token_type_ids"] == trunc["token_type_ids"]


def test_a_pair_keeps_its_first_text_and_windows_the_second():
    out = _windows(["10 11 12 13 14 15"], [" ".join(str(t) for t in range(20, 30))], max_length=9, doc_stride=1)
    # room 6: the first text keeps 3 tokens (half), the second is cut into windows of 3 sharing 1
    assert _split(out, 0) == [[CLS, 10, 11, 12, SEP, 20 + s, 21 + s, 22 + s, SEP] for s in (0, 2, 4, 6)] + [
        [CLS, 10, 11, 12, SEP, 28, 29, SEP]]
    types = out["token_type_ids"][0]
    assert types[:9] == [0] * 5 + [1] * 4 and len(types) == len(out["input_ids"][0])


def test_a_tokenizer_with_its_own_template_gives_the_same_windows():
    tok = _template_tokenizer()
    pairs = [" ".join(str(t) for t in range(20, 30)), "20"]
    for texts, p, n in (([TEN, "10 11"], None, 6), (["10 11 12 13 14 15", "10"], pairs, 9)):
        assert _windows(texts, p, n, tokenizer=tok) == _windows(texts, p, n)
        assert _windows(texts, p, n, max_windows=2, tokenizer=tok) == _windows(texts, p, n, max_windows=2)


# windowed_text=first: the first text (an NLI premise) is windowed, the second repeated; order and types unchanged
FIRST_WINDOWS = [[CLS, 10 + s, 11 + s, 12 + s, SEP, 20, 21, 22, SEP] for s in (0, 2, 4, 6)] + [
    [CLS, 18, 19, SEP, 20, 21, 22, SEP]]
FIRST_TYPES = [[0] * 5 + [1] * 4] * 4 + [[0] * 4 + [1] * 4]


def test_windowed_text_first_windows_the_first_text_and_repeats_the_second():
    out = _windows([TEN], ["20 21 22 23 24 25"], max_length=9, doc_stride=1, windowed_text="first")
    # room 6: the second text keeps 3 tokens (half), the first is cut into windows of 3 sharing 1
    assert _split(out, 0) == FIRST_WINDOWS
    assert _split({**out, "input_ids": out["token_type_ids"]}, 0) == FIRST_TYPES
    assert out["needed"] == [19] and out["dropped"] == [0] and out["length"] == [44]
    capped = _windows([TEN], ["20 21 22 23 24 25"], max_length=9, doc_stride=1, max_windows=2, windowed_text="first")
    assert _split(capped, 0) == FIRST_WINDOWS[:2] and capped["dropped"] == [5]  # 15..19
    # a pair that fits is its truncate encoding, whichever text is windowed
    short = _windows(["10 11"], ["20 21 22"], max_length=9, windowed_text="first")
    assert short["input_ids"] == [[CLS, 10, 11, SEP, 20, 21, 22, SEP]] and short["window_lengths"] == [[8]]
    assert short["token_type_ids"] == [[0] * 4 + [1] * 4]


@pytest.mark.parametrize("template, extra", [("[CLS] $A [SEP] $B:1 [SEP]:1", []),  # BERT: as ours
                                             ("[CLS] $A [SEP] [SEP]:1 $B:1 [SEP]:1", [SEP])])  # RoBERTa-like
def test_windowed_text_first_with_a_tokenizer_template(template, extra):
    tok = _template_tokenizer(template)
    n = 9 + len(extra)  # the same room (6 text tokens) around the template's special tokens
    for max_windows in (None, 2):
        out = _windows([TEN], ["20 21 22 23 24 25"], n, 1, max_windows, tokenizer=tok, windowed_text="first")
        want = [w[: w.index(SEP) + 1] + extra + w[w.index(SEP) + 1 :] for w in FIRST_WINDOWS][:max_windows]
        want_types = [t[: w.index(SEP) + 1] + [1] * len(extra) + t[w.index(SEP) + 1 :]
                      for w, t in zip(FIRST_WINDOWS, FIRST_TYPES)][:max_windows]
        assert _split(out, 0) == want
        assert _split({**out, "input_ids": out["token_type_ids"]}, 0) == want_types
        assert out["dropped"] == [0 if max_windows is None else 5]
        if not extra:
            assert out == _windows([TEN], ["20 21 22 23 24 25"], n, 1, max_windows, windowed_text="first")


def test_windowed_text_is_in_the_settings_only_for_windows_of_a_pair(tmp_path):
    def settings(**kw):
        return ClassificationDataModule(train_files=str(tmp_path / "x.tsv"), max_length=8,
                                        **kw).long_inputs_settings()
    assert "windowed_text" not in settings(long_inputs="windows", doc_stride=1, windowed_text="first")
    assert "windowed_text" not in settings(text_pair_column="b", windowed_text="first")  # truncate
    assert settings(long_inputs="windows", doc_stride=1, text_pair_column="b", windowed_text="first")[
        "windowed_text"] == "first"


# ============================================================================ batches

def test_window_collator_flattens_documents_and_keeps_them_whole():
    out = _windows([TEN, "10 11", "10 11 12 13 14"], doc_stride=1)
    examples = [{"input_ids": ids, "window_lengths": wl, "labels": y}
                for ids, wl, y in zip(out["input_ids"], out["window_lengths"], [2, 0, 1])]
    batch = WindowCollator(PAD)(examples)
    assert batch["input_ids"].shape == (3 + 1 + 2, 6)
    assert batch["window_doc"].tolist() == [0, 0, 0, 1, 2, 2]
    assert batch["labels"].tolist() == [2, 0, 1]
    assert batch["input_ids"][3].tolist() == [CLS, 10, 11, SEP, PAD, PAD]
    assert batch["attention_mask"].sum(1).tolist() == [6, 6, 6, 4, 6, 4]


def test_data_module_windows_long_documents(tmp_path):
    rows = [(" ".join(["good" if i % 2 else "bad"] + ["movie"] * (i % 7) + ["."]), i % 2) for i in range(40)]
    kw = {"max_length": 8, "batch_size": 4, "val_fraction": 0.25, "label_names": ["neg", "pos"]}
    dm = ready(make_dm(tmp_path, tsv(tmp_path / "t.tsv", rows), long_inputs="windows", doc_stride=2,
                    max_windows=None, **kw))
    plain = make_dm(tmp_path, tsv(tmp_path / "t.tsv", rows), **kw)
    plain.load_raw()
    plain.set_tokenizer(dm.tokenizer)
    assert dm.tokenized_dir != plain.tokenized_dir  # the cache key holds the window settings
    stats = dm.stats["train"]
    assert stats["long_documents"] > 0 and stats["windows"] > stats["examples"] and stats["truncated"] == 0
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        assert len(batch["labels"]) == 4 and int(batch["window_doc"][-1]) == 3
        assert len(batch["window_doc"]) == len(batch["input_ids"]) and batch["input_ids"].shape[1] <= 8
    assert dm.state_dict()["long_inputs"] == "windows"


# ============================================================================ aggregation

def test_aggregation_mean_and_max_by_hand():
    logits = torch.tensor([[1.0, 4.0], [3.0, 0.0], [5.0, -1.0], [2.0, 2.0], [0.0, 6.0]], requires_grad=True)
    doc = torch.tensor([0, 0, 1, 2, 2])
    mean = aggregate_windows(logits, doc, "mean")
    assert mean.tolist() == [[2.0, 2.0], [5.0, -1.0], [1.0, 4.0]]
    assert aggregate_windows(logits, doc, "max").tolist() == [[3.0, 4.0], [5.0, -1.0], [2.0, 6.0]]
    mean.sum().backward()
    assert logits.grad[:, 0].tolist() == [0.5, 0.5, 1.0, 0.5, 0.5]


def test_task_forward_gives_one_row_per_document():
    model = {"arch": "encoder", "vocab_size": 50, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
    task = ClassificationTask(model, {"lr": 1e-3}, num_labels=3, window_aggregation="max").eval()
    batch = WindowCollator(PAD)([{"input_ids": [CLS, 10, 11, SEP, CLS, 12, SEP], "window_lengths": [4, 3],
                                  "labels": 1}, {"input_ids": [CLS, 13, SEP], "window_lengths": [3], "labels": 0}])
    with torch.no_grad():
        logits = task(batch)
        rows = task({k: v for k, v in batch.items() if k != "window_doc"})
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, torch.stack([rows[:2].max(0).values, rows[2]]))


# ============================================================================ config errors

@pytest.mark.parametrize("kw, match", [
    ({"long_inputs": "slide"}, "data.long_inputs='slide' is not one of"),
    ({"long_inputs": "windows", "doc_stride": 6}, "data.doc_stride=6 leaves no new text per window"),
    ({"long_inputs": "windows", "doc_stride": -1}, "data.doc_stride=-1 must be an integer >= 0"),
    ({"long_inputs": "windows", "max_windows": 0}, "data.max_windows=0 must be a positive integer"),
    ({"long_inputs": "windows", "doc_stride": 3, "text_pair_column": "b"}, "holds at least 3 second-text tokens"),
    ({"long_inputs": "windows", "doc_stride": 3, "text_pair_column": "b", "windowed_text": "first"},
     "holds at least 3 first-text tokens"),
    ({"long_inputs": "windows", "windowed_text": "premise"}, r"data.windowed_text='premise' is not one of \['second'"),
])
def test_window_config_errors(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        ClassificationDataModule(train_files=str(tmp_path / "x.tsv"), max_length=8, cache_dir=str(tmp_path), **kw)


def test_truncate_ignores_the_window_settings(tmp_path):
    ClassificationDataModule(train_files=str(tmp_path / "x.tsv"), max_length=8, doc_stride=100, max_windows=0)


def test_unknown_window_aggregation():
    model = {"arch": "encoder", "vocab_size": 50, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
    with pytest.raises(ConfigError, match="task.window_aggregation='median'"):
        ClassificationTask(model, {"lr": 1e-3}, num_labels=2, window_aggregation="median")


# ============================================================================ end to end

def test_tiny_training_with_windows_reports_per_document_metrics(compose_train, cache_dir):
    cfg = compose_train(["data=tiny_sentiment", "tokenizer=bpe", "tokenizer.vocab_size=300", "task=classification",
                         "model=bert_tiny", "model.block_size=16", "data.max_length=8", "data.long_inputs=windows",
                         "data.doc_stride=2", "task.window_aggregation=max", "trainer.max_steps=4",
                         "trainer.limit_test_batches=null", "logger=csv"])
    metrics = train(cfg)
    assert 0.0 <= metrics["test/test/acc"] <= 1.0
    support = sum(v for k, v in metrics.items() if k.startswith("test/test/support/"))
    assert support == 54  # tiny_sentiment's test documents, one prediction each (not one per window)
    stats = [json.loads(p.read_text()) for p in cache_dir.glob("classification/*/test/lit_llm_stats.json")]
    assert any(s.get("windows", 0) > s["examples"] == 54 for s in stats)
