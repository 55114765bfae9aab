"""Extractive question answering: start/end heads on the encoder, span post-processing, SQuAD EM/F1.

Post-processing (`best_spans`, `answers_from_features`): for every feature, the best valid span
(start and end on context tokens, end >= start, at most `max_answer_length` tokens) by
start logit + end logit, found exactly over all pairs (what the usual n-best search over the top
start and end logits approximates); for every example, the best span over its windows, mapped
back to the context characters through the features' offsets. EM and F1 come from torchmetrics'
SQuAD metric (the official v1.1 normalisation: lower case, no punctuation, no articles, single
spaces; the best over multiple references).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.text import SQuAD

from lit_llm.errors import ConfigError
from lit_llm.metrics import bootstrap as bs
from lit_llm.tasks.base import BackboneTask


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, offset_start: torch.Tensor,
               max_answer_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, T] logits and offsets (-1 off the context) -> the best valid span of every feature:
    (score [B], start token [B], end token [B]); score -inf where no valid span exists."""
    B, T = start_logits.shape
    context = offset_start >= 0
    scores = start_logits.float()[:, :, None] + end_logits.float()[:, None, :]
    i = torch.arange(T, device=scores.device)
    band = (i[None, :] >= i[:, None]) & (i[None, :] - i[:, None] < max_answer_length)  # end >= start, short enough
    valid = band[None] & context[:, :, None] & context[:, None, :]
    scores = scores.masked_fill(~valid, float("-inf"))
    best = scores.view(B, -1).max(dim=1)
    return best.values, best.indices // T, best.indices % T


def answers_from_features(example_index, scores, char_start, char_end, contexts: list[str]) -> dict[int, str]:
    """{example index: answer text} for every example that has features: its best-scoring feature's
    span, stripped ("" when no feature has a valid span)."""
    best: dict[int, tuple[float, int, int]] = {}
    for ex, score, cs, ce in zip(example_index.tolist(), scores.tolist(), char_start.tolist(), char_end.tolist()):
        if ex not in best or score > best[ex][0]:
            best[ex] = (score, cs, ce)
    return {k: contexts[k][cs:ce].strip() if score != float("-inf") else "" for k, (score, cs, ce) in sorted(best.items())}


