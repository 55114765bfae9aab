"""Masked language modelling (BERT): predict the masked tokens of an encoder's input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import Perplexity

from lit_llm.metrics import DEFINITIONS
from lit_llm.metrics import bootstrap as bs
from lit_llm.tasks.base import BackboneTask

IGNORE_INDEX = -100


class MaskedLMTask(BackboneTask):
    """Loss only on masked positions (labels != -100); logs masked-token accuracy and perplexity.

    Batches: `{"input_ids", "attention_mask", "labels"}` from the data module's MLM collator
    (15% of tokens chosen; 80% -> <mask>, 10% -> random, 10% kept).
    """

    task_kind = "mlm"

    def __init__(self, model: dict, optim: dict, compile: bool = False, tokenizer_json: str | None = None, peft: dict | None = None):
        super().__init__(model, optim, compile, tokenizer_json, peft)
        vocab = self.config.vocab_size
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.val_acc = MulticlassAccuracy(num_classes=vocab, ignore_index=IGNORE_INDEX, average="micro")
        self.test_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.test_acc = MulticlassAccuracy(num_classes=vocab, ignore_index=IGNORE_INDEX, average="micro")

    def forward(self, batch: dict) -> torch.Tensor:
        """Vocabulary logits at every position (B, T, V) (for inspection; training uses `_step`)."""
        hidden = self.compiled()(batch["input_ids"], attention_mask=batch.get("attention_mask"))
        return self.backbone.mlm_logits(hidden)

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (M, V) and labels (M,) of the M masked positions only, and the loss.

        The head (dense + vocabulary matmul, ~40% of bert_small's FLOPs at 128 tokens) runs on the
        ~15% of positions that carry a label, as in MosaicBERT/ModernBERT's sparse prediction;
        the loss is the same as over all positions with ignore_index."""
        hidden = self.compiled()(batch["input_ids"], attention_mask=batch.get("attention_mask"))
        labels = batch["labels"]
        chosen = labels != IGNORE_INDEX
        logits = self.backbone.mlm_logits(hidden[chosen]).float()
        targets = labels[chosen]
        return logits, targets, F.cross_entropy(logits, targets)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, _, loss = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _eval(self, batch: dict, prefix: str, ppl, acc) -> None:
        logits, targets, loss = self._step(batch)
        predicted = logits.argmax(-1)
        if prefix != "val":  # test: per block summed NLL, masked tokens and correct predictions
            labels = batch["labels"]
            block = (labels != IGNORE_INDEX).nonzero()[:, 0]
            zeros = torch.zeros(len(labels), dtype=torch.float64, device=labels.device)
            nll = F.cross_entropy(logits, targets, reduction="none").double()
            correct = (predicted == targets).double()
            self.record(self.test_split(0), nll=zeros.index_add(0, block, nll), tokens=(labels != IGNORE_INDEX).sum(1),
                        correct=zeros.index_add(0, block, correct))
        ppl.update(logits[None], targets[None])  # Perplexity wants (batch, seq, vocab)
        acc.update(predicted, targets)
        self.log_mean(f"{prefix}/loss", loss, len(targets), prog_bar=prefix == "val", add_dataloader_idx=False)
        self.log(f"{prefix}/ppl", ppl, prog_bar=False, on_epoch=True, add_dataloader_idx=False)
        self.log(f"{prefix}/masked_acc", acc, prog_bar=prefix == "val", on_epoch=True, add_dataloader_idx=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval(batch, "val", self.val_ppl, self.val_acc)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:  # the held-out split; extra corpora are for causal LMs
            self._eval(batch, f"test/{self.test_split(0)}", self.test_ppl, self.test_acc)

    # -- hooks (BackboneTask) --------------------------------------------------------------------
    def report_statistics(self) -> dict[str, bs.Statistic]:
        out = {}
        for split, rec in self.records.items():
            if rec.get("tokens"):
                out[f"test/{split}/ppl"] = bs.perplexity_statistic(rec["nll"], rec["tokens"])
                out[f"test/{split}/masked_acc"] = bs.ratio_statistic(rec["correct"], rec["tokens"],
                                                                     DEFINITIONS["masked_acc"])
        return out
