"""Knowledge distillation (Hinton et al., 2015): a student learns from a teacher checkpoint's logits.

`task.distill` (conf/task/distill/: `none`, or `kd` with `teacher=<run dir | .ckpt>`): at every training step the
teacher scores the same batch, in eval mode and without gradients, and the student's loss becomes

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * hard-label loss

(`kd_loss`: the KL divergence per row — an example for classification, a predicted token for causal LM — averaged
over the rows that carry a label; the T^2 keeps the soft term's gradients on the hard term's scale as T changes).
Validation and test score the student alone. The teacher is any checkpoint of the same task kind (its own size and
architecture) trained with the same tokenizer (refused otherwise, naming both), with the same class names for
classification. It is loaded when fitting starts, kept out of the student's state dict, optimizer and checkpoints
(the checkpoint's hyper-parameters name it), and evaluating a distilled checkpoint needs no teacher.

A task takes part by setting `supports_distill = True` and calling `BackboneTask.distilled(loss, logits, batch,
mask)` in its training step; `distill_logits(batch)` is what the teacher computes (the same logits the task's loss
reads).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lit_llm.errors import ConfigError

log = logging.getLogger("lit_llm")


@dataclass(frozen=True)
class DistillConfig:
    """`task.distill`: the teacher checkpoint, the softmax temperature and the soft term's weight."""

    teacher: str
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the distillation term; the hard-label loss gets 1 - alpha

    def __post_init__(self) -> None:
        for key in ("temperature", "alpha"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"task.distill.{key}={value!r} must be a number")
        if self.temperature <= 0:
            raise ConfigError(f"task.distill.temperature={self.temperature} must be > 0 (1 = the teacher's own "
                              "probabilities; 2-4 softens them, as usual for distillation)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"task.distill.alpha={self.alpha} must be in [0, 1] (the weight of the distillation "
                              "term; 1 - alpha weights the hard-label loss)")


def distill_config(spec: Any) -> DistillConfig | None:
    """`task.distill` as given (None, or a mapping with `teacher`, `temperature`, `alpha`); None when no teacher."""
    if spec is None:
        return None
    if not hasattr(spec, "get"):
        raise ConfigError(f"task.distill={spec!r}: choose task/distill=kd task.distill.teacher=<run dir | .ckpt> "
                          "(or task/distill=none)")
    spec = dict(spec)
    unknown = sorted(set(spec) - {"teacher", "temperature", "alpha"})
    if unknown:
        raise ConfigError(f"task.distill.{unknown[0]} is not a distillation setting (teacher, temperature, alpha)")
    teacher = spec.pop("teacher", None)
    if teacher in (None, ""):
        return None
    if teacher in ("???", "required"):
        raise ConfigError("task.distill.teacher is required with task/distill=kd: give the teacher's run directory "
                          "or .ckpt, e.g. task.distill.teacher=outputs/sst2_bert/runs/<time>")
    return DistillConfig(str(teacher), **spec)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) per row of [..., classes] logits, averaged over the
    rows (those where `mask` is true). Logits over different vocabulary paddings are compared on the shared first
    min(V_student, V_teacher) entries (the tokenizer's; the rest are padding rows of the embedding table)."""
    width = min(student.size(-1), teacher.size(-1))
    s = student[..., :width].float() / temperature
    t = teacher[..., :width].float() / temperature
    if mask is not None:
        s, t = s[mask], t[mask]
    s, t = s.reshape(-1, width), t.reshape(-1, width)
    if s.size(0) == 0:
        return student.sum() * 0.0
    per_row = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="none").sum(-1)
    return per_row.mean() * temperature ** 2


class Distiller:
    """A task's teacher (loaded by `attach`) and the combination of its soft targets with the hard-label loss."""

    def __init__(self, config: DistillConfig):
        self.config = config
        self.teacher = None  # a BackboneTask in eval mode, frozen; not a submodule of the student

    def attach(self, student) -> None:
        """Load the teacher checkpoint beside `student` (same device), refusing one of another task kind, another
        tokenizer or other class names."""
        from lit_llm.checkpointing import lit_llm_meta, read_checkpoint, resolve_ckpt_path
        from lit_llm.tasks import task_spec
        from lit_llm.utils_io import sha256_text

        where = f"task.distill.teacher={self.config.teacher}"
        path = resolve_ckpt_path(self.config.teacher, "task.distill.teacher")
        meta = lit_llm_meta(read_checkpoint(path, key="task.distill.teacher"), self.config.teacher,
                            "task.distill.teacher")
        if meta.get("task") != student.task_kind:
            raise ConfigError(f"{where} is a {meta.get('task')} checkpoint; a {student.task_kind} student needs a "
                              f"{student.task_kind} teacher (a checkpoint pipelines/train.py wrote for the same task)")
        mine = sha256_text(student.tokenizer_json) if student.tokenizer_json else None
        theirs = meta.get("tokenizer_fingerprint")
        if mine is None or theirs != mine:
            raise ConfigError(
                f"{where} was trained with another tokenizer than the student: teacher's tokenizer sha256 "
                f"{str(theirs)[:12]} ({_vocab(meta.get('tokenizer_json'))} tokens), student's {str(mine)[:12]} "
                f"({_vocab(student.tokenizer_json)} tokens); distillation compares logits token by token, so both "
                "need the same one: train the student with the teacher's tokenizer (the same tokenizer.* and data "
                "settings, or tokenizer=pretrained tokenizer.path=<the teacher's tokenizer.json>)")
        teacher = task_spec(meta["task"], where).task_class().load_from_checkpoint(
            path, map_location="cpu", weights_only=True)
        names = getattr(student, "label_names", None)
        if names is not None and list(getattr(teacher, "label_names", [])) != list(names):
            raise ConfigError(f"{where} predicts the classes {list(teacher.label_names)} but the student's data "
                              f"has {list(names)}; distil from a teacher trained on the same labels")
        teacher.eval().requires_grad_(False)
        self.teacher = teacher.to(student.device)
        n_teacher = sum(p.numel() for p in teacher.parameters())
        n_student = sum(p.numel() for p in student.parameters())
        log.info("distill: teacher %s (%s, %.2f M parameters; student %.2f M), temperature %g, alpha %g", path,
                 teacher.config.arch, n_teacher / 1e6, n_student / 1e6, self.config.temperature, self.config.alpha)

    def loss(self, student, hard: torch.Tensor, logits: torch.Tensor, batch: dict,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(combined loss, distillation term) for the student's `logits` on `batch` and its hard-label loss."""
        if self.teacher is None:
            raise RuntimeError("Distiller.attach(student) must run before training (BackboneTask.on_fit_start)")
        if self.teacher.device != logits.device:
            self.teacher.to(logits.device)
        self.teacher.eval()
        with torch.no_grad():
            target = self.teacher.distill_logits(batch)
        soft = kd_loss(logits, target, self.config.temperature, mask)
        return self.config.alpha * soft + (1.0 - self.config.alpha) * hard, soft


def _vocab(tokenizer_json: str | None) -> str:
    if not tokenizer_json:
        return "?"
    from tokenizers import Tokenizer

    return f"{Tokenizer.from_str(tokenizer_json).get_vocab_size():,}"