class QuestionAnsweringTask(BackboneTask):
    """Start/end logits from a linear layer on the encoder's hidden states; loss = mean of the
    start and end cross-entropies. Validation/test: EM and F1 (0-100) per split; the test
    predictions ({id: answer}, the official evaluation format) are kept in `predictions`."""

    task_kind = "qa"

    def __init__(self, model: dict, optim: dict, max_answer_length: int = 30, compile: bool = False,
                 tokenizer_json: str | None = None, peft: dict | None = None):
        super().__init__(model, optim, compile, tokenizer_json, peft)
        if self.config.arch != "encoder":
            raise ConfigError(f"task=qa needs an encoder backbone (model.arch=encoder), got {self.config.arch!r}")
        if not isinstance(max_answer_length, int) or max_answer_length < 1:
            raise ConfigError(f"task.max_answer_length={max_answer_length!r} must be a positive integer")
        self.max_answer_length = max_answer_length
        tied = {id(p) for p in self.backbone.wte.parameters()}
        for p in self.backbone.mlm.parameters():  # unused here (see ClassificationTask)
            if id(p) not in tied:
                p.requires_grad_(False)
        self.qa_head = nn.Linear(self.config.n_embd, 2)
        nn.init.normal_(self.qa_head.weight, std=0.02)
        nn.init.zeros_(self.qa_head.bias)
        self._spans: dict[str, list[torch.Tensor]] = {}
        self.predictions: dict[str, dict[str, str]] = {}

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.compiled()(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                 token_type_ids=batch.get("token_type_ids"))
        start, end = self.qa_head(hidden).float().unbind(-1)
        return start, end

    def _loss(self, start, end, batch) -> torch.Tensor:
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        start, end = self(batch)
        loss = self._loss(start, end, batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    # -- evaluation: collect the best span of every feature, score the examples at the epoch's end
    def _collect(self, batch: dict, split: str) -> torch.Tensor:
        """Keep the best span of every feature of the batch; return the batch's loss."""
        start, end = self(batch)
        score, i, j = best_spans(start, end, batch["offset_start"], self.max_answer_length)
        rows = torch.arange(len(i), device=i.device)
        cs, ce = batch["offset_start"][rows, i], batch["offset_end"][rows, j]
        self._spans.setdefault(split, []).append(
            torch.stack([batch["example_index"].double(), score.double(), cs.double(), ce.double()], dim=1))
        return self._loss(start, end, batch)

    def _score(self, split: str, prefix: str) -> None:
        parts = self._spans.pop(split, [])
        if not parts:
            return
        # every process scores all features: under DDP each evaluated its own share (EvalShardSampler)
        spans = torch.cat(self.gather_objects(torch.cat(parts).cpu()))
        raw = self.trainer.datamodule.raw[split]
        answers = answers_from_features(spans[:, 0].long(), spans[:, 1], spans[:, 2].long(), spans[:, 3].long(),
                                        raw["context"])
        # the questions whose features were evaluated: all of them, unless trainer.limit_*_batches cut the split
        seen = raw.select(list(answers))
        ids = seen["id"]
        metric = SQuAD()
        result = metric([{"prediction_text": a, "id": i} for a, i in zip(answers.values(), ids)],
                        [{"answers": {"text": r["text"], "answer_start": r["answer_start"]}, "id": i}
                         for r, i in zip(seen["answers"], ids)])
        self.log(f"{prefix}/em", result["exact_match"], prog_bar=prefix == "val", rank_zero_only=True)
        self.log(f"{prefix}/f1", result["f1"], prog_bar=prefix == "val", rank_zero_only=True)
        self.log(f"{prefix}/questions", float(len(ids)), rank_zero_only=True)
        if prefix.startswith("test"):
            self.predictions[split] = dict(zip(ids, answers.values()))
            self.record(split, id=ids, question=seen["question"], prediction=list(answers.values()),
                        references=[list(r["text"]) for r in seen["answers"]], example_index=list(answers))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self._collect(batch, "validation")
        self.log_mean("val/loss", loss, len(batch["input_ids"]), prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self._score("validation", "val")
        super().on_validation_epoch_end()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self.test_split(dataloader_idx)
        loss = self._collect(batch, split)
        self.log_mean(f"test/{split}/loss", loss, len(batch["input_ids"]), add_dataloader_idx=False)

    def on_test_epoch_end(self) -> None:
        for split in list(self._spans):
            self._score(split, f"test/{split}")

    # -- hooks (BackboneTask) --------------------------------------------------------------------
    def report_statistics(self) -> dict[str, bs.Statistic]:
        return {f"test/{split}/{name}": stat for split, rec in self.records.items() if rec.get("prediction")
                for name, stat in bs.squad_statistics(rec["prediction"], rec["references"]).items()}

    def report_examples(self) -> dict[str, dict]:
        return {split: {"score": "SQuAD F1 of the question",
                        "scores": bs.sentence_scores("squad_f1", rec["prediction"], rec["references"]),
                        "rows": [{"id": i, "question": q, "predicted": p, "references": refs} for i, q, p, refs
                                 in zip(rec["id"], rec["question"], rec["prediction"], rec["references"])]}
                for split, rec in self.records.items() if rec.get("prediction")}

    def interpret_probe(self):
        """What the report's interpretation explains (`lit_llm.reporting.interpret`): the first test split's
        questions ranked by SQuAD F1 (as the worst/best examples), each by its first feature (window); the
        first token's ([CLS]) hidden state, coloured by F1; attributions of the predicted span's score
        (start + end logit)."""
        import numpy as np

        from lit_llm.reporting import interpret

        dm, split = interpret.test_data(self), next((s for s, r in self.records.items() if r.get("prediction")), None)
        if dm is None or split is None:
            return None
        rec, features = self.records[split], dm.opened_split(split)
        examples, first = np.unique(features.example_index, return_index=True)
        first_feature = dict(zip(examples.tolist(), first.tolist()))
        f1 = bs.sentence_scores("squad_f1", rec["prediction"], rec["references"])

        def outputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.backbone(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                   token_type_ids=batch.get("token_type_ids"))
            start, end = self.qa_head(hidden).float().unbind(-1)
            score = best_spans(start, end, batch["offset_start"], self.max_answer_length)[0]
            return hidden[:, 0], torch.where(score.isfinite(), score, torch.zeros_like(score))

        return interpret.Probe(
            split=split, dataset=features, collate=dm.collator(),
            feature_of=[first_feature[i] for i in rec["example_index"]], scores=f1, score_name="SQuAD F1",
            groups=["F1 = 100" if f == 100 else "F1 = 0" if f == 0 else "0 < F1 < 100" for f in f1],
            group_name="answer", target_name="start + end logit of the predicted span", outputs=outputs,
            token_names=interpret.token_namer(dm.tokenizer), embedding=self.backbone.wte)

    def write_outputs(self, out_dir: Path) -> None:
        """{question id: answer} per test set, the official SQuAD evaluation format: the first test
        set in `predictions.json`, each further one in `predictions_<name>.json`."""
        from lit_llm.utils_io import atomic_write_json

        for i, (split, answers) in enumerate(self.predictions.items()):
            atomic_write_json(Path(out_dir) / ("predictions.json" if i == 0 else f"predictions_{split}.json"), answers)
