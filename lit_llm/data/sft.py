"""Supervised fine-tuning (instruction tuning, chat) data: conversations -> chat-template tokens -> batches.

Sources (one of):
- `files` (+ `validation_files`, `test_files`): JSON Lines / JSON / parquet rows in the schemas of
  `lit_llm.data.conversations.to_messages` (messages, Alpaca, prompt/completion);
- `hub_name` (+ `hub_config`): a Hugging Face dataset with such rows;
- `mixture`: the instruction mixture built from our own datasets (`lit_llm.data.instruct_mix.build_mixture`): its
  test splits are one per task, scored by generation (`lit_llm.tasks.sft`); `mixture_tasks` keeps only the tasks
  named (and no chats), for single-task fine-tunes on exactly the mixture's examples of a task.
Without a validation split, `val_fraction` of the training conversations is held out (seeded).

Every conversation is rendered with the run's chat template (`ChatDataMixin`; the ChatML markers are added to
tokenizers that lack them) and tokenized once; the assistant turns' tokens are the targets, everything else
(system, user turns, template markup) is context only.

Layouts (`data.arch`, the model's architecture, which decides the batch's shape):
- "gpt" (decoder-only): a conversation is one sequence, labels = the next token where that token is a target
  (-100 elsewhere). Training rows pack several conversations (`packing`, next-fit in data order up to
  `max_length` + 1 tokens) with `document_ids`, so that attention never crosses conversations and positions
  restart with each one (`GPT.hidden_states`); evaluation rows hold one conversation each. Conversations longer
  than `max_length` + 1 tokens keep their last tokens (their final answer), with a warning when more than 5% are cut.
- "encoder_decoder": every assistant turn is one example: source = the conversation before it with the template's
  generation prompt (cut from the left: the latest turns stay), target = the turn's text, each ended as the seq2seq
  data ends them (`seq2seq.end_sequence`: <eos>, or the tokenizer's own specials); evaluation splits use each
  conversation's final turn.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer

from lit_llm.data.base import (
    DataModuleProtocol,
    TokenizedSplitsMixin,
    arrow_table,
    check_truncation,
    flat_lists,
    hold_out_rows,
    require_choice,
    require_fraction,
    require_int,
    require_special_tokens,
    resolve_special_ids,
)
from lit_llm.data.collate import IGNORE_INDEX
from lit_llm.data.conversations import ChatDataMixin, encode_conversation, read_rows, to_messages
from lit_llm.data.loading import ExampleLoadersMixin, ResumableTrainMixin
from lit_llm.data.seq2seq import PairFeatures, Seq2SeqCollator, end_sequence, ends_added
from lit_llm.data.sources import load_hub_dataset, resolve_files
from lit_llm.errors import ConfigError
from lit_llm.utils_io import sha256_file, sha256_json

log = logging.getLogger("lit_llm")

SFT_VERSION = 1  # bump when encoding or packing changes: old cache entries are then ignored
ARCHS = ("gpt", "encoder_decoder")
ROWS = datasets.Features({"messages": datasets.Value("string"), "task": datasets.Value("string"),
                          "references": datasets.List(datasets.Value("string")), "label": datasets.Value("int64")})


def _row(messages: list[dict], task: str = "chat", references: list[str] | None = None, label: int = -1) -> dict:
    if references is None:
        references = [messages[-1]["content"]] if messages and messages[-1]["role"] == "assistant" else []
    return {"messages": json.dumps(messages, ensure_ascii=False), "task": task, "references": list(references),
            "label": int(label)}


def pack_rows(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Next-fit packing: consecutive sequences share a row while their lengths sum to at most `width`."""
    rows, current, used = [], [], 0
    for i, n in enumerate(lengths.tolist()):
        if current and used + n > width:
            rows.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        rows.append(current)
    return rows


