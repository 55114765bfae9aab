"""Sequence classification: a pooled backbone representation, dropout and a linear head."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lit_llm.data.loading import in_example_order
from lit_llm.errors import ConfigError
from lit_llm.metrics import bootstrap as bs
from lit_llm.tasks.base import BackboneTask

log = logging.getLogger("lit_llm")

POOLINGS = ("auto", "cls", "last", "mean")  # auto: the backbone's own (`default_pooling`: encoder cls, GPT last)
# task.window_aggregation: a long document's windows (data.long_inputs=windows) -> one row of logits, the
# elementwise mean or max over its windows' logits (torch.scatter_reduce's reduction of that name)
WINDOW_AGGREGATIONS = {"mean": "mean", "max": "amax"}
CALIBRATION_BINS = 15  # expected calibration error: equal-width confidence bins, L1 (torchmetrics' default 15)


def balanced_class_weights(counts: list[int], label_names: list[str]) -> list[float]:
    """scikit-learn's `class_weight="balanced"`: n_samples / (n_classes * count_c) for every class c."""
    missing = [name for name, c in zip(label_names, counts) if c <= 0]
    if missing:
        raise ConfigError(f"task.class_weights=balanced: the train split has no examples of {missing} (counts "
                          f"{dict(zip(label_names, counts))}); give explicit weights, task.class_weights=[...], "
                          "or add examples of those classes.")
    total = sum(counts)
    return [total / (len(counts) * c) for c in counts]


def resolve_class_weights(spec: Any, label_names: list[str], class_counts: list[int] | None) -> list[float] | None:
    """`task.class_weights`: null (unweighted), `balanced` (from the train split's label counts) or one
    positive weight per class, in class-id order (the order of `data.label_names`)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "balanced":
            raise ConfigError(f"task.class_weights={spec!r}: use null, balanced or a list of {len(label_names)} "
                              f"weights (classes {label_names}).")
        if class_counts is None:
            raise ConfigError("task.class_weights=balanced needs the train split's label counts (class_counts, given "
                              "by the classification data module); give explicit weights, task.class_weights=[...].")
        if len(class_counts) != len(label_names):
            raise ConfigError(f"class_counts={list(class_counts)} has {len(class_counts)} entries for "
                              f"{len(label_names)} classes {label_names}.")
        return balanced_class_weights([int(c) for c in class_counts], label_names)
    if not isinstance(spec, (list, tuple)):
        raise ConfigError(f"task.class_weights={spec!r}: use null, balanced or a list of {len(label_names)} weights.")
    if len(spec) != len(label_names):
        raise ConfigError(f"task.class_weights={list(spec)} has {len(spec)} weights for {len(label_names)} classes "
                          f"{label_names}; give one weight per class, in that order.")
    bad = [w for w in spec if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0]
    if bad:
        raise ConfigError(f"task.class_weights={list(spec)}: {bad} are not positive numbers; every weight must be > 0.")
    return [float(w) for w in spec]


def per_class_metrics(num_labels: int) -> MetricCollection:
    """Per-class precision, recall and F1 (torchmetrics, one value per class; 0 where undefined)."""
    return MetricCollection({"precision": MulticlassPrecision(num_labels, average=None),
                             "recall": MulticlassRecall(num_labels, average=None),
                             "f1": MulticlassF1Score(num_labels, average=None)})


def calibration_error(num_labels: int) -> MulticlassCalibrationError:
    """Expected calibration error of the top-class probability: sum over bins of |accuracy - confidence| times
    the bin's share of the examples (15 equal-width bins, L1)."""
    return MulticlassCalibrationError(num_labels, n_bins=CALIBRATION_BINS, norm="l1")


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


