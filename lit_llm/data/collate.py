"""Batch builders shared by the data modules: BERT masking (MLM), text infilling, dynamic padding of
single sequences (`pad_collate`) and of source/target pairs (`pad_pairs`).

Both are picklable objects (not closures), so they work in DataLoader worker processes.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

IGNORE_INDEX = -100  # label of positions that carry no loss (torch.nn.functional.cross_entropy's default)


class MLMCollator:
    """BERT masking, vectorised over a whole batch of token ids [B, T].

    Each non-special, non-pad, attended position is chosen with probability `mlm_probability`;
    a chosen position becomes `mask_id` (80%), a random non-special token (10%) or stays as it
    is (10%). `labels` hold the original ids at chosen positions and -100 elsewhere. At least one
    position per batch is chosen (when any is eligible), so a loss is always defined.

    Randomness comes from the global torch RNG unless a `generator` is given. The global RNG
    is checkpointed with the model (tasks/base.py), and with `num_workers=0` batches are
    collated just before their step (Lightning does not prefetch from sized loaders), so a
    resumed run draws the same masks as an uninterrupted one.
    """

    def __init__(self, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                 mlm_probability: float = 0.15, pad_id: int = 0):
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability={mlm_probability} must be in (0, 1)")
        self.mask_id = int(mask_id)
        self.pad_id = int(pad_id)
        self.vocab_size = int(vocab_size)
        self.mlm_probability = float(mlm_probability)
        self.special_ids = torch.tensor(sorted({int(i) for i in special_ids} | {self.pad_id, self.mask_id}))
        allowed = torch.ones(self.vocab_size, dtype=torch.bool)
        allowed[self.special_ids[self.special_ids < self.vocab_size]] = False
        self.random_ids = allowed.nonzero().squeeze(1)  # replacement tokens: never a special id
        if len(self.random_ids) == 0:
            raise ValueError(f"vocab_size={vocab_size} leaves no non-special token to sample")

    def mask_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """{"input_ids": masked copy, "attention_mask", "labels"} for ids [B, T] (any int dtype)."""
        ids = input_ids.long()
        if attention_mask is None:
            attention_mask = (ids != self.pad_id).long()
        eligible = ~torch.isin(ids, self.special_ids.to(ids.device)) & attention_mask.bool()
        chosen = (torch.rand(ids.shape, generator=generator, device=ids.device) < self.mlm_probability) & eligible
        if not bool(chosen.any()) and bool(eligible.any()):
            candidates = eligible.flatten().nonzero().squeeze(1)
            pick = candidates[torch.randint(len(candidates), (1,), generator=generator, device=ids.device)]
            chosen = chosen.flatten().index_fill(0, pick, True).view_as(chosen)
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
        action = torch.rand(ids.shape, generator=generator, device=ids.device)
        random_tokens = self.random_ids.to(ids.device)[
            torch.randint(len(self.random_ids), ids.shape, generator=generator, device=ids.device)]
        masked = torch.where(chosen & (action < 0.8), torch.full_like(ids, self.mask_id), ids)
        masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_tokens, masked)
        return {"input_ids": masked, "attention_mask": attention_mask.long(), "labels": labels}

    def __call__(self, batch: Mapping[str, Any] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Mask a batch: a tensor of ids, or a dict with `input_ids` (+ `attention_mask`)."""
        if isinstance(batch, Mapping):
            return self.mask_tokens(torch.as_tensor(batch["input_ids"]),
                                    None if batch.get("attention_mask") is None
                                    else torch.as_tensor(batch["attention_mask"]))
        return self.mask_tokens(torch.as_tensor(batch))


class PadCollator:
    """Pad variable-length examples to the longest in the batch (see `pad_collate`)."""

    def __init__(self, pad_id: int = 0):
        self.pad_id = int(pad_id)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(ex["input_ids"]) for ex in examples]
        width = max(lengths, default=0)
        input_ids = np.full((len(examples), width), self.pad_id, dtype=np.int64)
        attention = np.zeros((len(examples), width), dtype=np.int64)
        with_types = len(examples) > 0 and examples[0].get("token_type_ids") is not None
        types = np.zeros((len(examples), width), dtype=np.int64) if with_types else None
        for row, (ex, n) in enumerate(zip(examples, lengths)):  # one copy per example, not per token
            input_ids[row, :n] = ex["input_ids"]
            attention[row, :n] = 1
            if types is not None:
                types[row, :n] = ex["token_type_ids"]
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention)}
        if types is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
        if len(examples) and "labels" in examples[0]:
            batch["labels"] = torch.tensor([int(ex["labels"]) for ex in examples], dtype=torch.long)
        _example_index(batch, examples)
        return batch


def _example_index(batch: dict[str, torch.Tensor], examples: Sequence[Mapping[str, Any]]) -> None:
    """`example_index` [B] (the examples' rows in their split) when the examples carry it: evaluation batches go
    by length (`lit_llm.data.loading.length_order`), and per-example records map back through it."""
    if len(examples) and "example_index" in examples[0]:
        batch["example_index"] = torch.tensor([int(ex["example_index"]) for ex in examples], dtype=torch.long)


