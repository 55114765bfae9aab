"""Sequence-to-sequence data (translation, summarization): source/target pairs -> padded batches.

Sources, per split (`train_files`, `validation_files`, `test_files`):
- parallel text files: a path *stem* with `source_lang` / `target_lang` (`.../multi30k/train` with de, en
  reads `train.de` and `train.en`, line i of one translating line i of the other);
- tables (.csv, .tsv, .jsonl/.json, .parquet) with `source_column` / `target_column` (e.g. dialogue /
  summary), or the hub's translation schema (`translation: {de: ..., en: ...}`, with source_lang /
  target_lang) from files or `hub_name`.

Evaluation splits keep every reference: rows with the same source text become one example whose
references are all their targets (DialogSum's test set: 500 dialogues x 3 summaries); `reference_columns`
adds further reference columns of a row.

Tokens: source = `source_prefix + source` cut to `max_source_length - 1` tokens + `<eos>`; target =
target cut to `max_target_length - 1` tokens + `<eos>`; the decoder reads `<bos>` + target[:-1]. A Hugging Face
tokenizer adds its own special tokens (T5: `text </s>`, BART: `<s> text </s>`) and `<bos>` is the model's
`decoder_start_token_id` (T5: `<pad>`, BART: `</s>`), so input_ids, labels and decoder inputs are transformers'.
Truncations are counted per split (`stats[split]["source_truncated"]`, `"target_truncated"`);
pairs with an empty source or target are dropped and counted (`dropped_empty`). Batches:
`input_ids`, `attention_mask` (source), `decoder_input_ids`, `labels` (target, padded with -100),
`example_index`.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

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
    require_fraction,
    require_int,
    require_one_source,
    require_special_tokens,
    resolve_special_ids,
    text_batches,
)
from lit_llm.data.collate import pad_pairs
from lit_llm.data.loading import ExampleLoadersMixin, ResumableTrainMixin
from lit_llm.data.sources import file_extension, load_files, load_hub_dataset, read_text, resolve_files
from lit_llm.errors import ConfigError
from lit_llm.utils_io import sha256_file, sha256_json

log = logging.getLogger("lit_llm")

SEQ2SEQ_VERSION = 1
SEQ2SEQ_FEATURES_VERSION = 2  # bump when feature building changes: old feature caches are then ignored
SPLIT_KEYS = {"train": "data.train_files", "validation": "data.validation_files", "test": "data.test_files"}
EXAMPLES = datasets.Features({"source": datasets.Value("string"), "target": datasets.Value("string"),
                              "references": datasets.Sequence(datasets.Value("string"))})


# ----------------------------------------------------------------------------- reading

def read_parallel(stem: str, source_lang: str, target_lang: str, key: str) -> tuple[list[str], list[str], list[str]]:
    """Lines of `<stem>.<source_lang>` and `<stem>.<target_lang>` (same count or an error) and the two paths."""
    paths = [f"{stem}.{source_lang}", f"{stem}.{target_lang}"]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ConfigError(f"{key}={stem!r}: no file {missing[0]} (parallel text needs <stem>.{source_lang} and "
                          f"<stem>.{target_lang}); fix the path or data.source_lang / data.target_lang.")
    lines = [read_text(p, key).split("\n") for p in paths]
    for i, ls in enumerate(lines):
        if ls and ls[-1] == "":
            ls.pop()  # the final newline
    if not lines[0] and not lines[1]:
        raise ConfigError(f"{key}={stem!r}: {paths[0]} and {paths[1]} are empty; fill them or fix the path.")
    if len(lines[0]) != len(lines[1]):
        raise ConfigError(f"{key}: the parallel files are misaligned: {paths[0]} has {len(lines[0])} lines, "
                          f"{paths[1]} has {len(lines[1])}; every line of one must translate the same line of the other.")
    return lines[0], lines[1], paths


def _column(table, name: str, where: str, key: str) -> list:
    if "." in name and name not in table.column_names:  # translation schema: translation.de
        head, sub = name.split(".", 1)
        if head in table.column_names:
            return [None if row is None else row.get(sub) for row in table.column(head).to_pylist()]
    if name not in table.column_names:
        raise ConfigError(f"{key}={name!r} is not a column of {where}; its columns are {table.column_names}; "
                          f"set {key}=<one of them>.")
    return table.column(name).to_pylist()


# ----------------------------------------------------------------------------- features

def ends_added(tokenizer: Tokenizer) -> int:
    """How many special tokens end one side of a pair: the tokenizer's own (its post-processor's: T5's `</s>`,
    BART's `<s> ... </s>`), else 1 (our `<eos>`)."""
    own = tokenizer.post_processor is not None and tokenizer.num_special_tokens_to_add(False) > 0
    return tokenizer.num_special_tokens_to_add(False) if own else 0


