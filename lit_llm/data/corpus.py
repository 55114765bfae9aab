"""Causal-LM pretraining data: raw text -> train/validation split -> tokens -> packed blocks.

Flow (the orchestration calls these in order):

    dm = CorpusDataModule(files=..., block_size=256)
    dm.load_raw()                         # DatasetDict train/validation/eval_*, dm.data_fingerprint
    tok, tok_fp = get_tokenizer(..., texts=dm.train_texts, fingerprint=dm.data_fingerprint)
    dm.set_tokenizer(tok, tok_fp)
    trainer.fit(model, datamodule=dm)     # prepare_data + setup: tokenize, pack, cache

Packing: every split is one token stream (each document followed by `<eos>`) cut into blocks of
`block_size + 1` tokens with stride `block_size`; block i is stream[i*B : i*B + B + 1], so
consecutive blocks share one token and every token after the first is a target exactly once.
A batch is `input_ids = block[:, :-1]`, `labels = block[:, 1:]` (objective "clm"), or, with
objective "mlm", `block[:, :-1]` masked BERT-style by `collate.MLMCollator` ({"input_ids",
"attention_mask", "labels"}; training batches masked afresh from the global RNG, evaluation
batches masked once with a fixed seed so every validation sees the same masks).

Packed splits are cached in `<cache_dir>/tokenized/<key>/<split>` (key: data fingerprint,
tokenizer fingerprint, block size, packing version), written to a temporary directory and
renamed, so an interrupted run never leaves a directory that looks complete. A split is tokenized in
batches straight into a token file there (`data/token_stream.py`: uint16 ids when the vocabulary has at
most 65,536 tokens, else uint32) and its blocks are a memory-mapped view of that file, so neither
building nor loading a split holds the corpus in memory.

Streaming (`streaming=True`, `data/streaming.py`): the training split is read lazily
(`datasets.load_dataset(..., streaming=True)`: files or a hub dataset) and packed on the fly into the
same blocks, in source order, endlessly (pass after pass); the position in the stream (the source's
`state_dict()`, the tokens read but not yet packed, the blocks done) is saved with the data module's
state in every checkpoint, so a resumed run continues at the block where the interrupted one stopped.
Validation is bounded: the first `val_documents` documents of the source's "validation" split, or,
when it has none, the first `val_documents` documents of the training stream, which training then
skips; a source "test" split gives its first `val_documents` too, `eval_files` corpora are read
whole. These are tokenized and cached as above.

This module holds only what is particular to corpora (packing, the "tail" hold-out, the objectives);
the shared mechanics (hold-out permutation, special tokens, the split cache) are in `data/base.py`,
samplers and loaders in `data/loading.py`.
"""
from __future__ import annotations

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
from torch.utils.data import DataLoader

from lit_llm.data.base import (
    DataModuleProtocol,
    TokenizedSplitsMixin,
    document_end_id,
    hold_out_indices,
    holdout_size,
    renamed_setting,
    require_choice,
    require_fraction,
    require_int,
    require_special_tokens,
    resolve_special_ids,
    text_batches,
)
from lit_llm.data.collate import InfillingCollator, MLMCollator
from lit_llm.data.loading import ResumableDataLoader, ResumableTrainMixin
from lit_llm.data.sources import load_text_dataset, nonempty_rows
from lit_llm.data.streaming import PackedStream, load_text_streams, materialize
from lit_llm.data.token_stream import TokenBlocks, num_blocks, open_blocks, write_token_stream
from lit_llm.errors import ConfigError
from lit_llm.tokenization import MASK, PAD
from lit_llm.utils_io import sha256_json

log = logging.getLogger("lit_llm")

PACKING_VERSION = 2  # bump when tokenization/packing changes: old cache entries are then ignored
HOLDOUTS = ("rows", "tail")  # data.holdout (formerly data.split)
OBJECTIVES = ("clm", "mlm", "denoise")


# ----------------------------------------------------------------------------- packing

