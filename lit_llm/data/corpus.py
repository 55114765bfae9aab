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
renamed, so an interrupted run never leaves a directory that looks complete.
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
import pyarrow as pa
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, DistributedSampler

from lit_llm.data.collate import InfillingCollator, MLMCollator
from lit_llm.data.base import TokenizedSplitsMixin
from lit_llm.data.sources import load_text_dataset, nonempty_rows
from lit_llm.errors import ConfigError
from lit_llm.tokenization import BOS, EOS, MASK, PAD, SPECIAL_TOKENS, token_id
from lit_llm.tokenization import tokenizer_fingerprint as _fingerprint_of
from lit_llm.utils_io import sha256_json

log = logging.getLogger("lit_llm")

PACKING_VERSION = 1  # bump when tokenization/packing changes: old cache entries are then ignored
SPLITS = ("rows", "tail")
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


def _encode_batch(batch: dict[str, list], tokenizer: Tokenizer, eos_id: int) -> dict[str, list]:
    encodings = tokenizer.encode_batch(batch["text"], add_special_tokens=False)
    return {"ids": [enc.ids + [eos_id] for enc in encodings]}


def tokenize_split(ds: datasets.Dataset, tokenizer: Tokenizer, eos_id: int, num_proc: int = 1,
                   fingerprint: str | None = None) -> np.ndarray:
    """Tokenize every document of `ds` (`text` column) and return one int32 stream, `<eos>` after each."""
    mapped = ds.map(
        _encode_batch,
        batched=True,
        batch_size=1000,
        num_proc=num_proc if num_proc > 1 and len(ds) > 1 else None,
        remove_columns=ds.column_names,
        fn_kwargs={"tokenizer": tokenizer, "eos_id": eos_id},
        features=datasets.Features({"ids": datasets.List(datasets.Value("int32"))}),
        new_fingerprint=fingerprint,  # given, so datasets does not hash the tokenizer
        desc="tokenizing",
    )
    if mapped._indices is not None:
        mapped = mapped.flatten_indices()
    chunks = mapped.data.column("ids").chunks
    parts = [c.flatten().to_numpy(zero_copy_only=False) for c in chunks]
    return np.concatenate(parts).astype(np.int32, copy=False) if parts else np.empty(0, np.int32)


def _blocks_to_dataset(blocks: np.ndarray) -> datasets.Dataset:
    width = blocks.shape[1]
    values = pa.array(np.ascontiguousarray(blocks, dtype=np.int32).ravel())
    table = pa.table({"ids": pa.FixedSizeListArray.from_arrays(values, width)})
    return datasets.Dataset(datasets.table.InMemoryTable(table))


def _dataset_to_blocks(ds: datasets.Dataset) -> np.ndarray:
    """[n, width] int32 array over the (memory-mapped) Arrow data; no copy for a single chunk."""
    column = ds.data.column("ids")
    width = ds.features["ids"].length
    parts = [c.flatten().to_numpy(zero_copy_only=False) for c in column.chunks]
    flat = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, np.int32)
    return flat.reshape(-1, width)


# ----------------------------------------------------------------------------- batches

class BlockDataset(torch.utils.data.Dataset):
    """Rows of a [n, block_size + 1] token array; `__getitems__` gathers a whole batch at once."""

    def __init__(self, blocks: np.ndarray):
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


