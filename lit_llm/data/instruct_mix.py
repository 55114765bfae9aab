"""The instruction-tuning mixture: our task datasets (under `data_dir`, LIT_LLM_DATA_DIR) as instruction-following
conversations, plus multi-turn chats.

`build_mixture(data_dir, tasks, seed, chats)` -> ({split: rows}, fingerprint_info). Splits: "train" (every task's
and chat source's training rows, shuffled together), "validation" (all of them, task by task) and one test split
per task, named by the task ("sst2", "gsm8k", ...). A row is

    {"messages": [{"role": "user", ...}, {"role": "assistant", "content": <answer>}], "task": "sst2",
     "references": ["positive"], "label": 1}

(`label`: the class id for classification tasks, else -1; chats: several turns, references = the last reply).
Each task example is phrased by one of several instruction templates (`TEMPLATES`), drawn per row by a seeded
generator; answers are the label word (`lit_llm.metrics.answers.LABELS`, which also scores them), the answer span,
the summary, the translation, or GSM8K's worked solution ending "The answer is N.".

Where each split comes from (held-out data never reaches "train"):
| task | train | validation | test |
|---|---|---|---|
| sst2 | train.tsv | 2% held out of train.tsv | dev.tsv (GLUE test.tsv has no labels) |
| ag_news | train_subset_581.csv | 10% held out of it | test.csv |
| tydiqa | tydiqa.en.train.json | tydiqa.en.dev.json | tydiqa-goldp-dev-english.json (official dev) |
| samsum | samsum_full/train.json | validation.json | test.json |
| dialogsum | dialogsum_full train csv | validation csv | test csv (3 references per dialogue, merged) |
| multi30k | train.de/en | val.de/en | test_2016_flickr.de/en (German -> English) |
| rte | train.tsv | 10% held out of train.tsv | dev.tsv |
| gsm8k | train.jsonl | 5% held out of train.jsonl | test.jsonl |
Chats (train and validation only): `samsum_chat` / `dialogsum_chat` (the train and validation dialogues of exactly
two speakers, who become user and assistant; consecutive lines of one speaker are one turn) and `hh_rlhf` (the
`chosen` conversations of the HH-RLHF part "sft" only, `conversations.hh_rlhf_parts`; 10% of them held out for
validation; the other parts are DPO's). Self-Instruct and MT-Bench are never trained on: `chat_prompts` reads them
for qualitative chats.

Per task options (`tasks` / `chats` map a name to them; anything else is a ConfigError naming the key):
`train_examples` (distinct training examples, a seeded choice; null: all), `weight` (the task's share of the
training stream: round(weight x examples) rows, whole copies of every example for weight >= 1 plus a seeded
subsample for the rest; each row draws its own template, so copies are mostly phrased differently),
`validation_examples` (default 100) and `test_examples` (null: all). Validation and test subsets, their templates
and the held-out parts use `SPLIT_SEED`, not `seed`: runs with different seeds are scored on the same prompts.

Length (the prompts target a 512-token context, ~4 characters a token): a TyDi passage is cut to its first
`MAX_PASSAGE_CHARS` characters (at a word boundary) and the question put after it; training and validation
questions whose answer lies beyond the cut are dropped, test questions are kept (their answer may be cut away:
counted as `answer_cut` in the info). Dialogues longer than `MAX_DIALOGUE_CHARS` are dropped from training and
validation (a cut dialogue no longer matches its summary) and cut after the last whole turn that fits in the test
splits (counted). Chats keep their longest opening that ends with an assistant turn within `MAX_CHAT_CHARS`.
"""
from __future__ import annotations

import csv
import html
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lit_llm.data.base import hold_out_rows
from lit_llm.errors import ConfigError
from lit_llm.metrics.answers import LABELS, TASK_KINDS, normalize_number
from lit_llm.utils_io import sha256_file, sha256_json

MIXTURE_VERSION = 1  # bump when rows are built differently (their fingerprint changes with it)
SPLIT_SEED = 1234  # the held-out parts and the validation / test subsets (and their templates)
MAX_PASSAGE_CHARS = 1400  # TyDi passages: median 540 characters, 95th percentile ~1,250
MAX_DIALOGUE_CHARS = 1400  # SAMSum / DialogSum dialogues: 97% / 94% are shorter
MAX_CHAT_CHARS = 1600  # the text of a chat's kept turns
TASK_OPTIONS: dict[str, Any] = {"weight": 1.0, "train_examples": None, "validation_examples": 100,
                                "test_examples": None}
