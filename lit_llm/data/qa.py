"""Extractive question answering (SQuAD v1.1 format): examples -> windowed features -> batches.

Flow (as the other data modules; `run.train` calls these in order):

    dm = QADataModule(train_files=".../train.json", validation_files=".../dev.json",
                      test_files={"tydiqa_en": ".../official-dev.json", "xquad_en": ".../xquad.en.json"})
    dm.load_raw()                          # examples: id, title, context, question, answers{text, answer_start}
    tok, tok_fp = get_tokenizer(..., texts=dm.train_texts, fingerprint=dm.data_fingerprint)
    dm.set_tokenizer(tok, tok_fp)
    trainer.fit(model, datamodule=dm)      # prepare_data + setup: features, cached

Sources: SQuAD v1.1 JSON (`data[].paragraphs[].qas[]`), or the flattened schema of the hub's
`squad` (`id, title, context, question, answers{text, answer_start}`) as .jsonl/.json lines/.parquet
or a hub dataset. Ids that repeat within a split (TyDi QA's XTREME files) are made unique: the
k-th repeat of `id` becomes `id#k`, and the number of renamed ids is logged and kept in `stats`.

Features (`encode_features`): `[cls] question [sep] context window [sep]`, token types 0/1 (a Hugging Face
tokenizer's own pair template instead, as transformers builds them: RoBERTa's `<s> question </s></s> context </s>`,
one token type; `pair_template`), the question left-stripped and cut to `max_query_length` tokens; a context longer
than a window is split into windows of `max_length - len(question) - <special tokens>` tokens that overlap by
`doc_stride` tokens (Hugging Face's meaning of `stride`). Every feature keeps the character offsets of its context
tokens (-1 elsewhere), so a predicted token span maps back to the original context characters. Training
labels (every split, from the first answer: training targets and the validation loss): the answer's
first/last token (`answer_token_span`, run_qa.py's rule) when the whole answer lies in the window, else the `[cls]`
position (0, 0). A labelled span whose characters do not reproduce the answer text (a token that
runs past the answer, e.g. "Kant" inside "Kantian") is kept and counted (`stats[split]["span_mismatch"]`).

Bad input is counted or refused, never dropped silently: questions without answers (`unanswerable:
skip` counts them, `error` stops), answers whose `answer_start` does not point at their text
(`bad_answer: skip | error`; evaluation splits never need `answer_start`, only the texts).
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer

from lit_llm.data.base import (
    DataModuleProtocol,
    TokenizedSplitsMixin,
    arrow_table,
    flat_lists,
    hold_out_rows,
    require_choice,
    require_fraction,
    require_int,
    require_one_source,
    require_special_tokens,
    resolve_special_ids,
    window_starts,  # shared with classification's data.long_inputs=windows
)
from lit_llm.data.loading import ExampleLoadersMixin, ResumableTrainMixin
from lit_llm.data.sources import file_extension, load_hub_dataset, read_parquet_rows, read_text, resolve_files
from lit_llm.errors import ConfigError
from lit_llm.utils_io import sha256_file, sha256_json

log = logging.getLogger("lit_llm")

QA_VERSION = 1  # bump when loading changes: the data fingerprint (and every cache entry) then changes
QA_FEATURES_VERSION = 2  # bump when feature building changes: old feature caches are then ignored
POLICIES = ("skip", "error")
ANSWERS = datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})
EXAMPLE_FEATURES = datasets.Features({
    "id": datasets.Value("string"), "title": datasets.Value("string"), "context": datasets.Value("string"),
    "question": datasets.Value("string"), "answers": ANSWERS,
})
FEATURE_COLUMNS = datasets.Features({
    "input_ids": datasets.List(datasets.Value("int32")),
    "token_type_ids": datasets.List(datasets.Value("int8")),
    "offset_start": datasets.List(datasets.Value("int32")),
    "offset_end": datasets.List(datasets.Value("int32")),
    "start_position": datasets.Value("int32"),
    "end_position": datasets.Value("int32"),
    "example_index": datasets.Value("int32"),
})


# ----------------------------------------------------------------------------- reading files

def _record(where: str, qa: Mapping, context: Any, title: Any) -> dict[str, Any]:
    if not isinstance(context, str):
        got = "it is missing" if context is None else f"got {type(context).__name__}"
        raise ConfigError(f"{where}: 'context' must be a string, {got}; fix the file.")
    question = qa.get("question")
    if not isinstance(question, str):
        raise ConfigError(f"{where}: 'question' is missing or not a string; fix the file.")
    if "id" not in qa:
        raise ConfigError(f"{where}: the question has no 'id'; every SQuAD question needs one.")
    answers = qa.get("answers", [])
    if isinstance(answers, Mapping):  # flattened schema: {"text": [...], "answer_start": [...]}
        texts, starts = list(answers.get("text") or []), list(answers.get("answer_start") or [])
    elif isinstance(answers, list):
        try:
            texts = [a["text"] for a in answers]
            starts = [a.get("answer_start", -1) for a in answers]
        except (TypeError, KeyError) as e:
            raise ConfigError(f"{where}: every answer needs 'text' (and 'answer_start'); got {answers[:2]!r}") from e
    else:
        raise ConfigError(f"{where}: 'answers' must be a list of {{text, answer_start}} or "
                          f"{{text: [...], answer_start: [...]}}, got {type(answers).__name__}.")
    if len(texts) != len(starts):
        raise ConfigError(f"{where}: {len(texts)} answer texts but {len(starts)} answer_start values.")
    return {"id": str(qa["id"]), "title": str(title or ""), "context": context, "question": question,
            "answers": {"text": [str(t) for t in texts], "answer_start": [int(s) for s in starts]}}


def squad_records(doc: Any, path: str) -> list[dict[str, Any]]:
    """The questions of a SQuAD v1.1 document (`{"data": [{"title"?, "paragraphs": [{"context",
    "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}`) as flat records."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("data"), list):
        raise ConfigError(f"{path}: expected SQuAD v1.1 JSON, an object with a 'data' list of articles "
                          f"(got {type(doc).__name__} with keys {list(doc)[:5] if isinstance(doc, Mapping) else '-'}).")
    records = []
    for a, article in enumerate(doc["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, Mapping) else None
        if not isinstance(paragraphs, list):
            raise ConfigError(f"{path}: data[{a}] has no 'paragraphs' list; fix the file.")
        for p, para in enumerate(paragraphs):
            qas = para.get("qas") if isinstance(para, Mapping) else None
            if not isinstance(qas, list):
                raise ConfigError(f"{path}: data[{a}].paragraphs[{p}] has no 'qas' list; fix the file.")
            for q, qa in enumerate(qas):
                where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, Mapping):
                    raise ConfigError(f"{where} is not an object; fix the file.")
                records.append(_record(where, qa, para.get("context"), article.get("title")))
    return records


def _flat(rows: Any, path: str, unit: str) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ConfigError(f"{path}: {unit} {i + 1} is not a JSON object; fix the file.")
        out.append(_record(f"{path}: {unit} {i + 1}", row, row.get("context"), row.get("title")))
    return out


def read_qa_file(path: str, key: str | None = None) -> list[dict[str, Any]]:
    """Records of one file: SQuAD v1.1 JSON (an object with 'data'), or the flattened schema
    (`id, title?, context, question, answers{text, answer_start}`) as JSON lines (.jsonl, or .json
    with one object per line), a JSON list, or .parquet. `key` (the config key) starts the messages about files
    that are not UTF-8 text, empty or not parquet."""
    ext = file_extension(path)
    if ext not in (".json", ".jsonl", ".parquet"):
        raise ConfigError(f"{path}: unsupported file type {ext!r} for question answering; use SQuAD v1.1 .json, "
                          ".jsonl or .parquet.")
    if ext == ".parquet":
        return _flat(read_parquet_rows(path, key), path, "row")
    text = read_text(path, key)
    if not text.strip():
        raise ConfigError(f"{key + ': ' if key else ''}{path} is empty; fill it or drop it from {key or 'the files'}.")
    if ext == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            first = text.lstrip().split("\n", 1)[0]
            if not (e.lineno > 1 and first.startswith("{") and first.rstrip().endswith("}")):
                raise ConfigError(
                    f"{path}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}; fix the file.") from e
        else:  # a whole JSON document
            if isinstance(doc, Mapping) and "data" in doc:
                return squad_records(doc, path)
            if isinstance(doc, list):
                return _flat(doc, path, "record")
            if isinstance(doc, Mapping) and "context" in doc:
                return _flat([doc], path, "record")
            return squad_records(doc, path)  # raises, saying what a SQuAD file looks like
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):  # JSON lines
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: line {n} is not valid JSON (column {e.colno}: {e.msg}); fix the file.") from e
        if not isinstance(row, Mapping):
            raise ConfigError(f"{path}: line {n} is not a JSON object; fix the file.")
        rows.append(_record(f"{path}: line {n}", row, row.get("context"), row.get("title")))
    return rows


