"""Supervised fine-tuning (instruction tuning, chat) of a GPT or an encoder-decoder on conversations.

Training: cross-entropy on the assistant turns' tokens only (`lit_llm.data.sft`: every other token's label is
-100; packed rows keep conversations apart with `document_ids`). Validation: that loss (`val/loss`, per target
token) and the response-token perplexity (`val/ppl`). Test: the same per test split, and, for the splits of a
scored task (the instruction mixture's sst2, ag_news, rte, tydiqa, samsum, dialogsum, multi30k, gsm8k), the answer
the model generates for each conversation's last user turn (greedy by default, `generation`), scored by the task's
own metric (`lit_llm.metrics.answers.task_statistics`: accuracy and macro-F1 over label words, SQuAD EM/F1, ROUGE,
SacreBLEU, final-number accuracy), logged as `test/<task>/<metric>` with bootstrap intervals in the report.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.text import Perplexity

from lit_llm.data.base import resolve_special_ids
from lit_llm.data.loading import in_example_order
from lit_llm.errors import ConfigError
from lit_llm.metrics import bootstrap as bs
from lit_llm.models.decoding import GENERATION_OPTIONS, generate, generate_seq2seq
from lit_llm.tasks.base import BackboneTask
from lit_llm.tasks.clm import (
    IGNORE_INDEX,
    LOSS_CHUNK_ROWS,
    check_loss_chunk_size,
    chunked_cross_entropy,
    lm_head_weight,
)
from lit_llm.tokenization import tokenizer_from_str

ARCHS = ("gpt", "encoder_decoder")
DEFAULT_GENERATION = {"max_new_tokens": 128, "temperature": 0.0}


class SFTTask(BackboneTask):
    task_kind = "sft"
    DEFAULT_TEST_NAME = "validation"

    def __init__(self, model: dict, optim: dict, generation: dict | None = None, score_generations: bool = True,
                 compile: bool = False, tokenizer_json: str | None = None, peft: dict | None = None,
                 loss_chunk_size: int | None = LOSS_CHUNK_ROWS):
        super().__init__(model, optim, compile, tokenizer_json, peft)
        self.loss_chunk_size = check_loss_chunk_size(loss_chunk_size)
        if self.config.arch not in ARCHS:
            raise ConfigError(f"task=sft trains a model that writes text: model.arch must be one of {list(ARCHS)}, "
                              f"got {self.config.arch!r} (e.g. model=gpt_small or model.init_from=<clm run>)")
        generation = {**DEFAULT_GENERATION, **dict(generation or {})}
        unknown = sorted(set(generation) - set(GENERATION_OPTIONS))
        if unknown:
            raise ConfigError(f"task.generation.{unknown[0]} is not a generation option; known: "
                              f"{', '.join(GENERATION_OPTIONS)}")
        self.generation = generation
        self.score_generations = bool(score_generations)
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.test_ppl = nn.ModuleList()
        self._generated: dict[str, list[tuple[int, str, int]]] = {}
        self.predictions: dict[str, list[dict]] = {}
        self._tok = None

    # -- tokens and template
    @property
    def tokenizer(self):
        if self._tok is None:
            if not self.tokenizer_json:
                raise RuntimeError("SFTTask needs its tokenizer (tokenizer_json) to generate answers")
            self._tok = tokenizer_from_str(self.tokenizer_json)
        return self._tok

    @property
    def template(self):
        from lit_llm.chat_template import run_template

        return run_template(self.run_config, self.tokenizer)

    def stop_id(self) -> int:
        """The token that ends an assistant turn: the template's end of turn (ChatML `<|im_end|>`), else <eos>."""
        ids = resolve_special_ids(self.tokenizer, (self.run_config or {}).get("special_ids"))
        marker = self.template.end_of_turn
        found = self.tokenizer.token_to_id(marker) if marker else None
        if found is None:
            found = ids.get("eos")
        if found is None:
            raise ConfigError("the tokenizer has neither the chat template's end-of-turn token nor an <eos>")
        return found

    # -- loss
    def forward(self, batch: dict) -> torch.Tensor:
        if self.config.arch == "gpt":
            return self.compiled()(batch["input_ids"], document_ids=batch.get("document_ids"))
        return self.compiled()(batch["input_ids"], batch["decoder_input_ids"], batch.get("attention_mask"))

    @staticmethod
    def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        head = lm_head_weight(self) if self.config.arch == "gpt" else None
        if head is not None:  # the LM head and its loss on the answer tokens only (prompts are most of a row)
            hidden = self.compiled("hidden_states")(batch["input_ids"], document_ids=batch.get("document_ids"))
            answer = batch["labels"] != IGNORE_INDEX
            loss = chunked_cross_entropy(hidden[answer], head, batch["labels"][answer], self.loss_chunk_size)
        else:
            loss = self._loss(self(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/target_tokens", (batch["labels"] != IGNORE_INDEX).sum().float(), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch).float()
        labels = batch["labels"]
        self.val_ppl.update(logits, labels)
        self.log_mean("val/loss", self._loss(logits, labels), (labels != IGNORE_INDEX).sum(), prog_bar=True)
        self.log("val/ppl", self.val_ppl, prog_bar=True, on_epoch=True)

    def on_test_start(self) -> None:
        super().on_test_start()
        self._generated, self.predictions = {}, {}
        self.test_ppl = nn.ModuleList(Perplexity(ignore_index=IGNORE_INDEX) for _ in self.test_names()).to(self.device)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self.test_split(dataloader_idx)
        logits = self(batch).float()
        labels = batch["labels"]
        metric = self.test_ppl[dataloader_idx]
        metric.update(logits, labels)
        nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        tokens = (labels != IGNORE_INDEX).sum(1)
        self.record(split, nll=nll.double().sum(1), tokens=tokens, row=batch["example_index"])
        self.log_mean(f"test/{split}/loss", nll.sum() / tokens.sum().clamp(min=1), tokens.sum(),
                      add_dataloader_idx=False)
        self.log(f"test/{split}/ppl", metric, on_epoch=True, add_dataloader_idx=False)
        if self.score_generations and self._scored_task(split) is not None:
            self._generate(batch, split)

    # -- answers
    def _scored_task(self, split: str) -> str | None:
        """The mixture task a test split holds when its answers can be scored (None: a plain chat split)."""
        from lit_llm.metrics.answers import TASK_KINDS

        raw = self.trainer.datamodule.raw[split]
        task = raw[0]["task"] if len(raw) else None
        return task if task in TASK_KINDS else None

    def answer_ids(self, prompt: list[int], **overrides) -> list[int]:
        """The tokens a GPT writes after `prompt` (the conversation with the generation prompt) up to its end of
        turn, with `generation` options (`overrides` first); the prompt keeps its last tokens when it and
        `max_new_tokens` exceed the context."""
        stop = self.stop_id()
        options = {k: v for k, v in {**self.generation, **overrides}.items()
                   if k in ("max_new_tokens", "temperature", "top_k", "top_p", "use_cache")}
        room = self.config.block_size - int(options.get("max_new_tokens", 128))
        if room < 1:
            raise ConfigError(f"task.generation.max_new_tokens={options.get('max_new_tokens')} leaves no room for a "
                              f"prompt in the model's context (block_size={self.config.block_size}); lower it")
        ids = torch.tensor([prompt[-room:]], device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(int((self.run_config or {}).get("seed") or 0))
        new = generate(self.backbone, ids, eos_id=stop, generator=generator, **options)[0, ids.size(1):].tolist()
        return new[: new.index(stop)] if stop in new else new

    def _generate(self, batch: dict, split: str) -> None:
        from lit_llm.data.conversations import prompt_ids

        dm = self.trainer.datamodule
        indices = batch["example_index"].tolist()
        if self.config.arch == "gpt":
            rows = [self.answer_ids(prompt_ids(self.tokenizer, self.template, dm.messages(split, i)[:-1]))
                    for i in indices]
        else:
            ids = resolve_special_ids(self.tokenizer, (self.run_config or {}).get("special_ids"))
            options = {k: v for k, v in self.generation.items()}
            out = generate_seq2seq(self.backbone, batch["input_ids"], batch["attention_mask"], start_id=ids["bos"],
                                   eos_id=ids["eos"], pad_id=ids["pad"], **options).tolist()
            rows = [row[: row.index(ids["eos"])] if ids["eos"] in row else row for row in out]
        texts = self.tokenizer.decode_batch(rows, skip_special_tokens=True)
        self._generated.setdefault(split, []).extend(
            (i, t.strip(), len(r)) for i, t, r in zip(indices, texts, rows))

    def on_test_epoch_end(self) -> None:
        from lit_llm.metrics.answers import task_statistics

        for split, rec in list(self.records.items()):  # the loader went by length: back in the examples' order
            self.records[split] = in_example_order(rec, "row")
        for split in list(self._generated):
            rows = sorted(r for part in self.gather_objects(self._generated.pop(split)) for r in part)
            raw = self.trainer.datamodule.raw[split]
            task = raw[0]["task"]
            refs = [raw[i]["references"] for i, _, _ in rows]
            labels = [raw[i]["label"] for i, _, _ in rows]
            preds = [t for _, t, _ in rows]
            for name, stat in task_statistics(task, preds, refs, labels).items():
                self.log(f"test/{split}/{name}", stat.value(), rank_zero_only=True)
            self.log(f"test/{split}/examples", float(len(rows)), rank_zero_only=True)
            self.record(split, task=[task] * len(rows), index=[i for i, _, _ in rows], prediction=preds,
                        references=refs, label=labels, gen_tokens=[n for _, _, n in rows])
            dm = self.trainer.datamodule
            self.predictions[split] = [
                {"task": task, "index": i, "prompt": dm.messages(split, i)[:-1], "prediction": t, "references": r}
                for (i, t, _), r in zip(rows, refs)]

    # -- hooks (BackboneTask) -----------------------------------------------------------------------------
    def report_statistics(self) -> dict[str, bs.Statistic]:
        from lit_llm.metrics.answers import task_statistics

        out = {}
        for split, rec in self.records.items():
            if rec.get("tokens"):
                out[f"test/{split}/ppl"] = bs.perplexity_statistic(rec["nll"][: len(rec["tokens"])], rec["tokens"])
            if rec.get("prediction"):
                stats = task_statistics(rec["task"][0], rec["prediction"], rec["references"], rec["label"])
                out.update({f"test/{split}/{name}": stat for name, stat in stats.items()})
        return out

    def report_examples(self) -> dict[str, dict]:
        return {split: {"score": "exact match of the answer with a reference (normalised)",
                        "scores": [float(any(_norm(p) == _norm(r) for r in refs))
                                   for p, refs in zip(rec["prediction"], rec["references"])],
                        "rows": [{"predicted": p, "reference": refs[0] if refs else ""}
                                 for p, refs in zip(rec["prediction"], rec["references"])]}
                for split, rec in self.records.items() if rec.get("prediction")}

    def write_outputs(self, out_dir: Path) -> None:
        """`predictions.jsonl`: every scored test answer (task, prompt, prediction, references)."""
        from lit_llm.utils_io import atomic_write_text

        rows = [r for split in sorted(self.predictions) for r in self.predictions[split]]
        if rows:
            atomic_write_text(Path(out_dir) / "predictions.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def generate_sample(self, tokenizer, prompt: str, max_new_tokens: int, temperature: float,
                        top_k: int | None, seed: int, num_samples: int = 1) -> str | None:
        """The model's answer to `prompt` as a user turn (GenerateSamples callback): decoder-only models."""
        if self.config.arch != "gpt" or not prompt:
            return None
        from lit_llm.data.conversations import prompt_ids

        ids = prompt_ids(self.tokenizer, self.template, [{"role": "user", "content": prompt}])
        answer = self.answer_ids(ids, max_new_tokens=min(max_new_tokens, self.config.block_size // 2),
                                 temperature=temperature, top_k=top_k)
        return f"user: {prompt}\nassistant: " + self.tokenizer.decode(answer, skip_special_tokens=True)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


__all__ = ["SFTTask"]