CHAT_OPTIONS: dict[str, Any] = {"weight": 1.0, "train_examples": None, "validation_examples": 100}

# A ~20-minute CPU run: 9,353 training rows, ~1.4 M tokens with an 8,192-token byte-level BPE trained on them
# (150 a row on average; sst2 43, multi30k 58, dialogsum 249); 550 validation rows, 200 test rows per task.
DEFAULT_TASKS: dict[str, dict[str, Any]] = {
    name: {"weight": 1.0, "train_examples": 1000, "validation_examples": 50, "test_examples": 200}
    for name in ("sst2", "ag_news", "tydiqa", "samsum", "dialogsum", "multi30k", "rte", "gsm8k")}
DEFAULT_CHATS: dict[str, dict[str, Any]] = {
    "samsum_chat": {"weight": 1.0, "train_examples": 500, "validation_examples": 50},
    "dialogsum_chat": {"weight": 1.0, "train_examples": 500, "validation_examples": 50},
    "hh_rlhf": {"weight": 1.0, "train_examples": None, "validation_examples": 50}}


@dataclass(frozen=True)
class Example:
    """One task example: the template's variables, the assistant's answer, the scoring references, the class."""

    fields: Mapping[str, str]
    answer: str
    references: tuple[str, ...]
    label: int = -1


# ----------------------------------------------------------------------------- source files

class Sources:
    """The files of one build under `data_dir`: each read once, each remembered with its sha256 (the fingerprint),
    plus per-task counts of what was dropped or cut (`notes`)."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir)
        self.sha256: dict[str, str] = {}
        self.notes: dict[str, dict[str, int]] = {}
        self._memo: dict[tuple[str, str], Any] = {}

    def path(self, rel: str) -> Path:
        path = self.root / rel
        folder = self.root / rel.split("/")[0]
        if not folder.is_dir():
            raise ConfigError(f"dataset folder {folder} is missing: the instruction mixture reads {rel} under the "
                              f"data directory {self.root} (LIT_LLM_DATA_DIR / paths.data_dir); set it to the folder "
                              "holding the datasets, or leave the task out of data.mixture.tasks")
        if not path.is_file():
            raise ConfigError(f"{path} is missing from {folder} (see its SOURCE.md); the instruction mixture reads it")
        if rel not in self.sha256:
            self.sha256[rel] = sha256_file(path)
        return path

    def read(self, rel: str, parse: Callable[[Path], Any]) -> Any:
        key = (rel, parse.__name__)
        if key not in self._memo:
            self._memo[key] = parse(self.path(rel))
        return self._memo[key]

    def note(self, task: str, what: str, n: int = 1) -> None:
        counts = self.notes.setdefault(task, {})
        counts[what] = counts.get(what, 0) + n


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:  # GLUE tsv: bare quotes, no quoting
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _ag_news_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:  # no header row
        return list(csv.DictReader(f, fieldnames=["label", "title", "description"]))


def _qa(path: Path) -> list[dict]:
    from lit_llm.data.qa import read_qa_file

    return read_qa_file(str(path))


# ----------------------------------------------------------------------------- text clean-up and cuts

_SST_DETOK = re.compile(r" (n't|'\w*|[.,!?;:%)])")


def _sst_text(sentence: str) -> str:
    """SST-2's PTB tokens back to plain text ("it 's good , -lrb- ok -rrb-" -> "it's good, (ok)")."""
    text = sentence.strip().replace("-lrb-", "(").replace("-rrb-", ")").replace("``", '"').replace("''", '"')
    return re.sub(r"\( ", "(", _SST_DETOK.sub(r"\1", text))


_AG_ENTITY = re.compile(r" ?#(\d+);")
_AG_TAG = re.compile(r"</?(?:a|b|i|em|strong|font|p|br)\b[^>]*>", re.IGNORECASE)


def _ag_text(text: str) -> str:
    """AG News: " #39;" -> "'" (HTML entities that lost their "&"), &lt;...&gt; decoded, link/font tags dropped,
    the backslashes that stand for line breaks turned into spaces."""
    text = html.unescape(_AG_ENTITY.sub(lambda m: html.unescape(f"&#{m.group(1)};"), text))
    return " ".join(_AG_TAG.sub(" ", text).replace("\\", " ").split())