def end_sequence(tokenizer: Tokenizer, enc, eos_id: int, limit: int, keep: str = "start") -> list[int]:
    """One side of a source/target pair from its encoding (made with add_special_tokens=False): cut to `limit`
    tokens in all, ended by the tokenizer's own special tokens when its post-processor adds some (exactly as
    `transformers` builds input_ids and labels), else by `eos_id`. keep="end" cuts from the left (a conversation
    keeps its latest turns)."""
    own = ends_added(tokenizer)
    if own:
        enc.truncate(limit - own, direction="left" if keep == "end" else "right")
        return tokenizer.post_process(enc, None, add_special_tokens=True).ids
    ids = enc.ids[len(enc.ids) - (limit - 1):] if keep == "end" and len(enc.ids) > limit - 1 else enc.ids[: limit - 1]
    return ids + [eos_id]


def encode_pairs(batch: Mapping[str, list], tokenizer: Tokenizer, eos_id: int, prefix: str, max_source_length: int,
                 max_target_length: int) -> dict[str, list]:
    """Each side cut to its limit and ended with `<eos>`, or with a Hugging Face tokenizer's own special tokens
    (`end_sequence`); `*_needed`: a side's length before truncation."""
    sources = tokenizer.encode_batch([prefix + s for s in batch["source"]], add_special_tokens=False)
    targets = tokenizer.encode_batch(batch["target"], add_special_tokens=False)
    added = ends_added(tokenizer) or 1
    out: dict[str, list] = {"source_ids": [], "target_ids": [], "source_needed": [], "target_needed": []}
    for side, encodings, limit in (("source", sources, max_source_length), ("target", targets, max_target_length)):
        for enc in encodings:
            out[f"{side}_needed"].append(len(enc.ids) + added)
            out[f"{side}_ids"].append(end_sequence(tokenizer, enc, eos_id, limit))
    return out


class PairFeatures(torch.utils.data.Dataset):
    """Tokenized pairs as flat numpy arrays + row offsets; `example_index` is the row, or the `index` column when
    the split has one (several pairs of one example: the turns of a conversation, lit_llm.data.sft)."""

    def __init__(self, ds: datasets.Dataset):
        table = arrow_table(ds)
        self.src, self.src_row = flat_lists(table, "source_ids")
        self.tgt, self.tgt_row = flat_lists(table, "target_ids")
        self.index = table.column("index").to_numpy() if "index" in table.column_names else None
        # what a batch pads to (length bucketing): sources by length, ties by target length
        src_len, tgt_len = np.diff(self.src_row), np.diff(self.tgt_row)
        self.pad_lengths = src_len * (int(tgt_len.max(initial=0)) + 1) + tgt_len
        self.secondary_lengths = tgt_len  # the train sampler groups targets of similar length too

    def __len__(self) -> int:
        return len(self.src_row) - 1

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"source_ids": self.src[self.src_row[i] : self.src_row[i + 1]],
                "target_ids": self.tgt[self.tgt_row[i] : self.tgt_row[i + 1]],
                "example_index": int(i if self.index is None else self.index[i])}


