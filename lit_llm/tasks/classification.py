"""Sequence classification: a pooled backbone representation, dropout and a linear head."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from lit_llm.errors import ConfigError
from lit_llm.metrics import bootstrap as bs
from lit_llm.tasks.base import BackboneTask

POOLINGS = ("auto", "cls", "last", "mean")  # auto: the backbone's own (`default_pooling`: encoder cls, GPT last)


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
    """Accuracy, macro-F1 and per-class F1 from torchmetrics (`test/<split>/acc`, `.../f1_macro`,
    `.../f1/<label>`); the test confusion matrix is kept (`confusion`) and written by `write_outputs`."""

    task_kind = "classification"

    def __init__(self, model: dict, optim: dict, num_labels: int, label_names: list[str] | None = None,
                 pooling: str = "cls", head_dropout: float = 0.1, compile: bool = False,
                 tokenizer_json: str | None = None, peft: dict | None = None):
        super().__init__(model, optim, compile, tokenizer_json, peft)
        if pooling not in POOLINGS:
            raise ConfigError(f"task.pooling={pooling!r} is not one of {list(POOLINGS)}")
        if num_labels < 2:
            raise ConfigError(f"the data has {num_labels} label(s); classification needs at least 2")
        self.pooling = self.backbone.default_pooling if pooling == "auto" else pooling
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
        self.num_labels = num_labels
        self.val_metrics = self._metrics("val/")
        self.test_metrics = nn.ModuleList()  # per test dataloader, built in on_test_start
        # the test confusion matrix of every test split, {split: rows true, columns predicted}
        self.confusion: dict[str, list[list[int]]] = {}

    def _metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(self.num_labels, average="micro"),
                                 "f1_macro": MulticlassF1Score(self.num_labels, average="macro")}, prefix=prefix)

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

    def on_test_start(self) -> None:
        super().on_test_start()
        self.test_metrics = nn.ModuleList(
            nn.ModuleDict({"scores": self._metrics(f"test/{name}/"),
                           "f1_per_class": MulticlassF1Score(self.num_labels, average=None),
                           "confusion": MulticlassConfusionMatrix(self.num_labels)})
            for name in self.test_names()).to(self.device)
        self.confusion = {}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        split, metrics = self.test_split(dataloader_idx), self.test_metrics[dataloader_idx]
        logits, labels = self(batch), batch["labels"]
        self.log_mean(f"test/{split}/loss", F.cross_entropy(logits, labels), len(logits), add_dataloader_idx=False)
        metrics["scores"].update(logits, labels)
        self.log_dict(metrics["scores"], on_epoch=True, add_dataloader_idx=False)
        metrics["f1_per_class"].update(logits, labels)
        metrics["confusion"].update(logits, labels)
        probs = logits.softmax(-1)
        self.record(split, pred=logits.argmax(-1), label=labels, p_true=probs.gather(1, labels[:, None])[:, 0].double())

    def on_test_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        for split, metrics in zip(self.test_names(), self.test_metrics):
            for name, value in zip(self.label_names, metrics["f1_per_class"].compute()):
                self.log(f"test/{split}/f1/{name}", value)
            self.confusion[split] = metrics["confusion"].compute().tolist()
            metrics["f1_per_class"].reset()
            metrics["confusion"].reset()
            rec = self.records.get(split)
            if rec and dm is not None and split in dm.raw and self.trainer.world_size == 1:
                rows = dm.raw[split].select(range(len(rec["pred"])))  # the texts, for worst/best examples
                rec["text"] = rows["text"]
                if "text_pair" in rows.column_names:
                    rec["text_pair"] = rows["text_pair"]

    # -- hooks (BackboneTask) --------------------------------------------------------------------
    def report_statistics(self) -> dict[str, bs.Statistic]:
        out = {}
        for split, rec in self.records.items():
            if rec.get("pred"):
                out[f"test/{split}/acc"] = bs.accuracy_statistic(rec["pred"], rec["label"])
                out[f"test/{split}/f1_macro"] = bs.macro_f1_statistic(rec["pred"], rec["label"], self.num_labels)
        return out

    def report_examples(self) -> dict[str, dict]:
        out = {}
        for split, rec in self.records.items():
            if not rec.get("text"):
                continue
            texts = rec["text"] if "text_pair" not in rec else [f"{t} ||| {p}" for t, p in zip(rec["text"], rec["text_pair"])]
            out[split] = {"score": "probability of the true class", "scores": rec["p_true"],
                          "rows": [{"text": t, "label": self.label_names[y], "predicted": self.label_names[p]}
                                   for t, y, p in zip(texts, rec["label"], rec["pred"])]}
        return out

    def write_outputs(self, out_dir: Path) -> None:
        """`test_confusion_matrix.json` (the first test split; further ones `test_confusion_matrix_<split>.json`)."""
        from lit_llm.utils_io import atomic_write_json

        for i, (split, matrix) in enumerate(self.confusion.items()):
            name = "test_confusion_matrix.json" if i == 0 else f"test_confusion_matrix_{split}.json"
            atomic_write_json(Path(out_dir) / name, {"labels": self.label_names, "rows_true_cols_predicted": matrix})

    def report_plots(self, out_dir: Path) -> dict[str, str]:
        from lit_llm.reporting import plots

        if not self.confusion:
            return {}
        plots.confusion_matrix(next(iter(self.confusion.values())), self.label_names,
                               Path(out_dir) / "plots" / "confusion_matrix.png")
        return {"confusion matrix": "plots/confusion_matrix.png"}