def unique_ids(ids: Sequence[str]) -> tuple[list[str], int]:
    """Ids with repeats renamed (`x`, `x` -> `x`, `x#1`); also how many were renamed."""
    seen: Counter = Counter()
    taken = set(ids)
    out, renamed = [], 0
    for i in ids:
        k = seen[i]
        seen[i] += 1
        if k == 0:
            out.append(i)
            continue
        new = f"{i}#{k}"
        while new in taken:
            k += 1
            new = f"{i}#{k}"
        taken.add(new)
        out.append(new)
        renamed += 1
    return out, renamed


def answer_matches(context: str, text: str, start: int) -> bool:
    return 0 <= start and context[start : start + len(text)] == text and text.strip() != ""


# ----------------------------------------------------------------------------- features

def answer_token_span(offset_start: np.ndarray, offset_end: np.ndarray, char_start: int,
                      char_end: int) -> tuple[int, int]:
    """First and last context token of the characters [char_start, char_end), by transformers' run_qa.py rule:
    the last token starting at or before char_start, the first token ending at or after char_end. (Where byte-level
    BPE splits one character into several tokens with the same offsets, that rule picks the inner ones.)"""
    first = int(np.searchsorted(offset_start, char_start, side="right")) - 1  # last token starting at/before start
    last = int(np.searchsorted(offset_end, char_end, side="left"))           # first token ending at/after end
    return first, last


