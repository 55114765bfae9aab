"""Direct Preference Optimization (Rafailov et al., 2023): tune an instruction-tuned GPT on preference pairs.

For a pair (prompt x, chosen y_c, rejected y_r), with log pi(y | x) the policy's summed log-probability of an
answer's target tokens (`lit_llm.data.preference`: the final assistant turn) and log ref(y | x) the same under the
frozen reference model (the policy as it was loaded from `model.init_from`, the SFT checkpoint):

    reward(y)  = beta * (log pi(y | x) - log ref(y | x))            (the implicit reward; logged `rewards/*`)
    margin     = reward(y_c) - reward(y_r)
    loss       = -(1 - eps) * logsigmoid(margin) - eps * logsigmoid(-margin)

eps = `label_smoothing` (conservative DPO, Mitchell 2023: the labels are flipped with probability eps; 0 = DPO).
`preference_acc` is the share of pairs with margin > 0 (ties count as wrong, so a policy still equal to its
reference scores 0: the DPO accuracy says nothing before training). What does not need the reference, and so
compares the SFT model with the DPO model on the same held-out pairs, is `logp_preference_acc`: the share of pairs
whose chosen answer the policy itself finds more likely, log pi(y_c | x) > log pi(y_r | x) (raw sums: what DPO's
rewards are made of; they favour short answers), and `logp_preference_acc_norm`, the same with log-probabilities
per target token (length-normalised).

The reference model:
- full fine-tuning: a frozen copy of the backbone made in `on_pretrained_loaded()` (lit_llm.run calls it once
  `model.init_from`'s weights are loaded), registered as the submodule `reference`: saved in every checkpoint
  (`reference.*`), so a resumed run and pipelines/evaluate.py keep the same one; never trained (requires_grad
  False, not in the optimizer, always in eval mode: no dropout); not exported (model.safetensors is the backbone,
  the policy, and `model.init_from=<a DPO run>` loads the policy only).
- `task.peft=lora`: the backbone itself with its adapters switched off (`adapters_disabled`): no copy, nothing to
  save. The base must then stay frozen (train_embeddings / train_norms are refused).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lit_llm.data.collate import IGNORE_INDEX
from lit_llm.data.loading import in_example_order
from lit_llm.errors import ConfigError
from lit_llm.metrics import bootstrap as bs
from lit_llm.peft import lora_modules
from lit_llm.tasks.base import BackboneTask

REFERENCE = "reference."  # the state-dict prefix of the frozen reference model
NO_INIT_FROM = ("DPO starts from an instruction-tuned model: model.init_from=<sft run> (a lit-llm SFT run directory "
                "or .ckpt, or hf:<chat model>); its weights are both the policy's start and the frozen reference")
DEFINITIONS = {
    "preference_acc": "DPO preference accuracy (0-1): share of pairs whose implicit reward margin "
                      "beta*[(log pi - log ref)(chosen) - (log pi - log ref)(rejected)] is > 0 (ties count as wrong)",
    "rewards/margin": "mean implicit reward margin beta*[(log pi - log ref)(chosen) - (log pi - log ref)(rejected)], "
                      "log-probabilities summed over the final assistant turn's tokens",
    "logp_preference_acc": "share of pairs (0-1) whose chosen answer has a higher summed log-probability under the "
                           "policy than the rejected one (no reference model involved)",
    "logp_preference_acc_norm": "share of pairs (0-1) whose chosen answer has a higher mean log-probability per "
                                "target token under the policy than the rejected one (length-normalised)",
    "loss": "mean DPO loss per pair",
}


# ----------------------------------------------------------------------------------------------
# The loss and the log-probabilities.

def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of the labelled tokens [B] (float32), their number [B]) of logits [B, T, V] and
    labels [B, T] already shifted (labels[t] is the token after position t; -100: not a target)."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.sum(1), (labels != IGNORE_INDEX).sum(1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss per pair, reward of the chosen answer, reward of the rejected one) from summed log-probabilities [B]:
    reward = beta * (log pi - log ref); loss = -(1 - eps) logsigmoid(margin) - eps logsigmoid(-margin)."""
    chosen = beta * (policy_chosen - reference_chosen)
    rejected = beta * (policy_rejected - reference_rejected)
    margin = chosen - rejected
    losses = -(1.0 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return losses, chosen, rejected


@contextlib.contextmanager
def adapters_disabled(backbone: nn.Module) -> Iterator[nn.Module]:
    """`backbone` computing as its frozen base inside the block: every LoRALinear's scaling 0 (its adapters add
    exactly nothing) and eval mode (no dropout, as a reference model); both restored afterwards."""
    modules = list(lora_modules(backbone).values())
    scalings, training = [m.scaling for m in modules], backbone.training
    try:
        for m in modules:
            m.scaling = 0.0
        backbone.eval()
        yield backbone
    finally:
        for m, s in zip(modules, scalings):
            m.scaling = s
        backbone.train(training)


def frozen_copy(backbone: nn.Module) -> nn.Module:
    """A copy of `backbone` that never trains: no gradients, eval mode."""
    return copy.deepcopy(backbone).requires_grad_(False).eval()


# ----------------------------------------------------------------------------------------------
# The task.

class DPOTask(BackboneTask):
    """DPO on a GPT backbone (see the module docstring). Batches: `lit_llm.data.preference.PreferenceCollator`'s
    (`chosen_ids`, `chosen_labels`, `rejected_ids`, `rejected_labels`, `example_index`). Metrics (train/, val/,
    test/<split>/): `loss`, `rewards/chosen`, `rewards/rejected`, `rewards/margin`, `preference_acc`,
    `logps/chosen`, `logps/rejected` (the policy's summed log-probabilities), `logp_preference_acc` and
    `logp_preference_acc_norm`."""

    task_kind = "dpo"

    def __init__(self, model: dict, optim: dict, beta: float = 0.1, label_smoothing: float = 0.0,
                 compile: bool = False, tokenizer_json: str | None = None, peft: dict | None = None):
        arch = dict(model).get("arch", "gpt")
        if arch != "gpt":
            raise ConfigError(f"task=dpo tunes a causal language model (model.arch=gpt), not model.arch={arch}; "
                              "start from a GPT-family SFT run")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ConfigError(f"task.beta={beta!r} must be a positive number (DPO's KL strength; 0.1 usual, "
                              "0.01-0.5 seen)")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= label_smoothing < 0.5:
            raise ConfigError(f"task.label_smoothing={label_smoothing!r} must be in [0, 0.5) (conservative DPO: the "
                              "assumed probability that a preference label is flipped; 0 = plain DPO)")
        super().__init__(model, optim, compile, tokenizer_json, peft)
        if self.peft is not None and (self.peft.train_embeddings or self.peft.train_norms):
            raise ConfigError("task=dpo with task.peft=lora takes the backbone with its adapters off as the "
                              "reference model, so every base weight must stay frozen: set "
                              "task.peft.train_embeddings=false and task.peft.train_norms=false")
        self.beta, self.label_smoothing = float(beta), float(label_smoothing)
        self.add_module("reference", None)  # the frozen reference model (full fine-tuning), see on_pretrained_loaded
        self.metric_info = {"dpo": {"beta": self.beta, "label_smoothing": self.label_smoothing}}  # rewards' scale

    # -- the reference model ---------------------------------------------------------------------
    def on_pretrained_loaded(self) -> None:
        """`model.init_from`'s weights are in the backbone: they are the reference (LoRA: the base, nothing to do)."""
        if self.peft is None:
            self.reference = frozen_copy(self.backbone)

    def has_reference(self) -> bool:
        return self.peft is not None or self.reference is not None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if not self.has_reference():
            raise ConfigError(NO_INIT_FROM)

    def train(self, mode: bool = True):
        """Lightning switches the whole module to train mode each epoch: the reference stays in eval mode."""
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()
        return self

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint holds its reference (`reference.*`): give a task built from the config (pipelines/evaluate.py)
        the module to load it into."""
        super().on_load_checkpoint(checkpoint)
        if self.reference is None and any(k.startswith(REFERENCE) for k in checkpoint.get("state_dict", {})):
            self.reference = frozen_copy(self.backbone)

    @torch.no_grad()
    def reference_logps(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The reference model's summed log-probabilities of the targets [B]."""
        if self.peft is not None:
            with adapters_disabled(self.backbone) as base:
                return sequence_logps(base(ids), labels)[0]
        return sequence_logps(self.reference(ids), labels)[0]

    # -- one batch of pairs ------------------------------------------------------------------------
    def pair_scores(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per pair [B]: `losses`, `chosen_rewards`, `rejected_rewards`, `margin`, and the policy's `logp_chosen`,
        `logp_rejected`, `tokens_chosen`, `tokens_rejected`; chosen and rejected run as one batch [2B, W]."""
        B = batch["chosen_ids"].size(0)
        ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
        labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
        logps, tokens = sequence_logps(self.compiled()(ids), labels)
        reference = self.reference_logps(ids, labels)
        losses, chosen, rejected = dpo_loss(logps[:B], logps[B:], reference[:B], reference[B:], self.beta,
                                            self.label_smoothing)
        return {"losses": losses, "chosen_rewards": chosen.detach(), "rejected_rewards": rejected.detach(),
                "margin": (chosen - rejected).detach(), "logp_chosen": logps[:B].detach(),
                "logp_rejected": logps[B:].detach(), "tokens_chosen": tokens[:B], "tokens_rejected": tokens[B:]}

    @staticmethod
    def pair_metrics(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per pair [B], the logged quantities (their batch means are the metrics)."""
        per_token = (s["logp_chosen"] / s["tokens_chosen"].clamp(min=1)
                     > s["logp_rejected"] / s["tokens_rejected"].clamp(min=1))
        return {"loss": s["losses"].detach(), "rewards/chosen": s["chosen_rewards"],
                "rewards/rejected": s["rejected_rewards"], "rewards/margin": s["margin"],
                "preference_acc": (s["margin"] > 0).float(), "logps/chosen": s["logp_chosen"],
                "logps/rejected": s["logp_rejected"],
                "logp_preference_acc": (s["logp_chosen"] > s["logp_rejected"]).float(),
                "logp_preference_acc_norm": per_token.float()}

    def batch_shape(self, batch: dict) -> dict[str, int]:
        """Throughput of the policy: chosen and rejected answers as one batch of 2B sequences (the reference's
        extra forward pass, ~1/3 more compute, is not in the FLOPs)."""
        from lit_llm.perf import batch_shape

        return batch_shape({"input_ids": torch.cat([batch["chosen_ids"], batch["rejected_ids"]])})  # pads included

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        scores = self.pair_scores(batch)
        loss = scores["losses"].mean()
        for name, values in self.pair_metrics(scores).items():
            self.log(f"train/{name}", values.mean(), prog_bar=name in ("loss", "preference_acc"), on_step=True,
                     on_epoch=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        scores = self.pair_scores(batch)
        for name, values in self.pair_metrics(scores).items():
            self.log_mean(f"val/{name}", values.mean(), len(values), prog_bar=name in ("loss", "preference_acc"))

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self.test_split(dataloader_idx)
        metrics = self.pair_metrics(self.pair_scores(batch))
        for name, values in metrics.items():
            self.log_mean(f"test/{split}/{name}", values.mean(), len(values), add_dataloader_idx=False)
        self.record(split, example=batch["example_index"], **{name: values.double() for name, values in metrics.items()})

    def on_test_epoch_end(self) -> None:
        """Records in the pairs' order (the loader went by length); with one process, the pairs' texts for the
        report's worst/best examples."""
        self.records = {split: in_example_order(rec, "example") for split, rec in self.records.items()}
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or self.trainer.world_size != 1 or not hasattr(dm, "pair"):
            return
        for split, rec in self.records.items():
            pairs = [dm.pair(split, i) for i in rec.get("example", [])]
            rec["prompt"] = [p["prompt"][-1]["content"] for p in pairs]
            rec["chosen"] = [p["chosen"] for p in pairs]
            rec["rejected"] = [p["rejected"] for p in pairs]

    # -- hooks (BackboneTask) --------------------------------------------------------------------
    def report_statistics(self) -> dict[str, bs.Statistic]:
        out = {}
        for split, rec in self.records.items():
            for name in ("preference_acc", "rewards/margin", "logp_preference_acc", "logp_preference_acc_norm",
                         "loss"):
                if rec.get(name):
                    out[f"test/{split}/{name}"] = bs.mean_statistic(rec[name], DEFINITIONS[name])
        return out

    def report_examples(self) -> dict[str, dict[str, Any]]:
        out = {}
        for split, rec in self.records.items():
            if rec.get("prompt"):
                out[split] = {"score": "reward margin (beta-scaled; < 0: the rejected answer is preferred)",
                              "scores": rec["rewards/margin"],
                              "rows": [{"prompt": p, "chosen": c, "rejected": r}
                                       for p, c, r in zip(rec["prompt"], rec["chosen"], rec["rejected"])]}
        return out

    def baselines(self, datamodule) -> dict[str, float]:
        """What preferring the shorter answer reaches on each test split (fewer target tokens; ties wrong): the
        length bias that raw log-probabilities (`logp_preference_acc`) share."""
        out = {}
        for name in getattr(datamodule, "test_names", []):
            pairs = datamodule.opened_split(name)
            if hasattr(pairs, "target_tokens") and len(pairs):
                shorter = pairs.target_tokens("chosen") < pairs.target_tokens("rejected")
                out[f"baseline/{name}/shorter_preference_acc"] = float(shorter.mean())
        return out


__all__ = ["DPOTask", "dpo_loss", "sequence_logps", "adapters_disabled", "frozen_copy", "REFERENCE", "NO_INIT_FROM"]
