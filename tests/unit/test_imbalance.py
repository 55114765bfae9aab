"""Imbalanced labels: class-weighted loss, the balanced train sampler, per-class metrics and calibration."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from lit_llm.data.classification import BalancedRandomSampler, ClassificationDataModule
from lit_llm.errors import ConfigError
from lit_llm.metrics.calibration import reliability_bins
from lit_llm.reporting import plots
from lit_llm.reporting.run_report import calibration_plots
from lit_llm.tasks.classification import (
    ClassificationTask,
    balanced_class_weights,
    calibration_error,
    per_class_metrics,
    resolve_class_weights,
)

MODEL = {"arch": "gpt", "vocab_size": 40, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0}
NAMES = ["a", "b", "c"]


# ============================================================================ class weights

def test_balanced_weights_by_hand():
    # counts 6, 3, 1 of n = 10: n / (3 * count) = 10/18, 10/9, 10/3
    assert balanced_class_weights([6, 3, 1], NAMES) == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert resolve_class_weights("balanced", NAMES, [6, 3, 1]) == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    assert resolve_class_weights(None, NAMES, [6, 3, 1]) is None
    assert resolve_class_weights([1, 2, 3.5], NAMES, None) == [1.0, 2.0, 3.5]


@pytest.mark.parametrize("spec, counts, match", [
    ([1.0, 2.0], None, "has 2 weights for 3 classes"),
    ([1.0, 0.0, 2.0], None, "not positive"),
    ([1.0, float("nan"), 2.0], None, "not positive"),
    ("sqrt", None, "use null, balanced or a list"),
    (0.5, None, "use null, balanced or a list"),
    ("balanced", None, "needs the train split's label counts"),
    ("balanced", [4, 0, 2], r"no examples of \['b'\]"),
])
def test_class_weight_config_errors(spec, counts, match):
    with pytest.raises(ConfigError, match=match):
        resolve_class_weights(spec, NAMES, counts)


def test_weighted_cross_entropy_equals_hand_computation():
    torch.manual_seed(0)
    task = ClassificationTask(MODEL, {"lr": 1e-3}, num_labels=3, label_names=NAMES, pooling="last",
                              class_weights="balanced", class_counts=[6, 3, 1])
    w = [10 / 18, 10 / 9, 10 / 3]
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [0.3, 0.2, 0.1], [1.0, -1.0, 2.0]])
    labels = [0, 1, 2, 2]
    # weighted mean: sum_i w_{y_i} * -log softmax(x_i)[y_i] / sum_i w_{y_i}
    nll = [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits.tolist(), labels)]
    expected = sum(w[y] * n for y, n in zip(labels, nll)) / sum(w[y] for y in labels)
    task.forward = lambda batch: logits  # the loss of these logits, whatever the backbone
    loss = task.training_step({"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.tensor(labels)}, 0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    unweighted = sum(nll) / 4
    assert abs(expected - unweighted) > 0.05  # the weights matter for this batch
    # the resolved weights are what the checkpoint keeps (hparams), not the counts; no state-dict entry
    assert task.hparams["class_weights"] == pytest.approx(w) and "class_counts" not in task.hparams
    assert "loss_weight" not in task.state_dict()


def test_class_weights_must_match_the_classes():
    with pytest.raises(ConfigError, match="task.class_weights"):
        ClassificationTask(MODEL, {"lr": 1e-3}, num_labels=3, pooling="last", class_weights=[1.0, 2.0])


# ============================================================================ balanced sampler

def imbalanced_labels(n: int = 400, seed: int = 0) -> np.ndarray:
    """70% class 0, 25% class 1, 5% class 2, shuffled."""
    labels = np.array([0] * int(0.7 * n) + [1] * int(0.25 * n) + [2] * (n - int(0.7 * n) - int(0.25 * n)))
    return np.random.default_rng(seed).permutation(labels)


def test_balanced_sampler_draws_classes_equally():
    labels = imbalanced_labels()
    s = BalancedRandomSampler(labels, seed=3)
    seen = Counter()
    for epoch in range(5):
        s.set_epoch(epoch)
        order = list(s)
        assert len(order) == len(s) == len(labels)  # the plain sampler's epoch length
        per_class = Counter(labels[order].tolist())
        assert max(per_class.values()) - min(per_class.values()) <= 1  # equal quotas (400 = 133 + 133 + 134)
        seen.update(order)
    assert len(seen) > 0.9 * len(labels)  # over epochs the common class's examples are all visited ...
    rare = np.flatnonzero(labels == 2)
    # ... and the 20 rare ones repeat evenly: 133-134 draws an epoch = 6 whole passes + part of a 7th
    assert all(5 * 6 <= seen[i] <= 5 * 7 for i in rare)


def test_balanced_sampler_is_seeded_and_resumable():
    labels = imbalanced_labels()
    a, b = BalancedRandomSampler(labels, seed=7), BalancedRandomSampler(labels, seed=7)
    assert list(a) == list(b)
    assert list(a) != list(BalancedRandomSampler(labels, seed=8))
    a.set_epoch(1)
    assert a.permutation() != b.permutation(0) and a.permutation() == b.permutation(1)
    # a resumed run (the trainer's position: epoch 1, 96 samples seen) continues with the same samples
    full = b.permutation(1)
    resumed = BalancedRandomSampler(labels, seed=7)
    resumed.follow(lambda: (1, 96))
    assert list(resumed) == full[96:]


def test_balanced_sampler_replicas_are_disjoint():
    labels = imbalanced_labels()
    r0, r1 = (BalancedRandomSampler(labels, seed=5, num_replicas=2, rank=r) for r in (0, 1))
    for epoch in (0, 1):
        o0, o1 = r0.permutation(epoch), r1.permutation(epoch)
        assert len(o0) == len(o1) == len(labels) // 2
        assert not set(o0) & set(o1)
        for order in (o0, o1):
            counts = Counter(labels[order].tolist())
            assert max(counts.values()) - min(counts.values()) <= 1


def test_data_module_sampler_setting(tmp_path):
    from tests.unit.test_classification_data import make_dm, ready, tsv

    rows = [(f"w{i % 5} x", int(i % 10 == 0)) for i in range(100)]  # 90 / 10
    dm = ready(make_dm(tmp_path, tsv(tmp_path / "t.tsv", rows), label_names=["n", "p"], batch_size=10,
                       val_fraction=0.1, sampler="balanced"))
    assert isinstance(dm.make_train_sampler(), BalancedRandomSampler)
    counts = dm.class_counts()
    assert sum(counts) == 90 and counts == np.bincount(dm.raw["train"]["label"], minlength=2).tolist()
    assert dm.task_arguments()["class_counts"] == counts
    labels = np.concatenate([b["labels"].numpy() for b in dm.train_dataloader()])
    assert len(labels) == 90 and abs(int(labels.sum()) - 45) <= 1
    assert dm.state_dict()["sampler"] == "balanced"
    with pytest.raises(ConfigError, match="data.sampler='sorted'"):
        ClassificationDataModule(train_files="x.tsv", sampler="sorted")
    with pytest.raises(ConfigError, match="choose one train order"):
        ClassificationDataModule(train_files="x.tsv", sampler="balanced", bucket_by_length=True)


# ============================================================================ per-class metrics, calibration

def test_per_class_metrics_against_hand_counts():
    preds = torch.tensor([0, 0, 1, 1, 2, 0, 2, 2])
    target = torch.tensor([0, 1, 1, 1, 2, 0, 0, 2])
    metrics = per_class_metrics(3)
    metrics.update(torch.nn.functional.one_hot(preds, 3).float(), target)
    out = {k: v.tolist() for k, v in metrics.compute().items()}
    # class 0: tp 2, fp 1 (pred 0 / true 1), fn 1 (pred 2 / true 0); class 1: tp 2, fp 0, fn 1; class 2: tp 2, fp 1, fn 0
    precision, recall = [2 / 3, 1.0, 2 / 3], [2 / 3, 2 / 3, 1.0]
    assert out["precision"] == pytest.approx(precision)
    assert out["recall"] == pytest.approx(recall)
    assert out["f1"] == pytest.approx([2 * p * r / (p + r) for p, r in zip(precision, recall)])


def test_expected_calibration_error_against_hand_computation():
    # top-class probabilities 0.9, 0.9, 0.6, 0.6, 0.6 (15 bins of width 1/15: 0.9 in bin 13, 0.6 in bin 9)
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.6, 0.4]])
    target = torch.tensor([0, 1, 0, 1, 1])  # bin 0.9: 1 of 2 right; bin 0.6: 2 of 3 right
    expected = 2 / 5 * abs(0.5 - 0.9) + 3 / 5 * abs(2 / 3 - 0.6)
    ece = calibration_error(2)
    ece.update(probs, target)
    assert ece.compute().item() == pytest.approx(expected, abs=1e-6)
    bins = reliability_bins(probs.max(-1).values.tolist(), (probs.argmax(-1) == target).tolist())
    assert bins["ece"] == pytest.approx(expected)
    assert bins["count"][13] == 2 and bins["count"][9] == 3 and sum(bins["count"]) == 5
    assert bins["accuracy"][13] == 0.5 and bins["confidence"][9] == pytest.approx(0.6)


def test_reliability_bins_equal_torchmetrics_on_random_predictions():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 4, generator=gen), -1)
    target = torch.randint(0, 4, (500,), generator=gen)
    ece = calibration_error(4)
    ece.update(probs, target)
    bins = reliability_bins(probs.max(-1).values.double().tolist(), (probs.argmax(-1) == target).tolist())
    assert bins["ece"] == pytest.approx(ece.compute().item(), abs=1e-5)


def test_reliability_diagram_written_for_classifier_records(tmp_path):
    records = {"test": {"pred": [0, 1, 1, 0], "label": [0, 1, 0, 0], "confidence": [0.95, 0.7, 0.55, 0.8]},
               "other": {"pred": [1], "label": [1]}}  # no confidences: no diagram
    bins: dict = {}
    out = calibration_plots(records, tmp_path, bins)
    assert out == {"reliability diagram (test)": "plots/reliability_test.png"}
    assert (tmp_path / "plots" / "reliability_test.png").stat().st_size > 1000
    assert list(bins) == ["test"] and sum(bins["test"]["count"]) == 4
    plots.reliability_diagram(bins["test"], tmp_path / "again.png")
