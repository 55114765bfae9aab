"""BERT masking statistics and dynamic padding (lit_llm/data/collate.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_llm.data.collate import IGNORE_INDEX, MLMCollator, pad_collate

SPECIALS = list(range(7))  # <pad> <unk> <bos> <eos> <mask> <cls> <sep>
PAD, MASK = 0, 4
VOCAB = 1000


def _batch(seed: int = 0, shape=(64, 512)) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids with specials sprinkled in and right padding of varying length."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, VOCAB, shape, generator=gen)
    ids[torch.rand(shape, generator=gen) < 0.05] = 3  # <eos> between documents
    ids[:, 0] = 5  # <cls>
    lengths = torch.randint(shape[1] // 2, shape[1] + 1, (shape[0],), generator=gen)
    attention = (torch.arange(shape[1])[None, :] < lengths[:, None]).long()
    ids[attention == 0] = PAD
    return ids, attention


def test_masking_statistics_on_a_large_batch():
    ids, attention = _batch()
    torch.manual_seed(0)
    out = MLMCollator(MASK, VOCAB, SPECIALS)({"input_ids": ids, "attention_mask": attention})
    eligible = (ids >= 7) & (attention == 1)
    chosen = out["labels"] != IGNORE_INDEX
    share = chosen.sum().item() / eligible.sum().item()
    assert abs(share - 0.15) < 0.015
    n = chosen.sum().item()
    masked = (out["input_ids"] == MASK) & chosen
    kept = (out["input_ids"] == ids) & chosen
    replaced = chosen & ~masked & ~kept
    assert abs(masked.sum().item() / n - 0.8) < 0.03
    assert abs(kept.sum().item() / n - 0.1) < 0.03  # includes the rare random draw equal to the original
    assert abs(replaced.sum().item() / n - 0.1) < 0.03
    assert (out["input_ids"][replaced] >= 7).all()  # random replacements are never special tokens


def test_specials_and_pads_are_never_chosen_and_labels_are_the_originals():
    ids, attention = _batch(1, (16, 128))
    torch.manual_seed(1)
    out = MLMCollator(MASK, VOCAB, SPECIALS, mlm_probability=0.5)(ids)  # attention from pad_id
    chosen = out["labels"] != IGNORE_INDEX
    assert not chosen[ids < 7].any()
    assert torch.equal(out["labels"][chosen], ids[chosen])
    assert (out["labels"][~chosen] == IGNORE_INDEX).all()
    assert torch.equal(out["input_ids"][~chosen], ids[~chosen])  # unchosen positions untouched
    assert torch.equal(out["attention_mask"], attention)
    assert out["input_ids"].dtype == out["labels"].dtype == torch.long


def test_attention_mask_excludes_positions():
    ids = torch.randint(7, VOCAB, (4, 50))
    attention = torch.ones_like(ids)
    attention[:, 25:] = 0  # e.g. padding with a non-pad id
    out = MLMCollator(MASK, VOCAB, SPECIALS, mlm_probability=0.9)(
        {"input_ids": ids, "attention_mask": attention})
    assert (out["labels"][:, 25:] == IGNORE_INDEX).all() and (out["labels"][:, :25] != IGNORE_INDEX).any()


def test_at_least_one_position_is_masked():
    collator = MLMCollator(MASK, VOCAB, SPECIALS, mlm_probability=0.001)
    ids = torch.tensor([[5, 100, 101, 6, 0, 0]])
    for seed in range(50):
        torch.manual_seed(seed)
        labels = collator(ids)["labels"]
        assert (labels != IGNORE_INDEX).sum() >= 1
        assert (labels[0, [0, 3, 4, 5]] == IGNORE_INDEX).all()
    only_specials = torch.tensor([[5, 6, 0]])
    assert (collator(only_specials)["labels"] == IGNORE_INDEX).all()  # nothing eligible: nothing to force


def test_global_rng_makes_masks_reproducible_and_a_generator_leaves_it_alone():
    ids, _ = _batch(2, (8, 64))
    collator = MLMCollator(MASK, VOCAB, SPECIALS)
    torch.manual_seed(7)
    a = collator(ids)
    torch.manual_seed(7)
    b = collator(ids)
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.get_rng_state()
    c = collator.mask_tokens(ids, generator=torch.Generator().manual_seed(3))
    d = collator.mask_tokens(ids, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(c["input_ids"], d["input_ids"]) and torch.equal(c["labels"], d["labels"])


def test_non_contiguous_special_ids_of_a_wordpiece_vocabulary():
    # BERT's [PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103
    collator = MLMCollator(103, 200, [0, 100, 101, 102, 103], mlm_probability=0.5, pad_id=0)
    ids = torch.tensor([[101] + list(range(104, 200)) + [102, 0]] * 8)
    torch.manual_seed(0)
    out = collator(ids)
    chosen = out["labels"] != IGNORE_INDEX
    assert not chosen[:, [0, -2, -1]].any()
    assert not torch.isin(out["input_ids"][chosen & (out["input_ids"] != 103)],
                          torch.tensor([0, 100, 101, 102])).any()
    assert set(collator.random_ids.tolist()) == set(range(1, 100)) | set(range(104, 200))


def test_bad_arguments():
    with pytest.raises(ValueError, match="mlm_probability"):
        MLMCollator(MASK, VOCAB, SPECIALS, mlm_probability=0.0)
    with pytest.raises(ValueError, match="no non-special token"):
        MLMCollator(MASK, 7, SPECIALS)


def test_pad_collate_pads_to_the_longest_example():
    collate = pad_collate(pad_id=0)
    batch = collate([{"input_ids": [5, 10, 11, 6], "labels": 1},
                     {"input_ids": np.array([5, 12, 6], dtype=np.int32), "labels": 0},
                     {"input_ids": [5, 6], "labels": 1}])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[5, 10, 11, 6], [5, 12, 6, 0], [5, 6, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0, 1]
    assert all(t.dtype == torch.long for t in batch.values())


def test_pad_collate_token_type_ids_and_pad_id():
    batch = pad_collate(pad_id=9)([
        {"input_ids": [1, 2, 3, 4, 5], "token_type_ids": [0, 0, 0, 1, 1], "labels": 2},
        {"input_ids": [1, 2, 3], "token_type_ids": [0, 0, 1], "labels": 0},
    ])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [1, 2, 3, 9, 9]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [5, 3]
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == batch["attention_mask"].shape == (2, 5)


def test_text_infilling_spans_become_single_masks_and_the_target_is_the_original():
    from lit_llm.data.collate import InfillingCollator

    collator = InfillingCollator(mask_id=4, eos_id=3, start_id=2, pad_id=0, mask_ratio=0.3, poisson_lambda=3.0)
    blocks = torch.arange(10, 74).view(2, 32)  # distinct tokens: the removed ones can be counted
    batch = collator(blocks.numpy(), generator=torch.Generator().manual_seed(0))
    for b in range(2):
        n = int(batch["attention_mask"][b].sum())
        source = batch["input_ids"][b, :n].tolist()
        assert source[-1] == 3 and 4 in source
        kept = [t for t in source[:-1] if t != 4]
        assert kept == [t for t in blocks[b].tolist() if t in kept]  # order kept, only spans removed
        removed = 32 - len(kept)
        assert removed >= round(32 * 0.3)  # at least the ratio is covered
        assert all(not (x == 4 and y == 4) for x, y in zip(source, source[1:]))  # one mask per span
        assert batch["labels"][b].tolist() == blocks[b].tolist() + [3]
        assert batch["decoder_input_ids"][b].tolist() == [2] + blocks[b].tolist()
    again = collator(blocks.numpy(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["input_ids"], batch["input_ids"])
