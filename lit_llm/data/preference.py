"""Preference pairs (DPO): a prompt conversation with a chosen and a rejected assistant answer -> two token
sequences rendered with the run's chat template, whose targets are the tokens of the final assistant turn.

Sources (one of):
- `hh_rlhf_file`: an Anthropic HH-RLHF file (`chosen` / `rejected` full transcripts, "\\n\\nHuman: ...\\n\\nAssistant:
  ..."), cut by `lit_llm.data.conversations.hh_rlhf_parts` into train = its `dpo_train` part, validation =
  `dpo_validation`, test = `dpo_test`; the `sft` part (instruction tuning's) is never read here, so the DPO pairs
  are disjoint from the SFT chats whatever the file. The parts index the rows as `read_rows` yields them.
- `train_files` (+ `validation_files`, `test_files`): JSON Lines / JSON / parquet rows, each one of
  - `prompt` (a string: one user turn; or a list of messages) + `chosen` + `rejected`, each answer a string (the
    assistant's reply) or a list of messages: the prompt's turns followed by one assistant message, or that
    message alone;
  - no `prompt`: `chosen` and `rejected` are whole conversations (HH-RLHF transcripts or message lists) whose
    turns before the last, an assistant turn, are the prompt.
  Without validation files, `val_fraction` of the train pairs is held out (seeded); without test files the
  validation split is the test split.
A malformed row is a ConfigError naming its file, line and field. Pairs whose two conversations do not share the
prompt (5 of HH-RLHF harmless-base's 2,312) are dropped and counted (`stats[split]["dropped_prompt_mismatch"]`).

Tokens: each side is the prompt + its answer rendered with the chat template (`set_chat_template`, called by
`builders.attach_tokenizer` before the tokenizer; ChatML until then; `data.chat_template` as in SFT data: null =
the checkpoint's own). Targets: the final assistant turn's tokens (its content and end-of-turn marker, as
`ChatTemplate.assistant_spans` finds them); the prompt, earlier assistant turns included, is context only. As in
SFT data, a side keeps at most `max_length + 1` tokens (the model reads `max_length` of them): longer ones keep
their LAST tokens (left truncation, the answer survives), with `check_truncation`'s warning.

Batches (`PreferenceCollator`): `chosen_ids`, `chosen_labels`, `rejected_ids`, `rejected_labels`, all [B, W]
int64, both sides padded right to the same width W (the task runs them as one [2B, W] batch), and
`example_index` [B]. Labels are ALREADY SHIFTED (as CLM and SFT batches): `labels[t]` is the token after
`ids[t]` when that token is a target, else -100 (padding included), so a causal LM's log-probability of the
answer is `sum_t log p(labels[t] | ids[: t + 1])`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer

from lit_llm.chat_template import ChatTemplate, missing_chat_tokens
from lit_llm.data.base import (
    DataModuleProtocol,
    TokenizedSplitsMixin,
    arrow_table,
    check_truncation,
    flat_lists,
    hold_out_rows,
    require_fraction,
    require_int,
    resolve_special_ids,
)
from lit_llm.data.collate import IGNORE_INDEX
from lit_llm.data.conversations import (
    HH_RLHF_PARTS,
    HH_RLHF_SEED,
    ChatDataMixin,
    hh_rlhf_parts,
    message_list,
    parse_hh_rlhf,
    read_rows,
)
from lit_llm.data.loading import ExampleLoadersMixin, ResumableTrainMixin
from lit_llm.data.sources import resolve_files
from lit_llm.errors import ConfigError
from lit_llm.utils_io import sha256_file, sha256_json

log = logging.getLogger("lit_llm")

PREFERENCE_VERSION = 1  # bump when reading or encoding changes: old cache entries are then ignored
SPLIT_KEYS = {"train": "data.train_files", "validation": "data.validation_files", "test": "data.test_files"}
HH_SPLITS = {"train": "dpo_train", "validation": "dpo_validation", "test": "dpo_test"}  # split -> hh_rlhf_parts part
PAIR_SCHEMA = ("`prompt` (a string or a list of messages) with `chosen` and `rejected` answers (strings or message "
               "lists), or `chosen` and `rejected` whole conversations (HH-RLHF transcripts or message lists)")
SIDES = ("chosen", "rejected")
EXAMPLES = datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Value("string"),
                              "rejected": datasets.Value("string"), "source_row": datasets.Value("int64")})


# ----------------------------------------------------------------------------- rows -> pairs

def _prompt_messages(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: field 'prompt' is a {type(value).__name__}; give a string or a list of messages")
    messages = message_list(value, "prompt", where)
    if messages[-1]["role"] == "assistant":
        raise ConfigError(f"{where}: field 'prompt' ends with an assistant turn; the answers (chosen, rejected) are "
                          "the assistant's next turn, so the prompt must end with a user (or system) turn")
    return messages


def _answer(value: Any, prompt: list[dict[str, str]], key: str, where: str) -> str:
    """The assistant's reply of one side of a row that has a prompt."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ConfigError(f"{where}: field {key!r} is a {type(value).__name__}; give the assistant's answer as a "
                          "string or a list of messages")
    messages = message_list(value, key, where)
    if messages[-1]["role"] != "assistant":
        raise ConfigError(f"{where}: field {key!r} must end with the assistant's answer (its last message has role "
                          f"{messages[-1]['role']!r})")
    if len(messages) > 1 and messages[:-1] != prompt:
        raise ConfigError(f"{where}: field {key!r}: a message list must be the prompt's turns followed by one "
                          "assistant message, or that assistant message alone")
    return messages[-1]["content"]