class PairTemplate(NamedTuple):
    """`before question middle context after`: the special tokens around the two segments, each as (id, token
    type), and the token types of the question's and the context's tokens."""
    before: list[tuple[int, int]]
    question_type: int
    middle: list[tuple[int, int]]
    context_type: int
    after: list[tuple[int, int]]

    @property
    def n_special(self) -> int:
        return len(self.before) + len(self.middle) + len(self.after)


def pair_template(tokenizer: Tokenizer, cls_id: int, sep_id: int) -> PairTemplate:
    """The tokenizer's own pair template when its post-processor adds special tokens (a Hugging Face tokenizer:
    BERT's `[CLS] q [SEP] c [SEP]` with types 0/1, RoBERTa's `<s> q </s></s> c </s>` with one type), read off a
    post-processed pair as transformers would build it; else ours, `[cls] q [sep] c [sep]` with types 0/1."""
    if tokenizer.post_processor is None or tokenizer.num_special_tokens_to_add(True) == 0:
        return PairTemplate([(cls_id, 0)], 0, [(sep_id, 0)], 1, [(sep_id, 1)])
    a, b = tokenizer.encode_batch(["question", "context"], add_special_tokens=False)
    merged = tokenizer.post_process(a, b, add_special_tokens=True)
    parts: dict[str, list[tuple[int, int]]] = {"before": [], "middle": [], "after": []}
    types: dict[int, int] = {}
    for idx, seq, type_id in zip(merged.ids, merged.sequence_ids, merged.type_ids):
        if seq is None:
            parts["before" if not types else "middle" if 1 not in types else "after"].append((idx, type_id))
        else:
            types[seq] = type_id
    return PairTemplate(parts["before"], types.get(0, 0), parts["middle"], types.get(1, 1), parts["after"])


