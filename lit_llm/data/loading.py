"""How batches are drawn, shared by every data module: the resumable train order, the DDP evaluation
shards and the loaders built on them.

- `ResumableRandomSampler`: a seeded shuffle per epoch that a resumed run fast-forwards to the batch
  it stopped at (`ResumableTrainMixin.make_train_sampler` reads the trainer's global step).
- `EvalShardSampler`: each process's share of an evaluation split, every item exactly once.
- `ResumableDataLoader`: the train loader (tells Lightning that it resumes exactly).
- `BucketRandomSampler`: the resumable shuffle whose batches hold examples of similar length (`data.sampler=bucket`,
  the default of the example-based data configs: padding is compute spent on nothing).
- `length_order`: the evaluation order (by length within chunks, deterministic); `in_example_order` puts
  per-example values recorded in that order back in the examples' order.
- `ResumableTrainMixin`: `make_train_sampler()`, `eval_sampler()`, `loader_kwargs()` and the check that a
  resumed run reads the checkpoint's data settings; mixed into every data module.
- `ExampleLoadersMixin`: train/validation/test loaders of the example-based modules (classification,
  QA, seq2seq, SFT, preference): the train order named by `data.sampler`, evaluation by length; the corpus
  module builds its own over packed blocks.

What else the data modules share (the protocol `lit_llm.run` uses, hold-out splits, special tokens,
the tokenized-split cache) lives in `lit_llm.data.base`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lit_llm.errors import ConfigError

log = logging.getLogger("lit_llm")

BUCKET_BATCHES = 50  # length bucketing (train and evaluation) sorts within chunks of this many batches
SAMPLERS = ("random", "bucket")  # data.sampler of every example-based module (classification adds balanced)


class ResumableRandomSampler(DistributedSampler):
    """Seeded shuffling that a resumed run can fast-forward: epoch e uses
    `torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))`.

    - `follow(position)`: the sampler of a training run asks `position()` -> (data epoch, samples of
      this replica's share already seen) each time an iteration starts, and starts there
      (`ResumableTrainMixin.make_train_sampler` derives it from the trainer's global step). The data
      epoch so comes from the optimizer steps taken, never from Lightning's epoch counter: a run
      resumed from a checkpoint saved at an epoch's end replays that finished epoch in Lightning's
      count (set_epoch(e), then set_epoch(e + 1)), which would otherwise shift every later epoch's
      order by one.
    - Without `follow` (no trainer): `set_epoch(e)` picks the permutation and `start_index` is the
      number of samples to skip in the next iteration only.
    - `num_replicas`/`rank`: under DDP every rank takes `perm[rank:total:num_replicas]` (the
      tail that does not divide evenly is dropped). Subclassing `DistributedSampler` tells
      Lightning not to wrap it in another (re-shuffling) distributed sampler.
    - `len()` is always the full share, whatever the start: Lightning computes the number of
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
        self._position: Callable[[], tuple[int, int]] | None = None

    def follow(self, position: Callable[[], tuple[int, int]]) -> None:
        """Start every iteration where `position()` -> (epoch, samples already seen) says."""
        self._position = position

    def set_epoch(self, epoch: int) -> None:
        if self._position is None:  # a followed sampler knows its epoch from the trainer's progress
            self.epoch = int(epoch)

    def global_order(self, epoch: int | None = None) -> torch.Tensor:
        """The seeded permutation of the whole dataset for `epoch` (default: the current one), the same whatever
        the number of replicas: replica r takes every `num_replicas`-th item of its first `total_size` from r."""
        gen = torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else epoch))
        return torch.randperm(self.dataset_size, generator=gen)

    def permutation(self, epoch: int | None = None) -> list[int]:
        """This replica's full order for `epoch` (default: the current one)."""
        return self.global_order(epoch)[self.rank : self.total_size : self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        if self._position is not None:
            self.epoch, self.start_index = self._position()
            if self.start_index:
                log.info("data: resuming in epoch %d, skipping the %d samples already seen", self.epoch,
                         self.start_index)
        order = self.permutation()
        start, self.start_index = self.start_index, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return self.num_samples


class BucketRandomSampler(ResumableRandomSampler):
    """`ResumableRandomSampler` whose order forms batches of similar length (`data.sampler=bucket`).

    Each epoch: the seeded permutation of the whole dataset (whatever the number of replicas), cut into chunks of `batch_size * num_replicas *
    bucket_batches` samples, each chunk sorted by length (stable) and cut into global batches of `batch_size *
    num_replicas`; the complete global batches are shuffled (seed, epoch) and the incomplete one goes last.
    Replica r takes every `num_replicas`-th sample of that order from r, so the replicas' shares are disjoint and
    their step-t batches together are global batch t: N processes x batch B/N train on the batches 1 process x B
    does, as with the plain sampler. A resume skips whole batches, as with the plain sampler.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, bucket_batches: int = BUCKET_BATCHES, secondary: np.ndarray | None = None):
        super().__init__(len(lengths), seed, num_replicas=num_replicas, rank=rank)
        self.lengths = np.asarray(lengths)
        self.batch_size = int(batch_size)
        self.bucket_batches = int(bucket_batches)
        # a second padded length (seq2seq: the target's): within each pair of neighbouring batches of the sorted
        # chunk (similar primary lengths) the items are re-sorted by it, so targets pad less too (SAMSum's training
        # batches: 0.897 -> 0.91 real tokens)
        self.secondary = None if secondary is None else np.asarray(secondary)

    def permutation(self, epoch: int | None = None) -> list[int]:
        epoch = self.epoch if epoch is None else epoch
        order = self.global_order(epoch).numpy().astype(np.int64)
        bs = self.batch_size * self.num_replicas  # a global batch: every replica's batch of one step
        chunk = bs * self.bucket_batches
        batches: list[np.ndarray] = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            if self.secondary is not None:
                part = np.concatenate([g[np.argsort(self.secondary[g], kind="stable")]
                                       for g in np.array_split(part, range(2 * bs, len(part), 2 * bs))])
            batches += [part[i : i + bs] for i in range(0, len(part), bs)]
        full = [b for b in batches if len(b) == bs]
        rest = [b for b in batches if len(b) < bs]
        shuffled = [full[i] for i in np.random.default_rng((self.seed, epoch)).permutation(len(full))]
        ordered = np.concatenate(shuffled + rest) if batches else np.zeros(0, np.int64)
        return ordered[self.rank : self.total_size : self.num_replicas].tolist()


def length_order(lengths: Sequence[int] | np.ndarray, batch_size: int, bucket_batches: int = BUCKET_BATCHES) -> np.ndarray:
    """The evaluation order: the items in chunks of `batch_size * bucket_batches` (in their own order), each chunk
    sorted by length (stable; longest first, so a batch that runs out of memory does so at once). Deterministic
    (a function of the lengths alone: two runs with the same tokens evaluate the same batches), and a
    `limit_test_batches` prefix stays within the split's first chunks, not its shortest items."""
    lengths = np.asarray(lengths)
    chunk = max(1, int(batch_size) * int(bucket_batches))
    parts = [np.arange(lo, min(lo + chunk, len(lengths))) for lo in range(0, len(lengths), chunk)]
    return np.concatenate([p[np.argsort(-lengths[p], kind="stable")] for p in parts]) if parts else np.zeros(0, np.int64)


def in_example_order(columns: dict[str, list], key: str) -> dict[str, list]:
    """Per-example values recorded in evaluation order (`length_order`) back in the examples' order: every
    column sorted by column `key` (the example indices). Columns of another length are kept as they are."""
    index = columns.get(key)
    if not index:
        return columns
    order = sorted(range(len(index)), key=index.__getitem__)
    return {k: [v[i] for i in order] if isinstance(v, list) and len(v) == len(index) else v for k, v in columns.items()}


class EvalShardSampler(DistributedSampler):
    """The evaluation order under N processes: rank r takes items r, r + N, r + 2N, ... so every
    example (or pre-made batch) is evaluated exactly once. Lightning's default DistributedSampler
    pads the shares to equal length with repeated examples, which the synced metrics would count
    twice. Shares may differ by one item; subclassing `DistributedSampler` tells Lightning not to
    wrap it."""

    def __init__(self, dataset_size: int, num_replicas: int, rank: int, split: str = "evaluation",
                 order: Sequence[int] | None = None):
        # DistributedSampler.__init__ is not called: it needs a dataset and a process group.
        if dataset_size < num_replicas:
            raise ConfigError(f"the {split} split has {dataset_size} items for {num_replicas} processes: every "
                              "process needs one; use fewer devices (trainer.devices) or a larger split")
        self.dataset_size, self.num_replicas, self.rank = int(dataset_size), int(num_replicas), int(rank)
        self.shuffle, self.drop_last, self.epoch, self.seed = False, False, 0, 0
        # `order`: the whole split's evaluation order (default: as stored), dealt to the processes in turn
        self.order = list(range(self.dataset_size)) if order is None else [int(i) for i in order]
        self.num_samples = len(range(self.rank, self.dataset_size, self.num_replicas))
        self.total_size = self.dataset_size

    def __iter__(self) -> Iterator[int]:
        return iter(self.order[self.rank : self.dataset_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """The train loader. Its position is restored from the trainer's global step (see
    `ResumableTrainMixin.make_train_sampler`), not from this state; `state_dict` exists so that
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


def limit_batches(num_batches: int, limit: Any) -> int:
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
        """The train sampler, following the attached trainer's progress (`ResumableRandomSampler.follow`).

        consumed batches = global_step * accumulate_grad_batches (per process), read when an iteration
        starts; (data epoch, batches into it) = divmod(consumed, batches per epoch). So a run resumed from
        a checkpoint (saved at an epoch's end, mid-epoch, or after fit) sees exactly the batches an
        uninterrupted run would (as long as batches per epoch is a multiple of accumulate_grad_batches).
        """
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = self._new_train_sampler(world, rank)
        if trainer is None:
            return sampler
        self._check_restored_state()
        batches_per_epoch = limit_batches(sampler.num_samples // self.batch_size, trainer.limit_train_batches)
        batch_size = self.batch_size

        def position() -> tuple[int, int]:
            consumed = int(trainer.global_step) * int(trainer.accumulate_grad_batches)
            if batches_per_epoch <= 0:
                return 0, 0
            epoch, done = divmod(consumed, batches_per_epoch)
            return epoch, done * batch_size

        sampler.follow(position)
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
    """Train/validation/test loaders of the example-based data modules (classification, QA, seq2seq, SFT,
    preference).

    A subclass provides `opened_split(split)` (a map-style dataset of the cached split, as
    `base.TokenizedSplitsMixin` gives, with `pad_lengths`: per item, the length it pads to in a batch),
    `collator()`, `batch_size`, `eval_batch_size`, `test_names`, `sampler` (`data.sampler`, checked by
    `check_sampler`) and `UNIT` (what a train sample is called in messages); the train loader uses
    `make_train_sampler()` (ResumableTrainMixin) and drops the last partial batch. Evaluation loaders go by
    length (`length_order`): records made in that order carry the example index (`in_example_order`).
    """

    UNIT = "examples"
    sampler = "random"

    @staticmethod
    def check_sampler(sampler: Any, choices: Sequence[str] = SAMPLERS) -> None:
        if sampler not in choices:
            raise ConfigError(f"data.sampler={sampler!r} is not one of {list(choices)}; bucket (batches of similar "
                              "lengths: the least padding) or random (a plain seeded shuffle).")

    @property
    def train_order(self) -> str:
        """The train sampler in use (`data.sampler`)."""
        return self.sampler

    def _train_size(self) -> int:
        return len(self.opened_split("train"))

    def _new_train_sampler(self, num_replicas: int, rank: int) -> ResumableRandomSampler:
        if self.train_order == "bucket":
            split = self.opened_split("train")
            return BucketRandomSampler(split.pad_lengths, self.batch_size, self.shuffle_seed, num_replicas=num_replicas,
                                       rank=rank, secondary=getattr(split, "secondary_lengths", None))
        return ResumableRandomSampler(self._train_size(), self.shuffle_seed, num_replicas=num_replicas, rank=rank)

    def _loader(self, split: str, batch_size: int, loader_cls: type = DataLoader, **kwargs: Any) -> DataLoader:
        return loader_cls(self.opened_split(split), batch_size=batch_size, collate_fn=self.collator(),
                          **self.loader_kwargs(), **kwargs)

    def train_dataloader(self) -> DataLoader:
        n = self._train_size()
        if n < self.batch_size:
            raise ConfigError(f"data.batch_size={self.batch_size} is larger than the train split ({n} {self.UNIT}); "
                              "lower data.batch_size.")
        return self._loader("train", self.batch_size, loader_cls=ResumableDataLoader,
                            sampler=self.make_train_sampler(), drop_last=True)

    def eval_sampler(self, size: int, split: str) -> EvalShardSampler:
        """This process's share of an evaluation split (each item once), in `length_order`."""
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        order = length_order(self.opened_split(split).pad_lengths, self.eval_batch_size)
        return EvalShardSampler(size, world, rank, split, order=order)

    def _eval_loader(self, split: str) -> DataLoader:
        return self._loader(split, self.eval_batch_size, shuffle=False,
                            sampler=self.eval_sampler(len(self.opened_split(split)), split))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(name) for name in self.test_names]



__all__ = [
    "ResumableRandomSampler", "BucketRandomSampler", "EvalShardSampler", "length_order", "in_example_order",
    "BUCKET_BATCHES", "SAMPLERS", "ResumableDataLoader", "ResumableTrainMixin", "ExampleLoadersMixin",
    "limit_batches",
]