class PackedConversations(torch.utils.data.Dataset):
    """Rows of concatenated conversations (`ids`, `targets`, `lengths`: each conversation's token count)."""

    def __init__(self, ds: datasets.Dataset):
        table = arrow_table(ds)
        self.ids, self.row = flat_lists(table, "ids")
        self.targets, _ = flat_lists(table, "targets")
        self.lengths, self.length_row = flat_lists(table, "lengths")
        self.index = table.column("index").to_numpy()
        self.pad_lengths = np.diff(self.row)  # what a batch pads to (length bucketing)

    def __len__(self) -> int:
        return len(self.row) - 1

    def __getitem__(self, i: int) -> dict[str, Any]:
        lo, hi = self.row[i], self.row[i + 1]
        return {"ids": self.ids[lo:hi], "targets": self.targets[lo:hi],
                "lengths": self.lengths[self.length_row[i]:self.length_row[i + 1]], "example_index": int(self.index[i])}


class PackedCollator:
    """Rows -> {"input_ids", "labels", "document_ids", "example_index"}: input_ids = row[:-1] padded right,
    labels[t] = row[t + 1] where that token is a target of the same conversation, else -100. `document_ids`
    only for batches with a packed row (a row of one conversation needs no document mask: right padding is
    harmless to causal attention)."""

    def __init__(self, pad_id: int, packed: bool):
        self.pad_id, self.packed = int(pad_id), bool(packed)

    def __call__(self, items) -> dict[str, torch.Tensor]:
        width = max(len(it["ids"]) for it in items) - 1
        B = len(items)
        ids = np.full((B, width + 1), self.pad_id, np.int64)
        targets = np.zeros((B, width + 1), bool)
        docs = np.full((B, width + 1), -1, np.int64)
        for b, it in enumerate(items):  # one copy per row, not per token
            n = len(it["ids"])
            ids[b, :n], targets[b, :n] = it["ids"], it["targets"]
            docs[b, :n] = np.repeat(np.arange(len(it["lengths"])), it["lengths"])
        same = docs[:, 1:] == docs[:, :-1]
        labels = np.where(targets[:, 1:] & same, ids[:, 1:], IGNORE_INDEX)
        batch = {"input_ids": torch.from_numpy(ids[:, :-1].copy()), "labels": torch.from_numpy(labels),
                 "example_index": torch.tensor([it["example_index"] for it in items], dtype=torch.long)}
        if self.packed and any(len(it["lengths"]) > 1 for it in items):
            d = docs[:, :-1].copy()
            d[d < 0] = np.iinfo(np.int64).max  # padding: a document of its own
            batch["document_ids"] = torch.from_numpy(d)
        return batch