def _cut_words(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]


def _cut_turns(dialogue: str, limit: int) -> str:
    """The dialogue's first lines that fit in `limit` characters (the first line cut at a word if it alone is longer)."""
    kept, size = [], 0
    for line in dialogue.split("\n"):
        if size + len(line) > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept) if kept else _cut_words(dialogue, limit)


def _dialogue(text: str) -> str:
    return "\n".join(line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip())


# ----------------------------------------------------------------------------- task readers

def _read_sst2(src: Sources) -> dict[str, list[Example]]:
    words = LABELS["sst2"]

    def examples(rows):
        return [Example({"text": _sst_text(r["sentence"])}, words[int(r["label"])], (words[int(r["label"])],),
                        int(r["label"])) for r in rows]
    return {"train": examples(src.read("sst2/train.tsv", _tsv)), "test": examples(src.read("sst2/dev.tsv", _tsv))}


def _read_ag_news(src: Sources) -> dict[str, list[Example]]:
    words = LABELS["ag_news"]

    def examples(rows):
        out = []
        for r in rows:
            label = int(r["label"]) - 1  # the file's classes are 1..4
            out.append(Example({"title": _ag_text(r["title"]), "text": _ag_text(r["description"])}, words[label],
                               (words[label],), label))
        return out
    return {"train": examples(src.read("ag_news/train_subset_581.csv", _ag_news_csv)),
            "test": examples(src.read("ag_news/test.csv", _ag_news_csv))}


def _read_rte(src: Sources) -> dict[str, list[Example]]:
    words, ids = LABELS["rte"], {"entailment": 0, "not_entailment": 1}

    def examples(rows):
        return [Example({"premise": r["sentence1"].strip(), "hypothesis": r["sentence2"].strip()},
                        words[ids[r["label"]]], (words[ids[r["label"]]],), ids[r["label"]]) for r in rows]
    return {"train": examples(src.read("rte/train.tsv", _tsv)), "test": examples(src.read("rte/dev.tsv", _tsv))}


def _read_tydiqa(src: Sources) -> dict[str, list[Example]]:
    def examples(rel, split):
        out = []
        for r in src.read(f"tydiqa_goldp_en/{rel}", _qa):
            passage = _cut_words(r["context"], MAX_PASSAGE_CHARS)
            texts, starts = r["answers"]["text"], r["answers"]["answer_start"]
            if not texts:
                src.note("tydiqa", f"{split}_unanswerable")
                continue
            if starts[0] + len(texts[0]) > len(passage):
                src.note("tydiqa", f"{split}_answer_cut")
                if split != "test":
                    continue
            out.append(Example({"passage": passage, "question": r["question"].strip()}, texts[0], tuple(texts)))
        return out
    return {"train": examples("tydiqa.en.train.json", "train"), "validation": examples("tydiqa.en.dev.json", "validation"),
            "test": examples("tydiqa-goldp-dev-english.json", "test")}


def _summaries(task: str, split: str, pairs: Sequence[tuple[str, str]], src: Sources) -> list[Example]:
    """Dialogue/summary pairs as examples; rows repeating a dialogue become one example with all its summaries."""
    merged: dict[str, list[str]] = {}
    for dialogue, summary in pairs:
        dialogue, summary = _dialogue(dialogue or ""), (summary or "").strip()
        if not dialogue or not summary:
            src.note(task, f"{split}_empty")
            continue
        merged.setdefault(dialogue, []).append(summary)
    out = []
    for dialogue, summaries in merged.items():
        if len(dialogue) > MAX_DIALOGUE_CHARS:
            src.note(task, f"{split}_{'cut' if split == 'test' else 'too_long'}")
            if split != "test":
                continue
            dialogue = _cut_turns(dialogue, MAX_DIALOGUE_CHARS)
        out.append(Example({"dialogue": dialogue}, summaries[0], tuple(summaries)))
    return out


def _read_samsum(src: Sources) -> dict[str, list[Example]]:
    return {split: _summaries("samsum", split, [(r["dialogue"], r["summary"])
                                                for r in src.read(f"samsum_full/{split}.json", _jsonl)], src)
            for split in ("train", "validation", "test")}