def _conversation(value: Any, key: str, where: str) -> list[dict[str, str]]:
    """One side of a row without a prompt: a whole conversation ending with the assistant's answer."""
    if isinstance(value, str):
        messages = parse_hh_rlhf(value, f"{where}, field {key!r}")
    elif isinstance(value, list):
        messages = message_list(value, key, where)
    else:
        raise ConfigError(f"{where}: field {key!r} is a {type(value).__name__}; without a `prompt` give a whole "
                          "conversation (an HH-RLHF transcript or a list of messages)")
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise ConfigError(f"{where}: field {key!r} must be a conversation that ends with an assistant answer to "
                          "at least one earlier turn")
    return messages


def pair_of_row(row: Any, where: str) -> tuple[list[dict[str, str]], str, str] | None:
    """(prompt messages, chosen answer, rejected answer) of one row (see the module docstring); None when its two
    conversations do not share the prompt. `where` (e.g. "pairs.jsonl, line 7") starts errors."""
    if not isinstance(row, Mapping):
        raise ConfigError(f"{where}: a row must be a JSON object with {PAIR_SCHEMA}")
    for key in SIDES:
        if row.get(key) is None:
            raise ConfigError(f"{where}: field {key!r} is missing; a row needs {PAIR_SCHEMA}")
    if row.get("prompt") is not None:
        prompt = _prompt_messages(row["prompt"], where)
        return prompt, _answer(row["chosen"], prompt, "chosen", where), _answer(row["rejected"], prompt, "rejected", where)
    chosen, rejected = (_conversation(row[key], key, where) for key in SIDES)
    if chosen[:-1] != rejected[:-1]:
        return None
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def read_pairs(rows: Sequence[tuple[str, Any]], indices: Sequence[int] | None = None) -> tuple[list[dict], int]:
    """([{prompt (JSON of the messages), chosen, rejected, source_row}], pairs dropped for a prompt mismatch) of
    `rows` ((where, row) as `read_rows` yields them), only those at `indices` when given."""
    out, dropped = [], 0
    for i in (range(len(rows)) if indices is None else indices):
        where, row = rows[int(i)]
        pair = pair_of_row(row, where)
        if pair is None:
            dropped += 1
            continue
        prompt, chosen, rejected = pair
        out.append({"prompt": json.dumps(prompt, ensure_ascii=False), "chosen": chosen, "rejected": rejected,
                    "source_row": int(i)})
    return out, dropped


# ----------------------------------------------------------------------------- tokens

def encode_side(tokenizer: Tokenizer, template: ChatTemplate, prompt: Sequence[Mapping[str, str]], answer: str,
                ) -> tuple[np.ndarray, int, int]:
    """(ids int32 [n], start, end): the prompt + `answer` rendered with `template` and tokenized, and the token
    range [start, end) of the final assistant turn (the tokens whose first character lies in its span; contiguous,
    since token offsets only grow)."""
    text, spans = template.assistant_spans([*prompt, {"role": "assistant", "content": answer}])
    lo, hi = spans[-1]
    enc = tokenizer.encode(text, add_special_tokens=False)
    starts = np.asarray([s for s, _ in enc.offsets], dtype=np.int64)
    return (np.asarray(enc.ids, dtype=np.int32), int(np.searchsorted(starts, lo, "left")),
            int(np.searchsorted(starts, hi, "left")))


