"""Length bucketing, shared by every example-based data module (lit_llm.data.loading): less padding, the same
seeded and resumable order, disjoint DDP shares, and evaluation by length with records back in example order."""
import numpy as np
import torch

from lit_llm.data.collate import pad_collate
from lit_llm.data.loading import (
    BucketRandomSampler,
    EvalShardSampler,
    ResumableRandomSampler,
    in_example_order,
    length_order,
)


def _lengths(n: int = 2000, seed: int = 0) -> np.ndarray:
    """A long-tailed length distribution, as sentences are (mostly short, some long)."""
    return np.clip(np.random.default_rng(seed).lognormal(3.0, 0.7, n).astype(int), 2, 256)


def _real_fraction(order: list[int], lengths: np.ndarray, batch_size: int) -> float:
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    real = sum(int(lengths[b].sum()) for b in batches)
    return real / sum(len(b) * int(lengths[b].max()) for b in batches)


def test_bucketing_removes_most_padding():
    lengths, bs = _lengths(), 32
    plain = ResumableRandomSampler(len(lengths), seed=3).permutation()
    bucket = BucketRandomSampler(lengths, bs, seed=3).permutation()
    assert sorted(bucket) == list(range(len(lengths)))  # every example once
    assert _real_fraction(plain, lengths, bs) < 0.5
    assert _real_fraction(bucket, lengths, bs) > 0.9


def test_a_secondary_length_pads_targets_less_and_keeps_the_batches_of_the_primary():
    """seq2seq: sources bucketed, then targets re-sorted within neighbouring batches."""
    src, tgt, bs = _lengths(2000, seed=1), _lengths(2000, seed=2), 8
    plain = BucketRandomSampler(src, bs, seed=3)
    both = BucketRandomSampler(src, bs, seed=3, secondary=tgt)
    assert sorted(both.permutation(0)) == list(range(2000))
    assert _real_fraction(both.permutation(0), tgt, bs) > _real_fraction(plain.permutation(0), tgt, bs) + 0.1
    assert _real_fraction(both.permutation(0), src, bs) > 0.8  # sources still bucketed
    shares = [BucketRandomSampler(src, bs // 2, seed=3, num_replicas=2, rank=r, secondary=tgt).permutation(0)
              for r in (0, 1)]
    for step in range(10):  # 2 processes x B/2 still train on the batches of 1 x B
        together = set(shares[0][step * 4:(step + 1) * 4]) | set(shares[1][step * 4:(step + 1) * 4])
        assert together == set(both.permutation(0)[step * bs:(step + 1) * bs])


def test_bucket_order_is_seeded_and_changes_per_epoch():
    lengths = _lengths()
    a, b = BucketRandomSampler(lengths, 16, seed=7), BucketRandomSampler(lengths, 16, seed=7)
    assert a.permutation(0) == b.permutation(0)
    assert a.permutation(0) != a.permutation(1)
    assert a.permutation(0) != BucketRandomSampler(lengths, 16, seed=8).permutation(0)


def test_bucket_resume_skips_to_the_same_samples():
    lengths, bs = _lengths(500), 10
    full = list(BucketRandomSampler(lengths, bs, seed=1))
    done = 7 * bs  # a run stopped after 7 batches
    resumed = BucketRandomSampler(lengths, bs, seed=1)
    resumed.follow(lambda: (0, done))
    assert list(resumed) == full[done:]
    assert len(resumed) == len(full)  # len is the full share whatever the start
    later = BucketRandomSampler(lengths, bs, seed=1)
    later.follow(lambda: (2, 3 * bs))  # a later epoch, mid-way
    assert list(later) == later.permutation(2)[3 * bs :]


def test_bucket_ddp_shares_are_disjoint_and_bucketed():
    lengths, bs = _lengths(1001), 16
    shares = [BucketRandomSampler(lengths, bs, seed=5, num_replicas=2, rank=r).permutation(0) for r in (0, 1)]
    assert not set(shares[0]) & set(shares[1])
    assert len(shares[0]) == len(shares[1]) == len(lengths) // 2
    assert len(set(shares[0]) | set(shares[1])) == 1000  # one sample of the odd 1,001 left out
    assert all(_real_fraction(s, lengths, bs) > 0.85 for s in shares)


def test_two_processes_at_half_the_batch_train_on_the_batches_of_one():
    """N processes x batch B/N see, step by step, the samples 1 process x batch B sees (tests/integration/
    test_parity.py relies on it), as with the plain sampler."""
    lengths, bs = _lengths(1001), 16  # odd: 2 processes drop the last sample, 1 process keeps it
    one = BucketRandomSampler(lengths, 2 * bs, seed=5).permutation(0)
    shares = [BucketRandomSampler(lengths, bs, seed=5, num_replicas=2, rank=r).permutation(0) for r in (0, 1)]
    for step in range(len(shares[0]) // bs):
        together = set(shares[0][step * bs:(step + 1) * bs]) | set(shares[1][step * bs:(step + 1) * bs])
        assert together == set(one[step * 2 * bs:(step + 1) * 2 * bs])


def test_length_order_is_deterministic_chunked_and_complete():
    lengths, bs = _lengths(300), 8
    order = length_order(lengths, bs, bucket_batches=10)
    assert sorted(order.tolist()) == list(range(300))
    assert (length_order(lengths, bs, bucket_batches=10) == order).all()
    first = order[: 8 * 10]  # the first chunk: the split's first 80 items, longest first
    assert sorted(first.tolist()) == list(range(80))
    assert (np.diff(lengths[first]) <= 0).all()
    assert _real_fraction(order.tolist(), lengths, bs) > _real_fraction(list(range(300)), lengths, bs)


def test_eval_shards_of_the_length_order_cover_every_item_once():
    lengths = _lengths(101)
    order = length_order(lengths, 4)
    shares = [list(EvalShardSampler(101, 2, r, order=order)) for r in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(101))
    assert list(EvalShardSampler(101, 1, 0, order=order)) == order.tolist()
    assert list(EvalShardSampler(5, 1, 0)) == list(range(5))  # no order: as stored


def test_records_made_in_length_order_go_back_to_example_order():
    """What a task records per batch (the loader in length order), restored by the batches' example_index."""
    rng = np.random.default_rng(0)
    examples = [{"input_ids": list(range(1, n + 1)), "labels": int(n % 2), "example_index": i}
                for i, n in enumerate(rng.integers(1, 30, 50))]
    lengths = np.asarray([len(e["input_ids"]) for e in examples])
    collate, order = pad_collate(0), length_order(lengths, 8)
    rec: dict[str, list] = {}
    for lo in range(0, len(order), 8):
        batch = collate([examples[i] for i in order[lo : lo + 8]])
        for key, values in (("index", batch["example_index"]), ("n", batch["attention_mask"].sum(1)),
                            ("label", batch["labels"])):
            rec.setdefault(key, []).extend(values.tolist())
    assert rec["index"] != list(range(50))  # the loader did reorder
    restored = in_example_order({**rec, "note": ["one value of another length"]}, "index")
    assert restored["index"] == list(range(50))
    assert restored["n"] == lengths.tolist() and restored["label"] == [e["labels"] for e in examples]
    assert restored["note"] == ["one value of another length"]
    assert in_example_order({}, "index") == {}


def test_collate_carries_example_index_only_when_given():
    batch = pad_collate(0)([{"input_ids": [1, 2], "labels": 0}])
    assert "example_index" not in batch
    batch = pad_collate(0)([{"input_ids": [1, 2], "labels": 0, "example_index": 4}])
    assert batch["example_index"].tolist() == [4] and batch["example_index"].dtype == torch.long
