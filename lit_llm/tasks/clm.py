"""Causal language modelling: next-token cross-entropy on a GPT backbone."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.text import Perplexity

from lit_llm.errors import ConfigError
from lit_llm.metrics import bootstrap as bs
from lit_llm.tasks.base import BackboneTask

IGNORE_INDEX = -100


LOSS_CHUNK_ROWS = 512  # task.loss_chunk_size's default: fastest of 64-2048 rows for vocabularies of 8k-50k here


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on `t` runs in: the autocast dtype inside autocast, else `t`'s own."""
    device = t.device.type
    if torch.is_autocast_enabled(device) and t.dtype == torch.float32:
        return torch.get_autocast_dtype(device)
    return t.dtype


class _ChunkedLMHeadLoss(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T` (the LM head) against `labels`, computed `chunk` rows at a time:
    the [rows, vocab] logits exist one chunk at a time, in one buffer reused by every chunk, and never for the
    whole batch. The gradients are computed in the forward pass (softmax - one-hot, times the head's inputs and
    weight), as Liger-Kernel's fused linear cross-entropy does, so backward only scales them.

    Why it is faster than logits + F.cross_entropy, not only smaller: each chunk's logits (512 x 8192 fp32 = 16 MiB)
    stay in the CPU's cache while log-softmax, exp and the two gradient matmuls read them, where the full logits
    (64 MiB at batch 8 x 256) go to memory and back five times (matmul, log_softmax, a zero-filled NLL gradient,
    its backward, the matmuls). Under autocast the matmuls run in the autocast dtype and the softmax in fp32, as
    `logits.float()` does on the full path."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int,
                ignore_index: int) -> torch.Tensor:
        dtype = _compute_dtype(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            h_all, w = hidden.to(dtype), weight.to(dtype)
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_hidden = torch.empty_like(hidden) if need_h else None
            # fp32 accumulator of the weight's gradient over chunks (a low-precision sum would lose the small ones)
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            n, total = h_all.size(0), torch.zeros((), dtype=torch.float32, device=hidden.device)
            rows = min(chunk, n)
            logits_buf = torch.empty(rows, w.size(0), dtype=dtype, device=hidden.device)
            logp_buf = logits_buf if dtype == torch.float32 else torch.empty(rows, w.size(0), device=hidden.device)
            # a low-precision chunk's weight gradient, before it joins the fp32 sum (one buffer for every chunk)
            partial = None if dtype == torch.float32 or not need_w else torch.empty_like(w)
            for start in range(0, n, chunk):
                h, y = h_all[start:start + chunk], labels[start:start + chunk]
                r = h.size(0)
                logits, logp = logits_buf[:r], logp_buf[:r]
                torch.mm(h, w.t(), out=logits)
                torch.log_softmax(logits, dim=-1, dtype=torch.float32, out=logp)  # in place when fp32
                valid = y != ignore_index
                target = torch.where(valid, y, 0)[:, None]
                keep = valid[:, None].to(dtype)
                total -= (logp.gather(1, target).squeeze(1) * valid).sum()
                if not (need_h or need_w):
                    continue
                grad = logp.exp_()  # softmax, in place
                grad.scatter_add_(1, target, torch.full((r, 1), -1.0, device=grad.device))  # minus the one-hot
                g = grad if dtype == torch.float32 else logits.copy_(grad)  # the matmuls' dtype
                # ignored rows get no gradient: zeroed on the narrow [rows, C] side, not on [rows, vocab]
                if need_h:
                    gh = grad_hidden[start:start + r]
                    if gh.dtype == dtype:
                        torch.mm(g, w, out=gh)
                        gh.mul_(keep)
                    else:
                        gh.copy_(torch.mm(g, w) * keep)
                if need_w:
                    if dtype == torch.float32:
                        grad_weight.addmm_(g.t(), h * keep)
                    else:
                        grad_weight += torch.mm(g.t(), h * keep, out=partial)
            scale = 1.0 / (labels != ignore_index).sum().clamp(min=1).float()
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight, scale) if g is not None))
        ctx.has, ctx.weight_dtype = (need_h, need_w), weight.dtype
        return total * scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        saved = list(ctx.saved_tensors)
        scale = saved.pop() * grad_out
        grad_hidden = saved.pop(0) * scale if ctx.has[0] else None  # not in place: backward may run twice
        grad_weight = (saved.pop(0) * scale).to(ctx.weight_dtype) if ctx.has[1] else None
        return grad_hidden, grad_weight, None, None, None


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          chunk: int = LOSS_CHUNK_ROWS, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """`F.cross_entropy(hidden @ weight.T, labels, ignore_index=...)` (the mean over labelled positions) for
    hidden [..., C], weight [V, C], labels [...], without materialising the [..., V] logits: `chunk` rows at a
    time (`_ChunkedLMHeadLoss`). Same loss and gradients within float rounding."""
    return _ChunkedLMHeadLoss.apply(hidden.reshape(-1, hidden.size(-1)), weight, labels.reshape(-1), int(chunk),
                                    ignore_index)


def check_loss_chunk_size(rows) -> int | None:
    """task.loss_chunk_size: a positive number of rows, or None (the full logits and F.cross_entropy)."""
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0):
        raise ConfigError(f"task.loss_chunk_size={rows!r} must be a positive integer (rows of the LM head's logits "
                          f"at a time; default {LOSS_CHUNK_ROWS}) or null (all at once)")
    return rows


def lm_head_weight(task: BackboneTask) -> torch.Tensor | None:
    """The output layer's weight when the training loss may go through `chunked_cross_entropy`: task.loss_chunk_size
    set, no distillation (its soft targets need the whole logits), a GPT whose `lm_head` is a plain bias-free
    Linear (an adapter or a quantized layer on the head computes something else); None: the full-logits path."""
    head = getattr(task.backbone, "lm_head", None)
    if (not getattr(task, "loss_chunk_size", None) or task.distiller is not None or type(head) is not nn.Linear
            or head.bias is not None or not hasattr(task.backbone, "hidden_states")):
        return None
    return head.weight


class CausalLMTask(BackboneTask):
    """Gives a GPT backbone its loss (shifted-label cross-entropy), perplexity metrics and optimizer.

    Batches are `{"input_ids": [B, T], "labels": [B, T]}` with labels already shifted by the data
    module (packed blocks: labels[t] is the token after input_ids[t]); -100 marks ignored labels.
    """

    task_kind = "clm"
    supports_distill = True  # task.distill: next-token distributions of a teacher GPT with the same tokenizer

    def __init__(self, model: dict, optim: dict, compile: bool = False, tokenizer_json: str | None = None,
                 peft: dict | None = None, distill: dict | None = None,
                 loss_chunk_size: int | None = LOSS_CHUNK_ROWS):
        super().__init__(model, optim, compile, tokenizer_json, peft, distill)
        self.loss_chunk_size = check_loss_chunk_size(loss_chunk_size)
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.test_ppl = nn.ModuleList()  # one per test dataloader, built in on_test_start

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.compiled()(input_ids)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX
        )

    def distill_logits(self, batch: dict) -> torch.Tensor:
        return self(batch["input_ids"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        head = lm_head_weight(self)
        if head is not None:
            hidden = self.compiled("hidden_states")(batch["input_ids"])
            hard = loss = chunked_cross_entropy(hidden, head, batch["labels"], self.loss_chunk_size)
        else:
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
