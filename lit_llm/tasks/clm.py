"""Causal language modelling: next-token cross-entropy on a GPT backbone."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import pytorch_lightning as pl
from torch import nn
from torchmetrics.text import Perplexity

import lit_llm
from lit_llm.models.gpt import GPT, GPTConfig
from lit_llm.tasks.base import OptimConfig, build_optimizer
from lit_llm.utils_io import sha256_text

IGNORE_INDEX = -100


class CausalLMTask(pl.LightningModule):
    """Gives a GPT backbone its loss (shifted-label cross-entropy), perplexity metrics and optimizer.

    Batches are `{"input_ids": [B, T], "labels": [B, T]}` with labels already shifted by the data
    module (packed blocks: labels[t] is the token after input_ids[t]); -100 marks ignored labels.
    """

    def __init__(self, model: dict, optim: dict, compile: bool = False, tokenizer_json: str | None = None):
        super().__init__()
        # The tokenizer goes into the checkpoint (on_save_checkpoint), not into hparams.yaml.
        self.save_hyperparameters(ignore=["tokenizer_json"])
        self.config = GPTConfig.from_dict(dict(model))
        self.backbone = GPT(self.config)
        self.optim = OptimConfig(**dict(optim))
        self.tokenizer_json = tokenizer_json
        # Kept out of nn.Module registration so the compiled wrapper adds no state_dict keys.
        self.__dict__["_forward"] = torch.compile(self.backbone) if compile else self.backbone
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.test_ppl = nn.ModuleList()  # one per test dataloader, built in on_test_start
        self.last_val_step: int | None = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._forward(input_ids)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"])
        loss = self._loss(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/ppl", torch.exp(loss.detach()), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["input_ids"])
        loss = self._loss(logits, batch["labels"])
        self.val_ppl.update(logits.float(), batch["labels"])
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True)
        self.log("val/ppl", self.val_ppl, prog_bar=True, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.last_val_step = self.global_step  # run.train validates again only if training went on

    def on_test_start(self) -> None:
        names = self._test_names()
        self.test_ppl = nn.ModuleList(Perplexity(ignore_index=IGNORE_INDEX) for _ in names).to(self.device)

    def _test_names(self) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None)
        return list(getattr(dm, "test_names", None) or ["heldout"])

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self._test_names()[dataloader_idx]
        logits = self(batch["input_ids"])
        loss = self._loss(logits, batch["labels"])
        metric = self.test_ppl[dataloader_idx]
        metric.update(logits.float(), batch["labels"])
        self.log(f"test/{name}/loss", loss, on_epoch=True, add_dataloader_idx=False, sync_dist=True)
        self.log(f"test/{name}/ppl", metric, on_epoch=True, add_dataloader_idx=False)

    def configure_optimizers(self):
        return build_optimizer(self.backbone, self.optim, int(self.trainer.estimated_stepping_batches))

    # --- checkpoints: self-contained (backbone config + tokenizer) and exactly resumable (RNG) ---
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lit_llm"] = {
            "version": lit_llm.__version__,
            "task": "clm",
            "backbone_config": self.config.to_dict(),
            "tokenizer_json": self.tokenizer_json,
            "tokenizer_fingerprint": sha256_text(self.tokenizer_json) if self.tokenizer_json else None,
        }
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("lit_llm", {})
        self.tokenizer_json = meta.get("tokenizer_json", self.tokenizer_json)
        rng = checkpoint.get("rng_state")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