class ResumableRandomSampler(DistributedSampler):
    """Seeded shuffling that a resumed run can fast-forward: epoch e uses
    `torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))`.

    - `set_epoch(e)` picks the permutation (Lightning calls it every epoch).
    - `start_index`: samples of this replica's share to skip in the next iteration only, then 0.
    - `num_replicas`/`rank`: under DDP every rank takes `perm[rank:total:num_replicas]` (the
      tail that does not divide evenly is dropped). Subclassing `DistributedSampler` tells
      Lightning not to wrap it in another (re-shuffling) distributed sampler.
    - `len()` is always the full share, whatever `start_index`: Lightning computes the number of
      batches per epoch once and, on resume, counts the batches already done itself.
    """

    def __init__(self, dataset_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        # DistributedSampler.__init__ is not called: it needs a dataset and a process group.
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.dataset_size = int(dataset_size)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = True
        self.drop_last = True
        self.num_samples = self.dataset_size // self.num_replicas
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0
        self.start_index = 0
        # Lightning calls set_epoch(its epoch number) at each epoch start. After a resume its
        # number need not be the data's epoch (a checkpoint saved after fit() ended counts the
        # last, unfinished epoch as done), so the first call after `resume_at` fixes the offset.
        self.epoch_offset = 0
        self._align = False

    def resume_at(self, epoch: int, start_index: int) -> None:
        """Continue with data epoch `epoch`, skipping its first `start_index` samples."""
        self.epoch, self.start_index, self._align = int(epoch), int(start_index), True

    def set_epoch(self, epoch: int) -> None:
        if self._align:
            self.epoch_offset, self._align = self.epoch - int(epoch), False
        self.epoch = int(epoch) + self.epoch_offset

    def permutation(self, epoch: int | None = None) -> list[int]:
        """This replica's full order for `epoch` (default: the current one)."""
        gen = torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else epoch))
        perm = torch.randperm(self.dataset_size, generator=gen)
        return perm[self.rank : self.total_size : self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.permutation()
        start, self.start_index = self.start_index, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return self.num_samples


class EvalShardSampler(DistributedSampler):
    """The evaluation order under N processes: rank r takes items r, r + N, r + 2N, ... so every
    example (or pre-made batch) is evaluated exactly once. Lightning's default DistributedSampler
    pads the shares to equal length with repeated examples, which the synced metrics would count
    twice. Shares may differ by one item; subclassing `DistributedSampler` tells Lightning not to
    wrap it."""

    def __init__(self, dataset_size: int, num_replicas: int, rank: int, split: str = "evaluation"):
        # DistributedSampler.__init__ is not called: it needs a dataset and a process group.
        if dataset_size < num_replicas:
            raise ConfigError(f"the {split} split has {dataset_size} items for {num_replicas} processes: every "
                              "process needs one; use fewer devices (trainer.devices) or a larger split")
        self.dataset_size, self.num_replicas, self.rank = int(dataset_size), int(num_replicas), int(rank)
        self.shuffle, self.drop_last, self.epoch, self.seed = False, False, 0, 0
        self.num_samples = len(range(self.rank, self.dataset_size, self.num_replicas))
        self.total_size = self.dataset_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """The train loader. Its position is restored from the trainer's global step (see
    `CorpusDataModule.make_train_sampler`), not from this state; `state_dict` exists so that
    Lightning knows the loader resumes exactly (and does not warn that it cannot), and
    `load_state_dict` checks that the checkpoint was made with the same order of samples."""

    def state_dict(self) -> dict[str, Any]:
        s = self.sampler
        if not isinstance(s, ResumableRandomSampler):  # e.g. Lightning's overfit_batches swaps in its own
            return {}
        return {"dataset_size": s.dataset_size, "seed": s.seed, "batch_size": self.batch_size,
                "num_replicas": s.num_replicas}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        changed = sorted(k for k, v in self.state_dict().items() if state_dict.get(k, v) != v)
        if changed:
            log.warning("data: the checkpoint was made with a different %s; the resumed data order "
                        "will not match the interrupted run", ", ".join(changed))


def _limit_batches(num_batches: int, limit: Any) -> int:
    """Lightning's `limit_train_batches` rule (int: at most that many; float: that fraction)."""
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(num_batches, limit)
    if isinstance(limit, float):
        return int(num_batches * limit)
    return num_batches


class ResumableTrainMixin:
    """The resumable train order shared by the data modules (mixed into a LightningDataModule).

    A subclass provides `_train_size()` (samples in the train split), `batch_size`,
    `shuffle_seed`, `num_workers` and `state_dict()`; it may override `_new_train_sampler`
    (e.g. length bucketing). It gets `make_train_sampler()` (fast-forwarded to a resumed
    trainer's progress), `loader_kwargs()` (the loader settings every loader shares) and the
    check that a resumed run uses the checkpoint's data settings.
    """

    _restored_state: dict[str, Any]

    def _train_size(self) -> int:
        raise NotImplementedError

    def _new_train_sampler(self, num_replicas: int, rank: int) -> ResumableRandomSampler:
        return ResumableRandomSampler(self._train_size(), self.shuffle_seed, num_replicas=num_replicas, rank=rank)

    def make_train_sampler(self) -> ResumableRandomSampler:
        """The train sampler, fast-forwarded to the attached trainer's restored progress.

        consumed batches = global_step * accumulate_grad_batches (per process), so a run
        resumed from a checkpoint sees exactly the batches an uninterrupted run would (as
        long as batches per epoch is a multiple of accumulate_grad_batches).
        """
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = self._new_train_sampler(world, rank)
        if trainer is None:
            return sampler
        self._check_restored_state()
        batches_per_epoch = _limit_batches(sampler.num_samples // self.batch_size, trainer.limit_train_batches)
        consumed = int(trainer.global_step) * int(trainer.accumulate_grad_batches)
        if consumed and batches_per_epoch > 0:
            epoch, done = divmod(consumed, batches_per_epoch)
            sampler.resume_at(epoch, done * self.batch_size)
            log.info("data: resuming at epoch %d, skipping %d batches already seen", epoch, done)
        return sampler

    def eval_sampler(self, size: int, split: str) -> EvalShardSampler | None:
        """Under DDP, this process's share of an evaluation split (each item once); else None."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size == 1:
            return None
        return EvalShardSampler(size, trainer.world_size, trainer.global_rank, split)

    def loader_kwargs(self) -> dict[str, Any]:
        # A DataLoader draws its workers' base seed from `generator` each time it is iterated;
        # without one it draws from the global RNG, so a resumed run (which starts a new
        # iterator mid-epoch) would shift the dropout masks of an uninterrupted run.
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0,
                "pin_memory": torch.cuda.is_available(),
                "generator": torch.Generator().manual_seed(self.shuffle_seed)}

    # -- checkpoint state: detect resuming on different data -----------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_state = dict(state_dict)

    def _check_restored_state(self) -> None:
        restored, current = getattr(self, "_restored_state", {}), self.state_dict()
        changed = {k: (v, current.get(k)) for k, v in restored.items() if current.get(k) != v}
        if changed:
            log.warning("data: resuming with different data settings than the checkpoint %s; "
                        "the data order will not match the interrupted run", sorted(changed))


class ExampleLoadersMixin:
    """Train/validation/test loaders of the example-based data modules (classification, QA, seq2seq).

    A subclass provides `_dataset(split)` (a map-style dataset of the cached split), `collator()`,
    `batch_size`, `eval_batch_size`, `test_names` and `UNIT` (what a train sample is called in messages);
    the train loader uses `make_train_sampler()` (ResumableTrainMixin) and drops the last partial batch.
    """

    UNIT = "examples"

    def _train_size(self) -> int:
        return len(self._dataset("train"))

    def _loader(self, split: str, batch_size: int, loader_cls: type = DataLoader, **kwargs: Any) -> DataLoader:
        return loader_cls(self._dataset(split), batch_size=batch_size, collate_fn=self.collator(),
                          **self.loader_kwargs(), **kwargs)

    def train_dataloader(self) -> DataLoader:
        n = self._train_size()
        if n < self.batch_size:
            raise ConfigError(f"data.batch_size={self.batch_size} is larger than the train split ({n} {self.UNIT}); "
                              "lower data.batch_size.")
        return self._loader("train", self.batch_size, loader_cls=ResumableDataLoader,
                            sampler=self.make_train_sampler(), drop_last=True)

    def _eval_loader(self, split: str) -> DataLoader:
        return self._loader(split, self.eval_batch_size, shuffle=False,
                            sampler=self.eval_sampler(len(self._dataset(split)), split))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(name) for name in self.test_names]


def resolve_special_ids(tokenizer: Tokenizer, given: Mapping[str, int] | None = None) -> dict[str, int]:
    """{"pad": id, "cls": id, ...}: `given` (keys "cls" or "<cls>"; e.g. a WordPiece tokenizer's
    [CLS]/[SEP]/[PAD] ids) first, then our SPECIAL_TOKENS that the tokenizer has."""
    out: dict[str, int] = {}
    for tok in SPECIAL_TOKENS:
        idx = tokenizer.token_to_id(tok)
        if idx is not None:
            out[tok.strip("<>")] = idx
    for name, idx in (given or {}).items():
        out[str(name).strip("<>").lower()] = int(idx)
    return out


# ----------------------------------------------------------------------------- data module

class CorpusDataModule(TokenizedSplitsMixin, ResumableTrainMixin, pl.LightningDataModule):
    """Packed causal-LM batches from text files or a hub dataset (see the module docstring).

    `split`: how validation is held out when the source has no "validation" split:
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
        split: str = "rows",
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
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ConfigError(f"data.objective={objective!r} is not one of {list(OBJECTIVES)}; pick one of them.")
        if isinstance(mlm_probability, bool) or not isinstance(mlm_probability, (int, float)) \
                or not 0 < mlm_probability < 1:
            raise ConfigError(f"data.mlm_probability={mlm_probability!r} must be a number in (0, 1), e.g. 0.15.")
        if split not in SPLITS:
            raise ConfigError(f"data.split={split!r} is not one of {list(SPLITS)}; pick one of them.")
        for key, value in (("data.block_size", block_size), ("data.batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}={value!r} must be a positive integer.")
        if eval_batch_size is not None and (not isinstance(eval_batch_size, int) or eval_batch_size < 1):
            raise ConfigError(f"data.eval_batch_size={eval_batch_size!r} must be a positive integer or null.")
        self.files = files
        self.hub_name = hub_name
        self.hub_config = hub_config
        self.text_column = text_column
        self.sample_by = sample_by
        self.eval_files = dict(eval_files) if eval_files else None
        self.val_fraction = val_fraction
        self.split = split
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

        self.raw: datasets.DatasetDict | None = None
        self.data_fingerprint: str | None = None
        self.tokenizer: Tokenizer | None = None
        self.tokenizer_fingerprint: str | None = None
        self.special_ids: dict[str, int] = {}
        self.mlm_collator: MLMCollator | None = None
        self.blocks: dict[str, np.ndarray] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self.test_names: list[str] = ["heldout"]
        self._restored_state: dict[str, Any] = {}

    # -- 1. raw text -----------------------------------------------------------------------
    def load_raw(self) -> datasets.DatasetDict:
        """Load the source, hold out validation if needed; set `raw` and `data_fingerprint`."""
        if self.raw is not None:
            return self.raw
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
            split_info = {"split": self.split, "val_fraction": self.val_fraction, "seed": self.split_seed}
        raw = {"train": train, "validation": validation}
        for name, ds in source.items():
            if name.startswith("eval_"):
                raw[name] = ds
            elif name == "test" and "eval_test" not in source:
                raw["eval_test"] = ds
            elif name not in ("train", "validation"):
                log.info("data: ignoring source split %r (use data.eval_files to evaluate on it)", name)
        self.raw = datasets.DatasetDict(raw)
        self.test_names = ["heldout"] + [k[len("eval_"):] for k in raw if k.startswith("eval_")]
        self.data_fingerprint = sha256_json({"source": source_fp, "holdout": split_info, "splits": list(raw)})
        return self.raw

    def _hold_out(self, ds: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
        f = self.val_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise ConfigError(
                f"data.val_fraction={f!r} must be a number in (0, 1) (the source has no validation "
                f"split to use instead); e.g. data.val_fraction=0.1."
            )
        if self.split == "rows":
            n = len(ds)
            if n < 2:
                raise ConfigError(
                    f"data.split=rows needs at least 2 rows to hold some out, the train split has {n} "
                    f"(a single document?); use data.split=tail or data.sample_by=line."
                )
            n_val = min(n - 1, max(1, round(n * f)))
            perm = np.random.default_rng(self.split_seed).permutation(n)
            return ds.select(np.sort(perm[n_val:])), ds.select(np.sort(perm[:n_val]))
        # tail: cut every row at int(len * (1 - f)) characters
        cut = ds.map(_cut_tail, batched=True, fn_kwargs={"keep": 1.0 - f}, remove_columns=ds.column_names,
                     desc="holding out the tail")
        train = cut.select_columns(["head"]).rename_column("head", "text").filter(nonempty_rows, batched=True)
        val = cut.select_columns(["tail"]).rename_column("tail", "text").filter(nonempty_rows, batched=True)
        if len(val) == 0 or len(train) == 0:
            raise ConfigError(
                f"data.val_fraction={f} with data.split=tail leaves an empty "
                f"{'validation' if len(val) == 0 else 'train'} split; change data.val_fraction."
            )
        return train, val

    # -- 2./3. tokenizer ---------------------------------------------------------------------
    def train_texts(self, batch_size: int = 1000) -> Iterator[list[str]]:
        """Batches (lists of str) of the train split's texts, for tokenizer training.

        Pass the bound method itself as `get_tokenizer(texts=dm.train_texts, ...)`.
        """
        train = self.load_raw()["train"]
        for start in range(0, len(train), batch_size):
            yield train[start : start + batch_size]["text"]

    def set_tokenizer(self, tokenizer: Tokenizer, tokenizer_fingerprint: str | None = None,
                      special_ids: Mapping[str, int] | None = None) -> None:
        """Use `tokenizer` (fingerprint: as returned by get_tokenizer; computed when omitted).

        `special_ids` ({"mask": 103, "pad": 0, "sep": 102, ...}) overrides our special tokens'
        ids, for tokenizers that name them differently (a Hugging Face WordPiece tokenizer).
        """
        self.tokenizer = tokenizer
        self.tokenizer_fingerprint = tokenizer_fingerprint or _fingerprint_of(tokenizer)
        self.special_ids = resolve_special_ids(tokenizer, special_ids)
        self.blocks, self.stats = {}, {}
        self.mlm_collator = None
        if self.objective == "denoise":
            missing = [t for t in (MASK, PAD, EOS, BOS) if t.strip("<>") not in self.special_ids]
            if missing:
                raise ConfigError(
                    f"data.objective=denoise: the tokenizer has no {' or '.join(missing)} token; use a tokenizer "
                    "trained by lit-llm (tokenizer.kind=bpe|char).")
            self.mlm_collator = InfillingCollator(
                mask_id=self.special_ids["mask"], eos_id=self.special_ids["eos"], start_id=self.special_ids["bos"],
                pad_id=self.special_ids["pad"], mask_ratio=self.mlm_probability)
        if self.objective == "mlm":
            missing = [t for t in (MASK, PAD) if t.strip("<>") not in self.special_ids]
            if missing:
                raise ConfigError(
                    f"data.objective=mlm: the tokenizer has no {' or '.join(missing)} token; use a tokenizer "
                    f"trained by lit-llm (tokenizer.kind=bpe|char) or one that has {MASK} and {PAD}.")
            self.mlm_collator = MLMCollator(
                mask_id=self.special_ids["mask"], vocab_size=tokenizer.get_vocab_size(),
                special_ids=list(self.special_ids.values()), mlm_probability=self.mlm_probability,
                pad_id=self.special_ids["pad"])

    def _document_end_id(self) -> int:
        """The token after every document: <eos> (the sep token of a tokenizer without one)."""
        for name in ("eos", "sep"):
            if name in self.special_ids:
                return self.special_ids[name]
        return token_id(self.tokenizer, EOS)  # raises, naming the token

    # -- 4. tokenize, pack, cache -----------------------------------------------------------
    def _cache_key(self) -> dict[str, Any]:
        return {"data": self.data_fingerprint, "tokenizer": self.tokenizer_fingerprint,
                "block_size": self.block_size, "version": PACKING_VERSION}

    def _open_split(self, split: str, path: Path) -> None:
        log.info("data: %s blocks loaded from %s", split, path)
        self.blocks[split] = _dataset_to_blocks(datasets.load_from_disk(str(path)))

    def _build_split(self, split: str, out_dir: Path) -> dict[str, int]:
        """Tokenize `split`, pack it into blocks, save them in `out_dir`; return its statistics."""
        t0 = time.perf_counter()
        ds = self.raw[split]
        eos_id = self._document_end_id()
        fp = sha256_json([ds._fingerprint, self.tokenizer_fingerprint, eos_id, PACKING_VERSION])[:32]
        stream = tokenize_split(ds, self.tokenizer, eos_id, self.num_proc, fingerprint=fp)
        blocks = pack_blocks(stream, self.block_size)
        if len(blocks) == 0:
            raise ConfigError(self._too_short_message(split, len(stream)))
        seconds = time.perf_counter() - t0
        stats = {"documents": len(ds), "tokens": int(len(stream)), "blocks": int(len(blocks))}
        _blocks_to_dataset(blocks).save_to_disk(str(out_dir))
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
    def _blocks(self, split: str) -> np.ndarray:
        if split not in self.blocks:
            self.setup()
        return self.blocks[split]

    def _collate_fn(self):
        if self.objective == "mlm":
            return _MLMBlocks(self._mlm())
        if self.objective == "denoise":
            return _DenoiseBlocks(self._mlm())
        return collate_blocks

    def _mlm(self) -> MLMCollator | InfillingCollator:
        if self.mlm_collator is None:
            raise RuntimeError("CorpusDataModule: call set_tokenizer(...) before building loaders")
        return self.mlm_collator

    def _loader(self, blocks: np.ndarray, batch_size: int, loader_cls: type = DataLoader, **kwargs: Any) -> DataLoader:
        return loader_cls(BlockDataset(blocks), batch_size=batch_size, collate_fn=self._collate_fn(),
                          **self.loader_kwargs(), **kwargs)

    def _eval_loader(self, split: str) -> DataLoader:
        blocks = self._blocks(split)
        if self.objective == "clm":
            return self._loader(blocks, self.eval_batch_size, shuffle=False, sampler=self.eval_sampler(len(blocks), split))
        # MLM: mask once, batch by batch, with a fixed seed: every evaluation sees the same masks
        # and the global RNG (training masks, dropout) is not consumed by validation.
        gen = torch.Generator().manual_seed(self.shuffle_seed)
        inputs = torch.from_numpy(np.ascontiguousarray(blocks[:, :-1], dtype=np.int64))
        corrupt = self._mlm().mask_tokens if self.objective == "mlm" else self._mlm()
        batches = [corrupt(inputs[i : i + self.eval_batch_size], generator=gen)
                   for i in range(0, len(inputs), self.eval_batch_size)]
        return DataLoader(batches, batch_size=None, shuffle=False, sampler=self.eval_sampler(len(batches), split),
                          **self.loader_kwargs())

    def _train_size(self) -> int:
        return len(self._blocks("train"))

    def train_dataloader(self) -> DataLoader:
        blocks = self._blocks("train")
        if len(blocks) < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the train split ({len(blocks)} blocks of "
                f"{self.block_size} tokens); lower data.batch_size or data.block_size."
            )
        return self._loader(blocks, self.batch_size, sampler=self.make_train_sampler(), drop_last=True,
                            loader_cls=ResumableDataLoader)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(self.split_of(name)) for name in self.test_names]

    def split_of(self, test_name: str) -> str:
        """The cached split behind a test name: "heldout" is the validation split, an evaluation corpus
        `<name>` is "eval_<name>"; "train" and "validation" name themselves (pipelines/evaluate.py split=)."""
        if test_name == "heldout":
            return "validation"
        if test_name in ("train", "validation"):
            return test_name
        return f"eval_{test_name}"

    # -- checkpoint state: detect resuming on different data (ResumableTrainMixin) --------------
    def state_dict(self) -> dict[str, Any]:
        state = {"data_fingerprint": self.data_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                 "block_size": self.block_size, "batch_size": self.batch_size, "shuffle_seed": self.shuffle_seed}
        if self.objective != "clm":
            state.update(objective=self.objective, mlm_probability=self.mlm_probability)
        return state


class _DenoiseBlocks:
    """Collate packed blocks [B, T+1] into a text-infilling batch of their first T tokens."""

    def __init__(self, collator: InfillingCollator):
        self.collator = collator

    def __call__(self, batch: np.ndarray | list[np.ndarray]) -> dict[str, torch.Tensor]:
        arr = batch if isinstance(batch, np.ndarray) else np.stack(batch)
        return self.collator(arr[:, :-1])


class _MLMBlocks:
    """Collate packed blocks [B, T+1] into a masked batch of their first T tokens."""

    def __init__(self, collator: MLMCollator):
        self.collator = collator

    def __call__(self, batch: np.ndarray | list[np.ndarray]) -> dict[str, torch.Tensor]:
        arr = batch if isinstance(batch, np.ndarray) else np.stack(batch)
        return self.collator.mask_tokens(torch.from_numpy(arr[:, :-1].astype(np.int64)))


def _cut_tail(batch: dict[str, list], keep: float) -> dict[str, list]:
    heads, tails = [], []
    for text in batch["text"]:
        cut = int(len(text) * keep)
        heads.append(text[:cut])
        tails.append(text[cut:])
    return {"head": heads, "tail": tails}


__all__ = [
    "CorpusDataModule", "ResumableRandomSampler", "ResumableDataLoader", "ResumableTrainMixin", "ExampleLoadersMixin",
    "BlockDataset",
    "collate_blocks", "pack_blocks", "tokenize_split", "resolve_special_ids", "OBJECTIVES", "PACKING_VERSION",
]