def encode_features(
    examples: Mapping[str, list], tokenizer: Tokenizer, cls_id: int, sep_id: int, max_length: int,
    doc_stride: int, max_query_length: int, with_labels: bool, example_offset: int = 0,
) -> dict[str, list]:
    """Windowed features of a batch of examples (`datasets.map(batched=True)`)."""
    template = pair_template(tokenizer, cls_id, sep_id)
    # left whitespace only costs question tokens (byte-level BPE), as in transformers' run_qa.py
    questions = tokenizer.encode_batch([q.lstrip() for q in examples["question"]], add_special_tokens=False)
    contexts = tokenizer.encode_batch(examples["context"], add_special_tokens=False)
    out: dict[str, list] = {k: [] for k in FEATURE_COLUMNS}
    out["span_mismatch"] = []
    after = [idx for idx, _ in template.after]
    for i, (q_enc, c_enc) in enumerate(zip(questions, contexts)):
        q = q_enc.ids[:max_query_length]
        ids = np.asarray(c_enc.ids, dtype=np.int32)
        offs = np.asarray(c_enc.offsets, dtype=np.int32).reshape(-1, 2)
        window = max_length - len(q) - template.n_special
        first = last = -1
        mismatch = False
        answers = examples["answers"][i] if with_labels else None
        if answers and answers["text"] and answer_matches(examples["context"][i], answers["text"][0],
                                                          answers["answer_start"][0]):
            text = answers["text"][0]
            s = int(answers["answer_start"][0]) + len(text) - len(text.lstrip())  # whitespace is no answer token
            e = s + len(text.strip())
            first, last = answer_token_span(offs[:, 0], offs[:, 1], s, e)
            if 0 <= first <= last < len(ids):
                got = examples["context"][i][offs[first, 0] : offs[last, 1]].strip()
                mismatch = got != answers["text"][0].strip()
            else:
                first = last = -1
        head = np.asarray([idx for idx, _ in template.before] + q + [idx for idx, _ in template.middle], dtype=np.int32)
        head_types = [t for _, t in template.before] + [template.question_type] * len(q) + \
            [t for _, t in template.middle]
        for start in window_starts(len(ids), window, doc_stride):
            stop = min(start + window, len(ids))
            n = stop - start
            out["input_ids"].append(np.concatenate([head, ids[start:stop], after]).astype(np.int32).tolist())
            out["token_type_ids"].append(head_types + [template.context_type] * n + [t for _, t in template.after])
            pad = [-1] * len(head)
            out["offset_start"].append(pad + offs[start:stop, 0].tolist() + [-1] * len(after))
            out["offset_end"].append(pad + offs[start:stop, 1].tolist() + [-1] * len(after))
            if first >= 0 and first >= start and last < stop:
                out["start_position"].append(len(head) + first - start)
                out["end_position"].append(len(head) + last - start)
                out["span_mismatch"].append(mismatch)
            else:
                out["start_position"].append(0)
                out["end_position"].append(0)
                out["span_mismatch"].append(False)
            out["example_index"].append(example_offset + i)
    return out


def _encode_batch_with_indices(examples: Mapping[str, list], indices: list[int], **kwargs) -> dict[str, list]:
    return encode_features(examples, example_offset=indices[0], **kwargs)