class Seq2SeqCollator:
    """Pad a batch: sources with pad_id (+ attention_mask), decoder inputs `<bos>` + target[:-1] with
    pad_id, labels = target with -100 on padding."""

    def __init__(self, pad_id: int, start_id: int):
        self.pad_id, self.start_id = int(pad_id), int(start_id)

    def __call__(self, items) -> dict[str, torch.Tensor]:
        batch = pad_pairs([it["source_ids"] for it in items], [it["target_ids"] for it in items],
                          self.pad_id, self.start_id)
        batch["example_index"] = torch.tensor([it["example_index"] for it in items], dtype=torch.long)
        return batch


# ----------------------------------------------------------------------------- data module

class Seq2SeqDataModule(DataModuleProtocol, TokenizedSplitsMixin, ExampleLoadersMixin, ResumableTrainMixin,
                        pl.LightningDataModule):
    """Source/target pairs for translation and summarization (see the module docstring)."""

    CACHE_SUBDIR = "seq2seq"
    SPLIT_DATASET = PairFeatures
    UNIT = "pairs"

    def __init__(
        self,
        train_files: Any = None,
        validation_files: Any = None,
        test_files: Any = None,
        hub_name: str | None = None,
        hub_config: str | None = None,
        source_lang: str | None = None,
        target_lang: str | None = None,
        source_column: str = "source",
        target_column: str = "target",
        reference_columns: list[str] | None = None,
        column_names: list[str] | None = None,
        source_prefix: str = "",
        max_source_length: int = 128,
        max_target_length: int = 64,
        val_fraction: float = 0.05,
        split_seed: int = 1234,
        batch_size: int = 32,
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
        for key, value in (("data.max_source_length", max_source_length), ("data.max_target_length", max_target_length)):
            require_int(key, value, 2, why=" (a token and <eos>)")
        require_int("data.batch_size", batch_size)
        if eval_batch_size is not None:
            require_int("data.eval_batch_size", eval_batch_size, why=" or null")
        require_fraction("data.val_fraction", val_fraction)
        self.files = {"train": train_files, "validation": validation_files, "test": test_files}
        self.hub_name, self.hub_config = hub_name, hub_config
        self.source_lang, self.target_lang = source_lang, target_lang
        if source_lang and target_lang and source_column == "source" and target_column == "target":
            source_column, target_column = f"translation.{source_lang}", f"translation.{target_lang}"
        self.source_column, self.target_column = source_column, target_column
        self.reference_columns = list(reference_columns or [])
        self.column_names = list(column_names) if column_names else None
        self.source_prefix = source_prefix or ""
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.val_fraction, self.split_seed = float(val_fraction), split_seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.sampler = sampler
        self.num_workers, self.num_proc = num_workers, num_proc
        self.cache_dir = os.fspath(cache_dir)
        self.shuffle_seed = shuffle_seed

        self.load_stats: dict[str, dict[str, Any]] = {}
        self.test_names: list[str] = ["test"]

    @property
    def features(self) -> dict[str, PairFeatures]:
        """The opened splits: {split: PairFeatures}."""
        return self.opened

    # -- the data-module protocol (base.DataModuleProtocol) -----------------------------------
    def max_sequence_length(self) -> tuple[str, int]:
        """The longer of data.max_source_length and data.max_target_length (the source on a tie)."""
        if self.max_target_length > self.max_source_length:
            return "data.max_target_length", self.max_target_length
        return "data.max_source_length", self.max_source_length

    # -- 1. examples ---------------------------------------------------------------------------
    def _read_split(self, spec: Any, key: str) -> tuple[list[dict], list]:
        """[{source, target, references}] of one split, in file order, and a content layout."""
        rows, layout = [], []
        stems = spec if isinstance(spec, (list, tuple)) else [spec]
        for stem in stems:
            stem = os.fspath(stem)
            if self.source_lang and self.target_lang and file_extension(stem) not in (
                    ".csv", ".tsv", ".json", ".jsonl", ".parquet"):
                src, tgt, paths = read_parallel(stem, self.source_lang, self.target_lang, key)
                rows += [{"source": s, "target": t, "references": [t]} for s, t in zip(src, tgt)]
                layout.append([sha256_file(p) for p in paths])
                continue
            for path in resolve_files(stem, key):
                extra = {"column_names": self.column_names} if self.column_names else None
                ds, loader = load_files([path], "rows", "line", os.path.join(self.cache_dir, "hf_datasets"), key,
                                         builder_kwargs=extra)
                rows += self._rows_of(ds, f"{key} ({path})")
                layout.append({"file": sha256_file(path), "loader": loader})
        return rows, layout

    def _rows_of(self, ds: datasets.Dataset, where: str) -> list[dict]:
        table = arrow_table(ds)
        src = _column(table, self.source_column, where, "data.source_column")
        tgt = _column(table, self.target_column, where, "data.target_column")
        extra = [_column(table, c, where, "data.reference_columns") for c in self.reference_columns]
        out = []
        for i, (s, t) in enumerate(zip(src, tgt)):
            refs = [t] + [col[i] for col in extra]
            out.append({"source": s, "target": t, "references": refs})
        return out

    def load_raw(self) -> datasets.DatasetDict:
        if self.raw is not None:
            return self.raw
        sources: dict[str, list[dict]] = {}
        layout: dict[str, Any] = {}
        if self.hub_name is not None:
            hub = load_hub_dataset(self.hub_name, self.hub_config, os.path.join(self.cache_dir, "hf_datasets"))
            for split in ("train", "validation", "test"):
                if split in hub:
                    sources[split] = self._rows_of(hub[split], f"data.hub_name={self.hub_name!r} split {split!r}")
                    layout[split] = {"hub": self.hub_name, "config": self.hub_config,
                                     "fingerprint": hub[split]._fingerprint}
        for split, spec in self.files.items():
            if spec is not None:
                sources[split], layout[split] = self._read_split(spec, SPLIT_KEYS[split])
        if "train" not in sources:
            raise ConfigError("no training pairs: set data.train_files (or a hub dataset with a train split).")
        holdout = None
        if "validation" not in sources:
            sources["validation"], sources["train"] = hold_out_rows(sources["train"], self.val_fraction,
                                                                    self.split_seed, "pairs")
            holdout = {"val_fraction": self.val_fraction, "seed": self.split_seed}
        self.test_names = ["test"] if "test" in sources else ["validation"]
        raw = {}
        for split in [s for s in ("train", "validation", "test") if s in sources]:
            rows, stats = self._clean(split, sources[split], merge=split != "train")
            raw[split] = datasets.Dataset.from_list(rows, features=EXAMPLES)
            self.load_stats[split] = stats
        self.raw = datasets.DatasetDict(raw)
        self.data_fingerprint = sha256_json({
            "version": SEQ2SEQ_VERSION, "sources": layout, "holdout": holdout,
            "columns": [self.source_column, self.target_column, self.reference_columns, self.column_names],
        })
        return self.raw

    def _clean(self, split: str, rows: list[dict], merge: bool) -> tuple[list[dict], dict[str, int]]:
        """Drop (and count) pairs with an empty source or target; for evaluation, merge rows that
        share a source into one example with all their references."""
        def empty(x):
            return not isinstance(x, str) or not x.strip()
        kept = [r for r in rows if not (empty(r["source"]) or empty(r["target"]))]
        dropped = len(rows) - len(kept)
        if dropped:
            log.warning("data: %s: dropped %d pair(s) with an empty source or target (of %d)", split, dropped, len(rows))
        if not kept:
            raise ConfigError(f"{SPLIT_KEYS.get(split, split)}: all {len(rows)} pairs have an empty source or target; "
                              "check data.source_column / data.target_column (or the language suffixes).")
        merged = 0
        if merge:
            by_source: dict[str, dict] = {}
            for r in kept:
                refs = [x for x in r["references"] if not empty(x)]
                if r["source"] in by_source:
                    by_source[r["source"]]["references"] += refs
                    merged += 1
                else:
                    by_source[r["source"]] = {"source": r["source"], "target": r["target"], "references": refs}
            kept = list(by_source.values())
        stats = {"pairs": len(rows), "dropped_empty": dropped, "examples": len(kept), "merged_rows": merged,
                 "references_per_example": round(sum(len(r["references"]) for r in kept) / len(kept), 3)}
        log.info("data split %s: %s", split, stats)
        return kept, stats

    # -- 2./3. tokenizer --------------------------------------------------------------------------
    def train_texts(self, batch_size: int = 1000) -> Iterator[list[str]]:
        """Sources and targets of the train split (one tokenizer for both sides)."""
        return text_batches(self.load_raw()["train"], ("source", "target"), batch_size)

    def set_tokenizer(self, tokenizer: Tokenizer, tokenizer_fingerprint: str | None = None,
                      special_ids: Mapping[str, int] | None = None) -> None:
        ids = resolve_special_ids(tokenizer, special_ids)
        require_special_tokens(ids, ("bos", "eos", "pad"), "seq2seq sequences (<bos> target <eos>, padded)",
                               "use a tokenizer trained by lit-llm (tokenizer.kind=bpe)")
        self._use_tokenizer(tokenizer, tokenizer_fingerprint, ids)

    # -- 4. features, cached --------------------------------------------------------------------
    def _cache_key(self) -> dict[str, Any]:
        return {"data": self.data_fingerprint, "tokenizer": self.tokenizer_fingerprint,
                "prefix": self.source_prefix, "max_source_length": self.max_source_length,
                "max_target_length": self.max_target_length, "eos": self.special_ids["eos"],
                "version": SEQ2SEQ_FEATURES_VERSION}

    def _build_split(self, split: str, out_dir: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        ds = self.raw[split]
        mapped = ds.map(
            encode_pairs, batched=True, batch_size=1000, remove_columns=ds.column_names,
            features=datasets.Features({"source_ids": datasets.List(datasets.Value("int32")),
                                        "target_ids": datasets.List(datasets.Value("int32")),
                                        "source_needed": datasets.Value("int32"),
                                        "target_needed": datasets.Value("int32")}),
            fn_kwargs={"tokenizer": self.tokenizer, "eos_id": self.special_ids["eos"], "prefix": self.source_prefix,
                       "max_source_length": self.max_source_length, "max_target_length": self.max_target_length},
            new_fingerprint=sha256_json([self.tokenized_dir.name, split, "needed"])[:32], desc=f"tokenizing {split}",
        )
        src_len = np.asarray([len(x) for x in mapped["source_ids"]])
        tgt_len = np.asarray([len(x) for x in mapped["target_ids"]])
        cut = {side: check_truncation(split, mapped[f"{side}_needed"], limit, f"data.max_{side}_length", "pairs")
               for side, limit in (("source", self.max_source_length), ("target", self.max_target_length))}
        stats = {**self.load_stats.get(split, {}), "source_truncated": cut["source"], "target_truncated": cut["target"],
                 "source_tokens_mean": round(float(src_len.mean()), 2), "target_tokens_mean": round(float(tgt_len.mean()), 2)}
        mapped.remove_columns(["source_needed", "target_needed"]).save_to_disk(str(out_dir))
        log.info("data: tokenized %s: %s in %.1fs", split, stats, time.perf_counter() - t0)
        return stats

    # -- 5. loaders ---------------------------------------------------------------------------------
    def collator(self) -> Seq2SeqCollator:
        return Seq2SeqCollator(self.special_ids["pad"], self.special_ids["bos"])

    def state_dict(self) -> dict[str, Any]:
        return {"data_fingerprint": self.data_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "max_source_length": self.max_source_length, "max_target_length": self.max_target_length,
                "batch_size": self.batch_size, "shuffle_seed": self.shuffle_seed, "sampler": self.train_order}


__all__ = ["Seq2SeqDataModule", "Seq2SeqCollator", "PairFeatures", "encode_pairs", "end_sequence", "ends_added", "read_parallel", "SEQ2SEQ_VERSION"]
