"""Causal language modelling: next-token cross-entropy on a GPT backbone."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.text import Perplexity

from lit_llm.metrics import bootstrap as bs
from lit_llm.tasks.base import BackboneTask

IGNORE_INDEX = -100


class CausalLMTask(BackboneTask):
    """Gives a GPT backbone its loss (shifted-label cross-entropy), perplexity metrics and optimizer.

    Batches are `{"input_ids": [B, T], "labels": [B, T]}` with labels already shifted by the data
    module (packed blocks: labels[t] is the token after input_ids[t]); -100 marks ignored labels.
    """

    task_kind = "clm"
    supports_distill = True  # task.distill: next-token distributions of a teacher GPT with the same tokenizer

    def __init__(self, model: dict, optim: dict, compile: bool = False, tokenizer_json: str | None = None,
                 peft: dict | None = None, distill: dict | None = None):
        super().__init__(model, optim, compile, tokenizer_json, peft, distill)
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.test_ppl = nn.ModuleList()  # one per test dataloader, built in on_test_start

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._compiled(input_ids)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX
        )

    def distill_logits(self, batch: dict) -> torch.Tensor:
        return self(batch["input_ids"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"])
        hard = self._loss(logits, batch["labels"])
        loss = self.distilled(hard, logits, batch, mask=batch["labels"] != IGNORE_INDEX)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/ppl", torch.exp(hard.detach()), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["input_ids"])
        loss = self._loss(logits, batch["labels"])
        self.val_ppl.update(logits.float(), batch["labels"])
        self.log_mean("val/loss", loss, (batch["labels"] != IGNORE_INDEX).sum(), prog_bar=True)
        self.log("val/ppl", self.val_ppl, prog_bar=True, on_epoch=True)

    DEFAULT_TEST_NAME = "validation"

    def on_test_start(self) -> None:
        super().on_test_start()
        names = self.test_names()
        self.test_ppl = nn.ModuleList(Perplexity(ignore_index=IGNORE_INDEX) for _ in names).to(self.device)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.test_split(dataloader_idx)
        logits = self(batch["input_ids"])
        labels = batch["labels"]
        metric = self.test_ppl[dataloader_idx]
        metric.update(logits.float(), labels)
        # one cross-entropy pass: per token, summed per block for the report, averaged for the loss
        nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        tokens = (labels != IGNORE_INDEX).sum(1)
        loss = nll.sum() / tokens.sum().clamp(min=1)
        self.record(name, nll=nll.double().sum(1), tokens=tokens)
        self.log_mean(f"test/{name}/loss", loss, tokens.sum(), add_dataloader_idx=False)
        self.log(f"test/{name}/ppl", metric, on_epoch=True, add_dataloader_idx=False)

    # -- hooks (BackboneTask) --------------------------------------------------------------------
    def report_statistics(self) -> dict[str, bs.Statistic]:
        return {f"test/{split}/ppl": bs.perplexity_statistic(rec["nll"], rec["tokens"])
                for split, rec in self.records.items() if rec.get("tokens")}

    def baselines(self, datamodule) -> dict[str, float]:
        """What a model that ignores context reaches on the same tokens: a unigram model of the training
        tokens (add-one smoothing) on the validation split and on each extra evaluation corpus."""
        from lit_llm.metrics.baselines import unigram_perplexity

        def targets(split: str) -> np.ndarray:  # the predicted tokens of a packed split
            return datamodule.blocks[split][:, 1:]

        if "train" not in datamodule.blocks:  # a streamed training split (data.streaming=true) is never whole
            return {}
        train, vocab = targets("train"), datamodule.tokenizer.get_vocab_size()
        out = {"baseline/unigram_ppl": unigram_perplexity(train, targets("validation"), vocab)}
        for name in datamodule.test_names[1:]:
            out[f"baseline/{name}/unigram_ppl"] = unigram_perplexity(train, targets(f"eval_{name}"), vocab)
        return out

    def generate_sample(self, tokenizer, prompt: str, max_new_tokens: int, temperature: float,
                        top_k: int | None, seed: int, num_samples: int = 1) -> str:
        from lit_llm.data.base import document_end_id
        from lit_llm.inference import sample_text

        eos = document_end_id(tokenizer, (self.run_config or {}).get("special_ids"))  # as the training data used it
        return sample_text(self.backbone, tokenizer, prompt, max_new_tokens, temperature, top_k, seed, num_samples,
                           eos_id=eos)
