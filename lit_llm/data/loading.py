"""How batches are drawn, shared by every data module: the resumable train order, the DDP evaluation
shards and the loaders built on them.

- `ResumableRandomSampler`: a seeded shuffle per epoch that a resumed run fast-forwards to the batch
  it stopped at (`ResumableTrainMixin.make_train_sampler` reads the trainer's global step).
- `EvalShardSampler`: each process's share of an evaluation split, every item exactly once.
- `ResumableDataLoader`: the train loader (tells Lightning that it resumes exactly).
- `ResumableTrainMixin`: `make_train_sampler()`, `eval_sampler()`, `loader_kwargs()` and the check that a
  resumed run reads the checkpoint's data settings; mixed into every data module.
- `ExampleLoadersMixin`: train/validation/test loaders of the example-based modules (classification,
  QA, seq2seq); the corpus module builds its own over packed blocks.

What else the data modules share (the protocol `lit_llm.run` uses, hold-out splits, special tokens,
the tokenized-split cache) lives in `lit_llm.data.base`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler

from lit_llm.errors import ConfigError

log = logging.getLogger("lit_llm")


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

    def permutation(self, epoch: int | None = None) -> list[int]:
        """This replica's full order for `epoch` (default: the current one)."""
        gen = torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else epoch))
        perm = torch.randperm(self.dataset_size, generator=gen)
        return perm[self.rank : self.total_size : self.num_replicas].tolist()

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
    """Train/validation/test loaders of the example-based data modules (classification, QA, seq2seq).

    A subclass provides `opened_split(split)` (a map-style dataset of the cached split, as
    `base.TokenizedSplitsMixin` gives), `collator()`, `batch_size`, `eval_batch_size`, `test_names` and
    `UNIT` (what a train sample is called in messages); the train loader uses `make_train_sampler()`
    (ResumableTrainMixin) and drops the last partial batch.
    """

    UNIT = "examples"

    def _train_size(self) -> int:
        return len(self.opened_split("train"))

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

    def _eval_loader(self, split: str) -> DataLoader:
        return self._loader(split, self.eval_batch_size, shuffle=False,
                            sampler=self.eval_sampler(len(self.opened_split(split)), split))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(name) for name in self.test_names]



__all__ = [
    "ResumableRandomSampler", "EvalShardSampler", "ResumableDataLoader", "ResumableTrainMixin", "ExampleLoadersMixin",
    "limit_batches",
]