def truncate_left(ids: np.ndarray, start: int, end: int, width: int) -> tuple[np.ndarray, int, int]:
    """The last `width` tokens of `ids` and the target range [start, end) moved with them."""
    cut = max(0, len(ids) - width)
    return ids[cut:], max(0, start - cut), max(0, end - cut)


class PreferencePairs(torch.utils.data.Dataset):
    """Tokenized pairs: per side flat ids + row offsets and the target token range."""

    def __init__(self, ds: datasets.Dataset):
        table = arrow_table(ds)
        self.ids, self.rows, self.spans = {}, {}, {}
        for side in SIDES:
            self.ids[side], self.rows[side] = flat_lists(table, f"{side}_ids")
            self.spans[side] = np.stack([table.column(f"{side}_start").to_numpy(),
                                         table.column(f"{side}_end").to_numpy()], axis=1)
        # what a batch pads to (length bucketing): both sides share one width
        self.pad_lengths = np.maximum(np.diff(self.rows["chosen"]), np.diff(self.rows["rejected"]))

    def __len__(self) -> int:
        return len(self.rows["chosen"]) - 1

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"example_index": int(i)}
        for side in SIDES:
            lo, hi = self.rows[side][i], self.rows[side][i + 1]
            item[f"{side}_ids"], item[f"{side}_span"] = self.ids[side][lo:hi], self.spans[side][i]
        return item

    def target_tokens(self, side: str) -> np.ndarray:
        """Per pair, the number of target tokens of `side` that a model predicts (the first token of a sequence
        has no prediction)."""
        spans = self.spans[side]
        return np.maximum(0, spans[:, 1] - np.maximum(spans[:, 0], 1))


class PreferenceCollator:
    """Pairs -> `chosen_ids`, `chosen_labels`, `rejected_ids`, `rejected_labels` (both sides padded right with
    `pad_id` to one width: the longest sequence of the batch minus one) and `example_index`; labels shifted:
    labels[t] = ids[t + 1] inside the target range, else -100."""

    def __init__(self, pad_id: int):
        self.pad_id = int(pad_id)

    def __call__(self, items) -> dict[str, torch.Tensor]:
        B = len(items)
        width = max(len(it[f"{side}_ids"]) for it in items for side in SIDES) - 1
        batch = {"example_index": torch.tensor([it["example_index"] for it in items], dtype=torch.long)}
        positions = np.arange(width)
        for side in SIDES:
            ids = np.full((B, width + 1), self.pad_id, np.int64)
            spans = np.zeros((B, 2), np.int64)
            for b, it in enumerate(items):  # one copy per sequence, not per token
                seq = it[f"{side}_ids"]
                ids[b, : len(seq)], spans[b] = seq, it[f"{side}_span"]
            # label position t predicts token t + 1: a target when start <= t + 1 < end
            target = (positions[None] + 1 >= spans[:, :1]) & (positions[None] + 1 < spans[:, 1:])
            batch[f"{side}_ids"] = torch.from_numpy(ids[:, :-1].copy())
            batch[f"{side}_labels"] = torch.from_numpy(np.where(target, ids[:, 1:], IGNORE_INDEX))
        return batch


# ----------------------------------------------------------------------------- data module