def pad_collate(pad_id: int = 0) -> PadCollator:
    """Collate {"input_ids": list[int], "token_type_ids"?: list[int], "labels": int, "example_index"?: int}
    examples into LongTensors padded to the batch's longest example: input_ids (pad_id), attention_mask (1 real,
    0 pad), token_type_ids (0 on padding; only if the examples have them), labels [B] and example_index [B]
    (only if the examples have it)."""
    return PadCollator(pad_id)


class WindowCollator(PadCollator):
    """Documents cut into windows (classification's `data.long_inputs=windows`): each example's `input_ids` (and
    `token_type_ids`) hold its windows one after another, `window_lengths` their lengths. The batch has one padded
    row per window (as `pad_collate`), `window_doc` [N windows] (the batch index of each row's document, in
    order: a document's windows are consecutive) and `labels` [B documents]; whole documents, so the task can
    aggregate each document's windows within the batch."""

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rows, counts = [], []
        for ex in examples:  # one split per document, not per token
            cuts = np.cumsum(ex["window_lengths"])[:-1]
            ids = np.split(np.asarray(ex["input_ids"]), cuts)
            types = np.split(np.asarray(ex["token_type_ids"]), cuts) if ex.get("token_type_ids") is not None \
                else [None] * len(ids)
            rows += [{"input_ids": i, "token_type_ids": t} for i, t in zip(ids, types)]
            counts.append(len(ids))
        batch = super().__call__(rows)
        batch["window_doc"] = torch.repeat_interleave(torch.arange(len(examples)), torch.tensor(counts, dtype=torch.long))
        if len(examples) and "labels" in examples[0]:
            batch["labels"] = torch.tensor([int(ex["labels"]) for ex in examples], dtype=torch.long)
        _example_index(batch, examples)
        return batch




class InfillingCollator:
    """BART text infilling (Lewis et al., 2020) on token blocks [B, T], for encoder-decoder pretraining.

    Spans whose lengths are drawn from Poisson(`poisson_lambda`) (at least 1 token) are placed at
    uniformly random starts until about `mask_ratio` of each row is covered; every maximal run of
    covered tokens becomes ONE `mask_id` in the source, so the model must also infer how many tokens
    are missing. Source = corrupted row + `<eos>`; target = the original row + `<eos>`; the decoder
    reads `start_id` + target[:-1]; labels are -100 on padding. Random draws come from `generator` or
    the global torch RNG (checkpointed with the model, as for `MLMCollator`).
    """

    def __init__(self, mask_id: int, eos_id: int, start_id: int, pad_id: int, mask_ratio: float = 0.3,
                 poisson_lambda: float = 3.0):
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={mask_ratio} must be in (0, 1)")
        if poisson_lambda <= 0:
            raise ValueError(f"poisson_lambda={poisson_lambda} must be positive")
        self.mask_id, self.eos_id, self.start_id, self.pad_id = int(mask_id), int(eos_id), int(start_id), int(pad_id)
        self.mask_ratio, self.poisson_lambda = float(mask_ratio), float(poisson_lambda)

    def corrupt(self, row: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        T = len(row)
        target = max(1, round(T * self.mask_ratio))
        covered = np.zeros(T, dtype=bool)
        while covered.sum() < target:  # a few spans per row (~ T * ratio / lambda), not a loop over tokens
            length = max(1, int(torch.poisson(torch.tensor([self.poisson_lambda]), generator=generator).item()))
            start = int(torch.randint(T, (1,), generator=generator).item())
            covered[start : start + min(length, target)] = True
        run_start = covered & ~np.concatenate([[False], covered[:-1]])
        keep = ~covered | run_start
        return np.where(run_start, self.mask_id, row)[keep]

    def __call__(self, blocks, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        rows = [np.asarray(b, dtype=np.int64) for b in blocks]
        sources = [np.append(self.corrupt(r, generator), self.eos_id) for r in rows]
        targets = [np.append(r, self.eos_id) for r in rows]
        return pad_pairs(sources, targets, self.pad_id, self.start_id)


def pad_pairs(sources: Sequence[Any], targets: Sequence[Any], pad_id: int, start_id: int) -> dict[str, torch.Tensor]:
    """An encoder-decoder batch of (source, target) id sequences, padded to the batch's longest:
    `input_ids` (sources, pad_id) + `attention_mask`, `decoder_input_ids` (`start_id` + target[:-1],
    pad_id) and `labels` (targets, -100 on padding); all int64 [B, S] or [B, T]."""
    B, S, T = len(sources), max(map(len, sources)), max(map(len, targets))
    src = np.full((B, S), pad_id, np.int64)
    mask = np.zeros((B, S), np.int64)
    dec = np.full((B, T), pad_id, np.int64)
    labels = np.full((B, T), IGNORE_INDEX, np.int64)
    for b, (s, t) in enumerate(zip(sources, targets)):  # one copy per example, not per token
        src[b, : len(s)], mask[b, : len(s)] = s, 1
        labels[b, : len(t)] = t
        dec[b, 0], dec[b, 1 : len(t)] = start_id, t[:-1]
    return {"input_ids": torch.from_numpy(src), "attention_mask": torch.from_numpy(mask),
            "decoder_input_ids": torch.from_numpy(dec), "labels": torch.from_numpy(labels)}


__all__ = ["IGNORE_INDEX", "MLMCollator", "PadCollator", "WindowCollator", "pad_collate", "pad_pairs", "InfillingCollator"]