def _read_dialogsum(src: Sources) -> dict[str, list[Example]]:
    return {split: _summaries("dialogsum", split, [(r["dialogue"], r["summary"]) for r in
                                                   src.read(f"dialogsum_full/dialogsum_{split}.csv", _csv)], src)
            for split in ("train", "validation", "test")}


def _read_multi30k(src: Sources) -> dict[str, list[Example]]:
    from lit_llm.data.seq2seq import read_parallel

    out = {}
    for split, stem in (("train", "train"), ("validation", "val"), ("test", "test_2016_flickr")):
        for lang in ("de", "en"):
            src.path(f"multi30k/{stem}.{lang}")
        german, english, _ = read_parallel(str(src.root / "multi30k" / stem), "de", "en", f"multi30k/{stem}")
        out[split] = [Example({"source": de.strip()}, en.strip(), (en.strip(),)) for de, en in zip(german, english)
                      if de.strip() and en.strip()]
    return out


_CALCULATOR = re.compile(r"<<[^>]*>>")


def _gsm8k_example(row: Mapping[str, str]) -> Example:
    """The worked answer without its calculator annotations (<<48/2=24>>), the "#### N" line as "The answer is N."."""
    steps, _, final = _CALCULATOR.sub("", row["answer"]).rpartition("####")
    final = final.strip()
    answer = f"{steps.strip()}\nThe answer is {final}.".strip()
    return Example({"question": row["question"].strip()}, answer, (normalize_number(final) or final,))


def _read_gsm8k(src: Sources) -> dict[str, list[Example]]:
    return {split: [_gsm8k_example(r) for r in src.read(f"gsm8k/{split}.jsonl", _jsonl)] for split in ("train", "test")}


# ----------------------------------------------------------------------------- chats