class PreferenceDataModule(ChatDataMixin, DataModuleProtocol, TokenizedSplitsMixin, ExampleLoadersMixin,
                           ResumableTrainMixin, pl.LightningDataModule):
    """Preference pairs for DPO (see the module docstring)."""

    CACHE_SUBDIR = "preference"
    SPLIT_DATASET = PreferencePairs
    UNIT = "pairs"

    def __init__(self, train_files: Any = None, validation_files: Any = None, test_files: Any = None,
                 hh_rlhf_file: str | None = None, chat_template: str | None = None, max_length: int = 512,
                 val_fraction: float = 0.05, split_seed: int = 1234, batch_size: int = 8,
                 eval_batch_size: int | None = None, sampler: str = "random", num_workers: int = 0,
                 cache_dir: str = ".cache", shuffle_seed: int = 1234):
        super().__init__()
        self.check_sampler(sampler)
        if (train_files is None) == (hh_rlhf_file is None):
            raise ConfigError(f"preference data needs exactly one source: data.train_files=<pairs.jsonl> or "
                              f"data.hh_rlhf_file=<an HH-RLHF .jsonl> (data=hh_rlhf); got train_files={train_files!r}, "
                              f"hh_rlhf_file={hh_rlhf_file!r}")
        if hh_rlhf_file is not None and (validation_files is not None or test_files is not None):
            raise ConfigError("data.hh_rlhf_file is cut into train/validation/test itself; drop "
                              "data.validation_files and data.test_files (or use data.train_files instead)")
        require_int("data.max_length", max_length, 2, why=" (a prompt token and an answer token)")
        require_int("data.batch_size", batch_size)
        if eval_batch_size is not None:
            require_int("data.eval_batch_size", eval_batch_size, why=" or null")
        require_fraction("data.val_fraction", val_fraction)
        self.files = {"train": train_files, "validation": validation_files, "test": test_files}
        self.hh_rlhf_file = hh_rlhf_file
        self.chat_template_setting = chat_template
        self.max_length = max_length
        self.val_fraction, self.split_seed = float(val_fraction), split_seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.sampler = sampler
        self.num_workers, self.cache_dir, self.shuffle_seed = num_workers, os.fspath(cache_dir), shuffle_seed
        self.load_stats: dict[str, dict[str, Any]] = {}
        self.test_names: list[str] = ["test"]

    # -- the data-module protocol (base.DataModuleProtocol) -----------------------------------
    def max_sequence_length(self) -> tuple[str, int]:
        return "data.max_length", self.max_length

    # -- 1. pairs ------------------------------------------------------------------------------
    def _read_hh_rlhf(self) -> tuple[dict[str, tuple[list[dict], int, int]], dict]:
        path = resolve_files(self.hh_rlhf_file, "data.hh_rlhf_file")
        if len(path) != 1:
            raise ConfigError(f"data.hh_rlhf_file={self.hh_rlhf_file!r} matches {len(path)} files; give one")
        rows = list(read_rows(path[0], "data.hh_rlhf_file"))
        parts = hh_rlhf_parts(len(rows))
        out = {}
        for split, part in HH_SPLITS.items():
            pairs, dropped = read_pairs(rows, parts[part])
            out[split] = (pairs, len(parts[part]), dropped)
        return out, {"hh_rlhf": sha256_file(path[0]), "parts": HH_RLHF_PARTS, "seed": HH_RLHF_SEED}

    def _read_files(self, spec: Any, key: str) -> tuple[tuple[list[dict], int, int], list]:
        pairs, total, dropped, layout = [], 0, 0, []
        for path in resolve_files(spec, key):
            rows = list(read_rows(path, key))
            if not rows:
                raise ConfigError(f"{key}: {path} holds no preference pairs (an empty file?); fill it or drop it from "
                                  f"{key}")
            got, lost = read_pairs(rows)
            pairs, total, dropped = pairs + got, total + len(rows), dropped + lost
            layout.append(sha256_file(path))
        return (pairs, total, dropped), layout

    def _require_pairs(self, split: str, pairs: list, total: int, dropped: int) -> None:
        if not pairs:
            where = "data.hh_rlhf_file" if self.hh_rlhf_file is not None else SPLIT_KEYS.get(split, "the data files")
            raise ConfigError(f"the {split} split has no preference pairs ({total} rows, {dropped} dropped for "
                              f"a prompt mismatch); check {where}")

    def load_raw(self) -> datasets.DatasetDict:
        if self.raw is not None:
            return self.raw
        holdout = None
        if self.hh_rlhf_file is not None:
            sources, layout = self._read_hh_rlhf()
        else:
            sources, layout = {}, {}
            for split, spec in self.files.items():
                if spec is not None:
                    sources[split], layout[split] = self._read_files(spec, SPLIT_KEYS[split])
            if not sources["train"][0]:  # before a validation split is held out of nothing
                self._require_pairs("train", *sources["train"])
            if "validation" not in sources:
                pairs, total, dropped = sources["train"]
                validation, train = hold_out_rows(pairs, self.val_fraction, self.split_seed, "pairs")
                sources["train"], sources["validation"] = (train, total, dropped), (validation, len(validation), 0)
                holdout = {"val_fraction": self.val_fraction, "seed": self.split_seed}
        raw = {}
        for split, (pairs, total, dropped) in sources.items():
            if dropped:
                log.warning("data: %s: dropped %d of %d pairs whose chosen and rejected conversations do not share "
                            "the prompt", split, dropped, total)
            self._require_pairs(split, pairs, total, dropped)
            self.load_stats[split] = {"rows": total, "pairs": len(pairs), "dropped_prompt_mismatch": dropped}
            raw[split] = datasets.Dataset.from_list(pairs, features=EXAMPLES)
        self.raw = datasets.DatasetDict(raw)
        self.test_names = ["test"] if "test" in raw else ["validation"]
        self.data_fingerprint = sha256_json({"version": PREFERENCE_VERSION, "sources": layout, "holdout": holdout})
        return self.raw

    def pair(self, split: str, index: int) -> dict[str, Any]:
        """Pair `index` of `split`: {"prompt": messages, "chosen": str, "rejected": str, "source_row": int}."""
        row = self.load_raw()[split][int(index)]
        return {**row, "prompt": json.loads(row["prompt"])}

    # -- 2./3. tokenizer and chat template ---------------------------------------------------
    def train_texts(self, batch_size: int = 1000) -> Iterator[list[str]]:
        """The prompt turns and both answers of the train pairs, for tokenizer training."""
        batch: list[str] = []
        for row in self.load_raw()["train"]:
            batch += [m["content"] for m in json.loads(row["prompt"])] + [row["chosen"], row["rejected"]]
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def set_chat_template(self, template: ChatTemplate) -> None:
        """Render pairs with `template` from now on (splits opened with another are dropped)."""
        super().set_chat_template(template)
        self.opened, self.stats = {}, {}

    def set_tokenizer(self, tokenizer: Tokenizer, tokenizer_fingerprint: str | None = None,
                      special_ids: Mapping[str, int] | None = None) -> None:
        self._use_tokenizer(tokenizer, tokenizer_fingerprint, resolve_special_ids(tokenizer, special_ids))

    @property
    def pad_id(self) -> int:
        """Padding (never a label): <pad>, else the end of sequence (GPT-2 has no pad token), else 0."""
        ids = self.special_ids
        return ids.get("pad", ids.get("eos", 0))

    # -- 4. tokens, cached ---------------------------------------------------------------------
    def _cache_key(self) -> dict[str, Any]:
        return {"data": self.data_fingerprint, "tokenizer": self.tokenizer_fingerprint,
                "template": self.chat_template.source, "template_tokens": dict(self.chat_template.special_tokens),
                "max_length": self.max_length, "version": PREFERENCE_VERSION}

    def _build_split(self, split: str, out_dir: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        missing = missing_chat_tokens(self.tokenizer, self.chat_template)
        if missing:
            log.warning("data: the tokenizer lacks the chat template's tokens %s: they are split into pieces",
                        missing)
        width = self.max_length + 1
        ds = self.raw[split]
        columns: dict[str, list] = {f"{side}_{k}": [] for side in SIDES for k in ("ids", "start", "end")}
        needed: dict[str, list[int]] = {side: [] for side in SIDES}
        for prompt, chosen, rejected in zip(ds["prompt"], ds["chosen"], ds["rejected"]):
            messages = json.loads(prompt)
            for side, answer in zip(SIDES, (chosen, rejected)):
                ids, start, end = encode_side(self.tokenizer, self.chat_template, messages, answer)
                needed[side].append(len(ids))
                ids, start, end = truncate_left(ids, start, end, width)
                columns[f"{side}_ids"].append(ids)
                columns[f"{side}_start"].append(start)
                columns[f"{side}_end"].append(end)
        # a sequence of n tokens is n - 1 input positions (each predicts the next token), as in SFT data
        cut = {side: check_truncation(split, [n - 1 for n in needed[side]], width - 1, "data.max_length",
                                      f"{side} sequences") for side in SIDES}
        features = datasets.Features({f"{side}_{k}": (datasets.List(datasets.Value("int32")) if k == "ids"
                                                       else datasets.Value("int32"))
                                      for side in SIDES for k in ("ids", "start", "end")})
        out = datasets.Dataset.from_dict(columns, features=features)
        out.save_to_disk(str(out_dir))
        pairs = PreferencePairs(out)
        stats = {**self.load_stats.get(split, {}), **{f"{side}_truncated": cut[side] for side in SIDES},
                 **{f"{side}_tokens_mean": round(float(np.mean(needed[side])), 2) for side in SIDES},
                 **{f"{side}_target_tokens_mean": round(float(pairs.target_tokens(side).mean()), 2) for side in SIDES}}
        log.info("data: tokenized %s: %s in %.1fs", split, stats, time.perf_counter() - t0)
        return stats

    # -- 5. loaders ------------------------------------------------------------------------------
    def collator(self) -> PreferenceCollator:
        return PreferenceCollator(self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"data_fingerprint": self.data_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "template": sha256_json(self.chat_template.source), "max_length": self.max_length,
                "batch_size": self.batch_size, "shuffle_seed": self.shuffle_seed, "sampler": self.train_order}


__all__ = ["PreferenceDataModule", "PreferenceCollator", "PreferencePairs", "pair_of_row", "read_pairs",
           "encode_side", "truncate_left", "PREFERENCE_VERSION"]
