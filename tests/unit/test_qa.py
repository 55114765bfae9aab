"""Extractive QA: reading SQuAD files, windowed features and their labels, span post-processing,
SQuAD EM/F1, and bad input. Fixture: tests/data/tiny_squad_*.json (see tests/data/README.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.text import SQuAD

from lit_llm.data.qa import (
    QACollator,
    QADataModule,
    answer_token_span,
    encode_features,
    read_qa_file,
    unique_ids,
    window_starts,
)
from lit_llm.errors import ConfigError
from lit_llm.tasks.qa import answers_from_features, best_spans
from lit_llm.tokenization import train_bpe, train_char

DATA = Path(__file__).resolve().parents[1] / "data"
TRAIN, TEST = str(DATA / "tiny_squad_train.json"), str(DATA / "tiny_squad_test.json")


def module(tmp_path, **kwargs) -> QADataModule:
    args = dict(train_files=TRAIN, validation_files=TEST, test_files={"tiny": TEST}, max_length=64, doc_stride=16,
                max_query_length=16, cache_dir=str(tmp_path / "cache"), batch_size=4)
    args.update(kwargs)
    return QADataModule(**args)


def with_tokenizer(dm: QADataModule, kind: str = "bpe") -> QADataModule:
    dm.load_raw()
    texts = [t for batch in dm.train_texts() for t in batch]
    dm.set_tokenizer(train_bpe(texts, 400, min_frequency=1) if kind == "bpe" else train_char(texts))
    dm.prepare_data()
    dm.setup()
    return dm


def test_reads_squad_json_and_the_flat_schema_alike(tmp_path):
    records = read_qa_file(TRAIN)
    assert len(records) == 17 and records[0]["title"] == "Paris"
    assert records[0]["answers"] == {"text": ["Seine"], "answer_start": [records[0]["context"].index("Seine")]}
    flat = tmp_path / "flat.jsonl"
    flat.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert read_qa_file(str(flat)) == records
    as_list = tmp_path / "flat_list.json"
    as_list.write_text(json.dumps(records))
    assert read_qa_file(str(as_list)) == records
    import datasets

    datasets.Dataset.from_list(records).to_parquet(str(tmp_path / "flat.parquet"))
    assert read_qa_file(str(tmp_path / "flat.parquet")) == records


def test_repeated_ids_are_made_unique():
    assert unique_ids(["0", "1", "0", "0", "0#1"]) == (["0", "1", "0#2", "0#3", "0#1"], 2)
    dm = QADataModule(train_files=TRAIN, validation_files=TEST, max_length=64, doc_stride=16, max_query_length=16)
    raw = dm.load_raw()
    assert len(set(raw["train"]["id"])) == 17 and raw["train"]["id"][:6] == ["0", "1", "2", "3", "0#1", "1#1"]
    assert dm.load_stats["train"]["renamed_ids"] == 13


def test_every_labelled_span_decodes_to_its_answer(tmp_path):
    """Offset round trip on the whole training fixture, with windows (the Nile passage is split)."""
    dm = with_tokenizer(module(tmp_path))
    features, raw = dm.features["train"], dm.raw["train"]
    assert dm.stats["train"]["features"] > len(raw)  # some contexts need several windows
    labelled = set()
    for n in range(len(features)):
        item = features[n]
        s, e = item["start_positions"], item["end_positions"]
        if s == 0:
            assert e == 0
            continue
        example = raw[item["example_index"]]
        got = example["context"][item["offset_start"][s] : item["offset_end"][e]].strip()
        assert got == example["answers"]["text"][0]
        labelled.add(item["example_index"])
    assert labelled == set(range(len(raw)))  # every question is answerable in some window
    assert dm.stats["train"]["span_mismatch"] == 0


def test_windows_overlap_by_doc_stride_and_an_answer_at_a_border_is_found_where_it_fits():
    assert window_starts(10, 10, 2) == [0]
    assert window_starts(11, 10, 2) == [0, 8]
    assert window_starts(30, 10, 4) == [0, 6, 12, 18, 24]
    # characters as tokens: token i of the context is character i
    context = "abcdefghijklmnopqrstuvwxyz"
    tok = train_char([context, "q?"])
    answer = "jkl"  # tokens 9..11: across the end of window 0 (tokens 0..9), inside window 1 (6..15)
    examples = {"question": ["q?"], "context": [context],
                "answers": [{"text": [answer], "answer_start": [context.index(answer)]}]}
    out = encode_features(examples, tok, cls_id=5, sep_id=6, max_length=15, doc_stride=4, max_query_length=8,
                          with_labels=True)
    head = 1 + 2 + 1  # [cls] q ? [sep]
    assert [len(ids) - head - 1 for ids in out["input_ids"]] == [10, 10, 10, 8]  # window = 15 - 2 - 3, step 6
    assert (out["start_position"][0], out["end_position"][0]) == (0, 0)  # cut by the border: no answer here
    s, e = out["start_position"][1], out["end_position"][1]
    assert (s, e) == (head + 9 - 6, head + 11 - 6)
    assert context[out["offset_start"][1][s] : out["offset_end"][1][e]] == answer
    assert (out["start_position"][2], out["end_position"][2]) == (0, 0)  # window 12..21: answer before it
    assert out["token_type_ids"][1] == [0] * head + [1] * 11
    assert out["offset_start"][1][:head] == [-1] * head and out["offset_start"][1][-1] == -1


def test_answer_token_span():
    starts, ends = np.array([0, 4, 10, 14]), np.array([3, 9, 13, 20])  # "abc_defgh_ijk_lmnopq"
    assert answer_token_span(starts, ends, 4, 13) == (1, 2)
    assert answer_token_span(starts, ends, 5, 7) == (1, 1)  # inside one token


def test_best_span_respects_the_context_the_order_and_the_length():
    start = torch.tensor([[9.0, 0, 5, 1, 0, 0]])
    end = torch.tensor([[9.0, 6, 0, 0, 2, 3]])
    offsets = torch.tensor([[-1, 0, 5, 10, 15, -1]])  # [cls] and the last position are not context
    score, i, j = best_spans(start, end, offsets, max_answer_length=30)
    assert (i.item(), j.item(), score.item()) == (2, 4, 7.0)  # not (0, 0) ([cls]) nor (2, 1) (end before start)
    score, i, j = best_spans(start, end, offsets, max_answer_length=2)
    assert (i.item(), j.item(), score.item()) == (1, 1, 6.0)  # with at most 2 tokens: 0 + 6 beats 5 + 0
    score, _, _ = best_spans(start, end, torch.full((1, 6), -1), max_answer_length=30)
    assert score.item() == float("-inf")


def test_post_processing_takes_the_best_window_of_each_example():
    contexts = ["the cat sat on the mat", "a dog"]
    # example 0 has two windows; the second one scores higher; example 1 has no valid span
    example_index = torch.tensor([0, 0, 1])
    scores = torch.tensor([3.0, 5.0, float("-inf")])
    char_start, char_end = torch.tensor([0, 15, 0]), torch.tensor([7, 22, 5])
    assert answers_from_features(example_index, scores, char_start, char_end, contexts) == {0: "the mat", 1: ""}
    # an example without features (a split cut by limit_test_batches) is not answered at all
    assert answers_from_features(example_index[2:], scores[2:], char_start[2:], char_end[2:], contexts) == {1: ""}


def test_squad_metric_equals_a_hand_computation():
    preds = [{"id": "a", "prediction_text": "The Eiffel Tower!"},  # normalises to "eiffel tower": EM with ref 1
             {"id": "b", "prediction_text": "in Paris, France"},   # vs "Paris" / "Paris France"
             {"id": "c", "prediction_text": "1889"}]               # vs "in 1890": no overlap
    target = [{"id": "a", "answers": {"text": ["Eiffel Tower", "the tower"], "answer_start": [0, 0]}},
              {"id": "b", "answers": {"text": ["Paris", "Paris France"], "answer_start": [0, 0]}},
              {"id": "c", "answers": {"text": ["in 1890"], "answer_start": [0]}}]
    # b: "in paris france" vs "paris france": P = 2/3, R = 1 -> F1 0.8 (better than 0.5 vs "paris"); EM 0
    expected_f1 = 100 * (1.0 + 0.8 + 0.0) / 3
    result = SQuAD()(preds, target)
    assert result["exact_match"].item() == pytest.approx(100 / 3)
    assert result["f1"].item() == pytest.approx(expected_f1, abs=1e-4)


def test_an_oracle_scores_100_through_the_whole_post_processing(tmp_path):
    """Logits peaked at the gold span of each window that holds it: EM = F1 = 100 on the test file
    (several windows per passage; some questions with several references). The overlap (16 tokens)
    is longer than every answer, so each answer lies whole in some window."""
    dm = with_tokenizer(module(tmp_path, max_length=48, doc_stride=16, max_query_length=12))
    raw, features = dm.raw["tiny"], dm.features["tiny"]
    loader = dm.test_dataloader()[0]
    rows = []
    for batch in loader:
        B, T = batch["input_ids"].shape
        start, end = torch.zeros(B, T), torch.zeros(B, T)
        for b in range(B):
            example = raw[int(batch["example_index"][b])]
            cs = example["answers"]["answer_start"][0]
            ce = cs + len(example["answers"]["text"][0])
            hit_s = (batch["offset_start"][b] <= cs) & (batch["offset_end"][b] > cs)
            hit_e = (batch["offset_start"][b] < ce) & (batch["offset_end"][b] >= ce)
            if hit_s.any() and hit_e.any():
                start[b, hit_s.nonzero()[0]] = 20.0
                end[b, hit_e.nonzero()[-1]] = 20.0
        score, i, j = best_spans(start, end, batch["offset_start"], max_answer_length=30)
        r = torch.arange(B)
        rows.append((batch["example_index"], score, batch["offset_start"][r, i], batch["offset_end"][r, j]))
    cat = [torch.cat(x) for x in zip(*rows)]
    assert len(cat[0]) == len(features) > len(raw)
    answers = list(answers_from_features(*cat, raw["context"]).values())
    assert len(answers) == len(raw)
    result = SQuAD()([{"id": i, "prediction_text": a} for i, a in zip(raw["id"], answers)],
                     [{"id": i, "answers": a} for i, a in zip(raw["id"], raw["answers"])])
    wrong = [(a, r["text"]) for a, r in zip(answers, raw["answers"]) if a not in r["text"]]
    assert wrong == []
    assert result["exact_match"].item() == 100.0 and result["f1"].item() == 100.0


def test_collator_pads_offsets_with_minus_one(tmp_path):
    dm = with_tokenizer(module(tmp_path))
    batch = QACollator(pad_id=0)([dm.features["train"][0], dm.features["train"][5]])
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == lengths.max()
    short = int(lengths.argmin())
    assert (batch["offset_start"][short, lengths[short]:] == -1).all()
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "offset_start", "offset_end",
                          "start_positions", "end_positions", "example_index"}


# ----------------------------------------------------------------------------- bad input

def test_malformed_json_names_the_file_and_line(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"data": [\n  {"paragraphs": [\n    {"context": "x", "qas": [}\n]}')
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON at line 3, column"):
        read_qa_file(str(bad))
    lines = tmp_path / "broken.jsonl"
    lines.write_text('{"id": "1", "context": "a b", "question": "a?", "answers": {"text": ["a"], "answer_start": [0]}}\n'
                     '{"id": "2", "context": \n')
    with pytest.raises(ConfigError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        read_qa_file(str(lines))
    missing = tmp_path / "no_question.json"
    missing.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q"}]}]}]}))
    with pytest.raises(ConfigError, match=r"no_question\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: 'question'"):
        read_qa_file(str(missing))
    with pytest.raises(ConfigError, match=r"expected SQuAD v1\.1 JSON"):
        (tmp_path / "other.json").write_text('{"rows": []}')
        read_qa_file(str(tmp_path / "other.json"))


def _with_edits(tmp_path, edit) -> str:
    doc = json.loads(Path(TRAIN).read_text())
    edit(doc["data"][0]["paragraphs"][0]["qas"])
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_questions_without_answers_are_counted_or_refused(tmp_path, caplog):
    def drop(qas):
        qas[1]["answers"] = []
    path = _with_edits(tmp_path, drop)
    dm = module(tmp_path, train_files=path)
    with caplog.at_level("WARNING", logger="lit_llm"):
        raw = dm.load_raw()
    assert len(raw["train"]) == 16 and dm.load_stats["train"]["no_answer_skipped"] == 1
    assert "skipping 1 question(s) without an answer" in caplog.text
    with pytest.raises(ConfigError, match=r"train: 1 question\(s\) have no answer .*data\.unanswerable=skip"):
        module(tmp_path, train_files=path, unanswerable="error").load_raw()


def test_answer_start_off_the_text_is_counted_or_refused(tmp_path, caplog):
    def shift(qas):
        qas[0]["answers"][0]["answer_start"] += 3
    path = _with_edits(tmp_path, shift)
    with pytest.raises(ConfigError, match=r"train: 1 answer\(s\) do not match their context at answer_start "
                                          r"\(first: id '0': answer_start=\d+ points at 'ne\.', not the answer 'Seine'\)"):
        module(tmp_path, train_files=path, bad_answer="error").load_raw()
    dm = module(tmp_path, train_files=path)
    with caplog.at_level("WARNING", logger="lit_llm"):
        raw = dm.load_raw()
    assert len(raw["train"]) == 16 and dm.load_stats["train"]["bad_answer_skipped"] == 1
    assert "answer_start does not point at the answer text" in caplog.text


def test_bad_window_settings_name_the_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.doc_stride=64 must be smaller than data\.max_length=64"):
        module(tmp_path, doc_stride=64)
    with pytest.raises(ConfigError, match=r"data\.doc_stride=40 leaves no new context per window: .* = 29"):
        module(tmp_path, doc_stride=40, max_query_length=32)
    with pytest.raises(ConfigError, match=r"data\.unanswerable='drop' is not one of"):
        module(tmp_path, unanswerable="drop")
    with pytest.raises(ConfigError, match=r"data\.train_files: no file matches"):
        module(tmp_path, train_files=str(tmp_path / "missing.json")).load_raw()


def test_hub_dataset_in_the_flattened_schema(tmp_path, monkeypatch):
    import datasets

    from lit_llm.data import qa as qa_mod

    records = read_qa_file(TRAIN)
    hub = datasets.DatasetDict({"train": datasets.Dataset.from_list(records[:12]),
                                "validation": datasets.Dataset.from_list(records[12:])})
    monkeypatch.setattr(qa_mod, "load_hub_dataset", lambda name, config, cache: hub)
    dm = QADataModule(hub_name="squad", max_length=64, doc_stride=16, max_query_length=16,
                      cache_dir=str(tmp_path / "cache"))
    raw = dm.load_raw()
    assert {k: len(v) for k, v in raw.items()} == {"train": 12, "validation": 5}
    assert raw["validation"][0]["answers"] == records[12]["answers"] and dm.test_names == ["validation"]