def _fit_chat(messages: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """The longest opening of a user-first, alternating conversation that ends with an assistant turn and fits
    in MAX_CHAT_CHARS; None if the conversation does not alternate or no such opening exists."""
    roles = [m["role"] for m in messages]
    if roles[::2] != ["user"] * len(roles[::2]) or roles[1::2] != ["assistant"] * len(roles[1::2]):
        return None
    if any(not m["content"].strip() for m in messages):
        return None
    end, size = 0, 0
    for i, m in enumerate(messages):
        size += len(m["content"])
        if size > MAX_CHAT_CHARS:
            break
        if m["role"] == "assistant":
            end = i + 1
    return messages[:end] or None


_SPEAKER = {"samsum_chat": re.compile(r"^([^:]{1,40}):\s*(.*)$"),
            "dialogsum_chat": re.compile(r"^(#Person\d+#):\s*(.*)$")}


def _dialogue_chat(dialogue: str, speaker: re.Pattern) -> list[dict[str, str]] | None:
    """A two-speaker dialogue as a chat: the first speaker is the user; a speaker's consecutive lines, one turn."""
    turns: list[list[str]] = []
    for line in _dialogue(dialogue).split("\n"):
        m = speaker.match(line)
        if m is None:
            return None
        if turns and turns[-1][0] == m.group(1):
            turns[-1][1] += "\n" + m.group(2)
        else:
            turns.append([m.group(1), m.group(2)])
    if len({who for who, _ in turns}) != 2:
        return None
    return _fit_chat([{"role": "user" if i % 2 == 0 else "assistant", "content": text.strip()}
                      for i, (_, text) in enumerate(turns)])


def _chats(task: str, split: str, dialogues: Sequence[str], src: Sources) -> list[list[dict[str, str]]]:
    out = []
    for dialogue in dialogues:
        chat = _dialogue_chat(dialogue or "", _SPEAKER[task])
        if chat is None:
            src.note(task, f"{split}_skipped")
        else:
            out.append(chat)
    return out


def _read_samsum_chats(src: Sources) -> dict[str, list]:
    return {split: _chats("samsum_chat", split, [r["dialogue"] for r in src.read(f"samsum_full/{split}.json", _jsonl)],
                          src) for split in ("train", "validation")}


def _read_dialogsum_chats(src: Sources) -> dict[str, list]:
    return {split: _chats("dialogsum_chat", split, [r["dialogue"] for r in
                                                    src.read(f"dialogsum_full/dialogsum_{split}.csv", _csv)], src)
            for split in ("train", "validation")}


def _read_hh_chats(src: Sources) -> dict[str, list]:
    from lit_llm.data.conversations import hh_rlhf_parts, parse_hh_rlhf

    rel = "hh_rlhf_harmless_base/test.jsonl"
    rows = src.read(rel, _jsonl)
    out = []
    for i in hh_rlhf_parts(len(rows))["sft"]:  # the other parts are held out for DPO
        chat = _fit_chat(parse_hh_rlhf(rows[i]["chosen"], f"{rel}, line {i + 1}"))
        if chat is None:
            src.note("hh_rlhf", "train_skipped")
        else:
            out.append(chat)
    return {"train": out}


# ----------------------------------------------------------------------------- templates and registry

TEMPLATES: dict[str, tuple[str, ...]] = {
    "sst2": ("Is the sentiment of this movie review negative or positive?\n\n{text}",
             "Review: {text}\n\nClassify the sentiment of the review as negative or positive.",
             "{text}\n\nWas the reviewer's opinion negative or positive?",
             "Label the sentiment of this sentence with one word, negative or positive.\n\nSentence: {text}"),
    "ag_news": ("What is the topic of this news article? Choose World, Sports, Business or Sci/Tech.\n\n{title}\n{text}",
                "Title: {title}\nArticle: {text}\n\nWhich section does this article belong in: World, Sports, "
                "Business or Sci/Tech?",
                "Classify the news story into one of these topics: World, Sports, Business, Sci/Tech.\n\n"
                "{title}\n{text}"),
    "rte": ("{premise}\n\nDoes this imply that \"{hypothesis}\"? Answer yes or no.",
            "Premise: {premise}\nHypothesis: {hypothesis}\n\nDoes the premise entail the hypothesis? Answer yes or no.",
            "Read the text and decide whether the statement follows from it (yes or no).\n\nText: {premise}\n"
            "Statement: {hypothesis}",
            "Given that \"{premise}\", is it true that \"{hypothesis}\"? Yes or no?"),
    "tydiqa": ("{passage}\n\nAnswer the question with a short span from the passage above.\nQuestion: {question}",
               "Passage: {passage}\n\nQuestion: {question}\nAnswer briefly, with words from the passage.",
               "Read this text:\n{passage}\n\n{question}"),
    "samsum": ("Summarize this dialogue:\n\n{dialogue}",
               "{dialogue}\n\nWrite a short summary of the conversation above.",
               "Briefly, what happened in this conversation?\n\n{dialogue}",
               "Dialogue:\n{dialogue}\n\nSummary:"),
    "multi30k": ("Translate from German to English:\n\n{source}",
                 "{source}\n\nTranslate this German sentence into English.",
                 "What is the English translation of \"{source}\"?",
                 "German: {source}\nEnglish:"),
    "gsm8k": ("{question}",
              "Solve this math word problem step by step.\n\n{question}",
              "Question: {question}\nThink step by step, then give the final answer.",
              "{question}\n\nShow your reasoning and end with the final number."),
}
TEMPLATES["dialogsum"] = TEMPLATES["samsum"]


@dataclass(frozen=True)
class TaskSource:
    """How a task's splits are read; `val_fraction`: the share of train held out when it has no validation file."""

    read: Callable[[Sources], dict[str, list]]
    val_fraction: float = 0.05


TASKS: dict[str, TaskSource] = {
    "sst2": TaskSource(_read_sst2, 0.02), "ag_news": TaskSource(_read_ag_news, 0.1),
    "tydiqa": TaskSource(_read_tydiqa), "samsum": TaskSource(_read_samsum), "dialogsum": TaskSource(_read_dialogsum),
    "multi30k": TaskSource(_read_multi30k), "rte": TaskSource(_read_rte, 0.1), "gsm8k": TaskSource(_read_gsm8k, 0.05),
}
CHATS: dict[str, TaskSource] = {
    "samsum_chat": TaskSource(_read_samsum_chats), "dialogsum_chat": TaskSource(_read_dialogsum_chats),
    "hh_rlhf": TaskSource(_read_hh_chats, 0.1),
}
assert set(TASKS) == set(TASK_KINDS) == set(TEMPLATES), "a task needs a reader, a scoring kind and templates"


# ----------------------------------------------------------------------------- settings

def _settings(given: Mapping | None, registry: Mapping[str, TaskSource], options: Mapping[str, Any],
              group: str) -> dict[str, dict[str, Any]]:
    """Each named task's options with the defaults filled in; a ConfigError naming any unknown or bad key."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"data.mixture.{group} must map names ({', '.join(registry)}) to options, got {given!r}")
    out = {}
    for name, opts in given.items():
        if name not in registry:
            raise ConfigError(f"data.mixture.{group}.{name} is not a known {group[:-1]}; known: {', '.join(registry)}")
        opts = {} if opts is None else opts
        if not isinstance(opts, Mapping):
            raise ConfigError(f"data.mixture.{group}.{name} must map options ({', '.join(options)}) to values")
        for key in opts:
            if key not in options:
                raise ConfigError(f"data.mixture.{group}.{name}.{key} is not an option; known: {', '.join(options)}")
        merged = {**options, **opts}
        weight = merged["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
            raise ConfigError(f"data.mixture.{group}.{name}.weight={weight!r} must be a number >= 0")
        for key in options:
            value = merged[key]
            if key != "weight" and value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                                           or value < 0):
                raise ConfigError(f"data.mixture.{group}.{name}.{key}={value!r} must be null (all) or an integer >= 0")
        out[str(name)] = {key: (float(v) if key == "weight" else v) for key, v in merged.items()}
    return out


# ----------------------------------------------------------------------------- building

def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator per (seed, task, purpose): one task's settings never move another task's draws."""
    return np.random.default_rng([seed, zlib.crc32("/".join(names).encode("utf-8"))])


def _take(n: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most `cap` of `n` items, a seeded choice in file order (a larger cap keeps every item a smaller
    one took)."""
    if cap is None or cap >= n:
        return np.arange(n)
    return np.sort(rng.permutation(n)[:cap])


def _stream(items: Sequence, weight: float, rng: np.random.Generator) -> list:
    """round(weight x len(items)) items: whole copies of all, then a seeded subsample without repeats."""
    if not items:
        return []
    full, rest = divmod(int(round(weight * len(items))), len(items))
    picks = np.concatenate([np.tile(np.arange(len(items)), full), np.sort(rng.choice(len(items), rest, replace=False))])
    return [items[int(i)] for i in picks]


def _template_ids(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(len(TEMPLATES[name]), size=n) if name in TEMPLATES else np.zeros(n, dtype=np.int64)


def _rows(name: str, items: Sequence, template_ids: np.ndarray) -> list[dict[str, Any]]:
    """Task examples phrased by their templates; chats (message lists) as they are."""
    if name not in TEMPLATES:
        return [{"messages": [dict(m) for m in chat], "task": name, "references": [chat[-1]["content"]], "label": -1}
                for chat in items]
    templates = TEMPLATES[name]
    return [{"messages": [{"role": "user", "content": templates[t].format(**ex.fields)},
                          {"role": "assistant", "content": ex.answer}],
             "task": name, "references": list(ex.references), "label": ex.label} for t, ex in zip(template_ids, items)]


def _task_rows(name: str, source: TaskSource, opts: Mapping[str, Any], seed: int, src: Sources
               ) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """The rows of one task or chat source per split ("train" = its weighted stream), and their counts.

    Training rows draw a template each (`seed`); an evaluation example's template is drawn for its place in the
    whole split (`SPLIT_SEED`), so it keeps its prompt whatever `validation_examples` / `test_examples` say."""
    splits = dict(source.read(src))
    if "validation" not in splits:
        splits["validation"], splits["train"] = hold_out_rows(splits["train"], source.val_fraction, SPLIT_SEED,
                                                              unit=f"{name} examples")
    train = splits["train"]
    chosen = [train[i] for i in _take(len(train), opts["train_examples"], _rng(seed, name, "train"))]
    stream = _stream(chosen, opts["weight"], _rng(seed, name, "weight"))
    out = {"train": _rows(name, stream, _template_ids(name, len(stream), _rng(seed, name, "train templates")))}
    counts = {"train_available": len(train), "train_examples": len(chosen), "train_rows": len(stream)}
    for split in ("validation", "test"):
        if split not in splits:
            continue
        items = splits[split]
        idx = _take(len(items), opts[f"{split}_examples"], _rng(SPLIT_SEED, name, split))
        templates = _template_ids(name, len(items), _rng(SPLIT_SEED, name, f"{split} templates"))[idx]
        out[split] = _rows(name, [items[i] for i in idx], templates)
        counts.update({f"{split}_available": len(items), f"{split}_rows": len(idx)})
    return out, {**counts, **src.notes.get(name, {})}


def build_mixture(data_dir: str, tasks: Mapping[str, Mapping] | None, seed: int = 1234,
                  chats: Mapping[str, Mapping] | None = None) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """({"train", "validation", <task>...: rows}, fingerprint_info) of the mixture (see the module docstring).

    fingerprint_info (JSON-able): the version, seeds, every task's settings, the length limits, a hash of the
    templates, the sha256 of every file read, and per task the counts of examples and rows (with what was
    dropped or cut), so a cache keyed on it notices any edit."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r}: the mixture's seed must be an integer >= 0")
    task_opts = _settings(tasks, TASKS, TASK_OPTIONS, "tasks")
    chat_opts = _settings(chats, CHATS, CHAT_OPTIONS, "chats")
    if not task_opts and not chat_opts:
        raise ConfigError(f"data.mixture.tasks and data.mixture.chats are both empty: name tasks ({', '.join(TASKS)}) "
                          f"or chats ({', '.join(CHATS)}) to train on")
    src = Sources(data_dir)
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    counts = {}
    for registry, settings in ((TASKS, task_opts), (CHATS, chat_opts)):
        for name, opts in settings.items():
            rows, counts[name] = _task_rows(name, registry[name], opts, seed, src)
            splits["train"] += rows["train"]
            splits["validation"] += rows["validation"]
            if "test" in rows:
                splits[name] = rows["test"]
    order = _rng(seed, "mixture", "shuffle").permutation(len(splits["train"]))
    splits["train"] = [splits["train"][i] for i in order]
    info = {"version": MIXTURE_VERSION, "seed": seed, "split_seed": SPLIT_SEED, "tasks": task_opts, "chats": chat_opts,
            "limits": {"max_passage_chars": MAX_PASSAGE_CHARS, "max_dialogue_chars": MAX_DIALOGUE_CHARS,
                       "max_chat_chars": MAX_CHAT_CHARS},
            "templates_sha256": sha256_json(TEMPLATES), "files": dict(sorted(src.sha256.items())),
            "counts": counts, "sizes": {split: len(rows) for split, rows in splits.items()}}
    return splits, info


# ----------------------------------------------------------------------------- prompts for qualitative chats

CHAT_PROMPT_SETS = {"mt_bench": "mt_bench/question.jsonl",
                    "self_instruct": "self_instruct/user_oriented_instructions.jsonl",
                    "self_instruct_seed": "self_instruct/seed_tasks.jsonl"}


def chat_prompts(data_dir: str, which: str) -> list[dict[str, Any]]:
    """Prompts to chat with, never trained on: rows {"id", "turns": [user turn, ...], "category"}.

    "mt_bench": MT-Bench's 80 two-turn questions (feed the model its own first answer before the second turn);
    "self_instruct": Self-Instruct's 252 user-oriented instructions (the paper's evaluation set, which its
    authors ask not to train on) and "self_instruct_seed": its 175 seed tasks, each instruction and input as one turn.
    """
    if which not in CHAT_PROMPT_SETS:
        raise ConfigError(f"chat prompts {which!r} are unknown; known: {', '.join(CHAT_PROMPT_SETS)}")
    rows = Sources(data_dir).read(CHAT_PROMPT_SETS[which], _jsonl)
    if which == "mt_bench":
        return [{"id": str(r["question_id"]), "turns": list(r["turns"]), "category": r["category"]} for r in rows]
    out = []
    for r in rows:
        extra = (r.get("instances") or [{}])[0].get("input", "").strip()
        turn = f"{r['instruction'].strip()}\n\n{extra}" if extra else r["instruction"].strip()
        out.append({"id": r["id"], "turns": [turn], "category": r.get("motivation_app") or r.get("name", "")})
    return out


__all__ = ["build_mixture", "chat_prompts", "Example", "TASKS", "CHATS", "TEMPLATES", "DEFAULT_TASKS",
           "DEFAULT_CHATS", "TASK_OPTIONS", "CHAT_OPTIONS", "CHAT_PROMPT_SETS", "MAX_PASSAGE_CHARS",
           "MAX_DIALOGUE_CHARS", "MAX_CHAT_CHARS", "SPLIT_SEED"]
