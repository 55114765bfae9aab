"""Knowledge distillation (task.distill, lit_llm/distill.py): the loss against a hand computation, the teacher
frozen in eval mode, and the refusals (config values, task kinds, tokenizers, class names)."""
from __future__ import annotations

import math

import pytest
import torch

from lit_llm.distill import DistillConfig, distill_config, kd_loss
from lit_llm.errors import ConfigError
from lit_llm.run import train
from lit_llm.tasks.base import BackboneTask
from lit_llm.tasks.classification import ClassificationTask
from lit_llm.tasks.mlm import MaskedLMTask

ENCODER = {"arch": "encoder", "vocab_size": 64, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16,
           "intermediate_size": 32, "dropout": 0.0}
CLASSIFY = ["data=tiny_sentiment", "tokenizer=bpe", "tokenizer.vocab_size=300", "task=classification",
            "model=bert_tiny", "model.block_size=64", "task.pooling=cls", "trainer.max_steps=6",
            "trainer.val_check_interval=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "callbacks.generate_samples=null"]


def softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def test_kd_loss_equals_hand_computation():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    t = 2.0
    # T^2 * mean over rows of sum_c p_c (log p_c - log q_c), p = softmax(teacher / T), q = softmax(student / T)
    expected = t * t * sum(sum(p * (math.log(p) - math.log(q)) for p, q in zip(softmax(tr, t), softmax(sr, t)))
                           for sr, tr in zip(student.tolist(), teacher.tolist())) / 2
    assert kd_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-7)
    # a mask keeps the rows that carry a label (causal LM: not the -100 positions)
    only_first = t * t * sum(p * (math.log(p) - math.log(q))
                             for p, q in zip(softmax(teacher[0].tolist(), t), softmax(student[0].tolist(), t)))
    assert kd_loss(student, teacher, t, mask=torch.tensor([True, False])).item() == pytest.approx(only_first, rel=1e-6)