def aggregate_windows(logits: torch.Tensor, window_doc: torch.Tensor, how: str,
                      num_docs: int | None = None) -> torch.Tensor:
    """[N windows, C] -> [B documents, C]: each document's windows' logits reduced elementwise (`how`: a key of
    WINDOW_AGGREGATIONS); `window_doc` [N] gives each window's document, 0..B-1 in order (`WindowCollator`);
    `num_docs` (B: the batch's labels) saves reading it back from the device."""
    num_docs = int(window_doc[-1]) + 1 if num_docs is None else num_docs
    index = window_doc.view(-1, 1).expand_as(logits)
    return logits.new_zeros(num_docs, logits.size(1)).scatter_reduce(
        0, index, logits, reduce=WINDOW_AGGREGATIONS[how], include_self=False)


class ClassificationTask(BackboneTask):
    """Accuracy, macro-F1, per-class precision/recall/F1 and support and the expected calibration error from
    torchmetrics (`test/<split>/acc`, `.../f1_macro`, `.../{precision,recall,f1,support}/<label>`, `.../ece`); the
    test confusion matrix is kept (`confusion`) and written by `write_outputs`.

    `class_weights` (task.class_weights): null, `balanced` (n / (n_classes * count_c) from `class_counts`, the
    train split's label counts that the data module gives) or one weight per class: the training loss is then
    the weighted mean cross-entropy (validation and test losses stay unweighted, comparable between runs). The
    resolved weights are what hparams and checkpoints keep."""

    task_kind = "classification"
    supports_distill = True  # task.distill: a teacher classifier's logits over the same classes

    def __init__(self, model: dict, optim: dict, num_labels: int, label_names: list[str] | None = None,
                 pooling: str = "cls", head_dropout: float = 0.1, compile: bool = False,
                 tokenizer_json: str | None = None, peft: dict | None = None, class_weights: Any = None,
                 class_counts: list[int] | None = None, distill: dict | None = None,
                 window_aggregation: str = "mean"):
        super().__init__(model, optim, compile, tokenizer_json, peft, distill)
        if window_aggregation not in WINDOW_AGGREGATIONS:
            raise ConfigError(f"task.window_aggregation={window_aggregation!r} is not one of "
                              f"{list(WINDOW_AGGREGATIONS)}: how a document's windows' logits (data.long_inputs="
                              "windows) become one prediction; set task.window_aggregation=mean or max.")
        self.window_aggregation = window_aggregation
        if pooling not in POOLINGS:
            raise ConfigError(f"task.pooling={pooling!r} is not one of {list(POOLINGS)}")
        if num_labels < 2:
            raise ConfigError(f"the data has {num_labels} label(s); classification needs at least 2")
        self.pooling = self.backbone.default_pooling if pooling == "auto" else pooling
        self.label_names = list(label_names or [str(i) for i in range(num_labels)])
        self.class_weights = resolve_class_weights(class_weights, self.label_names, class_counts)
        # the checkpoint keeps the resolved weights (an evaluation needs no counts), not the counts: those belong to
        # the training data, and evaluating on other data must not be refused for them
        for hparams in (self.hparams, getattr(self, "_hparams_initial", None) or {}):
            hparams["class_weights"] = self.class_weights
            hparams.pop("class_counts", None)
        if self.class_weights is not None:
            log.info("task.class_weights=%s: %s", class_weights if isinstance(class_weights, str) else "given",
                     ", ".join(f"{n}={w:.4g}" for n, w in zip(self.label_names, self.class_weights)))
        # not in the state dict: checkpoints from before class weights load unchanged
        self.register_buffer("loss_weight", None if self.class_weights is None else
                             torch.tensor(self.class_weights, dtype=torch.float32), persistent=False)
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
            hidden = self.compiled("hidden_states")(batch["input_ids"], attention_mask=mask)
        else:
            hidden = self.compiled()(batch["input_ids"], attention_mask=mask,
                                     token_type_ids=batch.get("token_type_ids"))
        logits = self.head(self.dropout(pool(hidden, mask, self.pooling))).float()
        if "window_doc" in batch:  # data.long_inputs=windows: one row per window -> one per document
            labels = batch.get("labels")
            logits = aggregate_windows(logits, batch["window_doc"], self.window_aggregation,
                                       None if labels is None else len(labels))
        return logits

    def distill_logits(self, batch: dict) -> torch.Tensor:
        return self(batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = self.distilled(F.cross_entropy(logits, batch["labels"], weight=self.loss_weight), logits, batch)
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
                           "per_class": per_class_metrics(self.num_labels),
                           "calibration": calibration_error(self.num_labels),
                           "confusion": MulticlassConfusionMatrix(self.num_labels)})
            for name in self.test_names()).to(self.device)
        self.confusion = {}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        split, metrics = self.test_split(dataloader_idx), self.test_metrics[dataloader_idx]
        logits, labels = self(batch), batch["labels"]
        self.log_mean(f"test/{split}/loss", F.cross_entropy(logits, labels), len(logits), add_dataloader_idx=False)
        metrics["scores"].update(logits, labels)
        self.log_dict(metrics["scores"], on_epoch=True, add_dataloader_idx=False)
        metrics["per_class"].update(logits, labels)
        metrics["confusion"].update(logits, labels)
        probs = logits.softmax(-1)
        metrics["calibration"].update(probs, labels)
        index = batch.get("example_index", torch.arange(len(labels)) + len(self.records.get(split, {}).get("pred", [])))
        self.record(split, pred=logits.argmax(-1), label=labels, p_true=probs.gather(1, labels[:, None])[:, 0].double(),
                    confidence=probs.max(-1).values.double(),  # the reliability diagram's (lit_llm.reporting)
                    index=index)  # the example's row: evaluation goes by length, records by example

    def on_test_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        for split, metrics in zip(self.test_names(), self.test_metrics):
            for kind, values in metrics["per_class"].compute().items():
                for name, value in zip(self.label_names, values):
                    self.log(f"test/{split}/{kind}/{name}", value)
            self.confusion[split] = metrics["confusion"].compute().tolist()
            for name, row in zip(self.label_names, self.confusion[split]):  # support: the class's true examples
                self.log(f"test/{split}/support/{name}", float(sum(row)))
            self.log(f"test/{split}/ece", metrics["calibration"].compute())
            for key in ("per_class", "calibration", "confusion"):
                metrics[key].reset()
            rec = self.records.get(split)
            if rec:  # back in the examples' order (the loader went by length)
                rec = self.records[split] = in_example_order(rec, "index")
            if rec and dm is not None and split in dm.raw and self.trainer.world_size == 1:
                rows = dm.raw[split].select(rec["index"])  # the texts, for worst/best examples
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

    def interpret_probe(self):
        """What the report's interpretation explains (`lit_llm.reporting.interpret`): the first test split,
        ranked by p(true class) as the worst/best examples; the pooled vector the head reads, coloured by
        label; attributions of the predicted class's logit."""
        from lit_llm.reporting import interpret

        dm, split = interpret.test_data(self), next((s for s, r in self.records.items() if r.get("pred")), None)
        if dm is None or split is None:
            return None
        if getattr(dm.opened_split(split), "window_lengths", None) is not None:
            log.info("report: no interpretation of windowed documents (data.long_inputs=windows): its attributions "
                     "and embeddings are per input row, and a document is several rows")
            return None
        rec = self.records[split]

        def outputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
            mask = batch.get("attention_mask")
            if self.config.arch == "gpt":
                hidden = self.backbone.hidden_states(batch["input_ids"], attention_mask=mask)
            else:
                hidden = self.backbone(batch["input_ids"], attention_mask=mask, token_type_ids=batch.get("token_type_ids"))
            pooled = pool(hidden, mask, self.pooling)
            logits = self.head(pooled).float()
            return pooled, logits.max(-1).values

        return interpret.Probe(
            split=split, dataset=dm.opened_split(split), collate=dm.collator(), feature_of=rec["index"],
            scores=rec["p_true"], score_name="p(true class)", groups=[self.label_names[y] for y in rec["label"]],
            group_name="label", target_name="logit of the predicted class", outputs=outputs,
            token_names=interpret.token_namer(dm.tokenizer), embedding=self.backbone.wte)