class QAFeatures(torch.utils.data.Dataset):
    """Features as flat numpy arrays + row offsets (fast indexing; dynamic padding in `collate_qa`)."""

    def __init__(self, ds: datasets.Dataset):
        table = arrow_table(ds)
        self.ids, self.row = flat_lists(table, "input_ids")
        self.lengths = np.diff(self.row)
        self.pad_lengths = self.lengths  # what a batch pads to (length bucketing)
        self.types, _ = flat_lists(table, "token_type_ids")
        self.off_start, _ = flat_lists(table, "offset_start")
        self.off_end, _ = flat_lists(table, "offset_end")
        self.start = table.column("start_position").to_numpy()
        self.end = table.column("end_position").to_numpy()
        self.example_index = table.column("example_index").to_numpy()

    def __len__(self) -> int:
        return len(self.start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        lo, hi = self.row[index], self.row[index + 1]
        return {"input_ids": self.ids[lo:hi], "token_type_ids": self.types[lo:hi],
                "offset_start": self.off_start[lo:hi], "offset_end": self.off_end[lo:hi],
                "start_positions": int(self.start[index]), "end_positions": int(self.end[index]),
                "example_index": int(self.example_index[index])}


class QACollator:
    """Pad features to the batch's longest: input_ids (pad_id), attention_mask, token_type_ids (0),
    offsets (-1: not context), start/end positions and example indices [B]."""

    def __init__(self, pad_id: int = 0):
        self.pad_id = int(pad_id)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        B, T = len(features), max(lengths, default=0)
        arrays = {"input_ids": np.full((B, T), self.pad_id, np.int64), "attention_mask": np.zeros((B, T), np.int64),
                  "token_type_ids": np.zeros((B, T), np.int64), "offset_start": np.full((B, T), -1, np.int64),
                  "offset_end": np.full((B, T), -1, np.int64)}
        for row, (f, n) in enumerate(zip(features, lengths)):  # one copy per feature, not per token
            arrays["input_ids"][row, :n] = f["input_ids"]
            arrays["attention_mask"][row, :n] = 1
            arrays["token_type_ids"][row, :n] = f["token_type_ids"]
            arrays["offset_start"][row, :n] = f["offset_start"]
            arrays["offset_end"][row, :n] = f["offset_end"]
        batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
        for key in ("start_positions", "end_positions", "example_index"):
            batch[key] = torch.tensor([int(f[key]) for f in features], dtype=torch.long)
        return batch


# ----------------------------------------------------------------------------- data module

def _named_test_sets(spec: Any, default_name: str) -> dict[str, Any]:
    """{test set name: file spec} of data.test_files: a mapping as given, else one set `default_name`."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {str(k): v for k, v in spec.items() if v is not None}
    return {default_name: spec}


class QADataModule(DataModuleProtocol, TokenizedSplitsMixin, ExampleLoadersMixin, ResumableTrainMixin,
                   pl.LightningDataModule):
    """SQuAD-format question answering: train/validation files and any number of named test sets.

    `test_files`: a path/glob (test set "test") or `{name: path}` (each reported as `test/<name>/*`).
    Without validation files, a seeded `val_fraction` of the train questions is held out.
    `max_length` / `doc_stride` / `max_query_length`: windowing (see the module docstring);
    `doc_stride` must leave room: `doc_stride < max_length - max_query_length - 3` (- 4 with RoBERTa's template,
    checked by `set_tokenizer`).
    """

    CACHE_SUBDIR = "qa"
    SPLIT_DATASET = QAFeatures
    UNIT = "features"

    def __init__(
        self,
        train_files: Any = None,
        validation_files: Any = None,
        test_files: Any = None,
        hub_name: str | None = None,
        hub_config: str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 1234,
        max_length: int = 384,
        doc_stride: int = 128,
        max_query_length: int = 64,
        unanswerable: str = "skip",
        bad_answer: str = "skip",
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        sampler: str = "random",
        num_workers: int = 0,
        num_proc: int = 1,
        cache_dir: str = ".cache",
        shuffle_seed: int = 1234,
    ):
        super().__init__()
        require_one_source(train_files, hub_name, "data.train_files")
        self.check_sampler(sampler)
        for key, value in (("data.max_length", max_length), ("data.max_query_length", max_query_length),
                           ("data.batch_size", batch_size)):
            require_int(key, value)
        require_int("data.doc_stride", doc_stride, 0)
        if eval_batch_size is not None:
            require_int("data.eval_batch_size", eval_batch_size, why=" or null")
        if doc_stride >= max_length:
            raise ConfigError(f"data.doc_stride={doc_stride} must be smaller than data.max_length={max_length}: "
                              "it is the overlap of consecutive windows (e.g. 128 with max_length 384).")
        room = max_length - max_query_length - 3
        if room <= doc_stride:
            raise ConfigError(
                f"data.doc_stride={doc_stride} leaves no new context per window: a window holds at least "
                f"data.max_length - data.max_query_length - 3 = {room} context tokens; lower data.doc_stride "
                f"or data.max_query_length, or raise data.max_length.")
        for key, value in (("data.unanswerable", unanswerable), ("data.bad_answer", bad_answer)):
            require_choice(key, value, POLICIES)
        require_fraction("data.val_fraction", val_fraction)
        self.train_files, self.validation_files = train_files, validation_files
        self.test_specs = _named_test_sets(test_files, "test")
        for name in self.test_specs:
            if name in ("train", "validation") or not name.replace("_", "").isalnum():
                raise ConfigError(f"data.test_files: test set name {name!r} must be letters, digits or '_' and not "
                                  "'train'/'validation'; rename it.")
        self.hub_name, self.hub_config = hub_name, hub_config
        self.val_fraction, self.split_seed = float(val_fraction), split_seed
        self.max_length, self.doc_stride, self.max_query_length = max_length, doc_stride, max_query_length
        self.unanswerable, self.bad_answer = unanswerable, bad_answer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.sampler = sampler
        self.num_workers, self.num_proc = num_workers, num_proc
        self.cache_dir = os.fspath(cache_dir)
        self.shuffle_seed = shuffle_seed

        self.load_stats: dict[str, dict[str, Any]] = {}
        self.test_names: list[str] = list(self.test_specs) or ["validation"]

    @property
    def features(self) -> dict[str, QAFeatures]:
        """The opened splits: {split: QAFeatures}."""
        return self.opened

    # -- the data-module protocol (base.DataModuleProtocol) -----------------------------------
    def max_sequence_length(self) -> tuple[str, int]:
        return "data.max_length", self.max_length

    # -- 1. examples -------------------------------------------------------------------------
    def _read(self, spec: Any, key: str) -> tuple[list[dict], list[str]]:
        records, layout = [], []
        for path in resolve_files(spec, key):
            records += read_qa_file(path, key)
            layout.append(sha256_file(path))
        if not records:
            raise ConfigError(f"{key}: {spec!r} holds no questions; fix the path or the file.")
        return records, layout

    def load_raw(self) -> datasets.DatasetDict:
        """Read, check and split the examples; set `raw`, `data_fingerprint`, `load_stats`."""
        if self.raw is not None:
            return self.raw
        sources: dict[str, list[dict]] = {}
        layout: dict[str, Any] = {}
        if self.hub_name is not None:
            hub = load_hub_dataset(self.hub_name, self.hub_config, os.path.join(self.cache_dir, "hf_datasets"))
            for split in ("train", "validation"):
                if split in hub:
                    where = f"data.hub_name={self.hub_name!r} split {split!r}"
                    sources[split] = [_record(f"{where} row {i + 1}", r, r.get("context"), r.get("title"))
                                      for i, r in enumerate(hub[split])]
                    layout[split] = {"hub": self.hub_name, "config": self.hub_config,
                                     "fingerprint": hub[split]._fingerprint}
            if "train" not in sources:
                raise ConfigError(f"data.hub_name={self.hub_name!r} has no 'train' split; use data.train_files.")
        else:
            sources["train"], layout["train"] = self._read(self.train_files, "data.train_files")
        if self.validation_files is not None:
            sources["validation"], layout["validation"] = self._read(self.validation_files, "data.validation_files")
        for name, spec in self.test_specs.items():
            key = "data.test_files" if list(self.test_specs) == ["test"] else f"data.test_files.{name}"
            sources[name], layout[name] = self._read(spec, key)

        holdout = None
        if "validation" not in sources:
            sources["validation"], sources["train"] = hold_out_rows(sources["train"], self.val_fraction,
                                                                    self.split_seed, "questions")
            holdout = {"val_fraction": self.val_fraction, "seed": self.split_seed}

        raw = {}
        for split in ["train", "validation", *self.test_specs]:
            records, stats = self._check(split, sources[split])
            raw[split] = datasets.Dataset.from_list(records, features=EXAMPLE_FEATURES)
            self.load_stats[split] = stats
        self.raw = datasets.DatasetDict(raw)
        self.data_fingerprint = sha256_json({
            "version": QA_VERSION, "sources": layout, "holdout": holdout,
            "policies": [self.unanswerable, self.bad_answer],
        })
        return self.raw

    def _check(self, split: str, records: list[dict]) -> tuple[list[dict], dict[str, Any]]:
        """Unique ids; questions without answers and answers off their answer_start: counted,
        skipped or refused (by `unanswerable` / `bad_answer`)."""
        ids, renamed = unique_ids([r["id"] for r in records])
        for r, i in zip(records, ids):
            r["id"] = i
        training = split == "train"
        no_answer = [r for r in records if not r["answers"]["text"]]
        if no_answer and self.unanswerable == "error":
            raise ConfigError(
                f"{split}: {len(no_answer)} question(s) have no answer (first: id {no_answer[0]['id']!r}, "
                f"{no_answer[0]['question']!r}); SQuAD v1.1 needs one; set data.unanswerable=skip to skip and "
                "count them.")
        kept = [r for r in records if r["answers"]["text"]]
        bad = [r for r in kept if not answer_matches(r["context"], r["answers"]["text"][0], r["answers"]["answer_start"][0])]
        if bad and training:
            r = bad[0]
            text, start = r["answers"]["text"][0], r["answers"]["answer_start"][0]
            detail = (f"id {r['id']!r}: answer_start={start} points at {r['context'][max(start, 0):max(start, 0) + len(text)]!r}, "
                      f"not the answer {text!r}")
            if self.bad_answer == "error":
                raise ConfigError(f"{split}: {len(bad)} answer(s) do not match their context at answer_start "
                                  f"(first: {detail}); fix the data or set data.bad_answer=skip to skip and count them.")
            log.warning("data: %s: skipping %d question(s) whose answer_start does not point at the answer text "
                        "(first: %s)", split, len(bad), detail)
            bad_ids = {r["id"] for r in bad}
            kept = [r for r in kept if r["id"] not in bad_ids]
        if no_answer:
            log.warning("data: %s: skipping %d question(s) without an answer (data.unanswerable=skip)",
                        split, len(no_answer))
        if renamed:
            log.info("data: %s: %d repeated question ids made unique (id#k)", split, renamed)
        if not kept:
            raise ConfigError(f"{split}: no usable questions left ({len(no_answer)} without answers, {len(bad)} with "
                              "a bad answer_start); fix the data.")
        stats = {"questions": len(records), "kept": len(kept), "no_answer_skipped": len(no_answer),
                 "renamed_ids": renamed, "answer_start_mismatch": len(bad), "bad_answer_skipped": len(bad) if training else 0}
        log.info("data split %s: %d questions (%s)", split, len(kept), stats)
        return kept, stats

    # -- 2./3. tokenizer -------------------------------------------------------------------------
    def train_texts(self, batch_size: int = 1000) -> Iterator[list[str]]:
        """Batches of the train split's contexts (each once) and questions, for tokenizer training."""
        train = self.load_raw()["train"]
        contexts = list(dict.fromkeys(train["context"]))
        for texts in (contexts, train["question"]):
            for start in range(0, len(texts), batch_size):
                yield texts[start : start + batch_size]

    def set_tokenizer(self, tokenizer: Tokenizer, tokenizer_fingerprint: str | None = None,
                      special_ids: Mapping[str, int] | None = None) -> None:
        ids = resolve_special_ids(tokenizer, special_ids)
        require_special_tokens(ids, ("cls", "sep", "pad"), "QA inputs ([cls] question [sep] context [sep], padded)",
                               "use a tokenizer trained by lit-llm (tokenizer.kind=bpe) or a BERT or RoBERTa "
                               "tokenizer (model.init_from=hf:<dir>)")
        n_special = pair_template(tokenizer, ids["cls"], ids["sep"]).n_special
        room = self.max_length - self.max_query_length - n_special
        if room <= self.doc_stride:
            raise ConfigError(
                f"data.doc_stride={self.doc_stride} leaves no new context per window with this tokenizer's "
                f"{n_special} special tokens: data.max_length - data.max_query_length - {n_special} = {room}; lower "
                "data.doc_stride or data.max_query_length, or raise data.max_length.")
        self._use_tokenizer(tokenizer, tokenizer_fingerprint, ids)

    # -- 4. features, cached ---------------------------------------------------------------------
    def _cache_key(self) -> dict[str, Any]:
        return {"data": self.data_fingerprint, "tokenizer": self.tokenizer_fingerprint,
                "max_length": self.max_length, "doc_stride": self.doc_stride,
                "max_query_length": self.max_query_length, "cls": self.special_ids["cls"],
                "sep": self.special_ids["sep"], "version": QA_FEATURES_VERSION}

    def _build_split(self, split: str, out_dir: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        ds = self.raw[split]
        columns = dict(FEATURE_COLUMNS)
        columns["span_mismatch"] = datasets.Value("bool")
        mapped = ds.map(
            _encode_batch_with_indices, batched=True, batch_size=256, with_indices=True,
            remove_columns=ds.column_names, features=datasets.Features(columns),
            fn_kwargs={"tokenizer": self.tokenizer, "cls_id": self.special_ids["cls"], "sep_id": self.special_ids["sep"],
                       "max_length": self.max_length, "doc_stride": self.doc_stride,
                       "max_query_length": self.max_query_length, "with_labels": True},
            new_fingerprint=sha256_json([self.tokenized_dir.name, split])[:32], desc=f"QA features {split}",
        )
        starts = np.asarray(mapped["start_position"])
        stats = {"examples": len(ds), "features": len(mapped),
                 "features_per_example": round(len(mapped) / max(len(ds), 1), 3), **self.load_stats.get(split, {})}
        # every split is labelled with its first answer: training targets, and the validation loss
        answered = np.zeros(len(ds), dtype=bool)
        answered[np.asarray(mapped["example_index"])[starts > 0]] = True
        stats.update(features_with_answer=int((starts > 0).sum()), span_mismatch=int(np.sum(mapped["span_mismatch"])),
                     examples_without_answer_window=int((~answered).sum()))
        mapped.remove_columns(["span_mismatch"]).save_to_disk(str(out_dir))
        log.info("data: QA features %s: %s in %.1fs", split, stats, time.perf_counter() - t0)
        if stats.get("span_mismatch"):
            log.warning("data: %s: %d labelled token spans do not decode to their answer text exactly (a token "
                        "runs past the answer); they are kept, as in the reference implementations",
                        split, stats["span_mismatch"])
        return stats

    # -- 5. loaders --------------------------------------------------------------------------------
    def collator(self) -> QACollator:
        return QACollator(self.special_ids["pad"])

    def state_dict(self) -> dict[str, Any]:
        return {"data_fingerprint": self.data_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "max_length": self.max_length, "doc_stride": self.doc_stride, "batch_size": self.batch_size,
                "shuffle_seed": self.shuffle_seed, "sampler": self.train_order}


__all__ = [
    "QADataModule", "QAFeatures", "QACollator", "encode_features", "window_starts", "answer_token_span",
    "squad_records", "read_qa_file", "unique_ids", "answer_matches", "QA_VERSION",
]