def test_kd_loss_over_sequences_compares_the_shared_vocabulary():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 8), torch.randn(2, 5, 6)  # vocabularies padded to different sizes
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    expected = kd_loss(student[..., :6][mask], teacher[mask], 1.5)
    assert kd_loss(student, teacher, 1.5, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    logits = student.clone().requires_grad_()
    kd_loss(logits, teacher, 1.5, mask).backward()
    assert logits.grad[1, 2:].abs().sum() == 0 and logits.grad[0].abs().sum() > 0  # masked rows get no gradient


@pytest.mark.parametrize("spec, match", [
    ({"teacher": "x", "temperature": 0}, "temperature=0 must be > 0"),
    ({"teacher": "x", "alpha": 1.5}, r"alpha=1.5 must be in \[0, 1\]"),
    ({"teacher": "x", "alpha": "half"}, "alpha='half' must be a number"),
    ({"teacher": "x", "beta": 1}, "task.distill.beta is not a distillation setting"),
    ({"teacher": "required"}, "task.distill.teacher is required"),
    ("teacher.ckpt", "choose task/distill=kd"),
])
def test_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        distill_config(spec)


def test_config_without_a_teacher_is_no_distillation():
    assert distill_config(None) is None and distill_config({"teacher": None}) is None
    assert distill_config({"teacher": "t.ckpt", "temperature": 4}) == DistillConfig("t.ckpt", 4.0, 0.5)


def test_tasks_without_distillation_refuse_it(compose_train, tmp_path):
    with pytest.raises(ConfigError, match="mlm does not support distillation"):
        train(compose_train(["experiment=quickstart", "model=bert_tiny", "task=mlm", "data.objective=mlm",
                             "+task/distill=kd", "task.distill.teacher=t.ckpt"], tmp_path / "run"))

    class NoDistill(MaskedLMTask):  # a task that passes distill on without taking part is refused all the same
        def __init__(self, model, optim, distill=None):
            super().__init__(model, optim)
            BackboneTask.__init__(self, model, optim, distill=distill)

    with pytest.raises(ConfigError, match="mlm does not support distillation"):
        NoDistill(ENCODER, {"lr": 1e-3}, distill={"teacher": "t.ckpt"})


def test_combined_loss_and_a_frozen_teacher():
    torch.manual_seed(0)
    student = ClassificationTask(ENCODER, {"lr": 1e-3}, num_labels=2, head_dropout=0.0,
                                 distill={"teacher": "unused", "temperature": 2.0, "alpha": 0.25})
    teacher = ClassificationTask({**ENCODER, "n_embd": 32, "n_layer": 2}, {"lr": 1e-3}, num_labels=2)
    teacher.eval().requires_grad_(False)
    student.distiller.teacher = teacher  # what Distiller.attach leaves, without a checkpoint file
    student.log = lambda *args, **kwargs: None  # no trainer here
    batch = {"input_ids": torch.randint(7, 64, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long),
             "labels": torch.tensor([0, 1, 1, 0])}
    loss = student.training_step(batch, 0)
    with torch.no_grad():
        logits, target = student(batch), teacher(batch)
        hard = torch.nn.functional.cross_entropy(logits, batch["labels"])
    assert loss.item() == pytest.approx((0.25 * kd_loss(logits, target, 2.0) + 0.75 * hard).item(), rel=1e-5)
    loss.backward()
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    assert all(not key.startswith(("distiller", "teacher")) for key in student.state_dict())


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, cache_dir):
    """A tiny encoder classifier trained on tiny_sentiment: the teacher of the runs below."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR, TINY

    out = tmp_path_factory.mktemp("teacher")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=TINY + CLASSIFY + ["model.n_embd=64", "test=false",
                                                           f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}"])
    train(cfg)
    return out


def test_distilled_run_trains_and_evaluates_without_its_teacher(compose_train, tmp_path, teacher_run):
    from lit_llm.checkpointing import read_checkpoint

    out = tmp_path / "student"
    metrics = train(compose_train(CLASSIFY + ["model.n_embd=32", "model.n_layer=1", "task/distill=kd",
                                              f"task.distill.teacher={teacher_run}", "task.distill.alpha=0.7"], out))
    assert "test/test/acc" in metrics
    ckpt = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["hyper_parameters"]["distill"]["teacher"] == str(teacher_run)  # what it learned from, recorded
    assert not any("teacher" in key for key in ckpt["state_dict"])              # but not the teacher itself
    assert {"train/kd_loss", "train/hard_loss"} <= set(metrics)
    assert metrics["train/loss"] == pytest.approx(0.7 * metrics["train/kd_loss"] + 0.3 * metrics["train/hard_loss"],
                                                  rel=1e-4)


@pytest.mark.parametrize("overrides, match", [
    (["tokenizer.vocab_size=280"], r"another tokenizer than the student: teacher's tokenizer sha256 \w+ \(\d+ tokens"
                                   r"\), student's \w+ \(\d+ tokens\)"),
    (["data.label_names=[neg,pos]"], r"predicts the classes \['negative', 'positive'\] but the student's data has "
                                     r"\['neg', 'pos'\]"),
])
def test_a_teacher_that_does_not_fit_is_refused(compose_train, tmp_path, teacher_run, overrides, match):
    with pytest.raises(ConfigError, match=match):
        train(compose_train(CLASSIFY + ["task/distill=kd", f"task.distill.teacher={teacher_run}"] + overrides,
                            tmp_path / "student"))


@pytest.mark.parametrize("overrides, match", [
    ([], "task.distill.teacher is required with task/distill=kd"),
    (["task.distill.teacher=/no/such/run.ckpt"], "task.distill.teacher=/no/such/run.ckpt: no such checkpoint file"),
])
def test_teacher_errors_come_before_any_data_is_read(compose_train, tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        train(compose_train(CLASSIFY + ["task/distill=kd"] + overrides, tmp_path / "student"))
    assert not (tmp_path / "student" / "tokenizer.json").exists()


def test_a_teacher_of_another_task_is_refused(compose_train, tmp_path):
    clm = tmp_path / "clm"
    train(compose_train(["experiment=quickstart", "test=false", "trainer.max_steps=2"], clm))
    with pytest.raises(ConfigError, match="is a clm checkpoint; a classification student needs a classification"):
        train(compose_train(CLASSIFY + ["task/distill=kd", f"task.distill.teacher={clm}"], tmp_path / "student"))


def test_causal_lm_distillation(compose_train, tmp_path):
    teacher = tmp_path / "teacher"
    train(compose_train(["experiment=quickstart", "test=false", "trainer.max_steps=4"], teacher))
    out = tmp_path / "student"
    metrics = train(compose_train(["experiment=quickstart", "model.n_embd=32", "trainer.max_steps=4",
                                   "task/distill=kd", f"task.distill.teacher={teacher}"], out))
    assert "test/validation/ppl" in metrics and "train/kd_loss" in metrics
