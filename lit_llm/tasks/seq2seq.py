"""Sequence-to-sequence fine-tuning (translation, summarization) of the encoder-decoder.

Training: teacher forcing, cross-entropy on the target tokens (labels -100 on padding), optional
label smoothing. Validation: the same loss without smoothing (`val/loss`) and, with
`generate_on_validation`, generated text scored like the test split. Test: generation with
`generation` options (see `lit_llm.models.decoding.GENERATION_OPTIONS`), scored by `metric`:
`bleu` (SacreBLEU + chrF + the BLEU signature) or `rouge` (ROUGE-1/2/L/Lsum); every prediction is
kept next to its source and references (`predictions`, written as `predictions.jsonl`). `none`: no
generation, the loss only (denoising pretraining on a corpus, `data.objective=denoise`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from lit_llm.data.base import resolve_special_ids
from lit_llm.errors import ConfigError
from lit_llm.metrics import bootstrap as bs
from lit_llm.metrics.text_overlap import ROUGE_SETTINGS, summarization_scores, translation_scores
from lit_llm.models.decoding import GENERATION_OPTIONS, generate_seq2seq
from lit_llm.tasks.base import BackboneTask
from lit_llm.tokenization import tokenizer_from_str

IGNORE_INDEX = -100
METRICS = ("bleu", "rouge", "none")


class Seq2SeqTask(BackboneTask):
    task_kind = "seq2seq"

    def __init__(self, model: dict, optim: dict, metric: str = "bleu", label_smoothing: float = 0.0,
                 generation: dict | None = None, generate_on_validation: bool = True, compile: bool = False,
                 tokenizer_json: str | None = None, peft: dict | None = None):
        super().__init__(model, optim, compile, tokenizer_json, peft)
        if self.config.arch != "encoder_decoder":
            raise ConfigError(f"task=seq2seq needs model.arch=encoder_decoder (e.g. model=transformer_small), got "
                              f"{self.config.arch!r}")
        if metric not in METRICS:
            raise ConfigError(f"task.metric={metric!r} is not one of {list(METRICS)}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"task.label_smoothing={label_smoothing!r} must be in [0, 1)")
        generation = dict(generation or {})
        unknown = sorted(set(generation) - set(GENERATION_OPTIONS))
        if unknown:
            raise ConfigError(f"task.generation.{unknown[0]} is not a generation option; known: "
                              f"{', '.join(GENERATION_OPTIONS)}")
        self.metric, self.label_smoothing = metric, float(label_smoothing)
        self.generation = generation
        self.generate_on_validation = bool(generate_on_validation) and metric != "none"
        self._generated: dict[str, list[tuple[int, list[int]]]] = {}
        self.predictions: dict[str, list[dict]] = {}
        self._tok: Tokenizer | None = None

    # -- tokens
    @property
    def tokenizer(self) -> Tokenizer:
        if self._tok is None:
            if not self.tokenizer_json:
                raise RuntimeError("Seq2SeqTask needs its tokenizer (tokenizer_json) to decode generations")
            self._tok = tokenizer_from_str(self.tokenizer_json)
        return self._tok

    def _ids(self) -> tuple[int, int, int]:
        """(decoder start, end, pad) ids, as the training data used them (a Hugging Face model's own, e.g.
        T5's <pad> start and </s> end, recorded in run_config.special_ids; else our <bos> <eos> <pad>)."""
        ids = resolve_special_ids(self.tokenizer, (self.run_config or {}).get("special_ids"))
        return ids["bos"], ids["eos"], ids["pad"]

    # -- training
    def forward(self, batch: dict) -> torch.Tensor:
        return self.compiled()(batch["input_ids"], batch["decoder_input_ids"], batch.get("attention_mask"))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch).float()
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1),
                               ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _eval_loss(self, batch: dict, prefix: str) -> None:
        logits = self(batch).float()
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1), ignore_index=IGNORE_INDEX)
        tokens = int((batch["labels"] != IGNORE_INDEX).sum())
        self.log_mean(f"{prefix}/loss", loss, tokens, prog_bar=prefix == "val", add_dataloader_idx=False)

    def _generate(self, batch: dict, split: str) -> None:
        start, eos, pad = self._ids()
        out = generate_seq2seq(self.backbone, batch["input_ids"], batch["attention_mask"], start_id=start,
                               eos_id=eos, pad_id=pad, **self.generation)
        for index, row in zip(batch["example_index"].tolist(), out.tolist()):
            self._generated.setdefault(split, []).append((index, row[: row.index(eos)] if eos in row else row))

    def _score(self, split: str, prefix: str) -> None:
        # under DDP each process generated for its own share (EvalShardSampler): score them all
        rows = sorted(row for part in self.gather_objects(self._generated.pop(split, [])) for row in part)
        if not rows:
            return
        raw = self.trainer.datamodule.raw[split]
        texts = self.tokenizer.decode_batch([ids for _, ids in rows], skip_special_tokens=True)
        refs = [raw[i]["references"] for i, _ in rows]
        if self.metric == "bleu":
            scores = translation_scores(texts, refs)
            self.metric_info["bleu_signature"] = scores.pop("bleu_signature")
        else:
            scores = summarization_scores(texts, refs)
            self.metric_info["rouge"] = ROUGE_SETTINGS
        for key, value in scores.items():
            self.log(f"{prefix}/{key}", value, prog_bar=prefix == "val", rank_zero_only=True)
        self.log(f"{prefix}/examples", float(len(rows)), rank_zero_only=True)
        lengths = [len(ids) for _, ids in rows]
        self.log(f"{prefix}/gen_tokens_mean", sum(lengths) / len(lengths), rank_zero_only=True)
        if prefix.startswith("test"):
            self.predictions[split] = [{"index": i, "source": raw[i]["source"], "prediction": t,
                                        "references": raw[i]["references"]} for (i, _), t in zip(rows, texts)]
            ref_tokens = [len(e.ids) for e in self.tokenizer.encode_batch([r[0] for r in refs], add_special_tokens=False)]
            self.record(split, index=[i for i, _ in rows], source=[raw[i]["source"] for i, _ in rows],
                        prediction=texts, references=refs, gen_tokens=lengths, reference_tokens=ref_tokens)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_loss(batch, "val")
        if self.generate_on_validation and not self.trainer.sanity_checking:
            self._generate(batch, "validation")

    def on_validation_epoch_end(self) -> None:
        self._score("validation", "val")
        super().on_validation_epoch_end()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self.test_split(dataloader_idx)
        self._eval_loss(batch, f"test/{split}")
        if self.metric != "none":
            self._generate(batch, split)

    def on_test_epoch_end(self) -> None:
        for split in list(self._generated):
            self._score(split, f"test/{split}")

    # -- hooks (BackboneTask) --------------------------------------------------------------------
    def report_statistics(self) -> dict[str, bs.Statistic]:
        out = {}
        for split, rec in self.records.items():
            if not rec.get("prediction"):
                continue
            if self.metric == "bleu":
                out[f"test/{split}/bleu"] = bs.bleu_statistic(rec["prediction"], rec["references"])
                out[f"test/{split}/chrf"] = bs.chrf_statistic(rec["prediction"], rec["references"])
            elif self.metric == "rouge":
                for name, stat in bs.rouge_statistics(rec["prediction"], rec["references"]).items():
                    out[f"test/{split}/{name}"] = stat
        return out

    def report_examples(self) -> dict[str, dict]:
        kind = "bleu" if self.metric == "bleu" else "rouge"
        return {split: {"score": "sentence BLEU (sacreBLEU, exp smoothing)" if kind == "bleu" else
                        "ROUGE-L F of the example",
                        "scores": bs.sentence_scores(kind, rec["prediction"], rec["references"]),
                        "rows": [{"source": s, "predicted": p, "reference": refs[0]}
                                 for s, p, refs in zip(rec["source"], rec["prediction"], rec["references"])]}
                for split, rec in self.records.items() if rec.get("prediction")}

    def report_plots(self, out_dir: Path) -> dict[str, str]:
        from lit_llm.reporting import plots

        rec = next((r for r in self.records.values() if r.get("gen_tokens")), None)
        if rec is None:
            return {}
        plots.length_histogram({"generated": rec["gen_tokens"], "reference": rec.get("reference_tokens", [])},
                               Path(out_dir) / "plots" / "generation_lengths.png")
        return {"generation lengths": "plots/generation_lengths.png"}

    def write_outputs(self, out_dir: Path) -> None:
        """`predictions.jsonl`: one line per example of the first test set (source, prediction, references)."""
        from lit_llm.utils_io import atomic_write_text

        for rows in self.predictions.values():
            atomic_write_text(Path(out_dir) / "predictions.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            break
