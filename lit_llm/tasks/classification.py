"""Sequence classification: a pooled backbone representation, dropout and a linear head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from lit_llm.errors import ConfigError
from lit_llm.tasks.base import BackboneTask

POOLINGS = ("cls", "last", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """[B, T, C] -> [B, C]: the first token (`cls`, encoders), the last real token (`last`, causal
    models: the only position that has seen the whole text), or the mean over real tokens."""
    if how == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    if how == "last":
        last = attention_mask.long().sum(1).clamp(min=1) - 1  # right padding: index of the last real token
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class ClassificationTask(BackboneTask):
    """Accuracy, macro-F1 and per-class F1 from torchmetrics; the test confusion matrix is kept
    (`self.confusion`) for run.train to save with the test metrics."""

    task_kind = "classification"

    def __init__(self, model: dict, optim: dict, num_labels: int, label_names: list[str] | None = None,
                 pooling: str = "cls", head_dropout: float = 0.1, compile: bool = False,
                 tokenizer_json: str | None = None):
        super().__init__(model, optim, compile, tokenizer_json)
        if pooling not in POOLINGS:
            raise ConfigError(f"task.pooling={pooling!r} is not one of {list(POOLINGS)}")
        if num_labels < 2:
            raise ConfigError(f"the data has {num_labels} label(s); classification needs at least 2")
        self.pooling = pooling
        self.label_names = list(label_names or [str(i) for i in range(num_labels)])
        if self.config.arch == "encoder":
            # The MLM head is not used here (its decoder weight is the embedding matrix, which is):
            # frozen, DDP does not wait for gradients that never come (no find_unused_parameters and
            # its per-step graph walk) and the optimizer leaves it as loaded, so it exports unchanged.
            tied = {id(p) for p in self.backbone.wte.parameters()}
            for p in self.backbone.mlm.parameters():
                if id(p) not in tied:
                    p.requires_grad_(False)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.config.n_embd, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        metrics = MetricCollection({
            "acc": MulticlassAccuracy(num_labels, average="micro"),
            "f1_macro": MulticlassF1Score(num_labels, average="macro"),
        })
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.test_f1_per_class = MulticlassF1Score(num_labels, average=None)
        self.test_confusion = MulticlassConfusionMatrix(num_labels)
        self.confusion: list[list[int]] | None = None

    def forward(self, batch: dict) -> torch.Tensor:
        mask = batch.get("attention_mask")
        if self.config.arch == "gpt":
            hidden = self.backbone.hidden_states(batch["input_ids"], attention_mask=mask)
        else:
            hidden = self._compiled(batch["input_ids"], attention_mask=mask,
                                    token_type_ids=batch.get("token_type_ids"))
        return self.head(self.dropout(pool(hidden, mask, self.pooling))).float()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        self.log_mean("val/loss", F.cross_entropy(logits, batch["labels"]), len(logits), prog_bar=True)
        self.val_metrics.update(logits, batch["labels"])
        self.log_dict(self.val_metrics, prog_bar=True, on_epoch=True)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch)
        self.log_mean("test/loss", F.cross_entropy(logits, batch["labels"]), len(logits))
        self.test_metrics.update(logits, batch["labels"])
        self.log_dict(self.test_metrics, on_epoch=True)
        self.test_f1_per_class.update(logits, batch["labels"])
        self.test_confusion.update(logits, batch["labels"])
        probs = logits.softmax(-1)
        self.record(self.test_split(dataloader_idx), pred=logits.argmax(-1), label=batch["labels"],
                    p_true=probs.gather(1, batch["labels"][:, None])[:, 0].double())

    def on_test_epoch_end(self) -> None:
        per_class = self.test_f1_per_class.compute()
        for name, value in zip(self.label_names, per_class):
            self.log(f"test/f1/{name}", value)
        self.confusion = self.test_confusion.compute().tolist()
        dm = getattr(self.trainer, "datamodule", None)
        for split, rec in self.records.items():  # the texts, for the report's worst/best examples
            raw = getattr(dm, "raw", None)
            if raw is not None and split in raw and self.trainer.world_size == 1:
                rows = raw[split].select(range(len(rec["pred"])))
                rec["text"] = rows["text"]
                if "text_pair" in rows.column_names:
                    rec["text_pair"] = rows["text_pair"]
        self.test_f1_per_class.reset()
        self.test_confusion.reset()