class SFTDataModule(ChatDataMixin, DataModuleProtocol, TokenizedSplitsMixin, ExampleLoadersMixin, ResumableTrainMixin,
                    pl.LightningDataModule):
    """Conversations for supervised fine-tuning (see the module docstring)."""

    CACHE_SUBDIR = "sft"
    UNIT = "training rows"

    def __init__(self, files: Any = None, validation_files: Any = None, test_files: Any = None,
                 hub_name: str | None = None, hub_config: str | None = None, mixture: Mapping | None = None,
                 mixture_tasks: list[str] | None = None, data_dir: str | None = None, arch: str = "gpt",
                 chat_template: str | None = None,
                 system_prompt: str | None = None, max_length: int = 512, max_source_length: int = 512,
                 max_target_length: int = 256, packing: bool = True, val_fraction: float = 0.05,
                 split_seed: int = 1234, batch_size: int = 8, eval_batch_size: int | None = None,
                 sampler: str = "random", num_workers: int = 0, cache_dir: str = ".cache", shuffle_seed: int = 1234):
        super().__init__()
        self.check_sampler(sampler)
        given = [k for k, v in (("data.files", files), ("data.hub_name", hub_name), ("data.mixture", mixture)) if v]
        if len(given) != 1:
            raise ConfigError(f"SFT data needs exactly one source: data.files=<chats.jsonl>, data.hub_name=<dataset> or "
                              f"data.mixture (data=instruct_mix); got {given or 'none'}")
        require_choice("data.arch", arch, ARCHS)
        for key, value in (("data.max_length", max_length), ("data.max_source_length", max_source_length),
                           ("data.max_target_length", max_target_length), ("data.batch_size", batch_size)):
            require_int(key, value, 2 if "length" in key else 1)
        if eval_batch_size is not None:
            require_int("data.eval_batch_size", eval_batch_size, why=" or null")
        require_fraction("data.val_fraction", val_fraction)
        self.files = {"train": files, "validation": validation_files, "test": test_files}
        self.hub_name, self.hub_config = hub_name, hub_config
        self.mixture = dict(mixture) if mixture else None
        self.mixture_tasks = list(mixture_tasks) if mixture_tasks is not None else None
        self.data_dir = data_dir
        self.arch = arch
        self.chat_template_setting = chat_template
        self.system_prompt = system_prompt or None
        self.max_length, self.packing = max_length, bool(packing)
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.val_fraction, self.split_seed = float(val_fraction), split_seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.sampler = sampler
        self.num_workers, self.cache_dir, self.shuffle_seed = num_workers, os.fspath(cache_dir), shuffle_seed
        self.test_names: list[str] = ["validation"]

    # -- the data-module protocol ------------------------------------------------------------------------
    def max_sequence_length(self) -> tuple[str, int]:
        if self.arch == "gpt":
            return "data.max_length", self.max_length
        if self.max_target_length > self.max_source_length:
            return "data.max_target_length", self.max_target_length
        return "data.max_source_length", self.max_source_length

    def test_split_names(self) -> list[str]:
        return sorted(self.load_raw())

    # -- 1. conversations --------------------------------------------------------------------------------
    def _read_files(self, spec: Any, key: str) -> tuple[list[dict], list]:
        rows, layout = [], []
        for path in resolve_files(spec, key):
            before = len(rows)
            for where, row in read_rows(path, key):
                messages = to_messages(row, where)
                task = row.get("task", "chat") if isinstance(row.get("task"), str) else "chat"
                rows.append(_row(messages, task))
            if len(rows) == before:
                raise ConfigError(f"{key}: {path} holds no conversations (an empty file?); fill it or drop it from "
                                  f"{key}")
            layout.append(sha256_file(path))
        return rows, layout

    def _read_hub(self) -> tuple[dict[str, list[dict]], dict]:
        hub = load_hub_dataset(self.hub_name, self.hub_config, os.path.join(self.cache_dir, "hf_datasets"))
        out, layout = {}, {}
        for split, name in (("train", "train"), ("validation", "validation"), ("test", "test")):
            if name in hub:
                where = f"data.hub_name={self.hub_name!r} split {name!r}, row"
                out[split] = [_row(to_messages(r, f"{where} {i}"))
                              for i, r in enumerate(hub[name].to_list())]
                layout[split] = hub[name]._fingerprint
        return out, layout

    def _read_mixture(self) -> tuple[dict[str, list[dict]], dict]:
        from lit_llm.data.instruct_mix import build_mixture

        if not self.data_dir:
            raise ConfigError("data.mixture needs data.data_dir (the datasets folder, LIT_LLM_DATA_DIR)")
        mixture = dict(self.mixture)
        if self.mixture_tasks is not None:  # one task alone (single-task fine-tuning on the same examples): no chats
            tasks = dict(mixture.get("tasks") or {})
            unknown = sorted(set(self.mixture_tasks) - set(tasks))
            if unknown:
                raise ConfigError(f"data.mixture_tasks: {unknown} not in data.mixture.tasks ({sorted(tasks)})")
            mixture.update(tasks={k: v for k, v in tasks.items() if k in self.mixture_tasks}, chats=None)
        splits, info = build_mixture(self.data_dir, **mixture)
        return {name: [_row(r["messages"], r["task"], r.get("references"), r.get("label", -1)) for r in rows]
                for name, rows in splits.items()}, info

    def load_raw(self) -> datasets.DatasetDict:
        if self.raw is not None:
            return self.raw
        holdout = None
        if self.mixture:
            sources, layout = self._read_mixture()
        elif self.hub_name:
            sources, layout = self._read_hub()
        else:
            sources, layout = {}, {}
            for split, spec in self.files.items():
                if spec is not None:
                    sources[split], layout[split] = self._read_files(spec, f"data.{'files' if split == 'train' else split + '_files'}")
        if not sources.get("train"):
            raise ConfigError("no training conversations: data.files (or the hub dataset) has no train rows")
        if "validation" not in sources:
            sources["validation"], sources["train"] = hold_out_rows(sources["train"], self.val_fraction,
                                                                    self.split_seed, "conversations")
            holdout = {"val_fraction": self.val_fraction, "seed": self.split_seed}
        if self.system_prompt:
            for rows in sources.values():
                for r in rows:
                    messages = json.loads(r["messages"])
                    if messages[0]["role"] != "system":
                        r["messages"] = json.dumps([{"role": "system", "content": self.system_prompt}, *messages],
                                                   ensure_ascii=False)
        self.raw = datasets.DatasetDict({k: datasets.Dataset.from_list(v, features=ROWS) for k, v in sources.items()})
        tests = [k for k in self.raw if k not in ("train", "validation")]
        self.test_names = tests or ["validation"]
        self.data_fingerprint = sha256_json({"version": SFT_VERSION, "sources": layout, "holdout": holdout,
                                             "system_prompt": self.system_prompt, "mixture": self.mixture,
                                             "mixture_tasks": self.mixture_tasks})
        return self.raw

    def messages(self, split: str, index: int) -> list[dict[str, str]]:
        """The conversation of row `index` of `split`."""
        return json.loads(self.load_raw()[split][int(index)]["messages"])

    # -- 2./3. tokenizer ---------------------------------------------------------------------------------
    def train_texts(self, batch_size: int = 1000) -> Iterator[list[str]]:
        """The message texts of the train split, for tokenizer training."""
        batch: list[str] = []
        for raw in self.load_raw()["train"]["messages"]:
            batch += [m["content"] for m in json.loads(raw)]
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def set_tokenizer(self, tokenizer: Tokenizer, tokenizer_fingerprint: str | None = None,
                      special_ids: Mapping[str, int] | None = None) -> None:
        ids = resolve_special_ids(tokenizer, special_ids)
        need = ("pad",) if self.arch == "gpt" else ("pad", "bos", "eos")
        require_special_tokens(ids, need, f"SFT batches (data.arch={self.arch})",
                               "use a tokenizer trained by lit-llm (tokenizer.kind=bpe) or one that has them")
        self._use_tokenizer(tokenizer, tokenizer_fingerprint, ids)

    # -- 4. tokens, cached --------------------------------------------------------------------------------
    def _cache_key(self) -> dict[str, Any]:
        return {"data": self.data_fingerprint, "tokenizer": self.tokenizer_fingerprint, "arch": self.arch,
                "template": self.chat_template.source, "template_tokens": dict(self.chat_template.special_tokens),
                "lengths": [self.max_length, self.max_source_length, self.max_target_length],
                "packing": self.packing, "version": SFT_VERSION}

    def _build_split(self, split: str, out_dir: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        conversations = [json.loads(m) for m in self.raw[split]["messages"]]
        build = self._build_causal if self.arch == "gpt" else self._build_pairs
        ds, stats = build(split, conversations)
        ds.save_to_disk(str(out_dir))
        log.info("data: tokenized %s: %s in %.1fs", split, stats, time.perf_counter() - t0)
        return stats

    def _build_causal(self, split: str, conversations: list[list[dict]]) -> tuple[datasets.Dataset, dict]:
        width = self.max_length + 1
        encoded = [encode_conversation(self.tokenizer, self.chat_template, m) for m in conversations]
        # a conversation of n tokens is n - 1 input positions (each predicts the next token)
        cut = check_truncation(split, [len(ids) - 1 for ids, _ in encoded], self.max_length, "data.max_length",
                               "conversations")
        encoded = [(ids[-width:], targets[-width:]) for ids, targets in encoded]
        keep = [i for i, (_, targets) in enumerate(encoded) if targets[1:].any()]
        lengths = np.asarray([len(encoded[i][0]) for i in keep], dtype=np.int64)
        groups = pack_rows(lengths, width) if (self.packing and split == "train") else [[k] for k in range(len(keep))]
        rows = {"ids": [], "targets": [], "lengths": [], "index": []}
        for group in groups:
            members = [keep[k] for k in group]
            rows["ids"].append(np.concatenate([encoded[i][0] for i in members]))
            rows["targets"].append(np.concatenate([encoded[i][1] for i in members]).astype(np.int8))
            rows["lengths"].append(np.asarray([len(encoded[i][0]) for i in members], np.int32))
            rows["index"].append(members[0])
        features = datasets.Features({"ids": datasets.List(datasets.Value("int32")),
                                      "targets": datasets.List(datasets.Value("int8")),
                                      "lengths": datasets.List(datasets.Value("int32")),
                                      "index": datasets.Value("int64")})
        ds = datasets.Dataset.from_dict(rows, features=features)
        tokens = int(lengths.sum())
        stats = {"conversations": len(conversations), "kept": len(keep), "dropped_no_target": len(encoded) - len(keep),
                 "truncated": cut, "rows": len(groups), "tokens": tokens,
                 "target_tokens": int(sum(encoded[i][1][1:].sum() for i in keep)),
                 "fill": round(tokens / max(1, len(groups) * width), 3)}
        return ds, stats

    def _build_pairs(self, split: str, conversations: list[list[dict]]) -> tuple[datasets.Dataset, dict]:
        sources, targets, index, needed_src, needed_tgt = [], [], [], [], []
        eos, added = self.special_ids["eos"], ends_added(self.tokenizer) or 1
        for i, messages in enumerate(conversations):
            turns = [j for j, m in enumerate(messages) if m["role"] == "assistant"]
            if split != "train":
                turns = turns[-1:]  # evaluation: the final answer
            for j in turns:  # as the seq2seq data: each side ended by <eos> (or the tokenizer's own specials)
                src = self.tokenizer.encode(self.chat_template.render(messages[:j], add_generation_prompt=True),
                                            add_special_tokens=False)
                tgt = self.tokenizer.encode(messages[j]["content"], add_special_tokens=False)
                needed_src.append(len(src.ids) + added)
                needed_tgt.append(len(tgt.ids) + added)
                sources.append(end_sequence(self.tokenizer, src, eos, self.max_source_length, keep="end"))
                targets.append(end_sequence(self.tokenizer, tgt, eos, self.max_target_length))
                index.append(i)
        cut_src = check_truncation(split, needed_src, self.max_source_length, "data.max_source_length", "turns")
        cut_tgt = check_truncation(split, needed_tgt, self.max_target_length, "data.max_target_length", "turns")
        features = datasets.Features({"source_ids": datasets.List(datasets.Value("int32")),
                                      "target_ids": datasets.List(datasets.Value("int32")),
                                      "index": datasets.Value("int64")})
        ds = datasets.Dataset.from_dict({"source_ids": sources, "target_ids": targets, "index": index},
                                        features=features)
        return ds, {"conversations": len(conversations), "turns": len(sources), "source_truncated": cut_src,
                    "target_truncated": cut_tgt}

    def _open_split(self, split: str, path: Path) -> None:
        ds = datasets.load_from_disk(str(path))
        self.opened[split] = (PackedConversations if self.arch == "gpt" else PairFeatures)(ds)

    # -- 5. loaders ------------------------------------------------------------------------------------------
    def collator(self):
        if self.arch == "gpt":
            return PackedCollator(self.special_ids["pad"], self.packing)
        return Seq2SeqCollator(self.special_ids["pad"], self.special_ids["bos"])

    def state_dict(self) -> dict[str, Any]:
        return {"data_fingerprint": self.data_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "max_length": self.max_length, "packing": self.packing, "batch_size": self.batch_size,
                "shuffle_seed": self.shuffle_seed, "sampler": self.train_order}


__all__ = ["SFTDataModule", "PackedCollator", "PackedConversations", "pack_rows",
           "SFT_VERSION"]