def pack_blocks(stream: np.ndarray, block_size: int) -> np.ndarray:
    """Cut a 1-D token stream into [n, block_size + 1] blocks with stride `block_size`.

    n = (len(stream) - 1) // block_size; the remainder is dropped. Row i is
    stream[i*B : i*B + B + 1] (one shared token between consecutive rows).
    """
    stream = np.asarray(stream)
    n = max(0, (len(stream) - 1) // block_size)
    if n == 0:
        return np.empty((0, block_size + 1), dtype=stream.dtype)
    body = stream[: n * block_size].reshape(n, block_size)
    last = stream[block_size : n * block_size + 1 : block_size]  # stream[(i + 1) * B]
    return np.concatenate([body, last[:, None]], axis=1)


def tokenize_split(ds: datasets.Dataset, tokenizer: Tokenizer, eos_id: int, out_dir: Path,
                   num_proc: int = 1) -> dict[str, Any]:
    """Tokenize every document of `ds` (`text` column), `<eos>` after each, into one token file in `out_dir`
    (`token_stream.write_token_stream`); return {"documents", "tokens", "dtype"}. `open_blocks(out_dir,
    block_size)` then gives the blocks `pack_blocks` would cut from that stream, memory-mapped."""
    return write_token_stream(ds, tokenizer, eos_id, out_dir, num_proc=num_proc)


# ----------------------------------------------------------------------------- batches

class BlockDataset(torch.utils.data.Dataset):
    """Rows of a [n, block_size + 1] token array (a `TokenBlocks` pickles as its file name, so DataLoader
    workers open the file themselves); `__getitems__` gathers a whole batch at once."""

    def __init__(self, blocks: np.ndarray | TokenBlocks):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.blocks[index]

    def __getitems__(self, indices: list[int]) -> np.ndarray:
        return self.blocks[np.asarray(indices, dtype=np.int64)]


def collate_blocks(batch: np.ndarray | list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Blocks [B, T+1] -> {"input_ids": [B, T], "labels": [B, T]} (int64, labels shifted by one)."""
    arr = batch if isinstance(batch, np.ndarray) else np.stack(batch)
    blocks = torch.from_numpy(arr.astype(np.int64))
    return {"input_ids": blocks[:, :-1].contiguous(), "labels": blocks[:, 1:].contiguous()}


# ----------------------------------------------------------------------------- data module

class CorpusDataModule(DataModuleProtocol, TokenizedSplitsMixin, ResumableTrainMixin, pl.LightningDataModule):
    """Packed causal-LM batches from text files or a hub dataset (see the module docstring).

    `holdout`: how validation is held out when the source has no "validation" split (`split`, its old
    name, is read for one release with a deprecation message):
      - "rows": a seeded random `val_fraction` of the rows (order kept in both parts);
      - "tail": the last `val_fraction` of every row's characters (nanoGPT's shakespeare_char
        split with sample_by=document: first 90% train, last 10% validation).
    A source split named "test" becomes the evaluation corpus "test". `eval_files`
    (`{name: path/glob}`) adds evaluation corpora, tested after the held-out validation split:
    `test_dataloader()` returns [validation, eval corpora...] named by `self.test_names`.

    `objective`: "denoise" (BART text infilling of `block[:, :-1]` for encoder-decoders, covering
    `mlm_probability` of the tokens, e.g. 0.3; `collate.InfillingCollator`), "clm" (next-token labels)
    or "mlm" (BERT masking of `block[:, :-1]` with
    probability `mlm_probability`; see the module docstring). Packing and caches are shared.

    `streaming`: read the training split lazily and pack it on the fly (see the module docstring);
    `val_documents` bounds the held-out validation then (`holdout` and `val_fraction` are not used).
    """

    def __init__(
        self,
        files: Any = None,
        hub_name: str | None = None,
        hub_config: str | None = None,
        text_column: str = "text",
        sample_by: str = "line",
        eval_files: Mapping[str, Any] | None = None,
        val_fraction: float = 0.05,
        holdout: str | None = None,
        split_seed: int = 1234,
        block_size: int = 256,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_proc: int = 1,
        cache_dir: str = ".cache",
        shuffle_seed: int = 1234,
        objective: str = "clm",
        mlm_probability: float = 0.15,
        split: str | None = None,
        streaming: bool = False,
        val_documents: int = 1000,
    ):
        super().__init__()
        holdout = renamed_setting("split", "holdout", split, holdout) or "rows"
        if streaming and holdout == "tail":
            raise ConfigError("data.holdout=tail cuts every document, which data.streaming=true does not hold in memory; "
                              "drop data.holdout (streaming holds out the first data.val_documents documents).")
        require_int("data.val_documents", val_documents)
        require_choice("data.objective", objective, OBJECTIVES)
        require_fraction("data.mlm_probability", mlm_probability, why=", e.g. 0.15")
        require_choice("data.holdout", holdout, HOLDOUTS)
        require_int("data.block_size", block_size)
        require_int("data.batch_size", batch_size)
        if eval_batch_size is not None:
            require_int("data.eval_batch_size", eval_batch_size, why=" or null")
        self.files = files
        self.hub_name = hub_name
        self.hub_config = hub_config
        self.text_column = text_column
        self.sample_by = sample_by
        self.eval_files = dict(eval_files) if eval_files else None
        self.val_fraction = val_fraction
        self.holdout = holdout
        self.split_seed = split_seed
        self.block_size = block_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.num_proc = num_proc
        self.cache_dir = os.fspath(cache_dir)
        self.shuffle_seed = shuffle_seed
        self.objective = objective
        self.mlm_probability = float(mlm_probability)
        self.streaming = bool(streaming)
        self.val_documents = val_documents
        self.train_stream: datasets.IterableDataset | None = None  # streaming: the training documents
        self._stream: PackedStream | None = None  # streaming: the train loader's packed stream
        self._restored_stream: dict[str, Any] | None = None  # streaming: the position in a checkpoint

        self.mlm_collator: MLMCollator | InfillingCollator | None = None
        self.test_names: list[str] = ["validation"]

    @property
    def blocks(self) -> dict[str, np.ndarray]:
        """The opened splits: {split: packed blocks [n, block_size + 1]} (read-only memory-mapped views;
        with streaming, no "train")."""
        return {split: blocks.array for split, blocks in self.opened.items()}

    # -- the data-module protocol (base.DataModuleProtocol) -----------------------------------
    def max_sequence_length(self) -> tuple[str, int]:
        if self.objective == "denoise":  # source and target are a block + <eos>
            return "data.block_size (+1 for <eos>, data.objective=denoise)", self.block_size + 1
        return "data.block_size", self.block_size

    def test_split_names(self) -> list[str]:
        """train (not when streaming), validation (the held-out split) and each evaluation corpus by name."""
        return [*([] if self.streaming else ["train"]), "validation", *self._eval_corpora()]

    def _eval_corpora(self) -> list[str]:
        """The names of the evaluation corpora (splits "eval_<name>")."""
        return [k[len("eval_"):] for k in self.load_raw() if k.startswith("eval_")]

    # -- 1. raw text -----------------------------------------------------------------------
    def load_raw(self) -> datasets.DatasetDict:
        """Load the source, hold out validation if needed; set `raw` and `data_fingerprint`
        (streaming: `raw` holds the evaluation splits, `train_stream` the training documents)."""
        if self.raw is not None:
            return self.raw
        if self.streaming:
            return self._load_streams()
        source, source_fp = load_text_dataset(
            files=self.files, hub_name=self.hub_name, hub_config=self.hub_config,
            text_column=self.text_column, sample_by=self.sample_by,
            cache_dir=self.cache_dir, eval_files=self.eval_files,
        )
        if "train" not in source:
            raise ConfigError(
                f"data.files has no 'train' split (splits: {list(source)}); name the training files "
                f"data.files.train=<path or glob>."
            )
        split_info: dict[str, Any] | None = None
        if "validation" in source:
            train, validation = source["train"], source["validation"]
        else:
            train, validation = self._hold_out(source["train"])
            # the key "split" (data.holdout's old name) stays: data fingerprints and caches do not change
            split_info = {"split": self.holdout, "val_fraction": self.val_fraction, "seed": self.split_seed}
        raw = {"train": train, "validation": validation}
        for name, ds in source.items():
            if name.startswith("eval_"):
                raw[name] = ds
            elif name == "test" and "eval_test" not in source:
                raw["eval_test"] = ds
            elif name not in ("train", "validation"):
                log.info("data: ignoring source split %r (use data.eval_files to evaluate on it)", name)
        self.raw = datasets.DatasetDict(raw)
        self.test_names = ["validation", *self._eval_corpora()]
        self.data_fingerprint = sha256_json({"source": source_fp, "holdout": split_info, "splits": list(raw)})
        return self.raw

    def _load_streams(self) -> datasets.DatasetDict:
        streams, source_fp = load_text_streams(
            files=self.files, hub_name=self.hub_name, hub_config=self.hub_config, text_column=self.text_column,
            sample_by=self.sample_by, eval_files=self.eval_files)
        if "train" not in streams:
            raise ConfigError(f"the source has no 'train' split (splits: {list(streams)}); name the training files "
                              "data.files.train=<path or glob>.")
        train, n = streams["train"], self.val_documents
        held_out_from = "validation" if "validation" in streams else "train"
        validation = materialize(streams[held_out_from], n)
        if held_out_from == "train":
            train = train.skip(n)
        if len(validation) == 0:
            raise ConfigError(f"the {held_out_from} split has no documents to validate on; check data.files.")
        raw = {"validation": validation}
        for name, stream in streams.items():
            if name.startswith("eval_"):
                raw[name] = materialize(stream)
            elif name == "test" and "eval_test" not in streams:
                raw["eval_test"] = materialize(stream, n)
            elif name not in ("train", "validation"):
                log.info("data: ignoring source split %r (use data.eval_files to evaluate on it)", name)
        self.train_stream, self.raw = train, datasets.DatasetDict(raw)
        self.test_names = ["validation", *self._eval_corpora()]
        holdout = {"streaming": True, "val_documents": n, "from": held_out_from}
        self.data_fingerprint = sha256_json({"source": source_fp, "holdout": holdout, "splits": ["train", *raw]})
        log.info("data: streaming the training split; validation: the first %d documents of the %s split%s",
                 len(validation), held_out_from, ", which training skips" if held_out_from == "train" else "")
        return self.raw

    def _hold_out(self, ds: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
        f = self.val_fraction
        require_fraction("data.val_fraction", f,
                         why=" (the source has no validation split to use instead); e.g. data.val_fraction=0.1")
        if self.holdout == "rows":
            n = len(ds)
            if n < 2:
                raise ConfigError(
                    f"data.holdout=rows needs at least 2 rows to hold some out, the train split has {n} "
                    f"(a single document?); use data.holdout=tail or data.sample_by=line."
                )
            validation, train = hold_out_indices(n, [min(n - 1, holdout_size(n, f))], self.split_seed)
            return ds.select(train), ds.select(validation)
        # tail: cut every row at int(len * (1 - f)) characters
        cut = ds.map(_cut_tail, batched=True, fn_kwargs={"keep": 1.0 - f}, remove_columns=ds.column_names,
                     desc="holding out the tail")
        train = cut.select_columns(["head"]).rename_column("head", "text").filter(nonempty_rows, batched=True)
        val = cut.select_columns(["tail"]).rename_column("tail", "text").filter(nonempty_rows, batched=True)
        if len(val) == 0 or len(train) == 0:
            raise ConfigError(
                f"data.val_fraction={f} with data.holdout=tail leaves an empty "
                f"{'validation' if len(val) == 0 else 'train'} split; change data.val_fraction."
            )
        return train, val

    # -- 2./3. tokenizer ---------------------------------------------------------------------
    def train_texts(self, batch_size: int = 1000) -> Iterator[list[str]]:
        """Batches (lists of str) of the train split's texts, for tokenizer training.

        Pass the bound method itself as `get_tokenizer(texts=dm.train_texts, ...)`. Streaming: one
        pass over the training stream (or give a trained tokenizer: tokenizer=pretrained).
        """
        if self.streaming:
            self.load_raw()
            return (batch["text"] for batch in self.train_stream.iter(batch_size=batch_size))
        return text_batches(self.load_raw()["train"], ("text",), batch_size)

    def set_tokenizer(self, tokenizer: Tokenizer, tokenizer_fingerprint: str | None = None,
                      special_ids: Mapping[str, int] | None = None) -> None:
        """Use `tokenizer` (fingerprint: as returned by get_tokenizer; computed when omitted).

        `special_ids` ({"mask": 103, "pad": 0, "sep": 102, ...}) overrides our special tokens'
        ids, for tokenizers that name them differently (a Hugging Face WordPiece tokenizer).
        """
        self._use_tokenizer(tokenizer, tokenizer_fingerprint, resolve_special_ids(tokenizer, special_ids))
        self.mlm_collator = None
        if self.objective == "denoise":
            require_special_tokens(self.special_ids, ("mask", "pad", "eos", "bos"),
                                   "data.objective=denoise (text infilling: <mask> spans, <bos> target <eos>)",
                                   "use a tokenizer trained by lit-llm (tokenizer.kind=bpe|char)")
            self.mlm_collator = InfillingCollator(
                mask_id=self.special_ids["mask"], eos_id=self.special_ids["eos"], start_id=self.special_ids["bos"],
                pad_id=self.special_ids["pad"], mask_ratio=self.mlm_probability)
        if self.objective == "mlm":
            require_special_tokens(self.special_ids, ("mask", "pad"), "data.objective=mlm (BERT masking)",
                                   f"use a tokenizer trained by lit-llm (tokenizer.kind=bpe|char) or one that has "
                                   f"{MASK} and {PAD}")
            self.mlm_collator = MLMCollator(
                mask_id=self.special_ids["mask"], vocab_size=tokenizer.get_vocab_size(),
                special_ids=list(self.special_ids.values()), mlm_probability=self.mlm_probability,
                pad_id=self.special_ids["pad"])

    def _document_end_id(self) -> int:
        return document_end_id(self.tokenizer, self.special_ids)

    # -- 4. tokenize, pack, cache -----------------------------------------------------------
    def _cache_key(self) -> dict[str, Any]:
        return {"data": self.data_fingerprint, "tokenizer": self.tokenizer_fingerprint,
                "block_size": self.block_size, "version": PACKING_VERSION}

    def _open_split(self, split: str, path: Path) -> None:
        log.info("data: %s blocks loaded from %s", split, path)
        self.opened[split] = open_blocks(path, self.block_size)

    def _build_split(self, split: str, out_dir: Path) -> dict[str, Any]:
        """Tokenize `split` into a token file in `out_dir` (its blocks: a view of it); return its statistics."""
        t0 = time.perf_counter()
        ds = self.raw[split]
        written = tokenize_split(ds, self.tokenizer, self._document_end_id(), out_dir, self.num_proc)
        blocks = num_blocks(written["tokens"], self.block_size)
        if blocks == 0:
            raise ConfigError(self._too_short_message(split, written["tokens"]))
        seconds = time.perf_counter() - t0
        stats = {"documents": written["documents"], "tokens": written["tokens"], "blocks": blocks,
                 "dtype": written["dtype"]}
        log.info(
            "data: tokenized %s: %d documents, %d tokens, %d blocks of %d in %.1fs (%.0f tokens/s)",
            split, stats["documents"], stats["tokens"], stats["blocks"], self.block_size,
            seconds, stats["tokens"] / max(seconds, 1e-9),
        )
        return stats

    def _too_short_message(self, split: str, n_tokens: int) -> str:
        head = f"data.block_size={self.block_size} is larger than the {{}} ({n_tokens} tokens); lower data.block_size"
        if split == "validation":
            return head.format("validation split") + " or raise data.val_fraction."
        if split == "train":
            return head.format("train split") + " or add training text (data.files)."
        name = split[len("eval_"):]
        return head.format(f"evaluation corpus {name!r}") + f" or drop data.eval_files.{name}."

    # -- 5. loaders --------------------------------------------------------------------------
    def _collate_fn(self):
        return collate_blocks if self.objective == "clm" else _FirstTokens(self._corrupt())

    def _corrupt(self):
        """What corrupts a batch of ids [B, T]: BERT masking (mlm) or text infilling (denoise)."""
        if self.mlm_collator is None:
            raise RuntimeError("CorpusDataModule: call set_tokenizer(...) before building loaders")
        return self.mlm_collator.mask_tokens if self.objective == "mlm" else self.mlm_collator

    def _loader(self, blocks: TokenBlocks, batch_size: int, loader_cls: type = DataLoader, **kwargs: Any) -> DataLoader:
        return loader_cls(BlockDataset(blocks), batch_size=batch_size, collate_fn=self._collate_fn(),
                          **self.loader_kwargs(), **kwargs)

    def _eval_loader(self, split: str) -> DataLoader:
        blocks = self.opened_split(split)
        if self.objective == "clm":
            return self._loader(blocks, self.eval_batch_size, shuffle=False, sampler=self.eval_sampler(len(blocks), split))
        # MLM: mask once, batch by batch, with a fixed seed: every evaluation sees the same masks
        # and the global RNG (training masks, dropout) is not consumed by validation.
        gen = torch.Generator().manual_seed(self.shuffle_seed)
        inputs = torch.from_numpy(np.ascontiguousarray(blocks[:, :-1], dtype=np.int64))
        corrupt = self._corrupt()
        batches = [corrupt(inputs[i : i + self.eval_batch_size], generator=gen)
                   for i in range(0, len(inputs), self.eval_batch_size)]
        return DataLoader(batches, batch_size=None, shuffle=False, sampler=self.eval_sampler(len(batches), split),
                          **self.loader_kwargs())

    def _train_size(self) -> int:
        return len(self.opened_split("train"))

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return self._stream_loader()
        blocks = self.opened_split("train")
        if len(blocks) < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the train split ({len(blocks)} blocks of "
                f"{self.block_size} tokens); lower data.batch_size or data.block_size."
            )
        return self._loader(blocks, self.batch_size, sampler=self.make_train_sampler(), drop_last=True,
                            loader_cls=ResumableDataLoader)

    def _stream_loader(self) -> DataLoader:
        """The training blocks packed on the fly, from the trainer's position (see the module docstring).
        In this process (no DataLoader workers): the stream is read in order and its position saved."""
        self.load_raw()
        if self.tokenizer is None:
            raise RuntimeError("CorpusDataModule: call set_tokenizer(...) before building loaders")
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        self._stream = None  # a new stream (a reloaded loader): the old one's position is not asked for
        if trainer is not None:
            self._check_restored_state()
        if self.num_workers:
            log.info("data: streaming: the training blocks are packed in the main process (data.num_workers=%d "
                     "serves the evaluation loaders)", self.num_workers)
        self._stream = PackedStream(self.train_stream, self.tokenizer, self._document_end_id(), self.block_size,
                                    rank=rank, world_size=world, start=self._restored_stream,
                                    position=self._consumed_blocks if trainer is not None else None,
                                    window=max(4096, 8 * self.batch_size * world))
        kwargs = {**self.loader_kwargs(), "num_workers": 0, "persistent_workers": False}  # its generator, see there
        return ResumableDataLoader(self._stream, batch_size=self.batch_size, collate_fn=self._collate_fn(),
                                   drop_last=True, **kwargs)

    def _consumed_blocks(self) -> int | None:
        """Global blocks the attached trainer has trained on (all ranks): its optimizer steps x accumulation x
        batch size x processes; None without a trainer."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        return (int(trainer.global_step) * int(trainer.accumulate_grad_batches) * self.batch_size
                * int(trainer.world_size))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(self.split_of(name)) for name in self.test_names]

    def split_of(self, test_name: str) -> str:
        """The cached split behind a test name: an evaluation corpus `<name>` is "eval_<name>";
        "train" and "validation" (the held-out split) name themselves (pipelines/evaluate.py split=)."""
        if test_name in ("train", "validation"):
            return test_name
        return f"eval_{test_name}"

    # -- checkpoint state: detect resuming on different data (ResumableTrainMixin) --------------
    def state_dict(self) -> dict[str, Any]:
        state = {"data_fingerprint": self.data_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                 "block_size": self.block_size, "batch_size": self.batch_size, "shuffle_seed": self.shuffle_seed}
        if self.objective != "clm":
            state.update(objective=self.objective, mlm_probability=self.mlm_probability)
        if self.streaming and self._stream is not None:
            consumed = self._consumed_blocks()
            position = self._stream.state_at(self._stream.produced if consumed is None else consumed)
            if position is None:
                log.warning("data: streaming: the position at block %s is no longer known; a run resumed from this "
                            "checkpoint reads the stream again from the start up to it", consumed)
            else:
                state["stream"] = position
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self._restored_stream = state.pop("stream", None)
        super().load_state_dict(state)


class _FirstTokens:
    """Collate packed blocks [B, T+1] by handing their first T tokens (int64 [B, T]) to `corrupt`:
    BERT masking (`MLMCollator.mask_tokens`) or text infilling (an `InfillingCollator`)."""

    def __init__(self, corrupt):
        self.corrupt = corrupt

    def __call__(self, batch: np.ndarray | list[np.ndarray]) -> dict[str, torch.Tensor]:
        arr = batch if isinstance(batch, np.ndarray) else np.stack(batch)
        return self.corrupt(torch.from_numpy(arr[:, :-1].astype(np.int64)))


def _cut_tail(batch: dict[str, list], keep: float) -> dict[str, list]:
    heads, tails = [], []
    for text in batch["text"]:
        cut = int(len(text) * keep)
        heads.append(text[:cut])
        tails.append(text[cut:])
    return {"head": heads, "tail": tails}


__all__ = [
    "CorpusDataModule", "BlockDataset", "collate_blocks", "pack_blocks", "tokenize_split", "HOLDOUTS", "OBJECTIVES",
    "PACKING_VERSION",
]
