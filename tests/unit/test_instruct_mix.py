"""Instruction-tuning mixture (lit_llm.data.instruct_mix) and the scoring of generated answers
(lit_llm.metrics.answers): label matching, macro-F1 with unmatched answers, GSM8K numbers, and a small mixture
built from the shared datasets (splits, caps, weights, seeded templates, no held-out data in train)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lit_llm.errors import ConfigError
from lit_llm.metrics import answers
from lit_llm.metrics.answers import LABELS, final_number, match_label, task_statistics
from lit_llm.metrics.bootstrap import bootstrap_interval
from tests.conftest import requires_data, shared_data_dir

# ----------------------------------------------------------------------------- label matching


@pytest.mark.parametrize("answer, labels, expected", [
    ("Positive.", LABELS["sst2"], 1),
    ("The sentiment is negative", LABELS["sst2"], 0),
    ("positive, not negative", LABELS["sst2"], 1),  # the label named first wins
    ("It is NEGATIVE!!", LABELS["sst2"], 0),
    ("good", LABELS["sst2"], -1),  # no synonyms
    ("nonpositive", LABELS["sst2"], -1),  # whole words only
    ("", LABELS["sst2"], -1),
    ("sci/tech", LABELS["ag_news"], 3),
    ("Sci-Tech", LABELS["ag_news"], 3),  # punctuation is a word break on both sides
    ("Sci/Tech news about World records", LABELS["ag_news"], 3),
    ("Sportsmanship", LABELS["ag_news"], -1),
    ("Yes.", LABELS["rte"], 0),
    ("no, it does not follow", LABELS["rte"], 1),
    ("I don't know", LABELS["rte"], -1),
    ("not entailment", ["entailment", "not entailment"], 1),
    ("entailment", ["entailment", "not entailment"], 0),
])
def test_match_label(answer, labels, expected):
    assert match_label(answer, labels) == expected


def test_label_statistics_count_unmatched_answers_as_misses():
    # gold:  neg  neg  pos  pos    pos
    # said:  neg  pos  pos  maybe  neg    -> predictions 0, 1, 1, -1, 0
    stats = task_statistics("sst2", ["negative", "Positive.", "positive", "maybe", "negative"],
                            [["negative"], ["negative"], ["positive"], ["positive"], ["positive"]], [0, 0, 1, 1, 1])
    assert set(stats) == {"acc", "f1_macro", "no_label"}
    assert stats["acc"].value() == pytest.approx(2 / 5)
    assert stats["no_label"].value() == pytest.approx(1 / 5)
    # class 0: tp 1, fp 1 (the last answer), fn 1 -> F1 2/4; class 1: tp 1, fp 1, fn 2 (incl. "maybe") -> F1 2/5;
    # the unmatched answer is nobody's false positive
    assert stats["f1_macro"].value() == pytest.approx((2 / 4 + 2 / 5) / 2)
    interval = bootstrap_interval(stats["f1_macro"], resamples=50, seed=0)
    assert 0.0 <= interval["low"] <= interval["high"] <= 1.0


def test_label_statistics_equal_torchmetrics_without_unmatched_answers():
    torch = pytest.importorskip("torch")
    tmc = pytest.importorskip("torchmetrics.classification")
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 4, size=60), rng.integers(0, 4, size=60)
    pred[:20] = gold[:20]
    words = LABELS["ag_news"]
    stats = task_statistics("ag_news", [f"The topic is {words[p]}." for p in pred], [[words[g]] for g in gold],
                            gold.tolist())
    p, g = torch.as_tensor(pred), torch.as_tensor(gold)
    assert stats["f1_macro"].value() == pytest.approx(tmc.MulticlassF1Score(4, average="macro")(p, g).item(), abs=1e-6)
    assert stats["acc"].value() == pytest.approx(tmc.MulticlassAccuracy(4, average="micro")(p, g).item(), abs=1e-6)
    assert stats["no_label"].value() == 0.0


def test_label_tasks_need_labels():
    with pytest.raises(ValueError, match="labels"):
        task_statistics("rte", ["yes"], [["yes"]], None)


# ----------------------------------------------------------------------------- GSM8K numbers


@pytest.mark.parametrize("text, expected", [
    ("He sold 48/2 = 24 clips.\n#### 1,080", "1080"),
    ("So 5.0 apples in all. The answer is 5.0.", "5"),
    ("The answer is $18.", "18"),
    ("the answer is: -3 degrees", "-3"),
    ("First 3, then 7", "7"),  # no marker: the last number
    ("#### 72\nThe answer is 5", "72"),  # "####" first
    ("It costs 2.50 dollars", "2.5"),
    ("1,000,000 people", "1000000"),
    ("no numbers here", None),
    ("The answer is unclear, maybe 12", "12"),
])
def test_final_number(text, expected):
    assert final_number(text) == expected


def test_number_accuracy():
    stats = task_statistics("gsm8k", ["3 + 4 = 7. The answer is 7.", "The answer is 1,080", "I think 12", "none"],
                            [["7"], ["1080"], ["13"], ["5"]])
    assert set(stats) == {"acc"}
    assert stats["acc"].value() == pytest.approx(2 / 4)


def test_text_task_statistics():
    sacrebleu = pytest.importorskip("sacrebleu")
    preds, refs = ["a man rides a red bike down the street .", "two dogs play in the snow ."], \
        [["a man rides a bike down the street ."], ["two dogs are playing in the snow ."]]
    bleu = task_statistics("multi30k", preds, refs)["bleu"].value()
    assert bleu == pytest.approx(sacrebleu.corpus_bleu(preds, [[r[0] for r in refs]], smooth_method="none").score)
    assert set(task_statistics("tydiqa", ["Immanuel Kant"], [["Kant", "Immanuel Kant"]])) == {"em", "f1"}
    assert task_statistics("tydiqa", ["Immanuel Kant"], [["Kant", "Immanuel Kant"]])["em"].value() == 100.0
    assert "rouge1" in task_statistics("samsum", ["Amanda baked cookies."], [["Amanda baked cookies for Jerry."]])
    assert set(answers.TASK_KINDS) >= set(LABELS)


# ----------------------------------------------------------------------------- the mixture

SMALL = {name: {"train_examples": 20, "validation_examples": 5, "test_examples": 10}
         for name in ("sst2", "ag_news", "tydiqa", "samsum", "dialogsum", "multi30k", "rte", "gsm8k")}
SMALL["sst2"]["weight"] = 2.0
SMALL["ag_news"]["weight"] = 0.5
SMALL["rte"]["weight"] = 1.5
SMALL_CHATS = {"samsum_chat": {"train_examples": 6, "validation_examples": 3},
               "dialogsum_chat": {"train_examples": 6, "validation_examples": 3},
               "hh_rlhf": {"train_examples": 8, "validation_examples": 3}}
DATA_FOLDERS = ("sst2", "ag_news", "tydiqa_goldp_en", "samsum_full", "dialogsum_full", "multi30k", "rte", "gsm8k",
                "hh_rlhf_harmless_base")
needs_data = requires_data(*DATA_FOLDERS)


def _data() -> str:
    return str(shared_data_dir())


@pytest.fixture(scope="module")
def small():
    from lit_llm.data.instruct_mix import build_mixture

    if shared_data_dir() is None or any(not (shared_data_dir() / d).is_dir() for d in DATA_FOLDERS):
        pytest.skip(f"needs {DATA_FOLDERS} under LIT_LLM_DATA_DIR (or ../shared/data)")
    return build_mixture(_data(), SMALL, seed=7, chats=SMALL_CHATS)


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, ...
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.*)" for i, p in enumerate(parts)),
                      re.DOTALL)


def _parse(task: str, content: str) -> tuple[int, dict[str, str]]:
    """(template index, fields) of a user prompt: the matching template with the most literal text."""
    from lit_llm.data.instruct_mix import TEMPLATES

    best = None
    for i, template in enumerate(TEMPLATES[task]):
        m = _pattern(template).fullmatch(content)
        literal = len(re.sub(r"\{\w+\}", "", template))
        if m and (best is None or literal > best[0]):
            best = (literal, i, m.groupdict())
    assert best is not None, f"{task}: no template renders {content[:80]!r}"
    return best[1], best[2]


def _jsonl(rel: str) -> list[dict]:
    with open(f"{_data()}/{rel}", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@needs_data
def test_mixture_splits_and_rows(small):
    splits, info = small
    assert set(splits) == {"train", "validation", *SMALL}  # one test split per task, none for chats
    for split, rows in splits.items():
        for row in rows:
            assert set(row) == {"messages", "task", "references", "label"}
            roles = [m["role"] for m in row["messages"]]
            assert roles[0] == "user" and roles[-1] == "assistant", (split, row["task"])
            assert all(a != b for a, b in zip(roles, roles[1:])), "turns alternate"
            assert all(m["content"].strip() for m in row["messages"])
            assert row["references"] and all(isinstance(r, str) for r in row["references"])
            if row["task"] in LABELS:
                assert row["messages"][-1]["content"] == LABELS[row["task"]][row["label"]] == row["references"][0]
            else:
                assert row["label"] == -1
    for task in SMALL:
        assert {r["task"] for r in splits[task]} == {task}
    assert json.loads(json.dumps(info)) == info


@needs_data
def test_mixture_caps_and_weights(small):
    splits, info = small
    train = [r["task"] for r in splits["train"]]
    for task, opts in {**SMALL, **SMALL_CHATS}.items():
        distinct = min(opts["train_examples"], info["counts"][task]["train_available"])
        assert train.count(task) == round(opts.get("weight", 1.0) * distinct), task
        assert sum(r["task"] == task for r in splits["validation"]) == opts["validation_examples"], task
        if task in SMALL:
            assert len(splits[task]) == opts["test_examples"]
    sst2 = [json.dumps(r["messages"][0]) for r in splits["train"] if r["task"] == "sst2"]
    sst2_fields = {_parse("sst2", json.loads(m)["content"])[1]["text"] for m in sst2}
    assert len(sst2_fields) == 20  # weight 2: every one of the 20 examples twice
    assert train != sorted(train), "the training stream is shuffled across tasks"


@needs_data
def test_templates_seeded_and_varied(small):
    from lit_llm.data.instruct_mix import build_mixture

    splits, _ = small
    for task in SMALL:
        used = {_parse(task, r["messages"][0]["content"])[0] for r in splits["train"] if r["task"] == task}
        assert len(used) >= 2, f"{task}: one template for every row"
    tasks = {"rte": {"train_examples": 30, "test_examples": 10}, "gsm8k": {"train_examples": 30, "test_examples": 10}}
    again, info_a = build_mixture(_data(), tasks, seed=3)
    same, info_b = build_mixture(_data(), tasks, seed=3)
    other, _ = build_mixture(_data(), tasks, seed=4)
    assert again == same and info_a == info_b
    assert again["train"] != other["train"]
    # evaluation prompts do not move with the training seed
    assert again["rte"] == other["rte"] and again["validation"] == other["validation"]


@needs_data
def test_test_rows_come_from_the_test_files(small):
    splits, _ = small
    train_q = {r["question"].strip() for r in _jsonl("gsm8k/train.jsonl")}
    test_q = {r["question"].strip() for r in _jsonl("gsm8k/test.jsonl")}
    for split, want, avoid in (("gsm8k", test_q, train_q), ("train", train_q, test_q), ("validation", train_q, test_q)):
        for row in splits[split]:
            if row["task"] == "gsm8k":
                question = _parse("gsm8k", row["messages"][0]["content"])[1]["question"]
                assert question in want and question not in avoid, split
    gsm_test = {r["question"].strip(): r["answer"].rsplit("####", 1)[1].strip().replace(",", "")
                for r in _jsonl("gsm8k/test.jsonl")}
    for row in splits["gsm8k"]:
        question = _parse("gsm8k", row["messages"][0]["content"])[1]["question"]
        assert row["references"] == [gsm_test[question]]
        assert final_number(row["messages"][-1]["content"]) == gsm_test[question]  # "... The answer is N."
        assert "<<" not in row["messages"][-1]["content"]  # no calculator annotations
    with open(f"{_data()}/multi30k/test_2016_flickr.de", encoding="utf-8") as f:
        german_test = {line.strip() for line in f}
    for row in splits["multi30k"]:
        assert _parse("multi30k", row["messages"][0]["content"])[1]["source"] in german_test
    official = json.dumps(json.loads(Path(f"{_data()}/tydiqa_goldp_en/tydiqa-goldp-dev-english.json").read_text()))
    for row in splits["tydiqa"]:
        question = _parse("tydiqa", row["messages"][0]["content"])[1]["question"]
        assert json.dumps(question)[1:-1] in official


@needs_data
def test_hh_rlhf_chats_only_from_the_sft_part(small):
    from lit_llm.data.conversations import hh_rlhf_parts, parse_hh_rlhf

    splits, _ = small
    rows = _jsonl("hh_rlhf_harmless_base/test.jsonl")
    parts = hh_rlhf_parts(len(rows))
    sft = [json.dumps(parse_hh_rlhf(rows[i]["chosen"], "x")) for i in parts["sft"]]
    held = {json.dumps(parse_hh_rlhf(rows[i]["chosen"], "x"))
            for name in ("dpo_train", "dpo_validation", "dpo_test") for i in parts[name]}
    chats = [r for split in ("train", "validation") for r in splits[split] if r["task"] == "hh_rlhf"]
    assert len(chats) == 8 + 3
    for row in chats:
        opening = json.dumps(row["messages"])[:-1]  # the chat may be a cut of the conversation
        assert any(s.startswith(opening) for s in sft)
        assert json.dumps(row["messages"]) not in held


@needs_data
def test_caps_keep_a_prefix_stable_choice_and_weight_leaves_evaluation_alone():
    from lit_llm.data.instruct_mix import build_mixture

    small_cap, _ = build_mixture(_data(), {"rte": {"train_examples": 10, "test_examples": 5}}, seed=1)
    big_cap, _ = build_mixture(_data(), {"rte": {"train_examples": 40, "weight": 0.5, "test_examples": 8}}, seed=1)
    assert len(big_cap["train"]) == 20
    # a larger test cap keeps the smaller cap's rows, prompts included (templates are drawn per example)
    assert len(big_cap["rte"]) == 8 and all(row in big_cap["rte"] for row in small_cap["rte"])
    assert small_cap["validation"] == big_cap["validation"]


def test_unknown_tasks_and_options_are_config_errors(tmp_path):
    from lit_llm.data.instruct_mix import build_mixture

    with pytest.raises(ConfigError, match=r"data\.mixture\.tasks\.nope is not a known task; known: sst2, .*gsm8k"):
        build_mixture(str(tmp_path), {"nope": {}})
    with pytest.raises(ConfigError, match=r"data\.mixture\.tasks\.sst2\.epochs is not an option; known: weight"):
        build_mixture(str(tmp_path), {"sst2": {"epochs": 2}})
    with pytest.raises(ConfigError, match=r"data\.mixture\.chats\.oasst is not a known chat"):
        build_mixture(str(tmp_path), {}, chats={"oasst": {}})
    with pytest.raises(ConfigError, match=r"data\.mixture\.chats\.hh_rlhf\.test_examples is not an option"):
        build_mixture(str(tmp_path), {}, chats={"hh_rlhf": {"test_examples": 3}})
    with pytest.raises(ConfigError, match=r"weight=-1"):
        build_mixture(str(tmp_path), {"rte": {"weight": -1}})
    with pytest.raises(ConfigError, match=r"train_examples=2\.5"):
        build_mixture(str(tmp_path), {"rte": {"train_examples": 2.5}})
    with pytest.raises(ConfigError, match="both empty"):
        build_mixture(str(tmp_path), {})
    with pytest.raises(ConfigError, match=rf"{re.escape(str(tmp_path / 'rte'))} is missing.*LIT_LLM_DATA_DIR"):
        build_mixture(str(tmp_path), {"rte": {}})


@needs_data
def test_fingerprint_names_files_and_settings(small):
    from lit_llm.data.instruct_mix import build_mixture
    from lit_llm.utils_io import sha256_file

    _, info = small
    assert info["files"]["gsm8k/test.jsonl"] == sha256_file(f"{_data()}/gsm8k/test.jsonl")
    assert "self_instruct/seed_tasks.jsonl" not in info["files"] and "mt_bench/question.jsonl" not in info["files"]
    assert info["tasks"]["sst2"] == {"weight": 2.0, "train_examples": 20, "validation_examples": 5, "test_examples": 10}
    _, other = build_mixture(_data(), {"rte": {"train_examples": 10}}, seed=1)
    _, changed = build_mixture(_data(), {"rte": {"train_examples": 11}}, seed=1)
    assert other["tasks"] != changed["tasks"] and other["files"] == changed["files"]


@requires_data("mt_bench/question.jsonl", "self_instruct/user_oriented_instructions.jsonl",
               "self_instruct/seed_tasks.jsonl")
def test_chat_prompts(small):
    from lit_llm.data.instruct_mix import chat_prompts

    mt = chat_prompts(_data(), "mt_bench")
    assert len(mt) == 80 and all(len(r["turns"]) == 2 for r in mt) and mt[0]["id"] == "81"
    user = chat_prompts(_data(), "self_instruct")
    assert len(user) == 252 and all(len(r["turns"]) == 1 for r in user)
    assert user[1]["turns"][0].endswith("There's a coffee in it for you!")  # instruction + input, one turn
    assert len(chat_prompts(_data(), "self_instruct_seed")) == 175
    with pytest.raises(ConfigError, match="known: mt_bench"):
        chat_prompts(_data(), "vicuna")
    trained = {m["content"] for r in small[0]["train"] for m in r["messages"]}
    assert not trained & {t for r in mt + user for t in r["turns"]}
